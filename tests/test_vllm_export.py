"""vLLM pieces that need no vLLM: the backend's pure helpers, the PRM export layout (checked by loading it
with transformers as the token-classification model it declares) and the PRM-server client against a small
HTTP server in this process that answers like vLLM's /pooling endpoint."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from adaptivestep.backends.base import SamplingConfig
from adaptivestep.backends.vllm import (
    VLLMError,
    prompt_token_logprobs,
    request_seed,
    sampled_logprobs,
    sampling_kwargs,
)

ITEMS = [
    ("add 2 and 3", [" we add two and then three and then", " so the total is", " 5 and the answer is 5 good."]),
    ("question 1: add 1 and 2", [" 1 plus 2", "", " is 3 good."]),
    ("no steps here", []),
]


# ------------------------------------------------------------------------------------ backend helpers


def test_request_seeds_are_distinct_and_stable() -> None:
    seeds = {request_seed(s, j) for s in range(20) for j in range(20)}
    assert len(seeds) == 400  # seed + index would collide (0, 1) with (1, 0)
    assert request_seed(3, 4) == request_seed(3, 4)


def test_sampling_kwargs_fit_context_and_keep_stops() -> None:
    cfg = SamplingConfig(temperature=0.7, top_p=0.9, top_k=5, max_tokens=100, top_logprobs=3, stop=("\n\n",))
    kw = sampling_kwargs(cfg, seed=9, prompt_len=1000, max_model_len=1024, stop_token_ids=[7, 2])
    assert kw["max_tokens"] == 24 and kw["stop_token_ids"] == [2, 7] and kw["logprobs"] == 3
    assert kw["stop"] == ["\n\n"] and kw["include_stop_str_in_output"] and kw["detokenize"]
    with pytest.raises(ValueError, match="--n-ctx"):
        sampling_kwargs(cfg, seed=0, prompt_len=1024, max_model_len=1024, stop_token_ids=[])


def test_logprob_entries_are_checked() -> None:
    with pytest.raises(VLLMError, match="logprobs"):
        sampled_logprobs([1, 2], [{1: -0.5}], 0)
    with pytest.raises(VLLMError, match="prompt log-probs"):
        prompt_token_logprobs([1, 2, 3], None, 1)
    lps, tops = sampled_logprobs([4], [{4: -2.0, 1: -0.1, 2: -0.3}], 2)
    assert lps == [-2.0] and tops == [[[1, -0.1], [2, -0.3]]]


def test_vllm_backend_without_vllm_names_the_fix(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vllm is installed here")
    from adaptivestep.backends import load_backend

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ImportError, match="vllm-venv.sh"):
        load_backend("vllm", str(tmp_path))


# ------------------------------------------------------------------------------------ export + server


@pytest.fixture(scope="module")
def prm_and_export(tmp_path_factory: pytest.TempPathFactory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tiny_models import save_tiny_qwen2

    from adaptivestep.prm.export import export_prm
    from adaptivestep.prm.model import PRM

    d = tmp_path_factory.mktemp("tiny-qwen2-export")
    words = "the answer is so we add and then two three good bad step total plus question".split()
    rng = np.random.default_rng(0)
    corpus = [" ".join(rng.choice(words, 10)) + f" {i} + {i} = {2 * i}." for i in range(100)]
    save_tiny_qwen2(d, corpus, vocab_size=300, max_positions=256)
    prm = PRM.from_backbone(d, device="cpu", max_length=16)  # short: the long item is split into windows
    with torch.no_grad():  # a head far from the initial ~0.5 scores, so a wrong position would show
        prm.network.head.weight.normal_(0.0, 0.5)
        prm.network.head.bias.fill_(-0.4)
    prm_dir = prm.save(d.parent / "prm")
    out = export_prm(prm_dir, d.parent / "prm-vllm", "vllm")
    return prm, out


def _hf_token_scores(model_dir: Path, inputs: list[list[int]]) -> list[list[list[float]]]:
    import torch
    from transformers import AutoModelForTokenClassification

    net = AutoModelForTokenClassification.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for ids in inputs:
            logits = net(input_ids=torch.tensor([ids])).logits[0]  # (T, 1)
            out.append(torch.sigmoid(logits).tolist())
    return out


def test_export_layout_loads_as_token_classifier_with_our_scores(prm_and_export) -> None:
    from adaptivestep.prm.data import encode_item
    from adaptivestep.prm.export import read_manifest
    from adaptivestep.prm.server import step_scores_from_tokens

    prm, out = prm_and_export
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForTokenClassification"] and cfg["num_labels"] == 1
    man = read_manifest(out)
    assert man["task"] == "token_classify" and man["max_length"] == 16
    items = [it for it in ITEMS if it[1]]
    chunks = [
        c
        for i, (q, s) in enumerate(items)
        for c in encode_item(prm.tokenizer, q, s, prompt_format=man["prompt_format"], max_length=16, item=i)
    ]
    assert len(chunks) > len(items)  # windows: positions in later chunks are exercised too
    served = step_scores_from_tokens(chunks, _hf_token_scores(out, [c.input_ids for c in chunks]),
                                     [len(s) for _, s in items])
    ours = prm.score_batch(items)
    assert np.abs(np.concatenate(served) - np.concatenate(ours)).max() < 1e-5
    assert np.std(np.concatenate(ours)) > 0.01  # scores differ by step: the comparison means something


def test_export_refuses_bad_requests(prm_and_export, tmp_path: Path) -> None:
    from adaptivestep.prm.export import ExportError, export_prm

    prm, out = prm_and_export
    with pytest.raises(ExportError, match="--format"):
        export_prm(out, tmp_path / "x", "onnx", prm=prm)
    with pytest.raises(ExportError, match="not empty"):
        export_prm(out, out, "vllm", prm=prm)


class _FakePooling(BaseHTTPRequestHandler):
    """Answers /v1/models and /pooling (task token_classify) the way vLLM 0.32's server does."""

    model_dir: Path
    scores: object

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, obj: object) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._send(200, {"data": [{"id": str(self.model_dir), "root": str(self.model_dir)}]})
        else:
            self._send(404, {"error": "no such route"})

    def do_POST(self) -> None:
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/pooling" or req.get("task") != "token_classify":
            self._send(400, {"error": {"message": f"bad request {self.path} {req.get('task')}"}})
            return
        rows = type(self).scores(self.model_dir, req["input"])  # type: ignore[operator]
        self._send(200, {"data": [{"index": i, "data": r} for i, r in enumerate(rows)]})


def test_prm_server_scorer_matches_local_prm(prm_and_export) -> None:
    from adaptivestep.prm.server import PRMServerScorer

    prm, out = prm_and_export
    handler = type("H", (_FakePooling,), {"model_dir": out, "scores": staticmethod(_hf_token_scores)})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        scorer = PRMServerScorer(f"http://127.0.0.1:{srv.server_address[1]}", batch=2)
        got = scorer.score_batch(ITEMS)
    finally:
        srv.shutdown()
        srv.server_close()
    ours = prm.score_batch(ITEMS)
    assert [len(g) for g in got] == [len(o) for o in ours]
    assert np.abs(np.concatenate(got) - np.concatenate(ours)).max() < 1e-5


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_prm_server_is_one_clear_error_fast() -> None:
    from adaptivestep.prm.server import PRMServerError, PRMServerScorer

    t = time.monotonic()
    with pytest.raises(PRMServerError, match="vllm serve"):
        PRMServerScorer(f"http://127.0.0.1:{_closed_port()}", timeout=3)
    assert time.monotonic() - t < 10
    with pytest.raises(PRMServerError, match="http"):
        PRMServerScorer("127.0.0.1:8000")


def test_cli_prm_server_unreachable_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from adaptivestep.cli import main

    data = tmp_path / "labeled.jsonl"
    data.write_text(json.dumps({"prompt": "q", "completions": [" a"], "labels": [1.0], "problem_id": "p",
                                "sample_index": 0}) + "\n")
    rc = main(["score", str(data), "--prm-server", f"http://127.0.0.1:{_closed_port()}",
               "--out", str(tmp_path / "s.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2 and "--prm-server" in err and "vllm serve" in err and len(err.strip().splitlines()) == 1
    rc = main(["score", str(data), "--out", str(tmp_path / "t.jsonl")])
    assert rc == 2 and "--prm-server" in capsys.readouterr().err


def test_cli_export_prm_writes_the_same_directory(prm_and_export, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from adaptivestep.cli import main

    _, out = prm_and_export
    cli_out = tmp_path / "via-cli"
    assert main(["export-prm", str(out.parent / "prm"), "--format", "vllm", "--out", str(cli_out)]) == 0
    assert "--runner pooling" in capsys.readouterr().out  # tells the user how to serve it
    cfg = json.loads((cli_out / "config.json").read_text())
    assert cfg == json.loads((out / "config.json").read_text())
    assert all(a.endswith("ForTokenClassification") for a in cfg["architectures"])


def _serve(out: Path) -> ThreadingHTTPServer:
    handler = type("H", (_FakePooling,), {"model_dir": out, "scores": staticmethod(_hf_token_scores)})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_cli_bon_through_prm_server_chooses_what_local_scores_choose(prm_and_export, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`bon --prm-server URL --splits S` = `score --prm DIR` then `bon SCORES`: same choice for every rule."""
    from adaptivestep.cli import main
    from adaptivestep.jsonl import JsonlWriter, read_records
    from adaptivestep.records import BonChoice, Problem, Sample
    from adaptivestep.split import SplitParams, split_samples

    _, out = prm_and_export
    problems = [Problem(id=f"p{i}", question=f"add {i} and {i}", kind="math", answer=str(2 * i)) for i in range(3)]
    samples = []
    rng = np.random.default_rng(5)
    for p in problems:
        for j in range(3):
            words = [" we", " add", " two", " then", " so", " total", " is", f" {int(rng.integers(0, 7))}."]
            text = "".join(words)
            ends = list(np.cumsum([len(w) for w in words]))
            samples.append(Sample(problem_id=p.id, sample_index=j, prompt=p.question, prompt_ids=[1],
                                  token_ids=list(range(2, 2 + len(words))), logprobs=[-0.5] * len(words),
                                  token_end_chars=[int(e) for e in ends], text=text, finish_reason="stop",
                                  model="tiny", backend="test", sampling={}, seed=0))
    files = {name: tmp_path / f"{name}.jsonl" for name in ("problems", "samples", "splits", "scores", "a", "b")}
    for name, recs in (("problems", problems), ("samples", samples),
                       ("splits", split_samples(samples, "fixed", SplitParams(k=3)))):
        with JsonlWriter(files[name], fsync=False) as w:
            w.write_all(recs)
    rules = ["prm-min", "prm-last", "majority"]
    srv = _serve(out)
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        assert main(["bon", str(files["samples"]), "--prm-server", url, "--prm", str(out), "--splits",
                     str(files["splits"]), "--problems", str(files["problems"]), "--rules", *rules,
                     "--out", str(files["a"])]) == 0
    finally:
        srv.shutdown()
        srv.server_close()
    assert main(["score", str(files["samples"]), "--splits", str(files["splits"]), "--prm", str(out.parent / "prm"),
                 "--problems", str(files["problems"]), "--out", str(files["scores"])]) == 0
    assert main(["bon", str(files["samples"]), str(files["scores"]), "--problems", str(files["problems"]),
                 "--rules", *rules, "--out", str(files["b"])]) == 0
    capsys.readouterr()
    a = [(c.problem_id, c.rule, c.chosen) for c in read_records(files["a"], BonChoice)]
    b = [(c.problem_id, c.rule, c.chosen) for c in read_records(files["b"], BonChoice)]
    assert a == b and len(a) == len(problems) * len(rules)


def test_cli_tvd_through_prm_server_decodes_what_the_local_prm_decodes(
        prm_and_export, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`tvd --prm-server URL` = `tvd --prm DIR`: the same tokens, interventions and PRM calls per problem."""
    from fakes import FakeBackend

    import adaptivestep.cli as cli
    from adaptivestep.jsonl import JsonlWriter, read_records
    from adaptivestep.records import Problem, TVDRecord

    _, out = prm_and_export
    pfile = tmp_path / "problems.jsonl"
    with JsonlWriter(pfile, fsync=False) as w:
        w.write_all(Problem(id=f"p{i}", question=f"add {i} and {i}", kind="math", answer=str(2 * i))
                    for i in range(3))
    monkeypatch.setattr(cli, "_open_backend", lambda a: FakeBackend())
    common = ["tvd", "--task", str(pfile), "--max-tokens", "16", "--k", "3", "--threshold", "0.99"]
    srv = _serve(out)
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        assert cli.main([*common, "--prm-server", url, "--prm", str(out), "--out", str(tmp_path / "a.jsonl")]) == 0
    finally:
        srv.shutdown()
        srv.server_close()
    assert cli.main([*common, "--prm", str(out.parent / "prm"), "--out", str(tmp_path / "b.jsonl")]) == 0
    capsys.readouterr()
    a, b = ([(r.problem_id, r.token_ids, r.interventions, r.prm_items) for r in read_records(tmp_path / f, TVDRecord)]
            for f in ("a.jsonl", "b.jsonl"))
    assert a == b and len(a) == 3
    assert sum(r[2] for r in a) > 0  # threshold 0.99: the PRM was consulted, so its scores steered the tokens
