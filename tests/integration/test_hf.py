"""HF reference backend on the embedded Qwen2.5-Coder-0.5B GGUF, and its agreement with llama.cpp.

Run with ``pytest -m integration tests/integration/test_hf.py``. The first run converts the GGUF into an HF
directory under ``cache_dir()/hf`` (minutes on 2 cores); later runs reuse it. The llama.cpp half is skipped
when llama-cpp-python is not installed.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from adaptivestep.backends.base import Backend, GenRequest, SamplingConfig
from adaptivestep.backends.hf import HFBackend, converted_dir, gguf_to_hf
from adaptivestep.embedded_models import DEFAULT_MODEL, ModelError, embedded_model_path

pytestmark = pytest.mark.integration

QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many in total?"
)


@pytest.fixture(scope="module")
def gguf():
    try:
        return embedded_model_path(DEFAULT_MODEL)
    except ModelError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def hf(gguf) -> HFBackend:
    t = time.perf_counter()
    gguf_to_hf(gguf)  # converts on the first run only
    print(f"\nGGUF -> HF conversion (or cache hit): {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    be = HFBackend(DEFAULT_MODEL, device="cpu")
    print(f"HF load from the converted directory: {time.perf_counter() - t:.1f} s")
    yield be
    be.close()


@pytest.fixture(scope="module")
def llama(gguf):
    pytest.importorskip("llama_cpp")
    from adaptivestep.backends.llamacpp import LlamaCppBackend

    be = LlamaCppBackend(gguf, n_ctx=1024, n_seq_max=2)
    yield be
    be.close()


def test_conversion_is_cached(gguf, hf: HFBackend) -> None:
    d = converted_dir(gguf)
    assert (d / "config.json").exists() and (d / "tokenizer.json").exists()
    assert not list(d.parent.glob(f".{d.name}.tmp*"))  # no half-written directory left behind
    t = time.perf_counter()
    assert gguf_to_hf(gguf) == d
    assert time.perf_counter() - t < 5  # a cache hit, not a second conversion


def test_protocol_text_and_greedy(hf: HFBackend) -> None:
    assert isinstance(hf, Backend)
    text = hf.chat_prompt("What is 2+3?", system="Be brief.")
    assert text.endswith("<|im_start|>assistant\n") and "<|im_start|>system\nBe brief.<|im_end|>" in text
    ids = hf.tokenize(text)
    assert hf.detokenize(ids) == text
    assert hf.is_eos(hf.tokenize("<|im_end|>")[0]) and hf.is_eos(hf.tokenize("<|endoftext|>")[0])
    cfg = SamplingConfig(temperature=0.0, max_tokens=24)
    (g,) = hf.generate([GenRequest(tuple(hf.tokenize(hf.chat_prompt("What is 2+3?"))), config=cfg)])[0]
    assert "5" in g.text and g.finish_reason == "stop" and hf.is_eos(g.token_ids[-1])
    assert g.token_end_chars[-1] == len(g.text)


def test_logprobs_agree_with_llamacpp(hf: HFBackend, llama) -> None:
    prompt_text = llama.chat_prompt(QUESTION)
    assert hf.chat_prompt(QUESTION) == prompt_text  # the same template from the GGUF
    prompt = llama.tokenize(prompt_text)
    assert hf.tokenize(prompt_text) == prompt  # and the same tokenizer
    (g,) = hf.generate([GenRequest(tuple(prompt), n=1, seed=3, config=SamplingConfig(max_tokens=40))])[0]
    assert len(g.token_ids) >= 10
    hf_lp = np.array(hf.score(prompt, g.token_ids))
    np.testing.assert_allclose(hf_lp, g.logprobs, atol=1e-3)  # cached decoding == one teacher-forced pass
    ll_lp = np.array(llama.score(prompt, g.token_ids))
    diff = np.abs(hf_lp - ll_lp)
    print(
        f"\nHF vs llama.cpp on {len(diff)} tokens: mean |diff| {diff.mean():.4f} nats, max {diff.max():.4f}"
    )
    assert diff.mean() < 0.05
    assert (
        llama.detokenize(g.token_ids[:-1] if hf.is_eos(g.token_ids[-1]) else g.token_ids) in g.text + "\ufffd"
    )
