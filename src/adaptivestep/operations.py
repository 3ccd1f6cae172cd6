"""The operations the CLI verbs and the main job share, one function each: scoring steps with a PRM, building
Best-of-N pools and their choices, and the TVD loop over problems with its output records.

(Opening the policy is :func:`adaptivestep.policy.open_policy`, reading a problem set
:func:`adaptivestep.tasks.load_problem_set`, sampling :func:`adaptivestep.sample.sample_set`, labelling
:func:`adaptivestep.label.label_files` / :func:`~adaptivestep.label.label_samples`, training
:func:`adaptivestep.prm.train.train`.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .jsonl import DataError
from .records import BonChoice, Problem, Sample, StepSplit, TVDRecord

if TYPE_CHECKING:
    from .backends.base import Backend
    from .scoring import StepScorer
    from .search.bon import Candidate
    from .search.estimate import CurvePoint
    from .search.tvd import TVDConfig

Judge = Callable[[Problem, str], bool]

DEFAULT_RULES: tuple[str, ...] = ("majority", "prm-min", "prm-mean", "prm-last", "prm-prod", "weighted-majority",
                                  "confidence", "oracle")
"""The Best-of-N selection rules compared by default (``bon`` and the main job)."""
DEFAULT_RESAMPLES = 200
"""Random subsets per question and N when estimating accuracy vs N (``bon`` and the main job)."""


# ------------------------------------------------------------------------------------------------ scoring
def score_steps(scorer: StepScorer, items: Sequence[tuple[str, list[str]]],
                batch: int | None = None) -> list[list[float]]:
    """PRM step scores of ``(question, steps)`` items, ``batch`` items per call (None = one call)."""
    if batch is None or batch >= len(items):
        return [[float(x) for x in sc] for sc in scorer.score_batch(list(items))] if items else []
    out: list[list[float]] = []
    for i in range(0, len(items), batch):
        out.extend([float(x) for x in sc] for sc in scorer.score_batch(list(items[i: i + batch])))
    return out


def step_items(samples: Sequence[Sample], splits: Sequence[StepSplit],
               problems: Mapping[str, Problem]) -> list[tuple[str, list[str]]]:
    """``(question, step texts)`` of each split sample (``samples[i]`` is the sample of ``splits[i]``)."""
    from .split import step_texts

    return [(problems[s.problem_id].question, step_texts(s, sp)) for s, sp in zip(samples, splits)]


# ------------------------------------------------------------------------------------------------ Best-of-N
def candidate_pools(
    problems: Mapping[str, Problem],
    samples: Iterable[Sample],
    scores: Mapping[tuple[str, int], list[float] | None],
    *,
    judge: Judge | None = None,
    order: Iterable[str] = (),
) -> dict[str, list[Candidate]]:
    """Each problem's Best-of-N pool: one :class:`~adaptivestep.search.bon.Candidate` per sample, with its vote
    key, its step scores (None = unscored: PRM rules skip it) and the checker's verdict.

    order: problem ids whose pools come first, in this order (even when empty); the others follow in the
    order of their first sample. Raises DataError for a sample whose problem is unknown.
    """
    from .checkers import vote_key
    from .label import judge_by_kind
    from .search.bon import Candidate, mean_token_probability

    judge = judge or judge_by_kind()
    pools: dict[str, list[Candidate]] = {pid: [] for pid in order}
    for s in samples:
        p = problems.get(s.problem_id)
        if p is None:
            raise DataError(f"sample {s.problem_id}#{s.sample_index}: its problem is not among the problems given")
        pools.setdefault(s.problem_id, []).append(
            Candidate(s.sample_index, vote_key(p.kind, s.text), scores.get(s.key), judge(p, s.text),
                      mean_token_probability(s.logprobs)))
    return pools


def full_pools(pools: Mapping[str, list[Candidate]], size: int | None = None) -> list[list[Candidate]]:
    """The pools holding ``size`` candidates (None = the largest size): accuracy-vs-N compares like with like."""
    sizes = [len(v) for v in pools.values()]
    want = size if size is not None else max(sizes, default=0)
    return [v for v in pools.values() if len(v) == want]


def bon_curves(pools: Sequence[list[Candidate]], rules: Sequence[str], *, resamples: int,
               seed: int) -> dict[str, list[CurvePoint]]:
    """Accuracy vs N with 95% intervals for each selection rule (random subsets of each pool)."""
    from .search.estimate import subsample_curve

    return {rule: subsample_curve(list(pools), rule, resamples=resamples, seed=seed) for rule in rules}


def bon_choices(pools: Mapping[str, list[Candidate]], rules: Sequence[str]) -> list[BonChoice]:
    """What each rule picks from each problem's whole pool, as data-contract records."""
    from .search.bon import select

    out = []
    for pid, cands in pools.items():
        if not cands:
            continue
        for rule in rules:
            sel = select(cands, rule)
            correct = next(c.correct for c in cands if c.index == sel.chosen)
            out.append(BonChoice(problem_id=pid, rule=rule, chosen=int(sel.chosen), correct=bool(correct),
                                 skipped=[int(i) for i in sel.skipped], fallback=bool(sel.fallback),
                                 pool_size=len(cands)))
    return out


# ------------------------------------------------------------------------------------------------ TVD
def tvd_config_for(kind: str, threshold: float | None = None, **settings: Any) -> TVDConfig:
    """TVD settings for a task kind: ``threshold`` None = the paper's for that kind."""
    from .search.tvd import TVDConfig, threshold_for

    return TVDConfig(threshold=threshold_for(kind, threshold), **settings)


def tvd_problems(
    backend: Backend,
    scorer: StepScorer,
    problems: Sequence[Problem],
    out_path: str | Path,
    config: Callable[[str], TVDConfig],
    *,
    judge: Judge | None = None,
    prm: str = "",
    progress: bool = False,
    on_record: Callable[[TVDRecord], None] = lambda r: None,
) -> list[TVDRecord]:
    """Decode every problem with TVD, appending one :class:`TVDRecord` per problem to ``out_path`` (resumable:
    problems already there are not decoded again). ``config(kind)`` gives the settings for a task kind.
    Returns the records of ``problems``, in order (those from earlier runs included)."""
    from .jsonl import JsonlWriter, read_records
    from .label import judge_by_kind
    from .search.tvd import tvd_decode
    from .tasks import render_prompt

    judge = judge or judge_by_kind()
    out = Path(out_path)
    done = {r.problem_id: r for r in read_records(out, TVDRecord, tolerate_torn_tail=True)} if out.exists() else {}
    todo: Iterable[Problem] = [p for p in problems if p.id not in done]
    if progress:
        from .progress import progress_bar

        todo = progress_bar(todo, desc="tvd", unit="question")
    with JsonlWriter(out) as w:
        for p in todo:
            cfg = config(p.kind)
            r = tvd_decode(backend, scorer, p.question, backend.tokenize(render_prompt(p, backend)), cfg)
            rec = TVDRecord(problem_id=p.id, text=r.text, token_ids=list(r.token_ids), boundaries=list(r.boundaries),
                            finish_reason=r.finish_reason, interventions=r.n_interventions,
                            prm_items=r.n_prm_items, correct=bool(judge(p, r.text)), threshold=cfg.threshold,
                            k=cfg.k, prm=prm)
            w.write(rec)
            done[p.id] = rec
            on_record(rec)
    return [done[p.id] for p in problems if p.id in done]
