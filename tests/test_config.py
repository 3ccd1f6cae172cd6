from pathlib import Path

import pytest

from adaptivestep.config import QUICK, RunConfig, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_documented_config_equals_defaults():
    # config.yaml documents every field with its default: it must not drift from the code
    assert load_config(ROOT / "config.yaml") == RunConfig()


def test_every_field_is_documented():
    text = (ROOT / "config.yaml").read_text()
    cfg = RunConfig().to_dict()
    for section, value in cfg.items():
        keys = value.keys() if isinstance(value, dict) else [section]
        for k in keys:
            assert f"{k}:" in text, k


def test_unknown_key_is_an_error(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("label:\n  rolouts: 3\n")
    with pytest.raises(ValueError, match="rolouts"):
        load_config(p)


def test_overrides_and_quick():
    cfg = load_config(None, QUICK)
    assert cfg.data.train_limit == QUICK["data.train_limit"] and cfg.run_dir == "runs/quick"
    assert cfg.label.rollouts == QUICK["label.rollouts"]
