"""The command line: every verb has help, bad input gets one clear error and exit code 2."""

import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fakes import FakeBackend  # noqa: E402

from adaptivestep.backends.base import SamplingConfig  # noqa: E402
from adaptivestep.cli import build_parser, main  # noqa: E402
from adaptivestep.records import Problem  # noqa: E402
from adaptivestep.sample import sample_problems  # noqa: E402

VERBS = ["sample", "split", "stats", "label", "train", "score", "prm-eval", "bon", "tvd", "bench", "run"]


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: adaptivestep" in out and "--" in out


def test_verbs_are_the_documented_ones():
    sub = next(a for a in build_parser()._actions if a.dest == "verb")
    assert set(VERBS) <= set(sub.choices)


@pytest.fixture
def samples(tmp_path):
    b = FakeBackend()
    probs = [Problem(id=f"p{i}", question=f"q {i}", kind="math", answer="3") for i in range(3)]
    path = tmp_path / "samples.jsonl"
    sample_problems(b, probs, path, n=3, config=SamplingConfig(max_tokens=40), seed=0,
                    render=lambda p: b.chat_prompt(p.question), progress=False)
    return path


def test_split_and_stats_on_fake_samples(samples, tmp_path, capsys):
    out = tmp_path / "split.jsonl"
    assert main(["split", str(samples), "--method", "confidence", "--break-rate", "0.1", "--out", str(out),
                 "--show", "1"]) == 0
    text = capsys.readouterr().out
    assert "tau =" in text and " | " in text
    assert main(["stats", str(samples), str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats[str(out)]["n_responses"] == len(samples.read_text().splitlines())


def test_split_refuses_to_overwrite(samples, tmp_path, capsys):
    out = tmp_path / "split.jsonl"
    assert main(["split", str(samples), "--method", "newline", "--out", str(out)]) == 0
    before = out.read_bytes()
    assert main(["split", str(samples), "--method", "newline", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == before


@pytest.mark.parametrize("args, needle", [
    (["split", "{s}", "--method", "confidence", "--break-rate", "1.5", "--out", "{o}"], "break_rate"),
    (["split", "{s}", "--method", "fixed", "--k", "0", "--out", "{o}"], "k"),
    (["sample", "--model", "/nope/model.gguf", "--out", "{o}", "--limit", "1"], "no such file"),
    (["sample", "--task", "poetry", "--out", "{o}"], "poetry"),
    (["sample", "--n", "0", "--out", "{o}", "--model", "/nope.gguf"], ""),
])
def test_bad_options_give_one_clear_error(args, needle, samples, tmp_path, capsys):
    args = [a.format(s=samples, o=tmp_path / "o.jsonl") for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("adaptivestep ") and needle in err
    assert len(err.strip().splitlines()) == 1


def test_malformed_input_names_file_and_line(samples, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    lines = samples.read_text().splitlines()
    bad.write_text(lines[0] + "\n{oops\n")
    assert main(["split", str(bad), "--method", "newline", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "bad.jsonl:2: malformed JSON" in capsys.readouterr().err


def test_problem_file_is_read_as_problem_records(tmp_path, capsys):
    # a file of the project's own Problem records keeps its ids and kinds (it used to be re-read as generic
    # JSONL: ids became "<stem>/<n>" and every kind "math")
    from adaptivestep.cli import _load_problems

    pfile = tmp_path / "mine.jsonl"
    pfile.write_text(
        json.dumps(Problem(id="a/1", question="2+2?", kind="math", answer="4").to_dict()) + "\n"
        + json.dumps(Problem(id="c/7", question="write f", kind="code", tests="assert f() == 1",
                             entry_point="f").to_dict()) + "\n")
    probs = _load_problems(build_parser().parse_args(["sample", "--task", str(pfile), "--out", "s.jsonl"]))
    assert [(p.id, p.kind) for p in probs] == [("a/1", "math"), ("c/7", "code")]
    assert probs[1].entry_point == "f"


def test_unknown_kind_in_problem_file_names_file_and_line(tmp_path, capsys):
    pfile = tmp_path / "bad.jsonl"
    pfile.write_text(json.dumps({"id": "a", "question": "q?", "kind": "math", "answer": "1"}) + "\n"
                     + json.dumps({"id": "b", "question": "q?", "kind": "mathx", "answer": "1"}) + "\n")
    assert main(["sample", "--task", str(pfile), "--out", str(tmp_path / "s.jsonl"), "--model", "/nope.gguf"]) == 2
    err = capsys.readouterr().err
    assert f"{pfile}:2" in err and "mathx" in err
    assert len(err.strip().splitlines()) == 1


def test_model_file_that_is_not_gguf_is_one_clear_error(tmp_path, capsys):
    fake = tmp_path / "model.gguf"
    fake.write_text("this is not a model\n")
    assert main(["sample", "--model", str(fake), "--limit", "1", "--out", str(tmp_path / "s.jsonl"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("adaptivestep sample: error:") and "not a GGUF model file" in err
    assert len(err.strip().splitlines()) == 1


def test_flags_come_from_the_stage_configs_with_the_verbs_defaults():
    from adaptivestep.config import RunConfig
    from adaptivestep.label import LabelConfig
    from adaptivestep.options import build
    from adaptivestep.prm.config import TrainConfig

    p = build_parser()
    a = p.parse_args(["label", "s.jsonl", "sp.jsonl", "--out", "o.jsonl"])
    assert build(LabelConfig, a) == LabelConfig()  # the verb's defaults are the stage config's own
    assert LabelConfig().rollouts != RunConfig().label.rollouts  # the main job keeps its smaller budget
    a = p.parse_args(["label", "s", "sp", "--out", "o", "--no-kv-reuse", "--no-batch", "--rollouts", "3",
                      "--early-stop", "--first-error-search"])
    cfg = build(LabelConfig, a)
    assert (cfg.kv_reuse, cfg.batched, cfg.rollouts, cfg.early_stop, cfg.first_error_search) == (
        False, False, 3, True, True)
    a = p.parse_args(["train", "d.jsonl", "--out", "prm", "--mode", "lora", "--lora-r", "4", "--bf16"])
    tc = build(TrainConfig, a, output_dir=a.out)
    assert (tc.mode, tc.lora_r, tc.bf16, tc.output_dir, tc.batch_size) == ("lora", 4, True, "prm", 4)
    a = p.parse_args(["tvd", "--prm", "x", "--out", "o", "--split", "train", "--kind", "code"])
    assert (a.threshold, a.split, a.kind, a.k) == (None, "train", "code", 8)
    a = p.parse_args(["split", "s.jsonl", "--out", "o", "--whole-response"])
    assert a.code_only is False


def test_gguf_file_the_engine_cannot_load_is_one_clear_error(tmp_path, capsys):
    pytest.importorskip("llama_cpp")
    bad = tmp_path / "truncated.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00garbage")  # the right magic, then nothing loadable
    assert main(["sample", "--model", str(bad), "--limit", "1", "--out", str(tmp_path / "s.jsonl"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("adaptivestep sample: error: model ") and "could not load" in err
    assert len(err.strip().splitlines()) == 1


def test_sigterm_stops_a_command_as_ctrl_c_does(tmp_path):
    """A job started in the background ignores SIGINT (the shell sets that), and schedulers preempt with SIGTERM:
    either way the command stops through the same path as Ctrl-C, says how to resume (a second SIGTERM does not
    break off its clean-up), and leaves SIGTERM as it found it. Run in a child process, so a regression kills
    the child, not the test session."""
    import subprocess

    script = tmp_path / "job.py"
    script.write_text(
        "import argparse, os, signal, sys, time\n"
        "from adaptivestep import cli\n"
        "def job(a):\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(5)\n"
        "    finally:  # the clean-up a work log runs: a second SIGTERM here must not break it off\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(0.2)\n"
        "        print('cleaned up', flush=True)\n"
        "p = argparse.ArgumentParser()\n"
        "p.set_defaults(verb='label', func=job)\n"
        "cli.build_parser = lambda: p\n"
        "rc = cli.main([])\n"
        "print('rc', rc, signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, flush=True)\n"
    )
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert time.monotonic() - t0 < 30
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["cleaned", "up", "rc", "143", "True"]
    assert "adaptivestep label: terminated; re-run the same command to resume" in r.stderr
