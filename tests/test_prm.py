"""PRM model / training / scoring on a tiny random Qwen2 model and a small BPE tokenizer built in tmp."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from tiny_models import CHAT, save_tiny_qwen2

from adaptivestep.jsonl import DataError
from adaptivestep.prm.data import (
    StepExample,
    chunk_layout,
    encode_item,
    layout,
    load_examples,
    render_prompt,
    roc_auc,
    split_examples,
)
from adaptivestep.prm.model import PRM, BackboneError, collate, step_bce_loss
from adaptivestep.prm.train import TrainConfig, train
from adaptivestep.scoring import StepScorer

WORDS = [
    "the",
    "answer",
    "is",
    "so",
    "we",
    "add",
    "and",
    "then",
    "multiply",
    "by",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "good",
    "bad",
    "step",
    "total",
]


def _corpus() -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(12)) + f" {i} + {i * 3} = {i * 4}." for i in range(200)]


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2 causal LM + byte-level BPE tokenizer with a chat template, saved as an HF dir."""
    return save_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"), _corpus(), chat=CHAT)


@pytest.fixture(scope="module")
def prm(backbone: Path) -> PRM:
    torch.manual_seed(1)
    return PRM.from_backbone(backbone, device="cpu", max_length=256)


def _records(path: Path, n: int = 24, seed: int = 0, soft: bool = False) -> Path:
    """Separable toy set: a step ending in ' good.' is labelled 1, ' bad.' 0 (0.25 / 0.75 when soft)."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n):
            steps, labels = [], []
            for _ in range(rng.randint(2, 4)):
                ok = rng.random() < 0.5
                body = " ".join(rng.choice(WORDS[:10]) for _ in range(rng.randint(2, 6)))
                steps.append(f" {body} {'good' if ok else 'bad'}.")
                labels.append((0.75 if ok else 0.25) if soft else (1.0 if ok else 0.0))
            rec = {
                "prompt": f"question {i % 8}: add {i} and {i + 1}",
                "completions": steps,
                "labels": labels,
                "problem_id": f"p{i % 8}",
                "sample_index": i,
                "label_type": "soft" if soft else "hard",
            }
            f.write(json.dumps(rec) + "\n")
    return path


# ----------------------------------------------------------------------------------------- layout


def test_step_end_positions_are_last_token_of_each_step(prm: PRM) -> None:
    tok = prm.tokenizer
    steps = [" we add two", " and three", "", " so the answer is 5."]
    (c,) = encode_item(tok, "add 2 and 3", steps, prompt_format="chat", max_length=256)
    prompt_ids = tok(render_prompt(tok, "add 2 and 3", "chat"), add_special_tokens=False)["input_ids"]
    assert c.input_ids[: len(prompt_ids)] == prompt_ids
    pos = len(prompt_ids)
    for k, s in enumerate(steps):
        piece = tok(s, add_special_tokens=False)["input_ids"]
        pos += len(piece)
        assert c.positions[k] == pos - 1  # an empty step shares the previous step's end
        if piece:
            assert c.input_ids[pos - len(piece) : pos] == piece
    assert len(c.input_ids) == pos


def test_hidden_state_read_at_step_end_matches_prefix_run(prm: PRM) -> None:
    steps = [" we add two", " and three", " so the answer is 5."]
    feats = prm.features_batch([("add 2 and 3", steps)])[0]  # (K, H)
    (c,) = encode_item(prm.tokenizer, "add 2 and 3", steps, prompt_format="chat", max_length=256)
    with torch.no_grad():
        for k, p in enumerate(c.positions):
            ids = torch.tensor([c.input_ids[: p + 1]])
            h = prm.network.decoder(input_ids=ids).last_hidden_state[0, -1].numpy()
            np.testing.assert_allclose(feats[k], h, atol=1e-5)


def test_chat_prompt_already_rendered_is_kept(prm: PRM) -> None:
    tok = prm.tokenizer
    rendered = render_prompt(tok, "what is 2+2?", "chat")
    assert rendered.startswith("<|user|>") and rendered.endswith("<|assistant|>")
    assert render_prompt(tok, rendered, "chat") == rendered
    assert render_prompt(tok, "q", "plain") == "q\n"


def test_layout_and_chunking_pure() -> None:
    ids, ends = layout([9], [[1, 2], [3], [4, 5, 6]])
    assert ids == [9, 1, 2, 3, 4, 5, 6] and ends == [2, 3, 6]
    chunks = chunk_layout(ids, ends, 3)
    seen = sorted(k for c in chunks for k in c.step_indices)
    assert seen == [0, 1, 2]  # every step in exactly one chunk
    for c in chunks:
        assert len(c.input_ids) <= 3
        for k, p in zip(c.step_indices, c.positions):
            assert c.input_ids[p] == ids[ends[k]]  # same token as in the full layout
    with pytest.raises(ValueError, match="rec.jsonl:3"):
        chunk_layout([], [-1], 4, where="rec.jsonl:3")


# ---------------------------------------------------------------------------------------- scoring


def _items(rng: random.Random, n: int, same_question: bool = False) -> list[tuple[str, list[str]]]:
    out = []
    for i in range(n):
        q = "shared question: add 3 and 4" if same_question else f"question {i}: add {i} and {i * 2}"
        steps = [
            " " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 9)))
            for _ in range(rng.randint(1, 5))
        ]
        out.append((q, steps))
    return out


@pytest.mark.parametrize("share", [True, False])
def test_batched_scores_equal_one_at_a_time(prm: PRM, share: bool) -> None:
    rng = random.Random(3)
    items = _items(rng, 7) + _items(rng, 6, same_question=True)
    prm.share_prefix = share
    prm.batch_size = 4
    try:
        batched = prm.score_batch(items)
        single = [prm.score(q, s) for q, s in items]
    finally:
        prm.share_prefix = True
    assert [len(b) for b in batched] == [len(s) for _, s in items]
    for b, s in zip(batched, single):
        np.testing.assert_allclose(b, s, atol=1e-5)
        assert all(0.0 <= x <= 1.0 for x in b)


def test_prefix_sharing_path_is_used_and_exact(prm: PRM) -> None:
    rng = random.Random(4)
    items = _items(rng, 5, same_question=True)
    chunks = [
        c
        for i, (q, s) in enumerate(items)
        for c in encode_item(prm.tokenizer, q, s, prompt_format="chat", max_length=256, item=i)
    ]
    shared, single = prm._plan(chunks)
    assert shared and not single
    prm.share_prefix = False
    try:
        plain = prm.score_batch(items)
    finally:
        prm.share_prefix = True
    for a, b in zip(prm.score_batch(items), plain):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_prm_is_a_step_scorer(prm: PRM) -> None:
    assert isinstance(prm, StepScorer)
    out = prm.score_batch([("q", []), ("q", [" a step"]), ("q", [])])
    assert [len(x) for x in out] == [0, 1, 0]


def test_left_truncation_warns_and_keeps_every_step(prm: PRM, caplog: pytest.LogCaptureFixture) -> None:
    steps = [" " + " ".join(["seven"] * 6) + f" {k}." for k in range(12)]
    full = prm.score("a long one", steps)
    old = prm.config.max_length
    prm.config.max_length = 24
    try:
        with caplog.at_level(logging.WARNING):
            short = prm.score("a long one", steps)
    finally:
        prm.config.max_length = old
    assert "truncated from the left" in caplog.text and "item 0" in caplog.text
    assert len(short) == len(steps) and all(np.isfinite(short))
    assert not np.allclose(short, full, atol=1e-7)  # context really was cut


# --------------------------------------------------------------------------------------- training


def test_soft_labels_stay_floats(tmp_path: Path) -> None:
    ex = load_examples(_records(tmp_path / "soft.jsonl", n=4, soft=True), "soft")
    assert {x for e in ex for x in e.labels} <= {0.25, 0.75}
    hard = load_examples(tmp_path / "soft.jsonl", "hard")  # derived: any correct rollout -> 1.0
    assert {x for e in hard for x in e.labels} == {1.0}
    logits = torch.tensor([[0.3, -1.2]])
    mask = torch.ones_like(logits, dtype=torch.bool)
    l25 = step_bce_loss(logits, torch.tensor([[0.25, 0.25]]), mask)
    l0 = step_bce_loss(logits, torch.tensor([[0.0, 0.0]]), mask)
    l1 = step_bce_loss(logits, torch.tensor([[1.0, 1.0]]), mask)
    assert abs(float(l25) - float(l0)) > 1e-3 and abs(float(l25) - float(l1)) > 1e-3
    batch = collate([encode_item_stub([1, 2, 3], [2])], [[0.25]])
    assert batch["labels"].dtype == torch.float32 and float(batch["labels"][0, 0]) == 0.25


def encode_item_stub(ids: list[int], positions: list[int]):
    from adaptivestep.prm.data import Chunk

    return Chunk(ids, positions, list(range(len(positions))))


def test_head_training_fits_separable_set_and_round_trips(backbone: Path, tmp_path: Path) -> None:
    data = _records(tmp_path / "train.jsonl", n=40)
    out = tmp_path / "prm-head"
    cfg = TrainConfig(
        mode="head",
        output_dir=str(out),
        eval_fraction=0.25,
        feature_cache=str(tmp_path / "cache"),
        max_length=256,
    )
    m = train(cfg, data, backbone)
    assert m["history"] and all(np.isfinite(h["cv_auc"]) for h in m["history"])
    assert m["head_l2"] in [h["l2"] for h in m["history"]]
    assert m["n_eval_records"] > 0 and m["eval_auc"] > 0.9, m
    for f in ("prm_config.json", "head.safetensors", "README.md", "tokenizer.json", "train_metrics.json"):
        assert (out / f).is_file(), f
    card = (out / "README.md").read_text()
    assert "label type: hard" in card and "train.jsonl" in card and "eval_auc" in card
    assert json.loads((out / "prm_config.json").read_text())["backbone"] == str(backbone.resolve())
    # features come from the cache the second time
    m2 = train(cfg, data, backbone)
    assert m2["features_cached"] and not m["features_cached"]
    loaded = PRM.load(out, device="cpu")
    items = [(e.question, e.steps) for e in load_examples(data)[:5]]
    np.testing.assert_allclose(
        np.concatenate(loaded.score_batch(items)), np.concatenate(PRM.load(out).score_batch(items)), atol=0
    )
    trained = PRM.from_backbone(backbone, max_length=256)
    trained.network.head.load_state_dict(loaded.network.head.state_dict())
    np.testing.assert_allclose(
        np.concatenate(trained.score_batch(items)), np.concatenate(loaded.score_batch(items)), atol=1e-6
    )
    # without its tokenizer files (how the package ships heads) it takes the backbone's: same scores
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("prm_config.json", "head.safetensors"):
        (bare / f).write_bytes((out / f).read_bytes())
    np.testing.assert_allclose(
        np.concatenate(PRM.load(bare).score_batch(items)), np.concatenate(loaded.score_batch(items)), atol=0
    )


def test_save_leaves_out_the_tokenizer_of_an_embedded_backbone_only(prm: PRM, tmp_path: Path) -> None:
    # a head on an embedded backbone loads that backbone's own tokenizer (PRM.load): no copy is written
    prm.save(tmp_path / "own")
    assert (tmp_path / "own" / "tokenizer.json").is_file()
    named = PRM(prm.network, prm.tokenizer, replace(prm.config, backbone="smollm2-135m"), device="cpu")
    named.save(tmp_path / "embedded")
    assert (tmp_path / "embedded" / "head.safetensors").is_file()
    assert not list((tmp_path / "embedded").glob("tokenizer*"))
    assert json.loads((tmp_path / "embedded" / "prm_config.json").read_text())["backbone"] == "smollm2-135m"


def test_soft_label_training_gives_a_different_head(backbone: Path, tmp_path: Path) -> None:
    hard = _records(tmp_path / "hard.jsonl", n=16)
    soft = _records(tmp_path / "soft.jsonl", n=16, soft=True)
    common = {
        "mode": "head",
        "eval_fraction": 0.0,
        "epochs": 50,
        "lr": 0.05,
        "feature_cache": str(tmp_path / "c"),
    }
    mh = train(TrainConfig(output_dir=str(tmp_path / "h"), **common), hard, backbone)
    ms = train(TrainConfig(output_dir=str(tmp_path / "s"), label_type="soft", **common), soft, backbone)
    assert abs(mh["train_loss"] - ms["train_loss"]) > 1e-3  # soft targets change the loss (not floored)
    assert ms["train_loss"] > 0.4  # BCE against 0.25/0.75 targets cannot reach 0


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_lora_and_full_run_a_step_and_round_trip(backbone: Path, tmp_path: Path, mode: str) -> None:
    data = _records(tmp_path / "d.jsonl", n=12)
    out = tmp_path / f"prm-{mode}"
    cfg = TrainConfig(
        mode=mode,
        output_dir=str(out),
        max_steps=1,
        batch_size=2,
        eval_fraction=0.25,
        lr=1e-3,
        max_length=128,
        gradient_checkpointing=(mode == "full"),
    )
    m = train(cfg, data, backbone)
    assert m["global_steps"] == 1 and np.isfinite(m["train_loss"])
    assert m["step_losses"] == [pytest.approx(m["train_loss"], rel=1e-4)]  # one entry per optimizer step
    assert (out / ("adapter" if mode == "lora" else "backbone")).is_dir()
    assert 0.0 <= m["eval_auc"] <= 1.0 or np.isnan(m["eval_auc"])
    items = [(e.question, e.steps) for e in load_examples(data)[:3]]
    a = PRM.load(out, device="cpu").score_batch(items)
    b = [PRM.load(out, device="cpu").score(q, s) for q, s in items[:1]]
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)
    base = PRM.from_backbone(backbone, max_length=128)
    base.network.head.load_state_dict(PRM.load(out).network.head.state_dict())
    if mode == "full":  # decoder weights changed by the step
        assert not np.allclose(np.concatenate(base.score_batch(items)), np.concatenate(a), atol=1e-7)


def test_resume_from_checkpoint(backbone: Path, tmp_path: Path) -> None:
    data = _records(tmp_path / "d.jsonl", n=12)
    out = tmp_path / "prm-resume"
    cfg = TrainConfig(
        mode="full",
        output_dir=str(out),
        max_steps=2,
        save_steps=1,
        batch_size=2,
        eval_fraction=0.0,
        lr=1e-3,
        max_length=128,
    )
    m1 = train(cfg, data, backbone)
    assert m1["global_steps"] == 2
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
    cfg.max_steps, cfg.resume = 3, True
    m2 = train(cfg, data, backbone)
    assert m2["resumed_from"] and m2["resumed_from"].endswith("checkpoint-2")
    assert m2["global_steps"] == 3
    assert len(m2["step_losses"]) == 3 and m2["step_losses"][:2] == m1["step_losses"]  # the curve survives resume


# -------------------------------------------------------------------------------------- bad input


def test_bad_labels_and_empty_steps_name_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    good = {"prompt": "q", "completions": [" a"], "labels": [1.0]}
    p.write_text(json.dumps(good) + "\n" + json.dumps({**good, "labels": [1.5]}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: .*outside \[0, 1\]"):
        load_examples(p)
    p.write_text(json.dumps(good) + "\n\n" + json.dumps({**good, "completions": [], "labels": []}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:3: .*no steps"):
        load_examples(p)
    p.write_text(json.dumps({**good, "label_type": "hard"}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:1: .*soft"):
        load_examples(p, "soft")


def test_unloadable_backbone_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="no-such-model"):
        PRM.from_backbone(tmp_path / "no-such-model")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "qwen2"}')
    with pytest.raises(BackboneError, match="broken"):
        PRM.from_backbone(broken)
    with pytest.raises(ValueError, match="mode"):
        train(TrainConfig(mode="bogus"), tmp_path / "x.jsonl", broken)


# ---------------------------------------------------------------------------------------- metrics


def test_auc_matches_pairwise_count_with_ties() -> None:
    rng = np.random.default_rng(1)
    s = rng.integers(0, 5, size=60).astype(float)  # many ties
    y = rng.random(60)
    pos, neg = s[y >= 0.5], s[y < 0.5]
    brute = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
        len(pos) * len(neg)
    )
    assert roc_auc(s, y) == pytest.approx(brute)
    assert np.isnan(roc_auc([0.1, 0.2], [1.0, 1.0]))


def test_split_keeps_problems_together() -> None:
    ex = [StepExample("q", ["a"], [1.0], group=f"p{i % 5}") for i in range(20)]
    tr, ev = split_examples(ex, 0.2, seed=3)
    assert len(tr) + len(ev) == 20 and ev
    assert not {e.group for e in tr} & {e.group for e in ev}
    assert split_examples(ex, 0.2, seed=3)[1] == ev  # seeded


def test_head_training_with_extra_data_keeps_eval_to_the_primary_file(backbone: Path, tmp_path: Path) -> None:
    own = _records(tmp_path / "own.jsonl", n=16, seed=1)
    extra = tmp_path / "extra.jsonl"
    # the shipped-corpus role: other questions (q1xx), plus one question shared with the run's own file
    lines = [json.loads(x) for x in _records(tmp_path / "tmp.jsonl", n=24, seed=2).read_text().splitlines()]
    for r in lines:
        r["problem_id"] = "p0" if r["sample_index"] == 0 else f"q1{r['problem_id']}"
    extra.write_text("".join(json.dumps(r) + "\n" for r in lines))
    cfg = TrainConfig(mode="head", output_dir=str(tmp_path / "prm"), eval_fraction=0.25,
                      feature_cache=str(tmp_path / "cache"), max_length=256)
    alone = train(cfg, own, backbone)
    both = train(cfg, own, backbone, extra_data=[extra])
    # the eval side is the same questions of the own file, with or without extra data
    assert both["n_eval_records"] == alone["n_eval_records"] > 0
    held_p0 = both["n_extra_records"] == len(lines) - 1  # p0 went to eval: its extra record is dropped
    assert held_p0 or both["n_extra_records"] == len(lines)
    assert both["n_train_records"] == alone["n_train_records"] + both["n_extra_records"]
    assert both["extra_data"] == [str(extra)]
    again = train(cfg, own, backbone, extra_data=[extra])
    assert again["features_cached"]  # each file's features come from its own cache entry
    assert json.loads((tmp_path / "prm" / "train_metrics.json").read_text())["n_extra_records"] == again["n_extra_records"]
