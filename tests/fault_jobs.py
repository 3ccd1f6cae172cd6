"""Jobs for the fault-injection tests, run as scripts so a test can SIGKILL them, fill their disk or lock them.

``python fault_jobs.py sample DIR``: sample 6 problems x 4 on the fake backend into DIR/samples.jsonl.
``python fault_jobs.py label-code DIR OUT``: label DIR's samples with a judge that runs every rollout in the code
sandbox (a program derived from the text), so kills land while sandboxes run.
``python fault_jobs.py hold-lock OUT``: hold the output lock of OUT until killed.
``python fault_jobs.py train BACKBONE DATA OUT``: full fine-tuning of a tiny PRM, a checkpoint every step,
resuming from the last one (``resume=True``), so a test can kill it anywhere and run it again.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fakes import FakeBackend  # noqa: E402

from adaptivestep.backends.base import SamplingConfig  # noqa: E402
from adaptivestep.checkers.sandbox_runner import SandboxLimits, run_python  # noqa: E402
from adaptivestep.jsonl import JsonlWriter, read_records  # noqa: E402
from adaptivestep.label import LabelConfig, label_files  # noqa: E402
from adaptivestep.records import Problem, Sample, StepSplit  # noqa: E402
from adaptivestep.sample import sample_problems  # noqa: E402
from adaptivestep.worklog import output_lock  # noqa: E402

PROBLEMS = [Problem(id=f"c{i}", question=f"q{i} 2+{i}=", kind="math", answer=str(i % 10)) for i in range(6)]
SANDBOX = SandboxLimits(timeout_s=10.0, memory_mb=256)


def sample(d: Path, delay_s: float = 0.0) -> None:
    b = FakeBackend(delay_s=delay_s)
    sample_problems(b, PROBLEMS, d / "samples.jsonl", n=4, config=SamplingConfig(max_tokens=24), seed=3,
                    render=lambda p: b.chat_prompt(p.question), batch_sequences=2, progress=False)


def code_judge(problem: Problem, text: str) -> bool:
    """A real sandbox run per rollout; passes when the text's digit sum is even (deterministic, ~50%)."""
    digits = sum(int(c) for c in text if c.isdigit())
    r = run_python(f"import time\ntime.sleep(0.05)\nassert {digits} % 2 == 0\n", SANDBOX)
    return r.ok


def make_splits(d: Path, limit: int = 6, every: int = 8) -> None:
    """Fixed splits of the first ``limit`` samples, a step every ``every`` tokens."""
    with JsonlWriter(d / "splits.jsonl") as w:
        for s in list(read_records(d / "samples.jsonl", Sample))[:limit]:
            n = len(s.token_ids)
            w.write(StepSplit(s.problem_id, s.sample_index, "fixed", sorted({*range(every, n, every), n}), n))


def label_code(d: Path, out: Path, delay_s: float = 0.0) -> None:
    label_files(FakeBackend(delay_s=delay_s), code_judge, {p.id: p for p in PROBLEMS}, d / "samples.jsonl",
                d / "splits.jsonl", out, LabelConfig(max_tokens=12, rollouts=3, concurrent_samples=2),
                progress=False)


def make_backbone(d: Path) -> Path:
    """The tiny random Qwen2 backbone of tests/test_prm.py, saved in ``d``."""
    from test_prm import CHAT, _corpus
    from tiny_models import save_tiny_qwen2

    return save_tiny_qwen2(d, _corpus(), chat=CHAT)


def train_prm(backbone: Path, data: Path, out: Path) -> None:
    from adaptivestep.prm.train import TrainConfig, train

    cfg = TrainConfig(mode="full", output_dir=str(out), max_steps=10, save_steps=1, batch_size=2,
                      eval_fraction=0.0, lr=1e-3, max_length=128, resume=True, seed=4)
    train(cfg, data, backbone)


if __name__ == "__main__":
    verb = sys.argv[1]
    if verb == "sample":
        sample(Path(sys.argv[2]), delay_s=float(sys.argv[3]) if len(sys.argv) > 3 else 0.0)
    elif verb == "label-code":
        label_code(Path(sys.argv[2]), Path(sys.argv[3]), delay_s=float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
    elif verb == "hold-lock":
        with output_lock(sys.argv[2]):
            print("held", flush=True)
            time.sleep(120)
    elif verb == "train":
        train_prm(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        raise SystemExit(f"unknown job {verb!r}")
