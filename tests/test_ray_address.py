"""--ray with an address where no Ray cluster answers: one clear error naming --ray, quickly, never a hang."""

import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("ray")


def _dead_port() -> int:
    with socket.socket() as s:  # bound then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_ray_address_fails_fast_naming_the_option(tmp_path):
    from adaptivestep.backends import load_backend
    from adaptivestep.backends.ray_pool import RayUnavailable

    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF not used: the address is checked first")
    port = _dead_port()
    t0 = time.monotonic()
    with pytest.raises(RayUnavailable, match=rf"--ray 127\.0\.0\.1:{port}: no Ray cluster answers"):
        load_backend("llamacpp", str(model), ray=f"127.0.0.1:{port}")
    assert time.monotonic() - t0 < 30


def test_cli_prints_one_line_for_an_unreachable_cluster(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUFx")
    port = _dead_port()
    r = subprocess.run([sys.executable, "-m", "adaptivestep.cli", "sample", "--model", str(model), "--limit", "1",
                        "--out", str(tmp_path / "s.jsonl"), "--ray", f"127.0.0.1:{port}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    err = r.stderr.strip()
    assert "--ray" in err and "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err


def test_score_ray_with_a_prm_server_is_a_usage_error(tmp_path, capsys):
    """--ray holds the PRM in actors; a --prm-server scores elsewhere: the two together are refused in one line."""
    from adaptivestep.cli import main
    from adaptivestep.jsonl import JsonlWriter
    from adaptivestep.records import LabeledRecord

    data = tmp_path / "labels.jsonl"
    with JsonlWriter(data) as w:
        w.write(LabeledRecord(prompt="1+1?", completions=["2"], labels=[1.0], problem_id="q", sample_index=0))
    rc = main(["score", str(data), "--prm-server", "http://127.0.0.1:9", "--ray", "--out", str(tmp_path / "s.jsonl")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--ray" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "s.jsonl").exists()


def test_joining_ray_keeps_the_callers_sigterm_handler(monkeypatch):
    """ray.init installs a SIGTERM handler of its own in the driver; connect() puts the caller's back, so the
    CLI's stop-as-Ctrl-C (resume hint, exit 143) holds with --ray too."""
    import signal

    from adaptivestep.backends import ray_pool

    def fake_init(**kwargs):  # what Ray's driver does at init
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(15))

    monkeypatch.setattr(ray_pool.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_pool.ray, "init", fake_init)

    def mine(*a):
        pass

    before = signal.signal(signal.SIGTERM, mine)
    try:
        ray_pool.connect()
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)
