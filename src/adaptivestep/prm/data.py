"""PRM data: labelled records -> training examples, input layout (step-end positions), splits, metrics.

No torch here: everything is plain Python / numpy so it can be tested without a model. The tokenizer
arguments are duck-typed Hugging Face tokenizers (``__call__`` and ``apply_chat_template``).

Input layout (shared by training and scoring, so both see exactly the same tokens)::

    ids = tokenize(render_prompt(question)) + tokenize(step_1) + ... + tokenize(step_K)
    end[k] = index in ids of the LAST token of step k          # the PRM reads its hidden state there

Each piece is tokenized on its own (never across a step boundary), so the hidden state at ``end[k]``
depends on the question and steps ``1..k`` only - scoring a prefix (as token-level value-guided decoding
does) gives the same score as scoring that step inside a longer response. Breaks that fall mid-word
(AdaptiveStep does that) therefore tokenize slightly differently from the policy's own tokens; the PRM is
trained on this same layout, so this is consistent.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..jsonl import DataError, iter_json
from ..records import LabeledRecord, RecordError

log = logging.getLogger(__name__)

LabelType = Literal["hard", "soft"]
PromptFormat = Literal["chat", "plain"]
PROMPT_FORMATS: tuple[str, ...] = ("chat", "plain")


# ---------------------------------------------------------------------------------------------- examples


@dataclass
class StepExample:
    """One labelled response, ready for the PRM.

    question: the problem text (the record's ``prompt``), rendered by :func:`render_prompt` later.
    steps: step strings; concatenated they give the response.
    labels: one float in [0, 1] per step (never rounded: soft labels stay soft).
    where: ``file:line`` of the record, used in every error and warning about it.
    group: what train/eval splitting keeps together (the problem id, else the question).
    """

    question: str
    steps: list[str]
    labels: list[float]
    where: str = ""
    group: str = ""


def load_examples(path: str | Path, label_type: LabelType = "hard") -> list[StepExample]:
    """Read a :class:`~adaptivestep.records.LabeledRecord` JSONL file into examples.

    label_type "hard" uses hard labels (1.0 if any rollout from the step prefix reached a correct answer):
    ``hard_labels`` if present, else ``labels`` when the record's ``label_type`` is "hard", else they are
    derived from the soft labels (soft > 0 -> 1.0, which is the definition). "soft" uses the fraction of
    correct rollouts: ``soft_labels``, else ``labels`` of a soft record; a hard-only record is an error.
    Bad records raise :class:`~adaptivestep.jsonl.DataError` naming ``file:line``.
    """
    if label_type not in ("hard", "soft"):
        raise ValueError(f"label_type must be 'hard' or 'soft', got {label_type!r}")
    out: list[StepExample] = []
    for line, obj in iter_json(path):
        where = f"{path}:{line}"
        try:
            rec = LabeledRecord.from_dict(obj)
            labels = _pick_labels(rec, label_type)
        except (RecordError, TypeError) as e:
            raise DataError(f"{where}: {e}") from None
        out.append(
            StepExample(
                question=rec.prompt,
                steps=list(rec.completions),
                labels=labels,
                where=where,
                group=rec.problem_id or rec.prompt,
            )
        )
    if not out:
        raise DataError(f"{path}: no labelled records")
    return out


def _pick_labels(rec: LabeledRecord, label_type: str) -> list[float]:
    n = len(rec.completions)
    own = rec.label_type if rec.label_type in ("hard", "soft") else "hard"
    if label_type == "hard":
        if rec.hard_labels:
            labels = rec.hard_labels
        elif own == "hard":
            labels = rec.labels
        else:
            src = rec.soft_labels or rec.labels
            labels = [1.0 if float(v) > 0 else 0.0 for v in src]
    else:
        if rec.soft_labels:
            labels = rec.soft_labels
        elif own == "soft":
            labels = rec.labels
        else:
            raise RecordError(
                "label_type 'soft' requested but the record holds hard labels only (no soft_labels); "
                "train with label_type='hard' or relabel keeping soft labels"
            )
    if len(labels) != n:
        raise RecordError(f"{n} steps but {len(labels)} {label_type} labels")
    for i, v in enumerate(labels):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
            raise RecordError(f"{label_type} label {i} = {v!r} is outside [0, 1]")
    return [float(v) for v in labels]


def split_examples(
    examples: Sequence[StepExample], eval_fraction: float, seed: int
) -> tuple[list[StepExample], list[StepExample]]:
    """Seeded held-out split by group (problem id): all samples of one question land on the same side.

    About ``eval_fraction`` of the groups go to eval (at least one when the fraction is > 0 and there are
    two or more groups). With a single group the split falls back to records.

    >>> ex = [StepExample("q", ["a"], [1.0], group=str(i % 4)) for i in range(8)]
    >>> tr, ev = split_examples(ex, 0.25, seed=0)
    >>> len(tr), len(ev), {e.group for e in tr} & {e.group for e in ev}
    (6, 2, set())
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    if eval_fraction == 0.0 or len(examples) < 2:
        return list(examples), []
    groups = sorted({e.group for e in examples})
    rng = random.Random(seed)
    if len(groups) >= 2:
        rng.shuffle(groups)
        n_eval = min(len(groups) - 1, max(1, round(eval_fraction * len(groups))))
        held = set(groups[:n_eval])
        return [e for e in examples if e.group not in held], [e for e in examples if e.group in held]
    idx = list(range(len(examples)))
    rng.shuffle(idx)
    n_eval = min(len(idx) - 1, max(1, round(eval_fraction * len(idx))))
    held_i = set(idx[:n_eval])
    return (
        [e for i, e in enumerate(examples) if i not in held_i],
        [e for i, e in enumerate(examples) if i in held_i],
    )


# ------------------------------------------------------------------------------------------------ layout


@dataclass
class Chunk:
    """One model input: ``input_ids`` (length <= max_length) and the steps whose end it contains.

    ``positions[j]`` is the index in ``input_ids`` of the last token of step ``step_indices[j]``.
    A response that fits in max_length is one chunk holding all its steps.
    """

    input_ids: list[int]
    positions: list[int]
    step_indices: list[int]
    item: int = 0  # index of the (question, steps) item this chunk belongs to
    prompt_len: int = 0  # tokens of the rendered prompt kept at the start (0 if truncated away)


def render_prompt(tokenizer: Any, question: str, prompt_format: str) -> str:
    """The text the PRM sees before the steps.

    "chat": the question as one user message through the tokenizer's chat template, with the assistant
    turn opened (``add_generation_prompt=True``); a question that already starts like a rendered chat
    prompt is used as it is (labelled records may store either). "plain": the question and a newline.
    """
    if prompt_format == "plain":
        return question if question.endswith("\n") else question + "\n"
    if prompt_format != "chat":
        raise ValueError(f"prompt_format must be one of {PROMPT_FORMATS}, got {prompt_format!r}")
    head = chat_prefix(tokenizer)
    if head and question.startswith(head):
        return question
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )


def chat_prefix(tokenizer: Any) -> str:
    """First line of the chat template's rendering (e.g. ``<|im_start|>system``); "" if none."""
    cached = getattr(tokenizer, "_adaptivestep_chat_prefix", None)
    if cached is not None:
        return cached
    sentinel = "\x00q\x00"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": sentinel}], tokenize=False, add_generation_prompt=True
        )
        head = text.split(sentinel)[0].split("\n")[0]
    except Exception:  # noqa: BLE001  (no chat template: transformers raises ValueError or others)
        head = ""
    try:
        tokenizer._adaptivestep_chat_prefix = head
    except AttributeError:
        pass
    return head


def default_prompt_format(tokenizer: Any) -> str:
    """ "chat" when the tokenizer has a chat template, else "plain"."""
    return "chat" if getattr(tokenizer, "chat_template", None) else "plain"


def tokenize_pieces(
    tokenizer: Any, prompt_text: str, steps: Sequence[str], prompt_format: str
) -> tuple[list[int], list[list[int]]]:
    """Token ids of the rendered prompt and of each step, each piece tokenized on its own.

    Special tokens (BOS) are added to the prompt only in "plain" format (a chat template writes its own).
    """
    prompt_ids = list(tokenizer(prompt_text, add_special_tokens=prompt_format == "plain")["input_ids"])
    step_ids = (
        [list(x) for x in tokenizer(list(steps), add_special_tokens=False)["input_ids"]] if steps else []
    )
    return prompt_ids, step_ids


def layout(prompt_ids: Sequence[int], step_ids: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
    """Concatenate the pieces; return ``(ids, ends)`` with ``ends[k]`` = index of step k's last token.

    A step that tokenizes to nothing ends where the text before it ends (it shares that score).

    >>> layout([7, 8], [[1, 2], [], [3]])
    ([7, 8, 1, 2, 3], [3, 3, 4])
    """
    ids = list(prompt_ids)
    ends: list[int] = []
    for piece in step_ids:
        ids.extend(piece)
        ends.append(len(ids) - 1)
    return ids, ends


def chunk_layout(
    ids: Sequence[int],
    ends: Sequence[int],
    max_length: int,
    prompt_len: int = 0,
    item: int = 0,
    where: str = "",
) -> list[Chunk]:
    """Fit one laid-out response into inputs of at most ``max_length`` tokens, keeping every step.

    If it fits, one chunk. Otherwise the input is truncated from the LEFT (a warning names ``where``):
    the first chunk is the last ``max_length`` tokens; a step whose end falls before that window gets its
    own window ending at its end token (left-truncated context), so every step is still scored. Each step
    lands in exactly one chunk. A step that ends before any token (empty prompt and empty first steps)
    cannot be scored: :class:`ValueError` naming ``where``.

    >>> [(c.input_ids, c.positions, c.step_indices) for c in chunk_layout([1, 2, 3, 4, 5], [1, 4], 3)]
    [([3, 4, 5], [2], [1]), ([1, 2], [1], [0])]
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    bad = [k for k, e in enumerate(ends) if e < 0]
    if bad:
        raise ValueError(
            f"{where or 'item'}: step {bad[0]} has no token to score (empty prompt and empty step)"
        )
    n = len(ids)
    if n <= max_length:
        return [Chunk(list(ids), list(ends), list(range(len(ends))), item=item, prompt_len=prompt_len)]
    remaining = sorted(range(len(ends)), key=lambda k: (ends[k], k), reverse=True)
    chunks: list[Chunk] = []
    while remaining:
        stop = ends[remaining[0]] + 1
        start = max(0, stop - max_length)
        covered = sorted(k for k in remaining if start <= ends[k] < stop)
        taken = set(covered)
        remaining = [k for k in remaining if k not in taken]
        chunks.append(
            Chunk(
                list(ids[start:stop]),
                [ends[k] - start for k in covered],
                covered,
                item=item,
                prompt_len=max(0, prompt_len - start),
            )
        )
    log.warning(
        "%s: %d tokens > max_length %d; truncated from the left (%d window(s), every step kept)",
        where or "item",
        n,
        max_length,
        len(chunks),
    )
    return chunks


def encode_item(
    tokenizer: Any,
    question: str,
    steps: Sequence[str],
    *,
    prompt_format: str,
    max_length: int,
    item: int = 0,
    where: str = "",
) -> list[Chunk]:
    """Question + steps -> model inputs (see :func:`layout` and :func:`chunk_layout`)."""
    if not steps:
        raise ValueError(f"{where or 'item'}: no steps to score")
    prompt_text = render_prompt(tokenizer, question, prompt_format)
    prompt_ids, step_ids = tokenize_pieces(tokenizer, prompt_text, steps, prompt_format)
    ids, ends = layout(prompt_ids, step_ids)
    return chunk_layout(ids, ends, max_length, prompt_len=len(prompt_ids), item=item, where=where)


# ----------------------------------------------------------------------------------------------- metrics


def roc_auc(scores: Sequence[float] | np.ndarray, labels: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U), ties counted half; labels >= 0.5 are positive.

    Returns nan when only one class is present.

    >>> roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    >>> roc_auc([0.5, 0.5], [0, 1])
    0.5
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64) >= 0.5
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average rank (1-based) over each run of tied scores
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate([[0], boundaries])
    stops = np.concatenate([boundaries, [len(s)]])
    for a, b in zip(starts, stops):
        ranks[order[a:b]] = (a + 1 + b) / 2.0
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def accuracy(probs: Sequence[float] | np.ndarray, labels: Sequence[float] | np.ndarray) -> float:
    """Share of steps where (prob >= 0.5) == (label >= 0.5); nan for no steps.

    >>> accuracy([0.9, 0.2, 0.6], [1.0, 0.0, 0.25])
    0.6666666666666666
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if len(p) == 0:
        return float("nan")
    return float(((p >= 0.5) == (y >= 0.5)).mean())


def bce(
    probs_or_logits: Sequence[float] | np.ndarray,
    labels: Sequence[float] | np.ndarray,
    *,
    logits: bool = True,
) -> float:
    """Mean binary cross-entropy (nats) against float targets, from logits (default) or probabilities.

    >>> round(bce([0.0], [0.25]), 4)
    0.6931
    """
    y = np.asarray(labels, dtype=np.float64)
    x = np.asarray(probs_or_logits, dtype=np.float64)
    if len(y) == 0:
        return float("nan")
    if logits:
        # log(1 + e^x) - y x, stable
        return float(np.mean(np.logaddexp(0.0, x) - y * x))
    p = np.clip(x, 1e-12, 1 - 1e-12)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log1p(-p))))


def step_metrics(
    logits: Sequence[float] | np.ndarray, labels: Sequence[float] | np.ndarray
) -> dict[str, float]:
    """AUC, accuracy and BCE loss of step logits against float labels (labels thresholded at 0.5)."""
    x = np.asarray(logits, dtype=np.float64)
    p = 1.0 / (1.0 + np.exp(-x))
    return {
        "auc": roc_auc(p, labels),
        "accuracy": accuracy(p, labels),
        "loss": bce(x, labels),
        "n_steps": float(len(x)),
        "positive_rate": float((np.asarray(labels, dtype=np.float64) >= 0.5).mean())
        if len(x)
        else float("nan"),
    }


# ------------------------------------------------------------------------------------------------- misc


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Encoded:
    """All chunks of a list of examples, with per-chunk float targets (for training)."""

    chunks: list[Chunk] = field(default_factory=list)
    targets: list[list[float]] = field(default_factory=list)  # targets[i][j] is for chunks[i].step_indices[j]


def encode_examples(
    tokenizer: Any, examples: Sequence[StepExample], *, prompt_format: str, max_length: int
) -> Encoded:
    """Encode labelled examples into chunks + float targets; errors name the record's file:line."""
    enc = Encoded()
    for i, ex in enumerate(examples):
        try:
            chunks = encode_item(
                tokenizer,
                ex.question,
                ex.steps,
                prompt_format=prompt_format,
                max_length=max_length,
                item=i,
                where=ex.where,
            )
        except ValueError as e:
            raise DataError(str(e)) from None
        for c in chunks:
            enc.chunks.append(c)
            enc.targets.append([ex.labels[k] for k in c.step_indices])
    return enc
