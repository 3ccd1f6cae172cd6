"""The tiny random Qwen2 causal LM + byte-level BPE tokenizer (with a chat template) that the PRM, export and
fault tests build: one builder, so the fixtures cannot drift apart."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

CHAT = (
    "{% for m in messages %}<|user|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def save_tiny_qwen2(d: Path, corpus: Sequence[str], *, vocab_size: int = 400, chat: str = CHAT,
                    max_positions: int = 512, seed: int = 0) -> Path:
    """Train a BPE tokenizer of ``vocab_size`` on ``corpus``, save it and a random 2-layer Qwen2 (hidden 32) in
    ``d`` (an HF directory); returns ``d``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(list(corpus), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<eos>", "<|user|>", "<|assistant|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>")
    tok.chat_template = chat
    tok.save_pretrained(d)
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                      tie_word_embeddings=True)
    Qwen2ForCausalLM(cfg).save_pretrained(d)
    return d
