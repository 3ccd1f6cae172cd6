"""Statistics of step splits: how many steps, how long, and what the break tokens are (the paper's Table 7).

The *break token* of a step is the token that ends it (token ``boundary - 1``). The forced break at the end of
each response is counted apart ("end breaks") and is not categorised: it says nothing about where the method
chose to break. A low-confidence last token coincides with that forced end and is counted there too.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from statistics import median
from typing import Any

from .records import Sample, StepSplit

CATEGORIES: tuple[str, ...] = (
    "word",
    "mid-word",
    "number",
    "operator",
    "punctuation",
    "newline",
    "whitespace",
    "other",
)

# Conjunctions and connectives that open a new reasoning move. The paper reports 29% of AdaptiveStep breaks
# on conjunctions, 21% on math formulas, 11% on nouns.
CONJUNCTIONS: frozenset[str] = frozenset(
    {
        "and",
        "or",
        "but",
        "so",
        "then",
        "because",
        "since",
        "therefore",
        "thus",
        "hence",
        "which",
        "that",
        "if",
        "when",
        "while",
        "as",
        "although",
        "though",
        "however",
        "where",
        "whereas",
        "yet",
        "nor",
        "unless",
        "until",
        "after",
        "before",
        "also",
        "now",
        "next",
        "finally",
    }
)

# Math symbols; a token made only of these (and brackets), or a LaTeX command (\frac), is "operator".
_OPERATOR_CHARS = frozenset("+-*/=<>^_%|~\\$×÷·±≤≥≠≈√∑∏∫∞−")
_BRACKETS = frozenset("(){}[]")
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_NUMBER = re.compile(r"[\d.,]*\d[\d.,]*")
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")


def _is_punct(ch: str) -> bool:
    return ch in string.punctuation or unicodedata.category(ch).startswith("P")


def token_category(token: str, next_char: str = "") -> str:
    """Category of a break token given the character right after it in the response (``""`` at the end).

    Checked in this order: ``newline`` (holds a "\\n"), ``whitespace`` (only blanks), ``mid-word`` (ends on a
    letter and the next character is a letter/digit, so the break cuts a word), ``number`` (digits with
    ``.``/``,``; a digit token is ``number`` even inside a longer number, since tokenizers often split digits
    one by one), ``operator`` (math symbols ``+-*/=<>^`` etc., possibly with brackets, or a LaTeX command such
    as ``\\frac``), ``word`` (letters, incl. a suffix token that ends a word), ``punctuation``, else ``other``
    (mixed pieces such as ``"2x"`` or ``"(3"``). Surrounding spaces are ignored.

    >>> [token_category(t, nxt) for t, nxt in [(" so", " "), (" th", "e"), (" 42", "."), (" =", " "),
    ...                                        ("\\\\frac", "{"), (".", " "), (".\\n", "T"), (" ", "x")]]
    ['word', 'mid-word', 'number', 'operator', 'operator', 'punctuation', 'newline', 'whitespace']
    """
    if not token:
        return "other"  # zero-width piece of a multi-byte character
    if "\n" in token:
        return "newline"
    s = token.strip()
    if not s:
        return "whitespace"
    if token[-1].isalpha() and next_char[:1].isalnum():
        return "mid-word"
    if _NUMBER.fullmatch(s):
        return "number"
    if _LATEX_COMMAND.match(s) or (
        any(ch in _OPERATOR_CHARS for ch in s) and all(ch in _OPERATOR_CHARS or ch in _BRACKETS for ch in s)
    ):
        return "operator"
    if _WORD.fullmatch(s):
        return "word"
    if all(_is_punct(ch) for ch in s):
        return "punctuation"
    return "other"


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def _share(k: int, total: int) -> float:
    return k / total if total else 0.0


def split_stats(samples: Sequence[Sample], splits: Sequence[StepSplit], top: int = 20) -> dict[str, Any]:
    """Statistics of ``splits`` (each matched to its sample by ``(problem_id, sample_index)``).

    Returns a JSON-serialisable dict:

    - ``n_responses``, ``n_tokens``, ``n_steps``, ``methods`` (sorted), ``threshold`` (tau when all splits
      share one, else None);
    - ``steps_per_response`` / ``tokens_per_step``: ``{"mean", "median"}``;
    - ``breaks``: ``inner`` (breaks before the response end: the method's own choices), ``end`` (forced
      end-of-response breaks = n_responses), ``inner_rate`` = inner / n_tokens, ``total_rate`` =
      (inner + end) / n_tokens, ``region_tokens`` (tokens where breaks were allowed: the code regions of
      code-only splits, all tokens otherwise) and ``inner_rate_region`` = inner / region_tokens;
    - ``categories``: ``{category: {"count", "share"}}`` over inner break tokens (:func:`token_category`);
    - ``conjunction``: ``{"count", "share"}`` of inner break tokens that are a whole word in
      :data:`CONJUNCTIONS`;
    - ``top_tokens``: the ``top`` most frequent inner break-token strings as ``[[text, count], ...]``.
    """
    if not splits:
        raise ValueError("split_stats: no splits given")
    by_key = {s.key: s for s in samples}
    steps_per_resp: list[int] = []
    step_lengths: list[int] = []
    n_tokens = region_tokens = 0
    cats: Counter[str] = Counter()
    tokens: Counter[str] = Counter()
    conj = 0
    for sp in splits:
        sample = by_key.get(sp.key)
        if sample is None:
            raise ValueError(f"split_stats: split {sp.problem_id!r}#{sp.sample_index} has no matching sample")
        n = len(sample.token_ids)
        if sp.n_tokens != n or sp.boundaries[-1] != n:
            raise ValueError(
                f"split_stats: split {sp.problem_id!r}#{sp.sample_index} covers {sp.n_tokens} tokens but the "
                f"sample has {n}"
            )
        n_tokens += n
        region_tokens += (sp.region[1] - sp.region[0]) if sp.region is not None else n
        steps_per_resp.append(len(sp.boundaries))
        step_lengths.extend(b - a for a, b in sp.spans())
        ends = sample.token_end_chars
        for b in sp.boundaries[:-1]:
            i = b - 1
            tok = sample.token_text(i, b)
            nxt = sample.text[ends[i] : ends[i] + 1]
            cat = token_category(tok, nxt)
            cats[cat] += 1
            tokens[tok] += 1
            if cat == "word" and tok.strip().lower() in CONJUNCTIONS:
                conj += 1
    inner = sum(cats.values())
    taus = {sp.threshold for sp in splits}
    return {
        "n_responses": len(splits),
        "n_tokens": n_tokens,
        "n_steps": len(step_lengths),
        "methods": sorted({sp.method for sp in splits}),
        "threshold": next(iter(taus)) if len(taus) == 1 else None,
        "steps_per_response": {"mean": _mean(steps_per_resp), "median": float(median(steps_per_resp))},
        "tokens_per_step": {"mean": _mean(step_lengths), "median": float(median(step_lengths))},
        "breaks": {
            "inner": inner,
            "end": len(splits),
            "inner_rate": _share(inner, n_tokens),
            "total_rate": _share(inner + len(splits), n_tokens),
            "region_tokens": region_tokens,
            "inner_rate_region": _share(inner, region_tokens),
        },
        "categories": {c: {"count": cats[c], "share": _share(cats[c], inner)} for c in CATEGORIES},
        "conjunction": {"count": conj, "share": _share(conj, inner)},
        "top_tokens": [[t, k] for t, k in tokens.most_common(top)],
    }


def format_stats(stats: dict[str, Any]) -> str:
    """Human-readable table of :func:`split_stats` output (break-token analysis like the paper's Table 7)."""
    b = stats["breaks"]
    tau = stats.get("threshold")
    lines = [
        f"methods            {', '.join(stats['methods'])}"
        + (f"   tau = {tau:.4g}" if tau is not None else ""),
        f"responses          {stats['n_responses']}",
        f"tokens             {stats['n_tokens']}",
        f"steps              {stats['n_steps']}",
        (
            f"steps / response   mean {stats['steps_per_response']['mean']:.2f}   "
            f"median {stats['steps_per_response']['median']:.1f}"
        ),
        (
            f"tokens / step      mean {stats['tokens_per_step']['mean']:.1f}   "
            f"median {stats['tokens_per_step']['median']:.1f}"
        ),
        f"breaks             {b['inner']} inner + {b['end']} response ends",
        (
            f"break rate         inner {100 * b['inner_rate']:.2f}%   "
            f"with ends {100 * b['total_rate']:.2f}%   "
            f"inner over region {100 * b['inner_rate_region']:.2f}% ({b['region_tokens']} tokens)"
        ),
        "",
        "break token category   count   share",
    ]
    for cat, v in stats["categories"].items():
        lines.append(f"  {cat:<20} {v['count']:>6}  {100 * v['share']:5.1f}%")
    c = stats["conjunction"]
    lines.append(f"  {'(conjunction words)':<20} {c['count']:>6}  {100 * c['share']:5.1f}%")
    if stats["top_tokens"]:
        lines += ["", f"top {len(stats['top_tokens'])} break tokens"]
        lines += [f"  {t!r:<20} {k:>6}" for t, k in stats["top_tokens"]]
    return "\n".join(lines)
