"""Monte-Carlo step labelling: rollouts from every step prefix, judged by a checker, resumable per rollout.

For a response split into K steps, prefix k (k < K-1) = prompt + response tokens up to the end of step k.
M rollouts continue each prefix; a checker judges each full text (prefix text + rollout). The last step is the
response itself and is labelled by its own final answer. Rollout ``j`` of the prefix ending at token ``e`` uses
seed ``stable_seed(cfg.seed, problem_id, sample_index, e)`` and stream ``j``: it is the same rollout whichever
split method produced that prefix, whether it was batched, and whether the run was interrupted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .backends.base import Backend, GenRequest, SamplingConfig
from .jsonl import DataError, JsonlWriter, read_records
from .labels import early_stop_waves, first_error_search, hard_label, soft_label
from .records import ErrorRecord, LabeledRecord, Problem, Sample, StepRollouts, StepSplit
from .worklog import Rollout, WorkLog, output_lock, stable_seed, storage_errors


@dataclass(frozen=True)
class LabelConfig:
    """Settings of ``adaptivestep label``.

    rollouts: M, completions sampled from each step prefix (Math-Shepherd used 8).
    label_type: which label goes into ``labels``: "hard" (1.0 if any rollout is correct) or "soft" (fraction).
    max_tokens: most tokens per rollout.
    temperature: sampling temperature of rollouts (1.0 = model distribution).
    seed: base seed; every rollout's seed derives from it, the sample and the prefix.
    kv_reuse: keep the KV cache between calls so step k+1's prefix only evaluates what extends step k's.
    early_stop: (hard labels) stop a step's rollouts after the first wave that holds a correct one.
    wave: rollouts per wave with early_stop (1 = stop at the very first success, larger = more batching).
    first_error_search: (hard labels) binary search for the first step labelled 0, inferring the others.
    batched: decode the rollouts of a prefix (and of all prefixes of a sample) together.
    keep_text: store each rollout's text in the work log (for inspection; makes it larger).
    concurrent_samples: samples labelled together, their pending rollouts decoded in one batch.
    """

    rollouts: int = 8
    label_type: str = "hard"
    max_tokens: int = 384
    temperature: float = 1.0
    seed: int = 0
    kv_reuse: bool = True
    early_stop: bool = False
    wave: int = 2
    first_error_search: bool = False
    batched: bool = True
    keep_text: bool = False
    concurrent_samples: int = 7

    def __post_init__(self) -> None:
        if self.rollouts < 1:
            raise ValueError(f"--rollouts must be >= 1, got {self.rollouts}")
        if self.label_type not in ("hard", "soft"):
            raise ValueError(f"--label-type must be 'hard' or 'soft', got {self.label_type!r}")
        if self.max_tokens < 1:
            raise ValueError(f"--max-tokens must be >= 1, got {self.max_tokens}")
        if self.concurrent_samples < 1:
            raise ValueError(f"--concurrent-samples must be >= 1, got {self.concurrent_samples}")
        if self.wave < 1:
            raise ValueError(f"--wave must be >= 1, got {self.wave}")
        if self.label_type == "soft" and (self.early_stop or self.first_error_search):
            raise ValueError("early stop and first-error search give hard labels only; use --label-type hard")

    @property
    def savers(self) -> str:
        on = [n for n, v in (("kv", self.kv_reuse), ("early", self.early_stop),
                             ("bsearch", self.first_error_search), ("batch", self.batched)) if v]
        return "+".join(on) or "none"


class LabelFailure(RuntimeError):
    """One sample could not be labelled (no gold answer, checker error...); counted and reported."""


Judge = Callable[[Problem, str], bool]


def judge_by_kind() -> Judge:
    """A judge that checks each problem with its kind's checker (:func:`adaptivestep.checkers.get_checker`)."""
    from .checkers import get_checker

    checkers: dict[str, Any] = {}

    def judge(problem: Problem, text: str) -> bool:
        if problem.kind not in checkers:
            checkers[problem.kind] = get_checker(problem.kind)
        return bool(checkers[problem.kind].check(problem, text).correct)

    return judge


@dataclass
class _Ctx:
    backend: Backend
    judge: Judge
    cfg: LabelConfig
    log: WorkLog
    on_rollouts: Callable[[int], None] = lambda n: None


Wanted = dict[int, list[int]]  # prefix end (response tokens) -> rollout indices
Got = dict[int, list[Rollout]]


@dataclass
class _Job:
    """One sample being labelled: its plan is a generator that yields the rollouts it needs next."""

    problem: Problem
    sample: Sample
    split: StepSplit
    plan: Generator[Wanted, Got, LabeledRecord]
    wanted: Wanted | None = None
    record: LabeledRecord | None = None
    error: str | None = None


def _judge(ctx: _Ctx, problem: Problem, text: str) -> bool:
    try:
        return bool(ctx.judge(problem, text))
    except Exception as e:  # a checker that raises must not give a silent label
        raise LabelFailure(f"checker raised on {problem.id}: {type(e).__name__}: {e}") from e


def _run_rollouts(ctx: _Ctx, jobs: list[_Job]) -> list[Got]:
    """Finished rollouts for each job's ``wanted``: from the log, generating all missing ones together."""
    cfg = ctx.cfg
    scfg = SamplingConfig(temperature=cfg.temperature, max_tokens=cfg.max_tokens)
    results: list[Got] = []
    todo: list[tuple[int, int, int, int]] = []  # (job, prefix_end, first_index, n)
    for ji, job in enumerate(jobs):
        smp = job.sample
        done = ctx.log.for_sample(smp.problem_id, smp.sample_index)
        got: Got = {}
        for end, idxs in (job.wanted or {}).items():
            seed = stable_seed(cfg.seed, smp.problem_id, smp.sample_index, end)
            got[end] = [done[(end, j, seed)] for j in idxs if (end, j, seed) in done]
            for j in idxs:
                if (end, j, seed) in done:
                    continue
                last = todo[-1] if todo else None
                if cfg.batched and last and last[:2] == (ji, end) and last[2] + last[3] == j:
                    todo[-1] = (ji, end, last[2], last[3] + 1)  # contiguous indices: one request
                else:
                    todo.append((ji, end, j, 1))
        results.append(got)
    calls = [todo] if cfg.batched else [[t] for t in todo]
    for call in calls:
        if not call:
            continue
        reqs = []
        for ji, end, j0, n in call:
            smp = jobs[ji].sample
            reqs.append(GenRequest(prompt_ids=tuple(smp.prompt_ids + smp.token_ids[:end]), n=n, first_index=j0,
                                   seed=stable_seed(cfg.seed, smp.problem_id, smp.sample_index, end), config=scfg))
        if not cfg.kv_reuse and hasattr(ctx.backend, "reset_cache"):
            ctx.backend.reset_cache()  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        outs = ctx.backend.generate(reqs)
        wall = (time.perf_counter() - t0) / max(1, sum(r.n for r in reqs))
        for (ji, end, j0, _n), req, gens in zip(call, reqs, outs):
            job = jobs[ji]
            prefix_text = job.sample.token_text(0, end)
            for off, g in enumerate(gens):
                if job.error is None:
                    try:
                        ok = _judge(ctx, job.problem, prefix_text + g.text)
                    except LabelFailure as e:
                        job.error = str(e)
                        continue
                    r = Rollout(job.sample.problem_id, job.sample.sample_index, end, j0 + off, req.seed, int(ok),
                                len(g.token_ids), g.prompt_tokens_evaluated, wall,
                                g.text if cfg.keep_text else "")
                    ctx.log.add(r)
                    results[ji][end].append(r)
            ctx.on_rollouts(len(gens))
    for got in results:
        for rs in got.values():
            rs.sort(key=lambda r: r.index)
    return results


def _plan(ctx: _Ctx, problem: Problem, sample: Sample, split: StepSplit) -> Generator[Wanted, Got, LabeledRecord]:
    """Label every step of one split sample (see the module docstring), yielding the rollouts it needs."""
    cfg = ctx.cfg
    if split.n_tokens != len(sample.token_ids):
        raise LabelFailure(
            f"split of {sample.problem_id}#{sample.sample_index} has n_tokens={split.n_tokens} but the sample has "
            f"{len(sample.token_ids)} tokens: the split file does not match the samples file"
        )
    if problem.kind == "math" and not (problem.answer or "").strip():
        raise LabelFailure(f"problem {problem.id} has no gold answer")
    if problem.kind == "code" and not (problem.tests or "").strip():
        raise LabelFailure(f"code problem {problem.id} has no tests")
    t0 = time.perf_counter()
    spans = split.spans()
    ends = [e for _, e in spans]
    k_steps = len(spans)
    final_ok = _judge(ctx, problem, sample.text)
    final = 1.0 if final_ok else 0.0
    per_step: dict[int, list[Rollout]] = {}

    def probe(ks: Sequence[int]) -> Generator[Wanted, Got, dict[int, float]]:
        """Hard labels of steps ``ks`` (rolled out together), with early stop if configured."""
        waves = early_stop_waves(cfg.rollouts, cfg.wave) if cfg.early_stop else [list(range(cfg.rollouts))]
        open_ks = list(ks)
        for wave in waves:
            got = yield {ends[k]: wave for k in open_ks}
            for k in open_ks:
                per_step.setdefault(k, []).extend(got[ends[k]])
            if cfg.early_stop:
                open_ks = [k for k in open_ks if not any(r.outcome for r in per_step[k])]
                if not open_ks:
                    break
        return {k: hard_label([r.outcome for r in per_step[k]]) for k in ks}

    inferred: set[int] = set()
    if cfg.first_error_search:
        search = first_error_search(k_steps, final)
        probed: list[int] = []
        try:
            k = next(search)
            while True:
                probed.append(k)
                label = final if k == k_steps - 1 else (yield from probe([k]))[k]
                k = search.send(label)
        except StopIteration as stop:
            hard = list(stop.value)
        inferred = set(range(k_steps)) - set(probed) - {k_steps - 1}
    else:
        inner = list(range(k_steps - 1))
        got = (yield from probe(inner)) if inner else {}
        hard = [got[k] for k in inner] + [final]
    hard[-1] = final
    soft: list[float] = []
    rollout_meta: list[StepRollouts] = []
    for k in range(k_steps):
        rs = per_step.get(k, [])
        if k == k_steps - 1:
            soft.append(final)
        elif rs:
            soft.append(soft_label([r.outcome for r in rs]))
        else:
            soft.append(hard[k])  # inferred by first-error search: no rollouts to average
        rollout_meta.append(StepRollouts(
            outcomes=[r.outcome for r in rs], seeds=sorted({r.seed for r in rs}),
            tokens=sum(r.tokens for r in rs), inferred=k in inferred, final=k == k_steps - 1,
        ))
    all_rs = [r for rs in per_step.values() for r in rs]
    cost = {
        "rollouts": float(len(all_rs)),
        "generated_tokens": float(sum(r.tokens for r in all_rs)),
        "prefix_tokens_evaluated": float(sum(r.prompt_evals for r in all_rs)),
        "rollout_wall_s": float(sum(r.wall_s for r in all_rs)),
        "wall_s": time.perf_counter() - t0,
    }
    steps = [sample.token_text(a, b) for a, b in spans]
    return LabeledRecord(
        prompt=problem.question, completions=steps,
        labels=list(hard if cfg.label_type == "hard" else soft),
        problem_id=sample.problem_id, sample_index=sample.sample_index, method=split.method,
        label_type=cfg.label_type, hard_labels=list(hard), soft_labels=soft, step_token_ends=ends,
        rollouts=rollout_meta, final_correct=bool(final_ok), cost=cost,
        meta={"savers": cfg.savers, "rollouts_per_step": cfg.rollouts, "seed": cfg.seed, "source": problem.source,
              "gold": problem.answer, "model": sample.model, "threshold": split.threshold,
              "label_config": asdict(cfg)},
    )


def _advance(job: _Job, got: Got | None) -> None:
    """Run a job's plan to its next request (or its end), recording the record or the failure."""
    try:
        job.wanted = job.plan.send(got) if got is not None else next(job.plan)
    except StopIteration as stop:
        job.wanted, job.record = None, stop.value
    except LabelFailure as e:
        job.wanted, job.error = None, str(e)


def label_many(ctx: _Ctx, items: Sequence[tuple[Problem, Sample, StepSplit]]) -> list[LabeledRecord | str]:
    """Label several samples together: every round, the rollouts all of them need go to the engine at once
    (so sequential plans like first-error search still fill a batch). Returns a record or an error per item."""
    jobs = [_Job(p, s, sp, _plan(ctx, p, s, sp)) for p, s, sp in items]
    for job in jobs:
        _advance(job, None)
    while True:
        active = [j for j in jobs if j.wanted is not None and j.error is None]
        if not active:
            break
        for job, got in zip(active, _run_rollouts(ctx, active)):
            if job.error is not None:
                job.wanted = None
                continue
            _advance(job, got)
    return [j.record if j.error is None and j.record is not None else (j.error or "no record") for j in jobs]


def label_sample(ctx: _Ctx, problem: Problem, sample: Sample, split: StepSplit) -> LabeledRecord:
    """Label one sample (see :func:`label_many`)."""
    out = label_many(ctx, [(problem, sample, split)])[0]
    if isinstance(out, str):
        raise LabelFailure(out)
    return out


@dataclass
class LabelSummary:
    labelled: int = 0
    skipped_done: int = 0
    failures: list[str] = field(default_factory=list)
    cost: dict[str, float] = field(default_factory=dict)


def iter_labels(
    backend: Backend,
    problems: Mapping[str, Problem],
    samples: Mapping[tuple[str, int], Sample],
    splits: Sequence[StepSplit],
    cfg: LabelConfig,
    *,
    judge: Judge | None = None,
    log: WorkLog | None = None,
    on_rollouts: Callable[[int], None] = lambda n: None,
) -> Iterator[LabeledRecord | ErrorRecord]:
    """Label every split sample in memory, yielding its record (or why it failed) in ``splits`` order, group
    by group of ``cfg.concurrent_samples``. ``log``: rollouts already there are reused, new ones added
    (default: a fresh in-memory log). ``judge``: default :func:`judge_by_kind`."""
    judge = judge or judge_by_kind()
    own_log = log is None
    log = log or WorkLog(":memory:")
    ctx = _Ctx(backend, judge, cfg, log, on_rollouts)
    try:
        for i in range(0, len(splits), cfg.concurrent_samples):
            group = splits[i: i + cfg.concurrent_samples]
            items, outcomes = [], {}
            for sp in group:
                problem = problems.get(sp.problem_id)
                if problem is None:
                    outcomes[sp.key] = f"sample {sp.problem_id}#{sp.sample_index}: problem not found"
                elif sp.key not in samples:
                    outcomes[sp.key] = f"split of {sp.problem_id}#{sp.sample_index}: no such sample"
                else:
                    items.append((problem, samples[sp.key], sp))
            for (_, smp, _), out in zip(items, label_many(ctx, items)):
                outcomes[smp.key] = out
            for sp in group:
                out = outcomes[sp.key]
                yield (ErrorRecord(sp.problem_id, out, sp.sample_index, stage="label") if isinstance(out, str)
                       else out)
    finally:
        if own_log:
            log.close()


def label_samples(
    backend: Backend,
    problems: Sequence[Problem] | Mapping[str, Problem],
    samples: Sequence[Sample],
    splits: Sequence[StepSplit],
    cfg: LabelConfig | None = None,
    *,
    judge: Judge | None = None,
) -> list[LabeledRecord | ErrorRecord]:
    """Label split samples in memory: one :class:`LabeledRecord` (or :class:`ErrorRecord`) per split, in order.

    The same rollouts, seeds and labels as :func:`label_files` on the same inputs.
    """
    by_id = problems if isinstance(problems, Mapping) else {p.id: p for p in problems}
    return list(iter_labels(backend, by_id, {s.key: s for s in samples}, list(splits), cfg or LabelConfig(),
                            judge=judge))


def label_files(
    backend: Backend,
    judge: Judge | None,
    problems: dict[str, Problem],
    samples_path: str | Path,
    splits_path: str | Path,
    out_path: str | Path,
    cfg: LabelConfig,
    worklog_path: str | Path | None = None,
    progress: bool = True,
    limit: int | None = None,
) -> LabelSummary:
    """Label every split sample, appending one :class:`LabeledRecord` per sample to ``out_path``.

    Resumable: samples already in ``out_path`` are skipped; rollouts already in the work log (default
    ``<out_path>.worklog.sqlite``) are reused, not repeated. Per-sample failures are counted in the summary
    and written to ``<out_path>.errors.jsonl`` as :class:`ErrorRecord`; they never produce a label. ``judge``
    None = :func:`judge_by_kind`. The labelling itself is :func:`iter_labels`, the in-memory one. One run
    per output at a time (:class:`~.worklog.OutputLocked`); a damaged work log raises
    :class:`~.worklog.WorkLogError` and a full disk :class:`~.worklog.StorageError` (see :mod:`.worklog`).
    """
    out_path = Path(out_path)
    wl_path = Path(worklog_path or out_path.with_name(out_path.name + ".worklog.sqlite"))
    with storage_errors(out_path, wl_path), output_lock(out_path):
        return _label_files(backend, judge, problems, samples_path, splits_path, out_path, cfg, wl_path,
                            progress, limit)


def _label_files(
    backend: Backend,
    judge: Judge | None,
    problems: dict[str, Problem],
    samples_path: str | Path,
    splits_path: str | Path,
    out_path: str | Path,
    cfg: LabelConfig,
    worklog_path: str | Path | None = None,
    progress: bool = True,
    limit: int | None = None,
) -> LabelSummary:
    samples = {s.key: s for s in read_records(samples_path, Sample, tolerate_torn_tail=True)}
    splits = list(read_records(splits_path, StepSplit, tolerate_torn_tail=True))
    for sp in splits:
        if sp.key not in samples:
            raise DataError(f"{splits_path}: split of {sp.problem_id}#{sp.sample_index} has no sample in {samples_path}")
    out_path = Path(out_path)
    done = set()
    if out_path.exists():
        done = {(r.problem_id, r.sample_index) for r in read_records(out_path, LabeledRecord, tolerate_torn_tail=True)}
    log = WorkLog(worklog_path or out_path.with_name(out_path.name + ".worklog.sqlite"))
    summary = LabelSummary()
    todo = [sp for sp in splits if sp.key not in done]
    summary.skipped_done = len(splits) - len(todo)
    if limit is not None:
        todo = todo[:limit]
    bar = None
    if progress:
        from .progress import progress_bar

        bar = progress_bar(total=len(todo), desc="label", unit="sample")
    n_roll = 0
    t_start = time.perf_counter()

    def on_rollouts(n: int) -> None:
        nonlocal n_roll
        n_roll += n
        if bar is not None:
            bar.set_postfix(rollouts=n_roll, rps=f"{n_roll / max(1e-9, time.perf_counter() - t_start):.2f}/s")

    totals: dict[str, float] = {}
    with JsonlWriter(out_path) as w, JsonlWriter(out_path.with_name(out_path.name + ".errors.jsonl")) as errs:
        for out in iter_labels(backend, problems, samples, todo, cfg, judge=judge, log=log, on_rollouts=on_rollouts):
            if isinstance(out, ErrorRecord):  # written in input order, each as soon as its group is done
                summary.failures.append(out.error)
                errs.write(out)
            else:
                w.write(out)
                summary.labelled += 1
                for k, v in out.cost.items():
                    totals[k] = totals.get(k, 0.0) + v
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    log.close()
    summary.cost = totals
    return summary
