"""Math-Shepherd interop: reading, writing, round trip, and a tiny random Math-Shepherd-style PRM."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from adaptivestep.jsonl import DataError
from adaptivestep.prm.interop import (
    format_prm_input,
    parse_tagged,
    read_math_shepherd,
    tag_steps,
    to_math_shepherd,
    write_math_shepherd,
)
from adaptivestep.records import LabeledRecord

Q = "Janet has 3 apples and buys 2 more. How many apples does she have?"
INPUT = f"{Q} Step 1: She buys 2, so 3 + 2 = 5. ки\nStep 2: 5 - 1 = 4. ки\nStep 3: The answer is: 4 ки"
LABEL = f"{Q} Step 1: She buys 2, so 3 + 2 = 5. +\nStep 2: 5 - 1 = 4. -\nStep 3: The answer is: 4 -"
STEPS = ["Step 1: She buys 2, so 3 + 2 = 5.", "\nStep 2: 5 - 1 = 4.", "\nStep 3: The answer is: 4"]


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
        encoding="utf-8",
    )
    return path


def test_read_math_shepherd_input_and_label(tmp_path):
    p = _write_jsonl(tmp_path / "ms.jsonl", [{"input": INPUT, "label": LABEL, "task": "GSM8K"}])
    (r,) = list(read_math_shepherd(p))
    assert r.prompt == Q
    assert r.completions == STEPS
    assert r.labels == [1.0, 0.0, 0.0] and r.hard_labels == r.labels and r.label_type == "hard"
    assert r.problem_id == "ms:1" and r.meta["task"] == "GSM8K" and r.method == "math-shepherd"
    # The inner "+" / "-" of the maths are text, not labels; joining the steps gives the solution back.
    assert "".join(r.completions) == INPUT[len(Q) + 1 :].replace(" ки", "")


def test_read_label_only_records_and_question_heuristics(tmp_path):
    rows = [
        {"label": LABEL},  # label text alone
        {"input": "What is 2+2? It is 4. ки\nDone. ки", "label": "What is 2+2? It is 4. +\nDone. +"},  # '?'
        {"input": "Compute x. x is 1 ки", "label": "Compute x. x is 1 -", "question": "Compute x."},
        {
            "input": "Mr. Rocky sold 3. ки Step 1: ok ки",
            "label": "Mr. Rocky sold 3. + Step 1: ok -",
        },  # tag in Q
    ]
    recs = list(read_math_shepherd(_write_jsonl(tmp_path / "ms.jsonl", rows)))
    assert (recs[0].prompt, recs[0].completions, recs[0].labels) == (Q, STEPS, [1.0, 0.0, 0.0])
    assert (recs[1].prompt, recs[1].completions, recs[1].labels) == (
        "What is 2+2?",
        ["It is 4.", "\nDone."],
        [1.0, 1.0],
    )
    assert (recs[2].prompt, recs[2].completions, recs[2].labels) == ("Compute x.", ["x is 1"], [0.0])
    assert recs[3].prompt == "Mr. Rocky sold 3." and recs[3].completions == ["Step 1: ok"]
    assert recs[3].labels == [0.0] and recs[3].meta["dropped_labels"] == 1


def test_parse_tagged_keeps_trailing_whitespace_of_last_step():
    p = parse_tagged("Q? Step 1: a ки\nStep 2: b ки\n", [1.0, 1.0])
    assert p.steps == ["Step 1: a", "\nStep 2: b\n"]
    with pytest.raises(ValueError, match="no label"):
        parse_tagged("Q? Step 1: a ки tail", [1.0])


@pytest.mark.parametrize(
    "row, message",
    [
        ({"input": "No question mark a ки", "label": "No question mark a +"}, "where the question ends"),
        ({"input": "Q? Step 1: a ки", "label": "Q? Step 1: a *"}, "step 1: label text has '\\*'"),
        ({"input": "Q? Step 1: a ки", "label": "Q? Step 1: a +  "}, "characters, expected"),
        ({"input": "Q? Step 1: a", "label": "Q? Step 1: a"}, "no step tag"),
        ({"input": "Q? Step 1: a ки"}, "field 'label'"),
        ({"label": "Q? Step 1: a"}, "no step ending"),
        ({"input": 3, "label": "x"}, "field 'input' must be a string"),
        ("{not json", "malformed JSON"),
    ],
)
def test_bad_records_name_file_and_line(tmp_path, row, message):
    p = _write_jsonl(tmp_path / "ms.jsonl", [{"input": INPUT, "label": LABEL}, row])
    it = read_math_shepherd(p)
    next(it)
    with pytest.raises(DataError, match=rf"ms\.jsonl:2: .*{message}"):
        next(it)


def test_tagging_moves_trailing_whitespace_after_the_tag():
    text, spans = tag_steps(["Step 1: a\n", " mid-line", " end"])
    assert text == "Step 1: a ки\n mid-line ки end ки"
    assert [text[a:b] for a, b in spans] == [" ки"] * 3
    full, spans2 = format_prm_input("Q?", ["x"])
    assert full == "Q? x ки" and full[spans2[0][0] : spans2[0][1]] == " ки"


def _records() -> list[LabeledRecord]:
    return [
        LabeledRecord(
            prompt="A robe takes 2 bolts. How many?",
            completions=[" If the robe takes 2", " bolts, then 2/2 = 1.", "\nSo 3 in total.\n#### 3"],
            labels=[1.0, 0.625, 0.0],
            problem_id="gsm8k-7",
            sample_index=3,
            label_type="soft",
            meta={"task": "GSM8K"},
        ),
        LabeledRecord(
            prompt="What is 1+1?",
            completions=["Step 1: 1+1=2", "\nStep 2: The answer is: 2"],
            labels=[1.0, 1.0],
            problem_id="p2",
        ),
    ]


def test_write_then_read_round_trip(tmp_path):
    recs = _records()
    path = tmp_path / "out" / "ms.jsonl"
    assert write_math_shepherd(recs, path) == 2
    back = list(read_math_shepherd(path))
    for a, b in zip(recs, back):
        assert b.prompt == a.prompt and b.completions == a.completions
        assert (b.problem_id, b.sample_index) == (a.problem_id, a.sample_index)
        assert b.labels == [1.0 if v >= 0.5 else 0.0 for v in a.labels]  # soft labels thresholded
    assert back[0].labels == [1.0, 1.0, 0.0] and back[0].meta["task"] == "GSM8K"
    # The file is in Math-Shepherd's layout: same text, " ки" <-> " +" / " -".
    obj = json.loads(path.read_text(encoding="utf-8").splitlines()[1])
    assert obj["input"] == "What is 1+1? Step 1: 1+1=2 ки\nStep 2: The answer is: 2 ки"
    assert obj["label"] == "What is 1+1? Step 1: 1+1=2 +\nStep 2: The answer is: 2 +"
    # Without the question field, the "Step 1:" heuristic finds the same question.
    del obj["question"]
    (r,) = list(read_math_shepherd(_write_jsonl(tmp_path / "noq.jsonl", [obj])))
    assert r.prompt == "What is 1+1?" and r.completions == recs[1].completions


def test_write_threshold_and_tag_in_text():
    rec = _records()[0]
    assert to_math_shepherd(rec, threshold=0.7)["label"].count(" +") == 1
    assert to_math_shepherd(rec, threshold=0.6)["label"].count(" +") == 2
    bad = LabeledRecord(prompt="q", completions=["a ки b"], labels=[1.0])
    with pytest.raises(ValueError, match="step 0 contains the step tag"):
        to_math_shepherd(bad)


# --------------------------------------------------------------------------------------------- tiny PRM
WORDS = [
    "<pad>",
    "<unk>",
    "<s>",
    "</s>",
    "ки",
    "+",
    "-",
    "Step",
    "1",
    "2",
    "3",
    "4",
    "5",
    ":",
    "?",
    "=",
    ".",
    "What",
    "is",
    "the",
    "answer",
    "so",
    "a",
    "b",
    "x",
    "total",
]


@pytest.fixture(scope="module")
def tiny_prm(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(WORDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(WORDS),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # spread the label logits so the scores are far from 0.5 and differ by position
        model.lm_head.weight[vocab["+"]].mul_(20.0)
        model.lm_head.weight[vocab["-"]].mul_(20.0)
    d = tmp_path_factory.mktemp("tiny_prm")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


ITEMS = [
    ("What is 1 + 2 ?", ["Step 1 : 1 + 2 = 3\n", "Step 2 : the answer is 3"]),
    ("What is x ?", ["x = 5", " so the total is 5 .", " the answer is 5"]),
    ("What is 4 ?", ["4"]),
    ("What is b ?", []),
]


def test_math_shepherd_scorer_scores(tiny_prm):
    from adaptivestep.prm.interop import MathShepherdScorer
    from adaptivestep.scoring import StepScorer, score_one

    scorer = MathShepherdScorer(tiny_prm, device="cpu", batch_size=2)
    assert isinstance(scorer, StepScorer)
    batched = scorer.score_batch(ITEMS)
    assert [len(s) for s in batched] == [2, 3, 1, 0]
    flat = [x for s in batched for x in s]
    assert all(0.0 < x < 1.0 for x in flat) and max(flat) - min(flat) > 1e-3
    for (q, steps), got in zip(ITEMS, batched):
        assert score_one(scorer, q, steps) == pytest.approx(got, abs=1e-5)


def test_math_shepherd_scorer_matches_hand_computation(tiny_prm):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adaptivestep.prm.interop import MathShepherdScorer

    q, steps = ITEMS[1]
    text = (
        "What is x ? x = 5 ки so the total is 5 . ки the answer is 5 ки"  # built by hand, not by the library
    )
    tok = AutoTokenizer.from_pretrained(tiny_prm)
    model = AutoModelForCausalLM.from_pretrained(tiny_prm).eval()
    ids = torch.tensor([tok.encode(text)])
    with torch.no_grad():
        logits = model(ids).logits[0]  # (T, V)
    tag_pos = (ids[0] == WORDS.index("ки")).nonzero().flatten().tolist()
    assert len(tag_pos) == 3
    good, bad = WORDS.index("+"), WORDS.index("-")
    expected = [1 / (1 + math.exp(-(logits[t, good] - logits[t, bad]).item())) for t in tag_pos]
    got = MathShepherdScorer(tiny_prm, device="cpu").score_batch([(q, steps)])[0]
    assert got == pytest.approx(expected, abs=1e-5)
    # Swapping the label tokens turns P(good) into P(bad).
    swapped = MathShepherdScorer(tiny_prm, good_token="-", bad_token="+", device="cpu").score_batch(
        [(q, steps)]
    )[0]
    assert swapped == pytest.approx([1 - x for x in expected], abs=1e-5)


def test_math_shepherd_scorer_errors(tiny_prm, tmp_path):
    from adaptivestep.embedded_models import ModelError
    from adaptivestep.prm.interop import MathShepherdScorer

    with pytest.raises(ModelError, match="no config.json"):
        MathShepherdScorer(tmp_path / "missing")
    with pytest.raises(ValueError, match="good_token='zz' is not a single token"):
        MathShepherdScorer(tiny_prm, good_token="zz", device="cpu")
    with pytest.raises(ValueError, match="same token id"):
        MathShepherdScorer(tiny_prm, good_token="+", bad_token=WORDS.index("+"), device="cpu")
    scorer = MathShepherdScorer(tiny_prm, device="cpu")
    with pytest.raises(ValueError, match="more than the PRM's 128 positions"):
        scorer.score_batch([("What is x ?", ["x = 5 " * 50])])
