"""Monte-Carlo step labelling: rollouts from every step prefix, judged by a checker, resumable per rollout.

For a response split into K steps, prefix k (k < K-1) = prompt + response tokens up to the end of step k.
M rollouts continue each prefix; a checker judges each full text (prefix text + rollout). The last step is the
response itself and is labelled by its own final answer. Rollout ``j`` of the prefix ending at token ``e`` uses
seed ``stable_seed(cfg.seed, problem_id, sample_index, e)`` and stream ``j``: it is the same rollout whichever
split method produced that prefix, whether it was batched, and whether the run was interrupted.

Each sample's plan (exhaustive, early-stop waves, first-error search) is a generator that yields the rollouts
it needs next; :func:`label_stream` feeds them into one backend stream and each finished rollout is judged,
committed to the work log and handed to its plan, which may ask for more while the others still decode.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..backends.base import (
    Backend,
    Finished,
    Generation,
    GenRequest,
    SamplingConfig,
    generate_stream,
    lockstep_stream,
)
from ..jsonl import DataError, JsonlWriter, read_records
from ..records import ErrorRecord, LabeledRecord, Problem, Sample, StepRollouts, StepSplit
from ..worklog import Rollout, WorkLog, output_lock, stable_seed, storage_errors
from .rules import early_stop_waves, hard_label, run_first_error_search, soft_label


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
    batched: decode rollouts together, streamed (False = one generate call per rollout, for comparison).
    keep_text: store each rollout's text in the work log (for inspection; makes it larger).
    concurrent_samples: samples open at once (the next starts as one finishes); their rollouts share one stream.
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
    from ..checkers import get_checker

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
    got: Got = field(default_factory=dict)
    pending: int = 0  # rollouts of ``wanted`` still decoding
    index: int = -1  # position among the items being labelled
    record: LabeledRecord | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.error is not None or (self.wanted is None and self.record is not None)


def _judge(ctx: _Ctx, problem: Problem, text: str) -> bool:
    try:
        return bool(ctx.judge(problem, text))
    except Exception as e:  # a checker that raises must not give a silent label
        raise LabelFailure(f"checker raised on {problem.id}: {type(e).__name__}: {e}") from e


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

    def probe_one(k: int) -> Generator[Wanted, Got, float]:
        if k == k_steps - 1:  # the response itself: labelled by its own answer
            return final
        return (yield from probe([k]))[k]

    inferred: set[int] = set()
    if cfg.first_error_search:
        hard, probed = yield from run_first_error_search(k_steps, final, probe_one)
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


class _Engine:
    """Feeds the rollouts that labelling plans ask for into one backend stream (see :func:`label_stream`)."""

    def __init__(self, ctx: _Ctx):
        self.ctx = ctx
        cfg = ctx.cfg
        self.scfg = SamplingConfig(temperature=cfg.temperature, max_tokens=cfg.max_tokens)
        self.requests: list[GenRequest | None] = []  # None once all its rollouts are back: frees its prompt
        self.meta: list[list[Any]] = []  # per request: [job, prefix end, first rollout index, rollouts not back]

    def stream(self) -> Iterator[Finished]:
        cfg, be = self.ctx.cfg, self.ctx.backend
        if cfg.batched and cfg.kv_reuse:
            return generate_stream(be, self.requests)  # type: ignore[arg-type]
        # the savers switched off, as before streaming: one call per request, or the cache dropped per call
        reset = getattr(be, "reset_cache", None) if not cfg.kv_reuse else None
        return lockstep_stream(be, self.requests, batched=cfg.batched, before_call=reset)  # type: ignore[arg-type]

    def advance(self, job: _Job, got: Got | None = None) -> None:
        """Resume ``job``'s plan (with ``got``, or start it) until it waits for rollouts that are not in the
        work log, which are then submitted, or until it ends."""
        while job.error is None:
            try:
                job.wanted = job.plan.send(got) if got is not None else next(job.plan)
            except StopIteration as stop:
                job.wanted, job.record = None, stop.value
                return
            except LabelFailure as e:
                job.wanted, job.error = None, str(e)
                return
            self._submit(job)
            if job.pending:
                return
            got = job.got  # everything was in the log: no decoding

    def _submit(self, job: _Job) -> None:
        cfg, smp = self.ctx.cfg, job.sample
        done = self.ctx.log.for_sample(smp.problem_id, smp.sample_index)
        first = len(self.requests)  # requests before this may already be decoding: never merged into
        job.got, job.pending = {}, 0
        for end, idxs in (job.wanted or {}).items():
            seed = stable_seed(cfg.seed, smp.problem_id, smp.sample_index, end)
            job.got[end] = [done[(end, j, seed)] for j in idxs if (end, j, seed) in done]
            prompt = tuple(smp.prompt_ids + smp.token_ids[:end])
            for j in idxs:
                if (end, j, seed) in done:
                    continue
                job.pending += 1
                last = self.requests[-1] if len(self.requests) > first and self.meta[-1][1] == end else None
                if cfg.batched and last is not None and last.first_index + last.n == j:
                    self.requests[-1] = replace(last, n=last.n + 1)  # contiguous indices: one request
                    self.meta[-1][3] += 1
                else:
                    self.requests.append(GenRequest(prompt_ids=prompt, n=1, first_index=j, seed=seed,
                                                    config=self.scfg))
                    self.meta.append([job, end, j, 1])

    def take(self, r: int, j: int, g: Generation, wall_s: float) -> _Job:
        """Judge and log one finished rollout; resume its job's plan once the job has all it asked for."""
        meta = self.meta[r]
        job, end, j0 = meta[:3]
        req = self.requests[r]
        meta[3] -= 1
        if meta[3] == 0:  # the stream read it when it started: nothing will look at it again
            self.requests[r] = None
        if job.error is not None or req is None:
            return job  # failed meanwhile: its other rollouts are not labelled
        smp = job.sample
        try:
            ok = _judge(self.ctx, job.problem, smp.token_text(0, end) + g.text)
        except LabelFailure as e:
            job.wanted, job.error = None, str(e)
            return job
        roll = Rollout(smp.problem_id, smp.sample_index, end, j0 + j, req.seed, int(ok), len(g.token_ids),
                       g.prompt_tokens_evaluated, wall_s, g.text if self.ctx.cfg.keep_text else "")
        self.ctx.log.add(roll)  # committed now: a kill from here on loses nothing of this rollout
        job.got[end].append(roll)
        job.pending -= 1
        self.ctx.on_rollouts(1)
        if job.pending == 0:
            for rs in job.got.values():
                rs.sort(key=lambda x: x.index)
            self.advance(job, job.got)
        return job


def label_stream(
    ctx: _Ctx, items: Iterable[tuple[Problem, Sample, StepSplit]], window: int | None = None
) -> Iterator[tuple[int, LabeledRecord | str]]:
    """Label samples with their rollouts streamed through the backend; yields ``(item index, record or error)``
    as each sample finishes (not in input order).

    ``window`` samples (default ``cfg.concurrent_samples``) are open at once; when one finishes the next one
    starts, so sequential plans (first-error search, early-stop waves) keep a continuously batching backend
    full. Each rollout is judged and committed to the work log the moment the backend returns it. The labels
    do not depend on the order rollouts finish in: each plan sees its rollouts sorted by index.
    """
    eng = _Engine(ctx)
    todo = iter(enumerate(items))
    open_jobs: dict[int, _Job] = {}
    ready: list[tuple[int, LabeledRecord | str]] = []

    def result(job: _Job) -> LabeledRecord | str:
        return job.record if job.error is None and job.record is not None else (job.error or "no record")

    def refill() -> None:
        while len(open_jobs) < (window or ctx.cfg.concurrent_samples):
            nxt = next(todo, None)
            if nxt is None:
                return
            i, (p, smp, sp) = nxt
            job = _Job(p, smp, sp, _plan(ctx, p, smp, sp), index=i)
            eng.advance(job)
            if job.finished:
                ready.append((i, result(job)))
            else:
                open_jobs[i] = job

    refill()
    yield from ready
    ready.clear()
    t_prev = time.perf_counter()
    for r, j, g in eng.stream():
        job = eng.take(r, j, g, time.perf_counter() - t_prev)
        if job.finished and job.index in open_jobs:
            del open_jobs[job.index]
            ready.append((job.index, result(job)))
            refill()
        yield from ready
        ready.clear()
        t_prev = time.perf_counter()  # judging and writing are not rollout time
    if open_jobs:  # a bug, never a silent loss: every open job has rollouts in the stream
        raise RuntimeError(f"labelling stream ended with {len(open_jobs)} samples unfinished")


def label_many(ctx: _Ctx, items: Sequence[tuple[Problem, Sample, StepSplit]]) -> list[LabeledRecord | str]:
    """Label several samples together (:func:`label_stream` with all of them open). Returns a record or an
    error per item, in order."""
    out: list[LabeledRecord | str] = ["no record"] * len(items)
    for i, res in label_stream(ctx, items, window=max(1, len(items))):
        out[i] = res
    return out


def label_sample(ctx: _Ctx, problem: Problem, sample: Sample, split: StepSplit) -> LabeledRecord:
    """Label one sample (see :func:`label_stream`)."""
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
    """Label every split sample in memory, yielding its record (or why it failed) in ``splits`` order, each as
    soon as it and every sample before it are done (the rollouts themselves stream, see :func:`label_stream`).
    ``log``: rollouts already there are reused, new ones added (default: a fresh in-memory log). ``judge``:
    default :func:`judge_by_kind`."""
    judge = judge or judge_by_kind()
    own_log = log is None
    log = log or WorkLog(":memory:")
    ctx = _Ctx(backend, judge, cfg, log, on_rollouts)
    try:
        outcomes: dict[int, LabeledRecord | str] = {}
        items = []  # (position in splits, item) for the samples whose problem and sample are known
        for pos, sp in enumerate(splits):
            problem = problems.get(sp.problem_id)
            if problem is None:
                outcomes[pos] = f"sample {sp.problem_id}#{sp.sample_index}: problem not found"
            elif sp.key not in samples:
                outcomes[pos] = f"split of {sp.problem_id}#{sp.sample_index}: no such sample"
            else:
                items.append((pos, (problem, samples[sp.key], sp)))
        written = 0

        def ready() -> Iterator[LabeledRecord | ErrorRecord]:
            nonlocal written
            while written in outcomes:  # input order: each record as soon as those before it are out
                out, sp = outcomes.pop(written), splits[written]
                written += 1
                yield ErrorRecord(sp.problem_id, out, sp.sample_index, stage="label") if isinstance(out, str) else out

        yield from ready()
        for i, out in label_stream(ctx, (item for _, item in items)):
            outcomes[items[i][0]] = out
            yield from ready()
        yield from ready()
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
    out_path: Path,
    cfg: LabelConfig,
    worklog_path: Path,
    progress: bool,
    limit: int | None,
) -> LabelSummary:
    samples = {s.key: s for s in read_records(samples_path, Sample, tolerate_torn_tail=True)}
    splits = list(read_records(splits_path, StepSplit, tolerate_torn_tail=True))
    for sp in splits:
        if sp.key not in samples:
            raise DataError(f"{splits_path}: split of {sp.problem_id}#{sp.sample_index} has no sample in {samples_path}")
    done = set()
    if out_path.exists():
        done = {(r.problem_id, r.sample_index) for r in read_records(out_path, LabeledRecord, tolerate_torn_tail=True)}
    log = WorkLog(worklog_path)
    summary = LabelSummary()
    todo = [sp for sp in splits if sp.key not in done]
    summary.skipped_done = len(splits) - len(todo)
    if limit is not None:
        todo = todo[:limit]
    bar = None
    if progress:
        from ..progress import progress_bar

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
            if isinstance(out, ErrorRecord):
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
