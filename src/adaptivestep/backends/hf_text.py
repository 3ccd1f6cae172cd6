"""Text side of the backends built on a Hugging Face tokenizer (transformers, vLLM): exact token bytes,
end-of-generation ids, chat prompts. No torch: the vLLM backend and the HF backend share it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from adaptivestep.embedded_models import ModelError

# Token strings llama.cpp also treats as end-of-generation; added to the EOS set when they are special tokens
# of the vocabulary, so both backends stop on the same tokens.
EOG_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>", "<EOT>")


# ------------------------------------------------------------------------------------------ token bytes


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table used by byte-level BPE vocabularies."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


_BYTE_DECODER = {c: b for b, c in _bytes_to_unicode().items()}
_HEX_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _component_types(node: Any) -> set[str]:
    """All ``type`` names in a tokenizers JSON component (Sequence components nest)."""
    if isinstance(node, dict):
        out = {node["type"]} if isinstance(node.get("type"), str) else set()
        for v in node.values():
            out |= _component_types(v)
        return out
    if isinstance(node, list):
        return set().union(*(_component_types(v) for v in node)) if node else set()
    return set()


class TokenBytes:
    """Exact bytes of each token id of a HF tokenizer (lazily cached per id)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tok = tokenizer
        self.added = {i: t.content for i, t in tokenizer.added_tokens_decoder.items()}
        backend = getattr(tokenizer, "backend_tokenizer", None)
        decoder = json.loads(backend.to_str()).get("decoder") if backend is not None else None
        self.byte_level = "ByteLevel" in _component_types(decoder)
        self.cache: dict[int, bytes] = {}

    def __call__(self, token_id: int) -> bytes:
        b = self.cache.get(token_id)
        if b is None:
            b = self.cache[token_id] = self._compute(token_id)
        return b

    def _compute(self, token_id: int) -> bytes:
        if token_id in self.added:
            return self.added[token_id].encode("utf-8")
        piece = self.tok.convert_ids_to_tokens(token_id)
        if piece is None:  # id beyond the tokenizer (padded embedding rows): renders as nothing
            return b""
        if self.byte_level:
            try:
                return bytes(_BYTE_DECODER[c] for c in piece)
            except KeyError:  # a non-byte-level piece in a byte-level vocab: take it literally
                return piece.encode("utf-8")
        m = _HEX_BYTE.match(piece)
        if m:  # SentencePiece byte fallback
            return bytes([int(m.group(1), 16)])
        if "▁" in piece:
            return piece.replace("▁", " ").encode("utf-8")
        return self.tok.decode(
            [token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False
        ).encode()

    def join(self, ids: Sequence[int], skip: Callable[[int], bool] | None = None) -> bytes:
        return b"".join(b"" if skip is not None and skip(t) else self(int(t)) for t in ids)


def collect_eos_ids(sources: Iterable[Any], tokenizer: Any) -> frozenset[int]:
    """EOS ids of a model: ``eos_token_id`` of each source (generation config, model config; None skipped) and of
    the tokenizer, plus the special end-of-turn tokens of :data:`EOG_TOKENS` that llama.cpp also stops on, so
    every backend ends a response at the same token."""
    ids: set[int] = set()
    for src in (*sources, tokenizer):
        e = getattr(src, "eos_token_id", None) if src is not None else None
        if e is not None:
            ids.update([e] if isinstance(e, int) else e)
    for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(t, "special", False) and t.content in EOG_TOKENS:
            ids.add(int(i))
    return frozenset(ids)


class TokenizerText:
    """The Backend Protocol's text methods over a HF tokenizer. The class using it sets ``tok`` (the tokenizer),
    ``token_bytes`` (:class:`TokenBytes` of it), ``eos_ids`` and ``model_id``."""

    tok: Any
    token_bytes: TokenBytes
    eos_ids: frozenset[int]
    model_id: str

    def tokenize(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.token_bytes.join(ids).decode("utf-8", errors="replace")

    def chat_prompt(self, user: str, system: str | None = None) -> str:
        msgs = ([{"role": "system", "content": system}] if system is not None else []) + [
            {"role": "user", "content": user}
        ]
        if not getattr(self.tok, "chat_template", None):
            raise ModelError(f"model {self.model_id}: the tokenizer has no chat template")
        return str(self.tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False))

    def is_eos(self, token_id: int) -> bool:
        return int(token_id) in self.eos_ids
