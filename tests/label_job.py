"""A complete labelling job on the fake backend; run as a script so tests can SIGKILL it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fakes import FakeBackend  # noqa: E402

from adaptivestep.backends.base import SamplingConfig  # noqa: E402
from adaptivestep.jsonl import JsonlWriter, read_records  # noqa: E402
from adaptivestep.label import LabelConfig, label_files  # noqa: E402
from adaptivestep.records import Problem, Sample, StepSplit  # noqa: E402
from adaptivestep.sample import sample_problems  # noqa: E402

PROBLEMS = [Problem(id=f"p{i}", question=f"q{i} 1+{i}=", kind="math", answer=str(i % 10)) for i in range(10)]


def judge(problem: Problem, text: str) -> bool:
    nums = re.findall(r"\d", text)
    return bool(nums) and nums[-1] == problem.answer


def make_inputs(d: Path) -> None:
    b = FakeBackend()
    sample_problems(b, PROBLEMS, d / "samples.jsonl", n=3, config=SamplingConfig(max_tokens=30), seed=1,
                    render=lambda p: b.chat_prompt(p.question), progress=False)
    with JsonlWriter(d / "splits.jsonl") as w:
        for s in read_records(d / "samples.jsonl", Sample):
            n = len(s.token_ids)
            w.write(StepSplit(s.problem_id, s.sample_index, "fixed", sorted({*range(4, n, 4), n}), n))


def run(d: Path, out: str, delay_s: float = 0.0, **cfg) -> None:
    label_files(FakeBackend(delay_s=delay_s), judge, {p.id: p for p in PROBLEMS}, d / "samples.jsonl", d / "splits.jsonl",
                d / out, LabelConfig(max_tokens=20, rollouts=4, **cfg), progress=False)


if __name__ == "__main__":
    run(Path(sys.argv[1]), sys.argv[2], delay_s=float(sys.argv[3]) if len(sys.argv) > 3 else 0.0)
