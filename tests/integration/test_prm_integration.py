"""PRM end to end on the real embedded backbones (GGUF -> HF through backends.hf.load_hf_model).

Run with ``pytest -m integration tests/integration/test_prm_integration.py``. SmolLM2-135M carries most
checks (fast); the default 0.5B backbone gets a head-mode train + score smoke test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from adaptivestep.bench.prm import gsm8k_path, synthetic_records, tvd_items
from adaptivestep.embedded_models import ModelError, embedded_model_path
from adaptivestep.prm.model import PRM
from adaptivestep.prm.train import TrainConfig, train


def _need(name: str) -> str:
    try:
        embedded_model_path(name)
    except ModelError as e:
        pytest.skip(str(e))
    if not gsm8k_path().is_file():
        pytest.skip(f"GSM8K not found at {gsm8k_path()}")
    return name


def _data(tmp_path: Path, n: int) -> Path:
    p = tmp_path / "labeled.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in synthetic_records(n)))
    return p


@pytest.fixture(scope="module")
def smol_prm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    name = _need("smollm2-135m")
    tmp = tmp_path_factory.mktemp("smol")
    data = _data(tmp, 16)
    out = tmp / "prm"
    m = train(
        TrainConfig(
            mode="head", output_dir=str(out), eval_fraction=0.25, feature_cache=str(tmp / "c"), max_length=512
        ),
        data,
        name,
    )
    return out, data, m


def test_smollm2_head_train_metrics_and_card(smol_prm: tuple[Path, Path, dict]) -> None:
    out, _, m = smol_prm
    assert m["n_train_records"] > 0 and m["n_eval_records"] > 0
    assert np.isfinite(m["train_loss"]) and 0.0 <= m["eval_accuracy"] <= 1.0
    assert m["history"] and m["head_l2"] > 0  # cross-validated strength
    cfg = json.loads((out / "prm_config.json").read_text())
    assert cfg["mode"] == "head" and cfg["backbone"] == "smollm2-135m" and cfg["prompt_format"] == "chat"
    assert not (out / "backbone").exists()  # head mode references the backbone, does not copy it
    assert "smollm2-135m" in (out / "README.md").read_text()


def test_smollm2_scores_batched_equal_single_and_reload(smol_prm: tuple[Path, Path, dict]) -> None:
    out, data, _ = smol_prm
    recs = [json.loads(x) for x in data.read_text().splitlines()]
    items = [(r["prompt"], r["completions"]) for r in recs[:4]] + tvd_items(recs, 1, 4)
    prm = PRM.load(out)
    batched = prm.score_batch(items)
    single = [prm.score(q, s) for q, s in items]
    for b, s, (_, steps) in zip(batched, single, items):
        assert len(b) == len(steps)
        np.testing.assert_allclose(b, s, atol=1e-4)
    again = PRM.load(out).score_batch(items)
    np.testing.assert_allclose(np.concatenate(again), np.concatenate(batched), atol=1e-6)


def test_smollm2_lora_one_step(tmp_path: Path) -> None:
    name = _need("smollm2-135m")
    data = _data(tmp_path, 6)
    out = tmp_path / "lora"
    m = train(
        TrainConfig(
            mode="lora",
            output_dir=str(out),
            max_steps=1,
            batch_size=2,
            eval_fraction=0.0,
            max_length=384,
            gradient_checkpointing=True,
        ),
        data,
        name,
    )
    assert m["global_steps"] == 1 and np.isfinite(m["train_loss"])
    recs = [json.loads(x) for x in data.read_text().splitlines()]
    scores = PRM.load(out).score(recs[0]["prompt"], recs[0]["completions"])
    assert len(scores) == len(recs[0]["completions"]) and all(0.0 <= s <= 1.0 for s in scores)


def test_default_backbone_head_smoke(tmp_path: Path) -> None:
    _need("qwen2.5-coder-0.5b")
    data = _data(tmp_path, 6)
    out = tmp_path / "prm05"
    m = train(
        TrainConfig(
            mode="head",
            output_dir=str(out),
            eval_fraction=0.0,
            feature_cache=str(tmp_path / "c"),
            max_length=512,
        ),
        data,
        "default",
    )
    assert m["peak_rss_mb"] < 8192
    recs = [json.loads(x) for x in data.read_text().splitlines()]
    scores = PRM.load(out).score_batch([(recs[0]["prompt"], recs[0]["completions"])])[0]
    assert len(scores) == len(recs[0]["completions"])
