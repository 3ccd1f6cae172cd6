"""HF backend on a tiny randomly initialised Llama + a byte-level BPE tokenizer built here (no download)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from adaptivestep.backends.base import Backend, GenRequest, SamplingConfig
from adaptivestep.backends.hf import HFBackend, TokenBytes, load_hf_model
from adaptivestep.embedded_models import ModelError

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "How many clips did Natalia sell altogether in April and May? The answer is 72.",
    "def add(a, b):\n    return a + b\n",
    "Größe, café, naïve - ünïcödé text 😀 and 数学",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(CORPUS, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(d)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=eos,
        initializer_range=0.3,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def hf(tiny_dir):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 32-wide model: thread hand-offs cost more than the matmuls on a busy CPU
    yield HFBackend(tiny_dir, device="cpu", max_batch=8)
    torch.set_num_threads(threads)


def _prompt(hf: HFBackend) -> list[int]:
    return hf.tokenize(hf.chat_prompt("How many clips did Natalia sell?"))


def test_protocol_and_text(hf: HFBackend) -> None:
    assert isinstance(hf, Backend) and hf.name == "hf"
    s = "Größe 😀 数学 <|im_end|> done"
    ids = hf.tokenize(s)
    assert hf.tok.convert_tokens_to_ids("<|im_end|>") in ids  # special tokens in text are parsed
    assert hf.detokenize(ids) == s
    prompt = hf.chat_prompt("hi", system="be brief")
    assert prompt.endswith("<|im_start|>assistant\n") and "be brief" in prompt
    assert hf.is_eos(hf.tok.eos_token_id) and not hf.is_eos(hf.tokenize("a")[0])


def test_token_bytes_split_multibyte(hf: HFBackend) -> None:
    tb = TokenBytes(hf.tok)
    assert tb.byte_level
    ids = hf.tokenize("😀")  # a 4-byte char the tiny vocab may split over several tokens
    assert tb.join(ids) == "😀".encode()


def test_generation_shapes_and_cost(hf: HFBackend) -> None:
    prompt = _prompt(hf)
    cfg = SamplingConfig(max_tokens=12, top_logprobs=3)
    (gens,) = hf.generate([GenRequest(tuple(prompt), n=3, seed=5, config=cfg)])
    assert len(gens) == 3
    assert sum(g.prompt_tokens_evaluated for g in gens) == len(prompt)
    for g in gens:
        n = len(g.token_ids)
        assert 1 <= n <= 12 and len(g.logprobs) == n == len(g.token_end_chars) == len(g.top_logprobs)
        assert g.finish_reason == ("stop" if hf.is_eos(g.token_ids[-1]) else "length")
        assert g.finish_reason == "stop" or n == 12
        assert all(lp <= 0 for lp in g.logprobs)
        assert g.token_end_chars == sorted(g.token_end_chars) and g.token_end_chars[-1] <= len(g.text)
        if "\ufffd" not in g.text:  # random weights may emit invalid UTF-8, which 'replace' lengthens
            assert g.token_end_chars[-1] == len(g.text)
        assert g.text == hf.detokenize([t for t in g.token_ids if not hf.is_eos(t)])
        for lp, top in zip(g.logprobs, g.top_logprobs, strict=True):
            assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1] and top[0][1] >= lp


def test_logprobs_match_score(hf: HFBackend) -> None:
    prompt = _prompt(hf)
    (gens,) = hf.generate([GenRequest(tuple(prompt), n=4, seed=1, config=SamplingConfig(max_tokens=20))])
    for g in gens:
        np.testing.assert_allclose(hf.score(prompt, g.token_ids), g.logprobs, atol=1e-4)
    nxt = hf.next_logprobs(prompt)
    assert nxt.shape == (hf.model.config.vocab_size,) and abs(np.exp(nxt).sum() - 1) < 1e-6
    assert abs(nxt[gens[0].token_ids[0]] - gens[0].logprobs[0]) < 1e-4


def test_determinism_independent_of_batching(tiny_dir, hf: HFBackend) -> None:
    prompt = tuple(_prompt(hf))
    cfg = SamplingConfig(max_tokens=10, temperature=1.0)
    (a,) = hf.generate([GenRequest(prompt, n=5, seed=7, config=cfg)])
    one = HFBackend.from_loaded(hf.model, hf.tok, str(tiny_dir), max_batch=2)
    b, c = one.generate(
        [GenRequest(prompt, n=5, seed=7, config=cfg), GenRequest(prompt, n=2, seed=7, config=cfg)]
    )
    for x, y in zip(a, b, strict=True):
        assert x.token_ids == y.token_ids
        np.testing.assert_allclose(x.logprobs, y.logprobs, atol=1e-5)
    assert [g.token_ids for g in c] == [g.token_ids for g in a[:2]]
    assert len({tuple(g.token_ids) for g in a}) > 1  # different j, different streams
    (d,) = hf.generate([GenRequest(prompt, n=2, seed=8, config=cfg)])
    assert [g.token_ids for g in d] != [g.token_ids for g in a[:2]]
    # a resumed job asks for continuations 3..4 only: it must get a's 3..4, not a's 0..1 again
    (e,) = hf.generate([GenRequest(prompt, n=2, seed=7, first_index=3, config=cfg)])
    assert [g.token_ids for g in e] == [g.token_ids for g in a[3:]]


def test_greedy_is_argmax(hf: HFBackend) -> None:
    prompt = _prompt(hf)
    (gens,) = hf.generate(
        [GenRequest(tuple(prompt), n=2, config=SamplingConfig(temperature=0.0, max_tokens=8))]
    )
    assert gens[0].token_ids == gens[1].token_ids
    ctx = list(prompt)
    for t in gens[0].token_ids:
        assert t == int(np.argmax(hf.next_logprobs(ctx)))
        ctx.append(t)


def test_stop_string(hf: HFBackend) -> None:
    prompt = tuple(_prompt(hf))
    cfg = SamplingConfig(max_tokens=24)
    # a seed whose continuation has two clean characters (random weights also emit invalid UTF-8) past the start
    for seed in range(20):
        (full,) = hf.generate([GenRequest(prompt, seed=seed, config=cfg)])[0:1][0]
        spots = [i for i in range(2, len(full.text) - 1) if "\ufffd" not in full.text[i : i + 2]]
        if spots:
            break
    else:
        pytest.skip("tiny model produced no text to stop on")
    stop = full.text[spots[0] : spots[0] + 2]
    (cut,) = hf.generate([GenRequest(prompt, seed=seed, config=SamplingConfig(max_tokens=24, stop=(stop,)))])[
        0
    ]
    n = len(cut.token_ids)
    assert cut.token_ids == full.token_ids[:n] and cut.finish_reason == "stop"
    # it stopped on the first token whose text completes the stop string
    assert stop in hf.detokenize(cut.token_ids) and stop not in hf.detokenize(cut.token_ids[:-1])
    assert stop in cut.text


def test_load_errors(tmp_path) -> None:
    with pytest.raises(ModelError):
        load_hf_model(tmp_path / "missing")
    with pytest.raises(ModelError):
        load_hf_model(tmp_path)  # no config.json
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ModelError):
        load_hf_model(tmp_path)  # config but no weights / tokenizer
    with pytest.raises(ValueError):
        load_hf_model(tmp_path, dtype="float8")


def test_bad_inputs(hf: HFBackend) -> None:
    with pytest.raises(ValueError):
        hf.score([], [1, 2])
    assert hf.score([1], []) == []
    with pytest.raises(ValueError):
        hf.generate([GenRequest((), n=1)])
