"""The verbs that need a model, each run for real through the command line on the smallest settings:
``train`` (head mode, SmolLM2-135M) -> ``score`` -> ``prm-eval`` on a tiny labelled file, and ``bench``.

(``sample``/``split``/``stats``/``label``/``bon``/``tvd``/``run`` are run by test_cli.py and
test_pipeline_real.py.) Run with ``pytest -m integration tests/integration/test_verbs.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

pytest.importorskip("torch")
pytest.importorskip("transformers")

from adaptivestep.bench.prm import gsm8k_path, synthetic_records
from adaptivestep.cli import main
from adaptivestep.embedded_models import ModelError, embedded_model_path
from adaptivestep.jsonl import read_records
from adaptivestep.records import LabeledRecord, StepScores

BACKBONE = "smollm2-135m"


def _need(name: str) -> None:
    try:
        embedded_model_path(name)
    except ModelError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A head-mode PRM trained by the ``train`` verb on 16 labelled records."""
    _need(BACKBONE)
    if not gsm8k_path().is_file():
        pytest.skip(f"GSM8K not found at {gsm8k_path()}")
    tmp = tmp_path_factory.mktemp("verbs")
    data = tmp / "labeled.jsonl"
    # the 0/1 labels are hard labels too: prm-eval's gold first error is the first hard label 0
    recs = [{**r, "hard_labels": r.get("hard_labels") or r["labels"]} for r in synthetic_records(16)]
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp / "prm"
    assert main(["train", str(data), "--out", str(out), "--backbone", BACKBONE, "--mode", "head",
                 "--max-length", "512", "--eval-fraction", "0.25"]) == 0
    return data, out


def test_train_writes_a_loadable_prm(trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, out = trained
    cfg = json.loads((out / "prm_config.json").read_text())
    assert cfg["mode"] == "head" and cfg["hidden_size"] > 0
    assert (out / "head.safetensors").is_file() and (out / "README.md").is_file()


def test_score_gives_one_probability_per_step(trained: tuple[Path, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    data, prm = trained
    out = tmp_path / "scores.jsonl"
    assert main(["score", str(data), "--prm", str(prm), "--out", str(out), "--batch", "8"]) == 0
    recs = list(read_records(data, LabeledRecord))
    scores = list(read_records(out, StepScores))
    assert [(s.problem_id, s.sample_index) for s in scores] == [(r.problem_id, r.sample_index) for r in recs]
    for s, r in zip(scores, recs):
        assert len(s.scores) == len(r.completions)
        assert all(0.0 <= x <= 1.0 for x in s.scores)
    assert len({round(x, 6) for s in scores for x in s.scores}) > 1  # not a constant
    assert f"scored {len(recs)} responses" in capsys.readouterr().out


def test_prm_eval_reports_first_error_metrics(trained: tuple[Path, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    data, prm = trained
    out = tmp_path / "eval.json"
    assert main(["prm-eval", str(data), "--prm", str(prm), "--tune-fraction", "0.5", "--out", str(out)]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["n_eval"] > 0 and 0.0 <= last["threshold"] <= 1.0
    for k in ("error_acc", "correct_acc", "f1"):
        assert last[k] is None or 0.0 <= last[k] <= 1.0
    assert json.loads(out.read_text())["n_eval"] == last["n_eval"]


def test_bench_quick_prints_figures_then_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("llama_cpp")
    _need(BACKBONE)
    # the vllm rows have their own tier (test_vllm.py); here the verb's output contract is what is checked
    assert main(["bench", "throughput", "--quick", "--model", BACKBONE, "--no-vllm"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) > 1  # human-readable figures first
    res = json.loads(lines[-1])
    assert res["raw_tok_s"] > 0 and res["sampler_tok_s"] > 0
    assert all(isinstance(res[k], float) for k in res if k.endswith("_ratio"))
    # the labelling row splits its wall time: the engine's share cannot exceed the whole
    assert 0 < res["labelling_stream_engine_s"] <= res["labelling_stream_wall_s"]
    assert res["labelling_stream_rollouts"] > 0
    # labelling runs with the backend's default sequences (as `label` does), and its prefix share is a share
    assert res["labelling_sequences"] == 16 and 0 <= res["labelling_stream_prefix_share"] < 1
