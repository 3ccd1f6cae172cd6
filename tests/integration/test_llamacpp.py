"""llama.cpp backend on real GGUF models: exact log-probs, prefix reuse, batching independence, limits.

Run with ``pytest -m integration tests/integration/test_llamacpp.py``. Uses the fast SmolLM2-135M where the
model does not matter and the embedded Qwen2.5-Coder-0.5B for its chat template and EOS behaviour.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("llama_cpp")

from adaptivestep.backends.base import Backend, GenRequest, SamplingConfig
from adaptivestep.backends.llamacpp import LlamaCppBackend, cpu_has_amx
from adaptivestep.embedded_models import ModelError, embedded_model_path

pytestmark = pytest.mark.integration

# One thread: ggml's worker threads spin at barriers, so on a shared, oversubscribed CPU two threads can
# be 100x slower than one. Results do not depend on the thread count.
THREADS = 1


def _path(name: str):
    try:
        return embedded_model_path(name)
    except ModelError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def smol() -> LlamaCppBackend:
    be = LlamaCppBackend(_path("smollm2-135m"), n_ctx=2048, n_seq_max=16, n_threads=THREADS)
    yield be
    be.close()


@pytest.fixture(scope="module")
def qwen() -> LlamaCppBackend:
    be = LlamaCppBackend(_path("qwen2.5-coder-0.5b"), n_ctx=2048, n_seq_max=8, n_threads=THREADS)
    yield be
    be.close()


def _prompt(be: LlamaCppBackend, q: str) -> tuple[int, ...]:
    return tuple(be.tokenize(be.chat_prompt(q)))


def test_protocol_and_chat_template(qwen: LlamaCppBackend) -> None:
    assert isinstance(qwen, Backend)
    text = qwen.chat_prompt("What is 2+3?", system="Be brief.")
    assert text.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>system\nBe brief.<|im_end|>" in text
    ids = qwen.tokenize(text)
    # special tokens parsed (one id each), no BOS added for Qwen
    assert ids[0] == qwen.tokenize("<|im_start|>")[0] and len(qwen.tokenize("<|im_start|>")) == 1
    assert qwen.detokenize(ids) == text
    assert qwen.is_eos(qwen.tokenize("<|im_end|>")[0])
    assert not qwen.is_eos(qwen.tokenize("Hello")[0])


def test_generation_logprobs_equal_teacher_forced_score(qwen: LlamaCppBackend) -> None:
    p = _prompt(qwen, "Name three colours.")
    gens = qwen.generate([GenRequest(p, n=3, seed=1, config=SamplingConfig(max_tokens=12))])[0]
    assert len(gens) == 3
    for g in gens:
        assert len(g.token_ids) == len(g.logprobs) == len(g.token_end_chars) > 0
        s = qwen.score(p, g.token_ids)
        np.testing.assert_allclose(g.logprobs, s, atol=1e-3)
        assert all(x <= 0 for x in g.logprobs)


def test_score_is_chunk_independent(smol: LlamaCppBackend) -> None:
    small = LlamaCppBackend(smol.model_id, n_ctx=512, n_batch=7, n_seq_max=2, n_threads=THREADS)
    try:
        p = _prompt(smol, "Tell me about the sea.")
        toks = smol.tokenize(" The sea is large and deep, and many fish live in it.")
        np.testing.assert_allclose(small.score(p, toks), smol.score(p, toks), atol=1e-3)
    finally:
        small.close()


def test_next_logprobs_match_generation_and_top_alternatives(smol: LlamaCppBackend) -> None:
    p = _prompt(smol, "Write a haiku about rain.")
    g = smol.generate([GenRequest(p, seed=3, config=SamplingConfig(max_tokens=8, top_logprobs=4))])[0][0]
    assert g.top_logprobs is not None and len(g.top_logprobs) == len(g.token_ids)
    for k in (0, 3, len(g.token_ids) - 1):
        lp = smol.next_logprobs(p + tuple(g.token_ids[:k]))
        assert lp.shape == (smol.n_vocab,)
        assert abs(float(np.logaddexp.reduce(lp))) < 1e-6  # normalised
        assert lp[g.token_ids[k]] == pytest.approx(g.logprobs[k], abs=1e-3)
        top = np.argsort(-lp)[:4]
        assert [int(i) for i, _ in g.top_logprobs[k]][:2] == [int(i) for i in top[:2]]
        np.testing.assert_allclose([x for _, x in g.top_logprobs[k]], lp[top], atol=1e-3)


def test_greedy_is_argmax_and_prefix_continuation_reproduces_tail(smol: LlamaCppBackend) -> None:
    p = _prompt(smol, "List the days of the week.")
    cfg = SamplingConfig(temperature=0.0, max_tokens=16, top_logprobs=1)
    full = smol.generate([GenRequest(p, config=cfg)])[0][0]
    assert all(t == top[0][0] for t, top in zip(full.token_ids, full.top_logprobs or []))
    k = 5
    cont = smol.generate([GenRequest(p + tuple(full.token_ids[:k]), config=cfg)])[0][0]
    n = len(full.token_ids) - k  # cont may run past full's max_tokens
    assert cont.token_ids[:n] == full.token_ids[k:]
    np.testing.assert_allclose(cont.logprobs[:n], full.logprobs[k:], atol=1e-3)
    # the prefix was cached by the first call: only its last token is run again (for its logits)
    assert cont.prompt_tokens_evaluated == 1


def test_n_continuations_evaluate_prefix_once(smol: LlamaCppBackend) -> None:
    smol.reset_cache()
    p = _prompt(smol, "Describe a cat in one sentence.")
    gens = smol.generate([GenRequest(p, n=8, seed=5, config=SamplingConfig(max_tokens=6))])[0]
    assert [g.prompt_tokens_evaluated for g in gens] == [len(p)] + [0] * 7
    assert len({tuple(g.token_ids) for g in gens}) > 1  # different random streams
    again = smol.generate([GenRequest(p, n=2, seed=5, config=SamplingConfig(max_tokens=6))])[0]
    assert sum(g.prompt_tokens_evaluated for g in again) == 1  # reused across calls
    assert [g.token_ids for g in again] == [g.token_ids for g in gens[:2]]


def test_same_seed_same_tokens_regardless_of_batching(smol: LlamaCppBackend) -> None:
    cfg = SamplingConfig(max_tokens=10)
    a = GenRequest(_prompt(smol, "Why is the sky blue?"), n=2, seed=11, config=cfg)
    b = GenRequest(_prompt(smol, "Say something about trees."), n=6, seed=12, config=cfg)  # 9 rows: 2 groups
    c = GenRequest(_prompt(smol, "Count to five."), n=1, seed=13, config=SamplingConfig(max_tokens=4))
    smol.reset_cache()
    alone = smol.generate([a])[0]
    smol.reset_cache()
    batched = smol.generate([b, a, c])
    assert [g.token_ids for g in batched[1]] == [g.token_ids for g in alone]
    for x, y in zip(batched[1], alone):
        np.testing.assert_allclose(x.logprobs, y.logprobs, atol=1e-3)
    assert [len(r) for r in batched] == [6, 2, 1]
    # first_index: continuations 2..5 asked for alone are b's 2..5 (a resumed job's rollouts), not 0..3 again
    tail = smol.generate([GenRequest(b.prompt_ids, n=4, seed=12, first_index=2, config=cfg)])[0]
    assert [g.token_ids for g in tail] == [g.token_ids for g in batched[0][2:]]


def test_eos_stop_string_and_text_offsets(qwen: LlamaCppBackend) -> None:
    p = _prompt(qwen, "Reply with only the word: yes")
    g = qwen.generate([GenRequest(p, config=SamplingConfig(temperature=0.0, max_tokens=20))])[0][0]
    assert g.finish_reason == "stop" and qwen.is_eos(g.token_ids[-1])
    assert "<|im_end|>" not in g.text and g.text.strip().lower().startswith("yes")
    assert g.token_end_chars[-1] == len(g.text)
    assert all(x <= y for x, y in zip(g.token_end_chars, g.token_end_chars[1:]))

    p2 = _prompt(qwen, "Count from 1 to 20, separated by commas.")
    s = qwen.generate([GenRequest(p2, config=SamplingConfig(temperature=0.0, max_tokens=40, stop=("5,",)))])[
        0
    ][0]
    assert s.finish_reason == "stop" and "5," in s.text and "6" not in s.text
    ln = qwen.generate([GenRequest(p2, config=SamplingConfig(temperature=0.0, max_tokens=3))])[0][0]
    assert ln.finish_reason == "length" and len(ln.token_ids) == 3
    assert s.token_ids[:3] == ln.token_ids


def test_context_limits(smol: LlamaCppBackend) -> None:
    be = LlamaCppBackend(smol.model_id, n_ctx=256, n_seq_max=2, n_threads=THREADS)
    try:
        assert be.n_ctx == 256
        filler = tuple(be.tokenize(" word" * 400))
        with pytest.raises(ValueError, match="too long"):
            be.generate([GenRequest(filler[: be.n_ctx])])
        p = filler[: be.n_ctx - 5]
        g = be.generate([GenRequest(p, config=SamplingConfig(max_tokens=50))])[0][0]
        assert g.finish_reason in ("length", "stop") and len(g.token_ids) <= 5
        if g.finish_reason == "length":
            assert len(g.token_ids) == 5
    finally:
        be.close()


def test_sequence_turnover_matches_roomy_backend(smol: LlamaCppBackend) -> None:
    """9 continuations on 2 sequences: slots are recycled, prefixes copied and cut back, caches of earlier
    calls reused - and every token and log-prob is still bit-identical to 16 sequences running at once.
    (Guards the cell-order bug of unified KV caches, see the module docstring of the backend.)"""
    reqs = [
        GenRequest(_prompt(smol, "Write a story."), n=5, seed=21, config=SamplingConfig(max_tokens=20)),
        GenRequest(_prompt(smol, "Name a fruit."), n=3, seed=22, config=SamplingConfig(max_tokens=12)),
        GenRequest(_prompt(smol, "Write a story."), n=1, seed=23, config=SamplingConfig(max_tokens=8)),
    ]
    small = LlamaCppBackend(smol.model_id, n_ctx=512, n_seq_max=2, n_threads=THREADS)
    try:
        small.generate(reqs[1:2])  # leave stale caches behind
        got = small.generate(reqs)
    finally:
        small.close()
    smol.reset_cache()
    ref = smol.generate(reqs)
    for g_req, r_req in zip(got, ref):
        assert [g.token_ids for g in g_req] == [r.token_ids for r in r_req]
        assert [g.logprobs for g in g_req] == [r.logprobs for r in r_req]


def test_exact_mode_is_batch_shape_independent(qwen: LlamaCppBackend) -> None:
    assert qwen.exact and qwen.rows_per_decode <= 7
    assert qwen.check_exact() == 0.0


def test_long_continuation_is_independent_of_batch_and_threads(smol: LlamaCppBackend) -> None:
    """A continuation past 256 cached tokens, drawn alone (1 row per decode call) or beside others, with 1 or
    2 threads: the same tokens and log-probs bit for bit. (Regression: CPU flash attention split a lone
    query's keys across threads once the cache passed 256 cells, so a resumed job's rollouts drifted.)"""
    p = tuple(smol.tokenize(smol.chat_prompt("Summarise: " + "the cat sat on the mat and looked around. " * 24)))
    assert 256 < len(p) < 300
    cfg = SamplingConfig(max_tokens=40)
    two = LlamaCppBackend(smol.model_id, n_ctx=512, n_seq_max=4, n_threads=2)
    try:
        alone = two.generate([GenRequest(p, n=1, first_index=1, seed=3, config=cfg)])[0][0]
        two.reset_cache()
        batched = two.generate([GenRequest(p, n=4, seed=3, config=cfg)])[0][1]
    finally:
        two.close()
    smol.reset_cache()
    one_thread = smol.generate([GenRequest(p, n=1, first_index=1, seed=3, config=cfg)])[0][0]
    assert len(alone.token_ids) > 10
    for g in (batched, one_thread):
        assert g.token_ids == alone.token_ids
        assert g.logprobs == alone.logprobs


def test_fast_mode_generates_with_one_prefix_evaluation(smol: LlamaCppBackend) -> None:
    fast = LlamaCppBackend(smol.model_id, n_ctx=512, n_seq_max=8, exact=False, n_threads=THREADS)
    try:
        assert not fast.exact and fast.rows_per_decode == fast.n_batch
        assert fast.extra_bufts is not cpu_has_amx()  # AMX's weight buffer crashes llama_decode (docstring)
        p = _prompt(fast, "Describe a dog.")
        gens = fast.generate([GenRequest(p, n=8, seed=2, config=SamplingConfig(max_tokens=6))])[0]
        assert [g.prompt_tokens_evaluated for g in gens] == [len(p)] + [0] * 7
        for g in gens:  # not bit-exact across batch shapes, but the same model distribution
            np.testing.assert_allclose(fast.score(p, g.token_ids), g.logprobs, atol=0.3)
    finally:
        fast.close()


def test_bad_input_is_rejected(smol: LlamaCppBackend) -> None:
    with pytest.raises(ValueError, match="empty"):
        smol.generate([GenRequest(())])
    with pytest.raises(ValueError, match="vocabulary"):
        smol.score([1, 2], [smol.n_vocab + 5])
