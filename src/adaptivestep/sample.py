"""``adaptivestep sample``: N responses per problem with exact per-token log-probs, resumable.

Sample ``i`` of problem ``p`` is continuation ``i`` of a request seeded with ``stable_seed(seed, p.id)``, so a
re-run that only generates the missing indices writes exactly what an uninterrupted run would have written.
Each finished sample is appended (and fsynced) at once: a kill loses only the generations in flight.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .backends.base import Backend, GenRequest, SamplingConfig
from .jsonl import JsonlWriter, read_records
from .records import Problem, Sample, problems_path_for
from .seeds import stable_seed


@dataclass
class SampleConfig:
    """How many responses to draw per problem, and how.

    n: responses per problem.
    temperature: sampling temperature (log-probs are always recorded at T = 1).
    top_p: nucleus sampling mass (1 = off).
    max_tokens: most tokens per response.
    top_logprobs: also keep the top-k alternatives per token (0 = none).
    seed: base seed (sample i of problem p is reproducible).
    batch: sequences decoded together in one engine call.
    """

    n: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 512
    top_logprobs: int = 0
    seed: int = 0
    batch: int = 14

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"--n must be >= 1, got {self.n}")
        if self.batch < 1:
            raise ValueError(f"--batch must be >= 1, got {self.batch}")

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                              top_logprobs=self.top_logprobs)


@dataclass
class SampleSummary:
    problems: int = 0
    written: int = 0
    already_done: int = 0
    empty: int = 0
    tokens: int = 0
    wall_s: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else 0.0


def record_problems(problems: Sequence[Problem], samples_path: str | Path) -> Path:
    """Append the problems not yet in ``problems.jsonl`` beside ``samples_path``; returns that file."""
    pfile = problems_path_for(samples_path)
    known = {p.id for p in read_records(pfile, Problem, tolerate_torn_tail=True)} if pfile.exists() else set()
    with JsonlWriter(pfile) as w:
        for p in problems:
            if p.id not in known:
                w.write(p)
                known.add(p.id)
    return pfile


def existing_indices(out_path: str | Path) -> dict[str, set[int]]:
    """Sample indices already written, per problem id (a torn last line from a kill is ignored)."""
    have: dict[str, set[int]] = defaultdict(set)
    if Path(out_path).exists():
        for s in read_records(out_path, Sample, tolerate_torn_tail=True):
            have[s.problem_id].add(s.sample_index)
    return have


def _ranges(idxs: Sequence[int]) -> list[tuple[int, int]]:
    """Contiguous runs ``(first, count)`` of sorted indices."""
    out: list[tuple[int, int]] = []
    for i in sorted(idxs):
        if out and out[-1][0] + out[-1][1] == i:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((i, 1))
    return out


def sample_problems(
    backend: Backend,
    problems: Sequence[Problem],
    out_path: str | Path,
    *,
    n: int,
    config: SamplingConfig,
    seed: int = 0,
    render: Callable[[Problem], str],
    batch_sequences: int = 14,
    progress: bool = True,
) -> SampleSummary:
    """Generate the missing samples of every problem and append them to ``out_path``.

    ``render(problem)`` gives the chat-rendered prompt text. ``batch_sequences`` is how many sequences one
    backend call decodes together (more = faster aggregate decoding on engines that batch).
    """
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    have = existing_indices(out_path)
    summary = SampleSummary(problems=len(problems))
    with JsonlWriter(out_path) as w:
        for smp in _generate(backend, problems, n, config, seed, render, batch_sequences, have, summary, progress):
            w.write(smp)
    return summary


def generate_samples(backend: Backend, problems: Sequence[Problem], cfg: SampleConfig | None = None, *,
                     progress: bool = False) -> list[Sample]:
    """``cfg.n`` samples of each problem, in memory: the same samples :func:`sample_set` writes to a file."""
    from .tasks import render_prompt

    cfg = cfg or SampleConfig()
    return list(_generate(backend, problems, cfg.n, cfg.sampling(), cfg.seed, lambda p: render_prompt(p, backend),
                          cfg.batch, {}, SampleSummary(problems=len(problems)), progress))


def _generate(backend: Backend, problems: Sequence[Problem], n: int, config: SamplingConfig, seed: int,
              render: Callable[[Problem], str], batch_sequences: int, have: Mapping[str, set[int]],
              summary: SampleSummary, progress: bool) -> Iterator[Sample]:
    """The samples of ``problems`` not in ``have`` (problem id -> indices), batch by batch; counts go to
    ``summary``."""
    jobs: list[tuple[Problem, str, list[int], int, int]] = []  # (problem, prompt, prompt_ids, first, count)
    for p in problems:
        missing = [i for i in range(n) if i not in have.get(p.id, set())]
        summary.already_done += n - len(missing)
        if not missing:
            continue
        prompt = render(p)
        ids = backend.tokenize(prompt)
        for first, count in _ranges(missing):
            for c0 in range(0, count, batch_sequences):
                jobs.append((p, prompt, ids, first + c0, min(batch_sequences, count - c0)))
    total = sum(j[4] for j in jobs)
    bar = None
    if progress:
        from .progress import progress_bar

        bar = progress_bar(total=total, desc="sample", unit="resp")
    t0 = time.perf_counter()
    settings = asdict(config)
    i = 0
    while i < len(jobs):
        group, seqs = [], 0
        while i < len(jobs) and (not group or seqs + jobs[i][4] <= batch_sequences):
            group.append(jobs[i])
            seqs += jobs[i][4]
            i += 1
        reqs = [GenRequest(tuple(ids), n=cnt, seed=stable_seed(seed, p.id), first_index=first, config=config)
                for p, _, ids, first, cnt in group]
        outs = backend.generate(reqs)
        for (p, prompt, ids, first, _), gens in zip(group, outs):
            for off, g in enumerate(gens):
                summary.tokens += len(g.token_ids)
                if not g.token_ids:
                    summary.empty += 1  # an immediate end-of-text: nothing to split, not written
                    continue
                yield Sample(
                    problem_id=p.id, sample_index=first + off, prompt=prompt, prompt_ids=list(ids),
                    token_ids=g.token_ids, logprobs=g.logprobs, token_end_chars=g.token_end_chars, text=g.text,
                    finish_reason=g.finish_reason, model=backend.model_id, backend=backend.name,
                    sampling=settings, seed=seed, task_kind=p.kind, top_logprobs=g.top_logprobs,
                )
                summary.written += 1
        summary.wall_s = time.perf_counter() - t0
        if bar is not None:
            bar.update(seqs)
            bar.set_postfix(tok_s=f"{summary.tokens_per_s:.1f}")
    if bar is not None:
        bar.close()
    summary.wall_s = time.perf_counter() - t0


def sample_set(backend: Backend, problems: Sequence[Problem], out_path: str | Path, cfg: SampleConfig, *,
               progress: bool = True) -> SampleSummary:
    """Sample ``cfg.n`` responses to each problem into ``out_path`` (resumable), with the problems recorded in
    ``problems.jsonl`` beside it (later stages need their gold answers / tests). The ``sample`` verb and the
    main job both sample through this."""
    from .tasks import render_prompt

    record_problems(problems, out_path)
    return sample_problems(backend, problems, out_path, n=cfg.n, config=cfg.sampling(), seed=cfg.seed,
                           render=lambda p: render_prompt(p, backend), batch_sequences=cfg.batch,
                           progress=progress)
