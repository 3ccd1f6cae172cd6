"""Dividing a sampled response into reasoning steps: AdaptiveStep and its baselines.

Every splitter is a pure function of token confidences / token offsets that returns *boundaries*: a strictly
increasing list of token offsets whose last element is the number of response tokens ``n`` (the records
contract, see :class:`~adaptivestep.records.StepSplit`). Step ``k`` covers tokens
``[boundaries[k-1], boundaries[k])`` with an implicit leading 0. "Token ``i`` ends a step" means boundary
``i + 1``.

Methods (registry :data:`SPLITTERS`, uniform signature ``(sample, params) -> StepSplit``):

- ``confidence`` (AdaptiveStep): token ``i`` ends a step when ``p_i < tau``; tau is picked on the pooled
  confidences of *all* samples so that ``break_rate`` of the tokens fall below it (:func:`split_samples`).
- ``newline``: a step ends after the token holding the last ``"\\n"`` of each run of newlines.
- ``fixed``: every ``k`` tokens.
- ``random``: every token independently with probability ``rate`` (default: the confidence split's rate).

Code-only rule (method.md: "for code, tags are applied to the code part only"): for samples with
``task_kind == "code"`` and ``SplitParams.code_only``, breaks may only fall on tokens of the first fenced code
block (:func:`code_region`); the region's own edges are *not* boundaries. The prose before the code therefore
joins the first step and the prose after it joins the last step, which still ends at the response end. The
rule applies to every method, so baselines stay comparable with AdaptiveStep.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from .code_blocks import code_span
from .records import Sample, StepSplit
from .seeds import rng_for

Region = tuple[int, int]

# --------------------------------------------------------------------------------------------- thresholds


def confidences(logprobs: Sequence[float] | np.ndarray) -> np.ndarray:
    """Token confidences ``c_i = exp(logprob_i)``, shape (n,), float64 probabilities in [0, 1].

    >>> confidences([0.0, np.log(0.25)]).round(3).tolist()
    [1.0, 0.25]
    """
    lp = np.asarray(logprobs, dtype=np.float64).ravel()
    if np.isnan(lp).any():
        raise ValueError("confidences: logprobs contain NaN")
    # logprobs slightly above 0 are float noise from the backend; a probability is at most 1
    return np.minimum(np.exp(lp), 1.0)


def quantile_threshold(pooled_confidences: Sequence[float] | np.ndarray, break_rate: float = 0.02) -> float:
    """Threshold tau such that the fraction of tokens with ``c < tau`` is as close as possible to the rate.

    ``pooled_confidences``: shape (N,), the confidences of every token of every sample of a domain.

    Ties: tau is always one of the pooled values (or just above the maximum), and the break rule is strict
    (``c < tau``), so tokens with equal confidence always land on the same side. When tied values make two
    achievable fractions equally close to ``break_rate``, the smaller one (fewer breaks) wins. The achieved
    fraction can therefore differ from ``break_rate`` when many tokens share one value.

    >>> c = np.arange(1, 101) / 100          # 0.01 .. 1.00
    >>> tau = quantile_threshold(c, 0.05)
    >>> float(tau), float((c < tau).mean())
    (0.06, 0.05)
    """
    if not isinstance(break_rate, (int, float)) or isinstance(break_rate, bool) or not 0.0 < break_rate < 1.0:
        raise ValueError(f"break_rate must be a number in (0, 1), got {break_rate!r}")
    c = np.asarray(pooled_confidences, dtype=np.float64).ravel()
    if c.size == 0:
        raise ValueError("quantile_threshold: no confidences to pool (empty input)")
    if np.isnan(c).any():
        raise ValueError("quantile_threshold: confidences contain NaN")
    vals, counts = np.unique(c, return_counts=True)
    below = np.concatenate([[0], np.cumsum(counts)])  # below[j] = #(c < vals[j]); below[-1] = N
    dist = np.abs(below - break_rate * c.size)
    j = int(np.flatnonzero(dist <= dist.min() + 1e-9)[0])  # first = fewest breaks among equally close
    if j < vals.size:
        return float(vals[j])
    return float(np.nextafter(vals[-1], np.inf))


# --------------------------------------------------------------------------------------------- boundaries


def _check_region(region: Sequence[int] | None, n: int) -> Region:
    if n <= 0:
        raise ValueError(f"a response needs at least one token, got n={n}")
    if region is None:
        return (0, n)
    if len(region) != 2:
        raise ValueError(f"region must be (start, end), got {region!r}")
    lo, hi = int(region[0]), int(region[1])
    if not 0 <= lo <= hi <= n:
        raise ValueError(f"region {region!r} is not a token range within [0, {n}]")
    return (lo, hi)


def _finish(cuts: Sequence[int] | np.ndarray, n: int) -> list[int]:
    """Sorted unique boundaries in (0, n] with the response end always present."""
    return sorted({int(x) for x in cuts if 0 < int(x) < n} | {n})


def confidence_boundaries(
    conf: Sequence[float] | np.ndarray, tau: float, region: Sequence[int] | None = None
) -> list[int]:
    """AdaptiveStep boundaries: every token ``i`` with ``conf[i] < tau`` ends a step (boundary ``i + 1``).

    ``conf``: shape (n,) token probabilities; ``tau``: a probability. No minimum step length. The response
    end always ends a step. ``region=(start, end)`` (token offsets, half open) restricts breaks to tokens
    ``start <= i < end``; the region edges are not boundaries themselves.

    >>> confidence_boundaries([0.9, 0.1, 0.8, 0.05, 0.9], tau=0.2)
    [2, 4, 5]
    >>> confidence_boundaries([0.9, 0.1, 0.8, 0.05, 0.9], tau=0.2, region=(2, 5))
    [4, 5]
    """
    c = np.asarray(conf, dtype=np.float64).ravel()
    lo, hi = _check_region(region, c.size)
    if np.isnan(c[lo:hi]).any():
        raise ValueError("confidence_boundaries: confidences contain NaN")
    idx = np.flatnonzero(c[lo:hi] < tau) + lo
    return _finish(idx + 1, c.size)


def fixed_boundaries(n: int, k: int, region: Sequence[int] | None = None) -> list[int]:
    """A step every ``k`` tokens (counted from the region start), plus the response end.

    >>> fixed_boundaries(10, 4)
    [4, 8, 10]
    >>> fixed_boundaries(10, 3, region=(2, 8))
    [5, 8, 10]
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    lo, hi = _check_region(region, n)
    return _finish(range(lo + k, hi + 1, k), n)


def random_boundaries(
    n: int, rate: float, rng: np.random.Generator, region: Sequence[int] | None = None
) -> list[int]:
    """Each token of the region ends a step independently with probability ``rate``; plus the response end.

    With ``rate`` = breaks / tokens of another split this gives the same expected number of breaks at random
    positions.

    >>> random_boundaries(6, 1.0, np.random.default_rng(0))
    [1, 2, 3, 4, 5, 6]
    >>> random_boundaries(6, 0.0, np.random.default_rng(0))
    [6]
    """
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be a probability in [0, 1], got {rate!r}")
    lo, hi = _check_region(region, n)
    hit = rng.random(hi - lo) < rate
    return _finish(np.flatnonzero(hit) + lo + 1, n)


# ------------------------------------------------------------------------------------------ text offsets


def _check_offsets(text: str, token_end_chars: Sequence[int]) -> list[int]:
    ends = [int(x) for x in token_end_chars]
    if not ends:
        raise ValueError("token_end_chars is empty (a response needs at least one token)")
    prev = 0
    for i, e in enumerate(ends):
        # equal ends are legal: a token holding part of a multi-byte character decodes to no text yet
        if e < prev or e > len(text):
            raise ValueError(
                f"token_end_chars[{i}] = {e} must be non-decreasing and within len(text) = {len(text)}"
            )
        prev = e
    return ends


def _span_text(text: str, ends: Sequence[int], start: int, end: int) -> str:
    a = ends[start - 1] if start > 0 else 0
    b = ends[end - 1] if end > 0 else 0
    return text[a:b]


def _token_at_char(ends: Sequence[int], pos: int) -> int:
    """Index of the token whose text holds character ``pos`` (== n when no token covers it)."""
    return bisect_right(ends, pos)


def _merge_blank_steps(text: str, ends: Sequence[int], boundaries: list[int]) -> list[int]:
    """Drop boundaries that would close a whitespace-only step (it joins the next step; a blank last
    step joins the previous one)."""
    n = boundaries[-1]
    kept: list[int] = []
    prev = 0
    for x in boundaries[:-1]:
        if _span_text(text, ends, prev, x).strip():
            kept.append(x)
            prev = x
    if kept and not _span_text(text, ends, kept[-1], n).strip():
        kept.pop()
    return [*kept, n]


# a run of newlines, possibly with spaces/tabs/\r between them ("\n\n", "\n  \n", "\r\n\r\n")
_NEWLINE_RUN = re.compile(r"\n(?:[^\S\n]*\n)*")


def newline_boundaries(
    text: str,
    token_end_chars: Sequence[int],
    *,
    double_newline: bool = False,
    region: Sequence[int] | None = None,
) -> list[int]:
    """Newline baseline: a step ends after the token holding the last ``"\\n"`` of each run of newlines.

    Exception: when that token opens with the newline run and also holds text of the next line (``"\\nShe"``,
    possible with some tokenizers), the step ends just before it, so every step ends at a line end.

    Token ``i`` covers ``text[token_end_chars[i-1]:token_end_chars[i]]`` (see ``Sample.token_end_chars``).
    A run of consecutive newlines (spaces/tabs between them allowed) is one separator, so newline tokens in a
    row give one break, not empty or blank steps; any step that would still hold only whitespace (leading or
    trailing newlines) is merged into its neighbour. ``double_newline=True`` splits only on runs with at
    least two newlines (paragraphs). ``region`` restricts breaks as in :func:`confidence_boundaries`.

    >>> text = "Step 1\\n\\nStep 2\\nDone\\n"
    >>> pieces = ["Step", " 1", "\\n", "\\n", "Step", " 2", "\\n", "Done", "\\n"]
    >>> ends = list(np.cumsum([len(p) for p in pieces]))
    >>> newline_boundaries(text, ends)
    [4, 7, 9]
    >>> newline_boundaries(text, ends, double_newline=True)
    [4, 9]
    """
    ends = _check_offsets(text, token_end_chars)
    n = len(ends)
    lo, hi = _check_region(region, n)
    cuts = []
    for m in _NEWLINE_RUN.finditer(text, 0, ends[-1]):
        run = m.group()
        if double_newline and run.count("\n") < 2:
            continue
        last_nl = m.start() + run.rfind("\n")
        i = _token_at_char(ends, last_nl)
        if i >= n:
            continue
        tok_start = ends[i - 1] if i > 0 else 0
        # a token that opens with the newline and carries the next line's text ("\nShe") is the start of
        # the next step: break before it, not after
        opens_next_line = not text[tok_start : m.start()].strip() and text[last_nl + 1 : ends[i]].strip()
        ender = i - 1 if opens_next_line else i
        if lo <= ender < hi:
            cuts.append(ender + 1)
    return _merge_blank_steps(text, ends, _finish(cuts, n))


def code_region(text: str, token_end_chars: Sequence[int]) -> Region | None:
    """Token range ``(start, end)`` of the code in a response: the content of its code block.

    The block is the one :func:`adaptivestep.code_blocks.code_span` finds (the first ```` ```python```` /
    ``py`` / ``python3`` block, else the first fenced block; an unclosed block runs to the end of the text),
    so the splitter tags exactly the code the checker runs. The range covers the tokens holding the block's
    first to last non-whitespace character (fence lines excluded unless a token straddles them). ``None``
    when there is no fenced block or it is blank: then the whole response counts.

    >>> text = "Here:\\n```python\\nx = 1\\n```\\nDone."
    >>> pieces = ["Here", ":\\n", "```", "python", "\\n", "x", " =", " 1", "\\n", "```", "\\n", "Done", "."]
    >>> ends = list(np.cumsum([len(p) for p in pieces]))
    >>> code_region(text, ends)
    (5, 8)
    """
    ends = _check_offsets(text, token_end_chars)
    n = len(ends)
    span = code_span(text)
    if span is None:
        return None
    a, b = span
    content = text[a:b]
    if not content.strip():
        return None
    a += len(content) - len(content.lstrip())
    b -= len(content) - len(content.rstrip())
    start, last = _token_at_char(ends, a), _token_at_char(ends, b - 1)
    if start >= n:  # the code lies beyond the tokens' text (should not happen with consistent offsets)
        return None
    return (start, min(last, n - 1) + 1)


# --------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class SplitParams:
    """Options of the splitters. Each method reads only the fields it needs.

    - ``break_rate``: confidence, when ``tau`` is None: target fraction of (region) tokens that end a step,
      in (0, 1); the paper's tau leaves about 2% of tokens below it.
    - ``tau``: confidence: the probability threshold; tokens with ``p < tau`` end a step. None = pick it with
      :func:`quantile_threshold` over all samples (:func:`split_samples` does). In (0, 1].
    - ``k``: fixed: tokens per step, integer >= 1.
    - ``rate``: random: probability that a token ends a step, in [0, 1]. None = the confidence split's rate
      on the same samples (computed by :func:`split_samples`).
    - ``seed``: random: integer >= 0; each sample draws from its own stream (seed, problem id, index), so the
      result does not depend on sample order.
    - ``double_newline``: newline: split only on blank lines ("\\n\\n") instead of every line end.
    - ``code_only``: all methods: for ``task_kind == "code"`` samples, breaks fall only inside the first
      fenced code block (:func:`code_region`).
    """

    break_rate: float = 0.02
    tau: float | None = None
    k: int = 32
    rate: float | None = None
    seed: int = 0
    double_newline: bool = False
    code_only: bool = True

    def __post_init__(self) -> None:
        def num(x: Any) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)

        if not num(self.break_rate) or not 0.0 < self.break_rate < 1.0:
            raise ValueError(f"SplitParams.break_rate must be in (0, 1), got {self.break_rate!r}")
        if self.tau is not None and (not num(self.tau) or not 0.0 < self.tau <= 1.0):
            raise ValueError(f"SplitParams.tau must be a probability in (0, 1] or None, got {self.tau!r}")
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise ValueError(f"SplitParams.k must be an integer >= 1, got {self.k!r}")
        if self.rate is not None and (not num(self.rate) or not 0.0 <= self.rate <= 1.0):
            raise ValueError(f"SplitParams.rate must be a probability in [0, 1] or None, got {self.rate!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"SplitParams.seed must be an integer >= 0, got {self.seed!r}")
        for name in ("double_newline", "code_only"):
            if not isinstance(getattr(self, name), bool):
                # ValueError like every other bad option, so a CLI reports them all the same way
                msg = f"SplitParams.{name} must be true or false, got {getattr(self, name)!r}"
                raise ValueError(msg)  # noqa: TRY004

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def region_of(sample: Sample, params: SplitParams) -> Region | None:
    """The token range breaks may fall in: the code block for code samples under ``code_only``, else None."""
    if params.code_only and sample.task_kind == "code":
        return code_region(sample.text, sample.token_end_chars)
    return None


def _make(
    sample: Sample,
    method: str,
    boundaries: list[int],
    region: Region | None,
    params: SplitParams,
    threshold: float | None = None,
) -> StepSplit:
    split = StepSplit(
        problem_id=sample.problem_id,
        sample_index=sample.sample_index,
        method=method,
        boundaries=boundaries,
        n_tokens=len(sample.token_ids),
        threshold=threshold,
        params=params.to_dict(),
        region=list(region) if region is not None else None,
    )
    split.validate()
    return split


def split_confidence(sample: Sample, params: SplitParams) -> StepSplit:
    """AdaptiveStep split of one sample with a given ``params.tau`` (pool first: :func:`split_samples`)."""
    if params.tau is None:
        raise ValueError(
            "SplitParams.tau is None: the confidence split needs a threshold pooled over all samples; "
            "use split_samples(samples, 'confidence', params) or set tau"
        )
    region = region_of(sample, params)
    b = confidence_boundaries(confidences(sample.logprobs), params.tau, region)
    return _make(sample, "confidence", b, region, params, threshold=params.tau)


def split_newline(sample: Sample, params: SplitParams) -> StepSplit:
    """Newline baseline of one sample (``params.double_newline`` picks "\\n" or "\\n\\n")."""
    region = region_of(sample, params)
    b = newline_boundaries(
        sample.text, sample.token_end_chars, double_newline=params.double_newline, region=region
    )
    return _make(sample, "newline", b, region, params)


def split_fixed(sample: Sample, params: SplitParams) -> StepSplit:
    """Fixed-length baseline of one sample: a step every ``params.k`` tokens."""
    region = region_of(sample, params)
    return _make(sample, "fixed", fixed_boundaries(len(sample.token_ids), params.k, region), region, params)


def sample_rng(seed: int, sample: Sample) -> np.random.Generator:
    """The random stream of one sample: depends on (seed, problem id, sample index), not on sample order."""
    return rng_for(seed, sample.problem_id, sample.sample_index)


def split_random(sample: Sample, params: SplitParams) -> StepSplit:
    """Random baseline of one sample with break probability ``params.rate`` (see :func:`split_samples`)."""
    if params.rate is None:
        raise ValueError(
            "SplitParams.rate is None: the random split needs a rate; use split_samples(samples, 'random', "
            "params) to take the confidence split's rate, or set rate"
        )
    region = region_of(sample, params)
    b = random_boundaries(len(sample.token_ids), params.rate, sample_rng(params.seed, sample), region)
    return _make(sample, "random", b, region, params)


Splitter = Callable[[Sample, SplitParams], StepSplit]

SPLITTERS: dict[str, Splitter] = {
    "confidence": split_confidence,
    "newline": split_newline,
    "fixed": split_fixed,
    "random": split_random,
}


def _pooled(samples: Sequence[Sample], params: SplitParams) -> np.ndarray:
    parts = []
    for s in samples:
        c = confidences(s.logprobs)
        lo, hi = region_of(s, params) or (0, c.size)
        parts.append(c[lo:hi])
    return np.concatenate(parts) if parts else np.empty(0)


def split_samples(
    samples: Sequence[Sample], method: str, params: SplitParams | None = None
) -> list[StepSplit]:
    """Split every sample with ``method``, pooling what must be pooled first.

    - ``confidence`` with ``tau`` None: tau = :func:`quantile_threshold` of the confidences of all samples'
      tokens (only the code-region tokens of code samples when ``code_only``), at ``break_rate``.
    - ``random`` with ``rate`` None: rate = the fraction of those pooled tokens below that tau (the expected
      rate of the confidence split, forced response ends excluded).

    The resolved tau / rate are written into each split's ``params`` (and ``threshold`` for confidence);
    ``params["pooled_rate"]`` is the pooled fraction of tokens below tau and ``params["pooled_tokens"]`` the
    pool size, whenever a pool was computed. Output order = input order.
    """
    params = params or SplitParams()
    if method not in SPLITTERS:
        raise ValueError(f"unknown split method {method!r} (expected one of {sorted(SPLITTERS)})")
    samples = list(samples)
    extra: dict[str, Any] = {}
    needs_pool = (method == "confidence" and params.tau is None) or (
        method == "random" and params.rate is None
    )
    if needs_pool:
        if not samples:
            raise ValueError(f"split_samples: no samples to pool for method {method!r}")
        pool = _pooled(samples, params)
        tau = params.tau if params.tau is not None else quantile_threshold(pool, params.break_rate)
        pooled_rate = float((pool < tau).mean())
        extra = {"pooled_rate": pooled_rate, "pooled_tokens": int(pool.size)}
        if method == "confidence":
            params = replace(params, tau=tau)
        else:
            params = replace(params, rate=pooled_rate)
            extra["rate_from_tau"] = tau
    out = []
    for s in samples:
        split = SPLITTERS[method](s, params)
        split.params.update(extra)
        out.append(split)
    return out


# ------------------------------------------------------------------------------------------------ text


def step_texts(sample: Sample, split: StepSplit) -> list[str]:
    """Text of each step (``"".join`` gives the response text covered by its tokens)."""
    if split.n_tokens != len(sample.token_ids):
        raise ValueError(
            f"split {split.problem_id!r}#{split.sample_index} has n_tokens={split.n_tokens} but sample "
            f"{sample.problem_id!r}#{sample.sample_index} has {len(sample.token_ids)} tokens"
        )
    return [sample.token_text(a, b) for a, b in split.spans()]


def mark_breaks(sample: Sample, split: StepSplit, marker: str = " | ") -> str:
    """The response text with ``marker`` inserted at every step break (for printing)."""
    return marker.join(step_texts(sample, split))
