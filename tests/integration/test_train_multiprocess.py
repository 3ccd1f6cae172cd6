"""``accelerate launch --num_processes 2`` of ``train --mode lora|full`` on CPU (gloo) gives one process's loss curve.

The data set is 4 records of 2 steps each, and every optimizer step sees all of it: one process with
``--batch-size 4`` against two processes with ``--batch-size 2`` each (the same effective batch of 4). The
per-step loss is then the mean over the same 8 steps in both runs, whatever order the samplers draw in, so the
two curves may differ only by floating-point reduction order (DDP averages the two processes' gradients; the
logged loss is the mean of the processes' losses). A tiny random Qwen2 + BPE tokenizer is built in tmp; the
two runs take well under a minute each on 2 cores.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import adaptivestep

pytest.importorskip("accelerate")
pytest.importorskip("tokenizers")
pytestmark = pytest.mark.integration

WORDS = "alpha beta gamma delta add sum total carry apples pears each left so then".split()
CHAT = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<eos>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SRC = str(Path(adaptivestep.__file__).resolve().parents[1])  # the adaptivestep these tests import


def _tiny_backbone(d: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(12)) + f" {i} good. bad." for i in range(100)]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<pad>", "<eos>", "<|user|>", "<|assistant|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>")
    tok.chat_template = CHAT
    tok.save_pretrained(d)
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
    )
    Qwen2ForCausalLM(cfg).save_pretrained(d)
    return d


def _records(path: Path) -> Path:
    """4 records (4 problems) of exactly 2 steps each: equal step counts make mean-of-means = global mean."""
    rng = random.Random(1)
    with path.open("w") as f:
        for i in range(4):
            oks = [bool(i % 2), bool(i // 2)]
            steps = [" ".join(rng.choice(WORDS) for _ in range(3)) + (" good." if ok else " bad.") for ok in oks]
            rec = {
                "prompt": f"question {i}: add {i} and {i + 1}",
                "completions": steps,
                "labels": [1.0 if ok else 0.0 for ok in oks],
                "problem_id": f"p{i}",
                "sample_index": 0,
                "label_type": "hard",
            }
            f.write(json.dumps(rec) + "\n")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"  # one thread per process on the 2 shared cores
    env["CUDA_VISIBLE_DEVICES"] = ""  # CPU even on a GPU box: the test is about the gloo path
    env["ACCELERATE_USE_CPU"] = "true"
    return env


def _train(data: Path, backbone: Path, out: Path, mode: str, processes: int, batch_size: int) -> dict:
    train_args = [
        "-m", "adaptivestep.cli", "train", str(data), "--out", str(out), "--backbone", str(backbone),
        "--mode", mode, "--epochs", "5", "--lr", "5e-3" if mode == "lora" else "1e-3",
        "--batch-size", str(batch_size), "--max-length", "64", "--eval-fraction", "0", "--seed", "0",
        "--lora-dropout", "0",  # dropout masks depend on how the batch is split: off, so the curves can agree
    ]
    if processes == 1:
        cmd = [sys.executable, *train_args]
    else:
        # `accelerate launch` itself: --multi_gpu picks its torchrun launcher (--cpu alone would start only one
        # process); with no GPU in sight the Accelerator then sets up MULTI_CPU over gloo
        cmd = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
            *train_args,
        ]
    p = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"{' '.join(cmd)}\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    return json.loads((out / "train_metrics.json").read_text())


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_two_processes_match_one(tmp_path: Path, mode: str) -> None:
    backbone = _tiny_backbone(tmp_path / "tiny")
    data = _records(tmp_path / "labels.jsonl")
    one = _train(data, backbone, tmp_path / "one", mode, processes=1, batch_size=4)
    two = _train(data, backbone, tmp_path / "two", mode, processes=2, batch_size=2)
    a, b = one["step_losses"], two["step_losses"]
    assert len(a) == len(b) == 5, (a, b)  # 1 optimizer step per epoch: the whole set is one effective batch
    assert one["global_steps"] == two["global_steps"] == 5
    assert a[-1] < a[0] - 1e-3, a  # the curve moves, so agreeing is not trivial
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4, (a, b)
    # the trained PRM was written once, by the main process, and loads
    from adaptivestep.prm.model import PRM

    prm = PRM.load(tmp_path / "two", device="cpu")
    assert len(prm.score("question 0: add 0 and 1", [" alpha good.", " beta bad."])) == 2
