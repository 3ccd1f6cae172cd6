"""The one data contract: every stage reads and writes these records as JSONL.

See ``docs/data_formats.md`` for one example line of each type. Records are plain dataclasses; ``to_dict``
gives the JSON object, ``from_dict`` validates and raises :class:`RecordError` naming the bad field.

Token positions are always offsets into ``Sample.token_ids`` (the response tokens, prompt excluded).
Step ``k`` of a split covers tokens ``[boundaries[k-1], boundaries[k])`` with an implicit leading 0,
so ``boundaries`` is strictly increasing and ``boundaries[-1] == len(token_ids)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

TaskKind = Literal["math", "code"]
TASK_KINDS: tuple[str, ...] = ("math", "code")


class RecordError(ValueError):
    """A record does not match the data contract (message names the field)."""


T = TypeVar("T", bound="_Record")


@dataclass
class _Record:
    KIND: ClassVar[str] = "record"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls: type[T], d: dict[str, Any]) -> T:
        if not isinstance(d, dict):
            raise RecordError(f"{cls.KIND}: expected a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if _no_default(f)}
        missing = sorted(required - d.keys())
        if missing:
            raise RecordError(f"{cls.KIND}: missing field(s) {', '.join(missing)}")
        obj = cls(**{k: v for k, v in d.items() if k in known})
        obj.validate()
        return obj

    def validate(self) -> None:  # overridden where there is something to check
        return None


def _no_default(f: Any) -> bool:
    from dataclasses import MISSING

    return f.default is MISSING and f.default_factory is MISSING


@dataclass
class Problem(_Record):
    """A task to solve.

    ``answer`` is the gold final answer for math (GSM8K number, MATH LaTeX); ``tests`` is Python test code
    for code tasks, run against the candidate with ``entry_point`` as the function under test.
    """

    KIND: ClassVar[str] = "problem"
    id: str
    question: str
    kind: str
    answer: str | None = None
    tests: str | None = None
    entry_point: str | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.kind not in TASK_KINDS:
            raise RecordError(f"problem {self.id!r}: unknown task kind {self.kind!r} (expected one of {TASK_KINDS})")
        if not isinstance(self.question, str) or not self.question.strip():
            raise RecordError(f"problem {self.id!r}: empty question")


def problems_path_for(samples_path: str | Path) -> Path:
    """Where the problems of a samples file live: ``problems.jsonl`` beside it (later stages need the gold
    answers and tests)."""
    return Path(samples_path).with_name("problems.jsonl")


@dataclass
class Sample(_Record):
    """One sampled response with the exact per-token log-probabilities of the temperature-1 model.

    ``logprobs[i]`` = log p(token_ids[i] | prompt, token_ids[:i]) under the raw model distribution, whatever
    temperature was used to sample. ``token_end_chars[i]`` = len of ``text`` decoded from token_ids[:i+1]
    (lets splitters and stats map token offsets to text without a tokenizer).
    """

    KIND: ClassVar[str] = "sample"
    problem_id: str
    sample_index: int
    prompt: str
    prompt_ids: list[int]
    token_ids: list[int]
    logprobs: list[float]
    token_end_chars: list[int]
    text: str
    finish_reason: str
    model: str
    backend: str
    sampling: dict[str, Any]
    seed: int
    task_kind: str = "math"
    top_logprobs: list[list[list[float]]] | None = None  # per token: [[token_id, logprob], ...]

    def validate(self) -> None:
        n = len(self.token_ids)
        where = f"sample {self.problem_id!r}#{self.sample_index}"
        if n == 0:
            raise RecordError(f"{where}: empty response (no tokens)")
        if len(self.logprobs) != n or len(self.token_end_chars) != n:
            raise RecordError(
                f"{where}: token_ids ({n}), logprobs ({len(self.logprobs)}) and token_end_chars "
                f"({len(self.token_end_chars)}) must have the same length"
            )
        if any((not isinstance(x, (int, float))) or x > 1e-6 or math.isnan(x) for x in self.logprobs):
            raise RecordError(f"{where}: logprobs must be numbers <= 0")
        if self.finish_reason not in ("stop", "length"):
            raise RecordError(f"{where}: finish_reason must be 'stop' or 'length', got {self.finish_reason!r}")

    @property
    def key(self) -> tuple[str, int]:
        return (self.problem_id, self.sample_index)

    def token_text(self, start: int, end: int) -> str:
        """Text of response tokens ``[start, end)``."""
        a = self.token_end_chars[start - 1] if start > 0 else 0
        b = self.token_end_chars[end - 1] if end > 0 else 0
        return self.text[a:b]


@dataclass
class StepSplit(_Record):
    """Step boundaries of one sample: step k covers tokens [boundaries[k-1], boundaries[k])."""

    KIND: ClassVar[str] = "split"
    problem_id: str
    sample_index: int
    method: str
    boundaries: list[int]
    n_tokens: int
    threshold: float | None = None  # AdaptiveStep tau, a probability: tokens with p < tau end a step
    params: dict[str, Any] = field(default_factory=dict)
    region: list[int] | None = None  # [start, end) token range that was split (code part), None = all

    def validate(self) -> None:
        where = f"split {self.problem_id!r}#{self.sample_index}"
        b = self.boundaries
        if not b or b[-1] != self.n_tokens:
            raise RecordError(f"{where}: boundaries must end at n_tokens={self.n_tokens}, got {b[-1:] or 'none'}")
        if any(x <= y for x, y in zip(b[1:], b[:-1])) or b[0] <= 0:
            raise RecordError(f"{where}: boundaries must be strictly increasing and > 0")

    @property
    def key(self) -> tuple[str, int]:
        return (self.problem_id, self.sample_index)

    def spans(self) -> list[tuple[int, int]]:
        starts = [0, *self.boundaries[:-1]]
        return list(zip(starts, self.boundaries))


@dataclass
class StepRollouts:
    """Rollouts from the prefix ending at one step.

    outcomes: one per rollout, 1 = it reached a correct final answer. seeds: the seeds they used.
    tokens: tokens they generated. inferred: the label was set without rollouts (first-error search).
    final: the last step (the response itself, labelled by its own final answer, no rollouts).
    """

    outcomes: list[int] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    tokens: int = 0
    inferred: bool = False
    final: bool = False

    @classmethod
    def from_dict(cls, d: Any) -> StepRollouts:
        if isinstance(d, StepRollouts):
            return d
        if not isinstance(d, dict):
            raise RecordError(f"rollouts: expected a JSON object per step, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class LabeledRecord(_Record):
    """Stepwise-supervision record: TRL's ``prompt`` / ``completions`` / ``labels`` plus our metadata.

    ``labels`` are floats in [0, 1] (hard: 1.0 if any rollout reached a correct answer; soft: fraction
    correct); ``label_type`` says which one ``labels`` holds, ``hard_labels`` / ``soft_labels`` keep both.
    """

    KIND: ClassVar[str] = "labeled"
    prompt: str
    completions: list[str]
    labels: list[float]
    problem_id: str = ""
    sample_index: int = 0
    method: str = ""
    label_type: str = "hard"
    hard_labels: list[float] = field(default_factory=list)
    soft_labels: list[float] = field(default_factory=list)
    step_token_ends: list[int] = field(default_factory=list)
    rollouts: list[StepRollouts] = field(default_factory=list)
    final_correct: bool | None = None
    cost: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        where = f"labeled record {self.problem_id!r}#{self.sample_index}"
        if not self.completions:
            raise RecordError(f"{where}: no steps")
        if len(self.labels) != len(self.completions):
            raise RecordError(f"{where}: {len(self.completions)} steps but {len(self.labels)} labels")
        for i, v in enumerate(self.labels):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not (0.0 <= float(v) <= 1.0):
                raise RecordError(f"{where}: label {i} = {v!r} is outside [0, 1]")
        self.labels = [float(v) for v in self.labels]
        self.rollouts = [StepRollouts.from_dict(r) for r in self.rollouts]


@dataclass
class StepScores(_Record):
    """PRM scores of the steps of one response (probability that the step is good)."""

    KIND: ClassVar[str] = "scores"
    problem_id: str
    sample_index: int
    scores: list[float]
    prm: str = ""
    method: str = ""


@dataclass
class TVDRecord(_Record):
    """One response decoded by token-level value-guided decoding (``adaptivestep tvd``, the main job's
    ``eval/tvd.jsonl``).

    text / token_ids: the response (EOS excluded). boundaries: step ends at the intervention points plus the
    response end. finish_reason: "stop" (EOS) or "length". interventions: PRM consultations. prm_items:
    candidate step lists the PRM scored. correct: the checker's verdict on ``text``. threshold / k: the TVD
    settings used.
    """

    KIND: ClassVar[str] = "tvd"
    problem_id: str
    text: str
    token_ids: list[int]
    boundaries: list[int]
    finish_reason: str
    interventions: int
    prm_items: int
    correct: bool
    threshold: float | None = None
    k: int | None = None
    prm: str = ""

    @property
    def tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class BonChoice(_Record):
    """What one Best-of-N selection rule chose from a problem's whole candidate pool (``bon --out``).

    chosen: the chosen candidate's ``sample_index``. skipped: candidates the rule could not use (no score).
    fallback: the rule fell back to majority vote (no candidate was usable). correct: the chosen candidate's
    verdict.
    """

    KIND: ClassVar[str] = "bon_choice"
    problem_id: str
    rule: str
    chosen: int
    correct: bool
    skipped: list[int] = field(default_factory=list)
    fallback: bool = False
    pool_size: int = 0


@dataclass
class ErrorRecord(_Record):
    """A record that a stage could not produce (``<out>.errors.jsonl``): it is never given a label or score.

    stage: which stage failed (``label``, ...). problem_id / sample_index: which item. error: why.
    """

    KIND: ClassVar[str] = "error"
    problem_id: str
    error: str
    sample_index: int | None = None
    stage: str = ""
