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


def test_stage_fields_the_run_sets_are_rejected(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("label:\n  seed: 3\n")
    with pytest.raises(ValueError, match="seed"):
        load_config(p)


def test_the_run_seed_and_folder_reach_every_stage(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("seed: 5\nrun_dir: /tmp/r\nlabel:\n  label_type: hard\n  rollouts: 3\nprm:\n  lora_r: 4\n")
    cfg = load_config(p)
    assert cfg.sample.seed == cfg.label.seed == cfg.prm.seed == 5
    assert cfg.prm.output_dir == "/tmp/r/prm" and cfg.prm.lora_r == 4 and cfg.label.rollouts == 3
    assert cfg.prm.train_config().lora_r == 4
    assert load_config(None, {"seed": 2}).label.seed == 2


def test_bad_stage_value_names_the_section(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("label:\n  rollouts: 0\n")
    with pytest.raises(ValueError, match="rollouts"):
        load_config(p)


def test_shipped_code_config_loads_by_name():
    cfg = load_config("code")
    assert cfg.data.task == "leetcode" and cfg.prm.corpus == "none" and cfg.data.max_solution_lines == 0
    assert cfg.run_dir == "runs/code" and cfg.label == RunConfig().label  # the rest: the defaults
    with pytest.raises(ValueError, match="shipped configs: code"):
        load_config("no-such-config")
