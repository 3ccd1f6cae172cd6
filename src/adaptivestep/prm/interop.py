"""Math-Shepherd interoperability: read and write its step-tagged data, and score with its style of PRM.

**The format.** A Math-Shepherd record (``peiyi9979/Math-Shepherd``) holds two texts:

- ``input``: the question, then the solution, with the step tag `` ки`` (space + Cyrillic "ки") right after
  each step, e.g. ``"Janet has 3 apples ... How many? Step 1: 3 + 2 = 5 ки\\nStep 2: The answer is: 5 ки"``;
- ``label``: the same text with every `` ки`` replaced by `` +`` (the step is good) or `` -`` (bad).

**Tagging our steps** (:func:`tag_steps`): each step's trailing whitespace moves after its tag, so a step
``"Step 1: a\\n"`` becomes ``"Step 1: a ки\\n"`` exactly as in Math-Shepherd, and an AdaptiveStep step that ends
mid-line (``"The total is"``) becomes ``"The total is ки"``. The concatenated step texts never change; only
whitespace at the end of a step may move to the start of the next one when read back.

**Where the question ends** (Math-Shepherd does not mark it; :func:`read_math_shepherd` decides, in order):

1. ``question_field`` (default ``"question"``) when the record has it: that string is the prompt; if the input
   begins with it, step 1 starts right after it and one separating space;
2. else the first ``"Step 1:"`` (any case, optional spaces before the colon): the question is the text before
   it, stripped, and step 1 starts at it (the layout of Math-Shepherd's GSM8K and MATH records). Tags found
   inside the question (a few Math-Shepherd records carry one) are removed and their labels dropped;
3. else the last ``"?"`` before the first tag: the question ends there;
4. else the record is rejected with ``DataError`` naming file and line (pass ``question_field``).

The torch / transformers imports of :class:`MathShepherdScorer` happen when one is built, so the readers and
writers here need neither.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..embedded_models import ModelError
from ..jsonl import DataError, iter_json
from ..records import LabeledRecord

STEP_TAG = "ки"
GOOD, BAD = "+", "-"
# "Step 1:" as Math-Shepherd writes it (also "step 1 :"); the first match is where the solution starts.
_STEP1 = re.compile(r"\b[Ss]tep\s*1\s*:")
# Label-only records: a step ends with " +" / " -" right before a newline or the end of the text.
_LABEL_MARK = re.compile(r" ([+-])(?=\n|$)")


# --------------------------------------------------------------------------------------------- tagging
def _tag_string(step_tag: str) -> str:
    """What follows each step: a space then the tag (`` ки``), unless the tag already starts with a space."""
    return step_tag if step_tag.startswith(" ") else " " + step_tag


def tag_steps(steps: Sequence[str], step_tag: str = STEP_TAG) -> tuple[str, list[tuple[int, int]]]:
    """Join steps with `` <step_tag>`` after each one; return the text and each tag's ``[start, end)`` chars.

    A step's trailing whitespace goes after its tag (Math-Shepherd layout).

    >>> tag_steps(["Step 1: a\\n", "Step 2: b"])
    ('Step 1: a ки\\nStep 2: b ки', [(9, 12), (22, 25)])
    """
    tag = _tag_string(step_tag)
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    for step in steps:
        body = step.rstrip()
        trail = step[len(body) :]
        parts.append(body)
        pos += len(body)
        spans.append((pos, pos + len(tag)))
        parts.append(tag + trail)
        pos += len(tag) + len(trail)
    return "".join(parts), spans


def format_prm_input(
    question: str, steps: Sequence[str], step_tag: str = STEP_TAG, question_sep: str = " "
) -> tuple[str, list[tuple[int, int]]]:
    """Math-Shepherd PRM input ``question + question_sep + tagged steps``; tag spans are offsets in it.

    >>> format_prm_input("1+1?", ["Step 1: 2"])
    ('1+1? Step 1: 2 ки', [(14, 17)])
    """
    tagged, spans = tag_steps(steps, step_tag)
    shift = len(question) + len(question_sep)
    return question + question_sep + tagged, [(a + shift, b + shift) for a, b in spans]


# --------------------------------------------------------------------------------------------- parsing
@dataclass
class ParsedSteps:
    """One Math-Shepherd record split into question, steps and hard labels (1.0 good, 0.0 bad)."""

    question: str
    steps: list[str]
    labels: list[float]
    dropped_labels: int = 0  # tags found inside the question (annotation slips), whose labels were dropped


def labels_from_label_text(input_text: str, label_text: str, step_tag: str = STEP_TAG) -> list[float]:
    """Read the ``+`` / ``-`` that ``label_text`` holds where ``input_text`` holds each step tag.

    Raises ``ValueError`` when the two texts do not line up.

    >>> labels_from_label_text("Q Step 1: a ки\\nStep 2: b ки", "Q Step 1: a +\\nStep 2: b -")
    [1.0, 0.0]
    """
    pieces = input_text.split(step_tag)
    n_tags = len(pieces) - 1
    expected = len(input_text) - n_tags * (len(step_tag) - 1)
    if len(label_text) != expected:
        raise ValueError(
            f"label text has {len(label_text)} characters, expected {expected} (the input with each "
            f"{step_tag!r} replaced by one '+' or '-')"
        )
    labels: list[float] = []
    pos = 0
    for k, piece in enumerate(pieces[:-1]):
        pos += len(piece)
        mark = label_text[pos]
        if mark not in (GOOD, BAD):
            raise ValueError(f"step {k + 1}: label text has {mark!r} where the input has the step tag")
        labels.append(1.0 if mark == GOOD else 0.0)
        pos += 1
    return labels


def input_from_label_text(label_text: str, step_tag: str = STEP_TAG) -> tuple[str, list[float]]:
    """Label-only records: rebuild the tagged input and the labels from `` +`` / `` -`` at line ends.

    >>> input_from_label_text("Q Step 1: a +\\nStep 2: b -")
    ('Q Step 1: a ки\\nStep 2: b ки', [1.0, 0.0])
    """
    labels = [1.0 if m.group(1) == GOOD else 0.0 for m in _LABEL_MARK.finditer(label_text)]
    return _LABEL_MARK.sub(lambda m: _tag_string(step_tag), label_text), labels


def parse_tagged(
    text: str, labels: Sequence[float], step_tag: str = STEP_TAG, question: str | None = None
) -> ParsedSteps:
    """Split a tagged input into question and steps (see the module docstring for the question heuristic).

    ``labels[k]`` belongs to the k-th tag. Step k is the text after tag k-1 up to tag k, without the one space
    that precedes the tag; whitespace after the last tag joins the last step. Raises ``ValueError``.

    >>> p = parse_tagged("What is 1+1? Step 1: 1+1=2 ки\\nStep 2: The answer is: 2 ки", [1.0, 0.0])
    >>> p.question, p.steps, p.labels
    ('What is 1+1?', ['Step 1: 1+1=2', '\\nStep 2: The answer is: 2'], [1.0, 0.0])
    """
    tag = step_tag
    # Piece k = chars [starts[k], ends[k]) of `text`: between tag k-1 and tag k, minus the space before tag k.
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    while True:
        hit = text.find(tag, pos)
        if hit < 0:
            break
        end = hit - 1 if hit > pos and text[hit - 1] == " " else hit
        starts.append(pos)
        ends.append(end)
        pos = hit + len(tag)
    if not starts:
        raise ValueError(f"no step tag {tag!r} in the text")
    if len(labels) != len(starts):
        raise ValueError(f"{len(starts)} step tags but {len(labels)} labels")
    tail = text[pos:]
    if tail.strip():
        raise ValueError(f"text after the last step tag has no label: {tail[:40]!r}")

    # b = where step 1 starts; q = the question text.
    b: int
    q: str
    if question is not None and text.startswith(question):
        b = len(question) + (1 if text[len(question) : len(question) + 1] == " " else 0)
        q = question
    else:
        m = _STEP1.search(text)
        if m is not None:
            b = m.start()
            q = text[:b].rstrip()
        else:
            mark = text.rfind("?", 0, ends[0])
            if mark < 0:
                raise ValueError(
                    "cannot tell where the question ends (no question field the input begins with, no 'Step 1:', "
                    "no '?' before the first step tag); give the question in a field and pass question_field"
                )
            b = mark + 1
            while b < ends[0] and text[b] in " \t":
                b += 1
            q = text[:b].rstrip()
        if question is not None:
            q = question
    # The piece holding b; tags before it sit inside the question: strip them, drop their labels.
    j = 0
    while j < len(starts) and b >= ends[j]:  # b is past piece j: that piece (and its tag) is question text
        j += 1
    if j == len(starts):
        raise ValueError("no step text after the question")
    b = max(b, starts[j])
    if j > 0 and question is None:
        q = "".join(text[starts[k] : ends[k]] for k in range(j)) + text[starts[j] : b]
        q = q.rstrip()
    steps = [text[b : ends[j]]] + [text[starts[k] : ends[k]] for k in range(j + 1, len(starts))]
    steps[-1] += tail
    return ParsedSteps(question=q, steps=steps, labels=[float(x) for x in labels[j:]], dropped_labels=j)


# --------------------------------------------------------------------------------------------- reader
def read_math_shepherd(
    path: str | Path,
    *,
    input_field: str = "input",
    label_field: str = "label",
    question_field: str | None = "question",
    step_tag: str = STEP_TAG,
    method: str = "math-shepherd",
) -> Iterator[LabeledRecord]:
    """Yield :class:`LabeledRecord` (hard labels 1.0 / 0.0) from Math-Shepherd-style JSONL.

    A record needs ``label_field``; with ``input_field`` too, the labels are read where the input has its
    tags; with the label text alone (question first, each step ending in `` +`` or `` -`` before a newline or
    the end), the steps are found from those marks. ``question_field`` (when the record has it) gives the
    question; otherwise the heuristic of the module docstring finds it. ``problem_id`` comes from
    ``problem_id`` / ``id`` when present, else ``"<file stem>:<line>"``. Bad records raise ``DataError``
    naming ``file:line``.
    """
    path = Path(path)
    for line, obj in iter_json(path):
        where = f"{path}:{line}"
        label_text = obj.get(label_field)
        if not isinstance(label_text, str):
            raise DataError(f"{where}: field {label_field!r} must be a string (the label text)")
        question = obj.get(question_field) if question_field else None
        if question is not None and not isinstance(question, str):
            raise DataError(f"{where}: field {question_field!r} must be a string")
        try:
            if input_field in obj:
                text = obj[input_field]
                if not isinstance(text, str):
                    raise ValueError(f"field {input_field!r} must be a string")
                labels = labels_from_label_text(text, label_text, step_tag)
            else:
                text, labels = input_from_label_text(label_text, step_tag)
                if not labels:
                    raise ValueError(
                        f"no {input_field!r} field, and the label text has no step ending in ' +' or ' -'"
                    )
            parsed = parse_tagged(text, labels, step_tag, question)
        except ValueError as e:
            raise DataError(f"{where}: {e}") from None
        meta: dict[str, Any] = {"source": str(path), "line": line}
        if "task" in obj:
            meta["task"] = obj["task"]
        if parsed.dropped_labels:
            meta["dropped_labels"] = parsed.dropped_labels
        pid = obj.get("problem_id", obj.get("id", f"{path.stem}:{line}"))
        try:
            yield LabeledRecord(
                prompt=parsed.question,
                completions=parsed.steps,
                labels=parsed.labels,
                problem_id=str(pid),
                sample_index=int(obj.get("sample_index", 0)),
                method=method,
                label_type="hard",
                hard_labels=list(parsed.labels),
                meta=meta,
            )
        except (TypeError, ValueError) as e:
            raise DataError(f"{where}: {e}") from None


# --------------------------------------------------------------------------------------------- writer
def to_math_shepherd(
    record: LabeledRecord, threshold: float = 0.5, step_tag: str = STEP_TAG
) -> dict[str, Any]:
    """One record as a Math-Shepherd object; a step is ``+`` when its label is ``>= threshold``.

    Soft labels are thresholded (a soft label of 0.25 is ``-`` at the default 0.5): Math-Shepherd's format
    holds only hard labels. ``question`` keeps the prompt so that reading back needs no heuristic.

    >>> r = LabeledRecord(prompt="1+1?", completions=["Step 1: 2"], labels=[0.75])
    >>> to_math_shepherd(r)["label"]
    '1+1? Step 1: 2 +'
    """
    for k, step in enumerate(record.completions):
        if step_tag in step:
            raise ValueError(
                f"record {record.problem_id!r}#{record.sample_index}: step {k} contains the step tag"
            )
    if step_tag in record.prompt:
        raise ValueError(
            f"record {record.problem_id!r}#{record.sample_index}: the prompt contains the step tag"
        )
    text, spans = format_prm_input(record.prompt, record.completions, step_tag)
    marks = [GOOD if v >= threshold else BAD for v in record.labels]
    label_parts: list[str] = []
    pos = 0
    for (a, b), mark in zip(spans, marks):
        label_parts.append(text[pos:a] + " " + mark)  # " ки" -> " +"
        pos = b
    label_parts.append(text[pos:])
    out: dict[str, Any] = {"input": text, "label": "".join(label_parts), "question": record.prompt}
    out["problem_id"] = record.problem_id
    out["sample_index"] = record.sample_index
    if "task" in record.meta:
        out["task"] = record.meta["task"]
    return out


def write_math_shepherd(
    records: Iterable[LabeledRecord], path: str | Path, threshold: float = 0.5, step_tag: str = STEP_TAG
) -> int:
    """Write records as Math-Shepherd JSONL (overwrites ``path``); labels ``>= threshold`` become ``+``.

    Soft labels are thresholded, so the file holds hard labels only. Returns the number of records written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(to_math_shepherd(record, threshold, step_tag), ensure_ascii=False) + "\n")
            n += 1
    return n


# --------------------------------------------------------------------------------------------- scorer
class MathShepherdScorer:
    """A Math-Shepherd-style PRM: a causal LM that predicts a good / bad label token at each step tag.

    The input is ``question + " " + steps``, each step followed by `` ки`` (:func:`format_prm_input`). At the
    position of each tag, the logits ``l_good`` / ``l_bad`` of the two label tokens give the step score
    ``P(good) / (P(good) + P(bad)) = sigmoid(l_good - l_bad)``. Implements :class:`~adaptivestep.scoring.StepScorer`.

    ``model_dir`` is a local Hugging Face directory (never downloaded). ``good_token`` / ``bad_token`` are
    vocabulary strings that encode to one token each, or token ids. Items are right-padded into batches of
    ``batch_size``, longest first. ``device=None`` picks CUDA when available, else CPU.
    """

    def __init__(
        self,
        model_dir: str | Path,
        good_token: str | int = GOOD,
        bad_token: str | int = BAD,
        step_tag: str = STEP_TAG,
        device: str | None = None,
        *,
        batch_size: int = 8,
        question_sep: str = " ",
        dtype: str | None = None,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..devices import resolve_device, torch_dtype

        model_dir = Path(model_dir).expanduser()
        if not (model_dir / "config.json").is_file():
            raise ModelError(
                f"PRM {str(model_dir)!r}: not a local Hugging Face model directory (no config.json)"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.name = model_dir.name
        self.step_tag = step_tag
        self.question_sep = question_sep
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self._torch = torch
        tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        if not getattr(tok, "is_fast", False):
            raise ModelError(f"PRM {str(model_dir)!r}: needs a fast tokenizer (tokenizer.json) for offsets")
        tok.padding_side = "right"
        if tok.pad_token_id is None:
            if tok.eos_token is None:
                raise ModelError(f"PRM {str(model_dir)!r}: tokenizer has neither a pad nor an eos token")
            tok.pad_token = tok.eos_token
        self.tokenizer = tok
        self.good_id = self._token_id(good_token, "good_token")
        self.bad_id = self._token_id(bad_token, "bad_token")
        if self.good_id == self.bad_id:
            raise ValueError(f"good_token and bad_token map to the same token id {self.good_id}")
        kwargs: dict[str, Any] = {"local_files_only": True}
        if dtype is not None:
            kwargs["dtype"] = torch_dtype(dtype)
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
        self.model = model.to(torch.device(self.device)).eval()  # type: ignore[arg-type]  # transformers stub
        self.max_positions: int | None = getattr(self.model.config, "max_position_embeddings", None)

    def _token_id(self, token: str | int, option: str) -> int:
        if isinstance(token, int):
            if not 0 <= token < len(self.tokenizer):
                raise ValueError(f"{option}={token}: not a token id of this tokenizer")
            return token
        ids = self.tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1 or (ids[0] == self.tokenizer.unk_token_id and token != self.tokenizer.unk_token):
            raise ValueError(
                f"{option}={token!r} is not a single token of this tokenizer (it encodes to {ids})"
            )
        return int(ids[0])

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """Step scores in (0, 1) for each ``(question, steps)``; ``len(out[i]) == len(items[i][1])``."""
        out: list[list[float]] = [[] for _ in items]
        texts: list[str] = []
        spans: list[list[tuple[int, int]]] = []
        for question, steps in items:
            text, sp = format_prm_input(question, list(steps), self.step_tag, self.question_sep)
            texts.append(text)
            spans.append(sp)
        order = sorted((i for i in range(len(items)) if spans[i]), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for i, scores in zip(
                chunk, self._score_chunk([texts[i] for i in chunk], [spans[i] for i in chunk], chunk)
            ):
                out[i] = scores
        return out

    def _score_chunk(
        self, texts: list[str], spans: list[list[tuple[int, int]]], idx: list[int]
    ) -> list[list[float]]:
        torch = self._torch
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, return_offsets_mapping=True)
        offsets = enc.pop("offset_mapping").tolist()  # (B, T, 2) char spans of each token
        mask = enc["attention_mask"]
        if self.max_positions is not None and enc["input_ids"].shape[1] > self.max_positions:
            raise ValueError(
                f"item {idx[0]}: {enc['input_ids'].shape[1]} tokens, more than the PRM's "
                f"{self.max_positions} positions"
            )
        positions: list[list[int]] = []  # per item: token index of each tag (the token holding its last char)
        for b, (offs, sp) in enumerate(zip(offsets, spans)):
            n = int(mask[b].sum())
            pos = [_token_at(offs[:n], end - 1) for _, end in sp]
            if any(p is None for p in pos):
                raise ValueError(
                    f"item {idx[b]}: a step tag is not covered by any token (tokenizer drops it?)"
                )
            positions.append([int(p) for p in pos if p is not None])
        keep = sorted({p for pos in positions for p in pos})
        where = {p: k for k, p in enumerate(keep)}
        with torch.inference_mode():
            batch = {k: v.to(self.device) for k, v in enc.items()}
            try:  # project only the tag positions onto the vocabulary
                logits = self.model(**batch, logits_to_keep=torch.tensor(keep, device=self.device)).logits
            except TypeError:  # a model without logits_to_keep
                logits = self.model(**batch).logits
            # A model that swallows unknown kwargs returns all positions: index by position then.
            col = where if logits.shape[1] == len(keep) else {p: p for p in keep}
            pair = logits[..., [self.good_id, self.bad_id]].float()  # (B, K, 2)
            p_good = torch.softmax(pair, dim=-1)[..., 0].cpu().tolist()  # (B, K)
        return [[p_good[b][col[p]] for p in pos] for b, pos in enumerate(positions)]


def _token_at(offsets: Sequence[Sequence[int]], char: int) -> int | None:
    """Index of the last token whose ``[start, end)`` char span holds ``char``."""
    for t in range(len(offsets) - 1, -1, -1):
        a, b = offsets[t]
        if a <= char < b:
            return t
    return None
