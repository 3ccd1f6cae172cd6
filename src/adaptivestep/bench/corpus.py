"""``adaptivestep bench corpus``: build (or resume) a labelled PRM training corpus and print its card.

The corpus is made by the project's own stages, in order, each resumable:

1. **questions**: training questions of one task (never an evaluation split), shuffled with ``seed`` and
   optionally filtered by difficulty (GSM8K: at most ``max_solution_lines`` lines in the reference solution);
   the first ``questions`` of that order are used, so a larger corpus is a superset of a smaller one;
2. **sample** ``n`` responses per question (exact temperature-1 log-probs);
3. **split** with AdaptiveStep (and the newline baseline): tau is the ``break_rate`` quantile of the pooled
   confidences of the first build and is then frozen in ``tau.json``, so growing the corpus does not move
   the steps of responses already labelled;
4. **label** the confidence split by rollouts (``LabelConfig``), logged rollout by rollout.

Every file lands in ``out_dir``: ``problems.jsonl``, ``samples.jsonl``, ``tau.json``, ``split-confidence.jsonl``,
``split-newline.jsonl``, ``labels-confidence.jsonl`` (+ its work log), ``card.json``. Re-running the same
command finishes what is missing; a larger ``--questions`` extends it.
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..embedded_models import describe
from ..tasks import solution_lines


@dataclass
class CorpusSpec:
    """What corpus to build.

    task / split / data_dir: training questions (``data_dir`` laid out like ``../shared/data``).
    model: the policy: ``default`` (the embedded 0.5B), another embedded name such as ``qwen2.5-coder-1.5b``,
        or a .gguf file.
    questions: how many questions (the first of a ``seed``-shuffled, difficulty-filtered order).
    max_solution_lines: GSM8K only: keep questions whose reference solution has at most this many lines
        (a difficulty filter on the question, not on the policy's answers); 0 = no filter.
    n: responses sampled per question. max_tokens: most tokens per response.
    break_rate: AdaptiveStep's share of tokens that end a step (sets tau once, then frozen).
    rollouts / rollout_tokens / early_stop / wave: the labelling (hard labels; early stop with these seeds
        gives exactly the exhaustive hard label).
    first_error_search: label by binary search for the first step no rollout recovers from (a correct response
        costs no rollout at all): far fewer rollout tokens per response than early stop alone (measured in
        docs/prm_quality.md), so more labelled responses per CPU-hour; labels are then 1s up to the first error
        and 0s after it (it assumes no recovery after a step that no rollout recovers from).
    newline_questions: also label the newline split (the paper's baseline) of the first this many questions
        (0 = none): newline labelling costs about 2.4x as much per response, so the baseline is labelled on a
        prefix of the questions and compared at equal labelling tokens (``bench prm-quality``).
    label: False = a candidate pool only (sample, no split or labels): how held-apart evaluation questions
        (a test split) get their Best-of-N candidates.
    seed: question order, sampling and rollout seeds. threads: llama.cpp threads (None = all cores).
    """

    out_dir: str = "runs/corpus"
    task: str = "gsm8k"
    split: str = "train"
    data_dir: str = "../shared/data"
    model: str = "default"
    questions: int = 60
    max_solution_lines: int = 3
    n: int = 4
    max_tokens: int = 512
    break_rate: float = 0.02
    rollouts: int = 4
    rollout_tokens: int = 384
    early_stop: bool = True
    wave: int = 2
    first_error_search: bool = True
    newline_questions: int = 0
    label: bool = True
    seed: int = 0
    threads: int | None = None


def select_questions(problems: Sequence[Any], count: int, seed: int, max_solution_lines: int = 0) -> list[Any]:
    """The first ``count`` problems of a ``seed``-shuffled order that pass the difficulty filter.

    >>> from adaptivestep.records import Problem
    >>> ps = [Problem(id=str(i), question="q", kind="math", meta={"solution": "a\\n" * (i % 4 + 1) + "#### 1"})
    ...       for i in range(40)]
    >>> sel = select_questions(ps, 5, seed=0, max_solution_lines=2)
    >>> len(sel), all(solution_lines(p) <= 2 for p in sel)
    (5, True)
    >>> [p.id for p in select_questions(ps, 3, 0, 2)] == [p.id for p in sel[:3]]  # nested: a prefix
    True
    """
    order = np.random.default_rng(seed).permutation(len(problems))
    out = []
    for i in order:
        p = problems[int(i)]
        if max_solution_lines and solution_lines(p) > max_solution_lines:
            continue
        out.append(p)
        if len(out) == count:
            break
    return out


def build(spec: CorpusSpec, *, progress: bool = True) -> dict[str, Any]:
    """Build or extend the corpus of ``spec``; returns its card (also written to ``card.json``)."""
    from ..backends import load_backend
    from ..backends.base import SamplingConfig
    from ..checkers import get_checker
    from ..embedded_models import resolve_model
    from ..jsonl import read_records, write_atomic
    from ..label import LabelConfig, label_files
    from ..records import Sample
    from ..sample import record_problems, sample_problems
    from ..split import SplitParams, split_samples
    from ..tasks import load_tasks, render_prompt

    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if spec.label and spec.split != "train":
        raise ValueError(f"a labelled corpus is built from a train split, got split {spec.split!r}")
    pool = load_tasks(spec.task, split=spec.split, data_dir=spec.data_dir)
    problems = select_questions(pool, spec.questions, spec.seed, spec.max_solution_lines)
    by_id = {p.id: p for p in problems}
    samples_path = out / "samples.jsonl"
    record_problems(problems, samples_path)
    opts: dict[str, Any] = {"n_ctx": 4096}
    if spec.threads:
        opts["n_threads"] = spec.threads
    backend = load_backend("auto", str(resolve_model(spec.model)), **opts)
    figs: dict[str, Any] = {}
    t0 = time.perf_counter()
    try:
        s = sample_problems(backend, problems, samples_path, n=spec.n, seed=spec.seed,
                            config=SamplingConfig(temperature=1.0, max_tokens=spec.max_tokens),
                            render=lambda p: render_prompt(p, backend), progress=progress)
        figs["sample_new_tokens"] = s.tokens
        figs["sample_new_wall_s"] = s.wall_s
        if not spec.label:  # a candidate pool: its card has the pass rate and truncation, no labels
            card = {**corpus_card(spec, out, None), "this_run": {**figs, "wall_s": time.perf_counter() - t0}}
            card.update(_builds(out, card["this_run"]))  # a later labelling run keeps this run's cost
            (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
            return card
        rank = {p.id: k for k, p in enumerate(problems)}  # question order, so a prefix of questions is a prefix
        samples = sorted((x for x in read_records(samples_path, Sample, tolerate_torn_tail=True) if x.problem_id in by_id),
                         key=lambda x: (rank[x.problem_id], x.sample_index))
        tau = read_tau(out)
        if tau is None:
            tau = float(split_samples(samples, "confidence", SplitParams(break_rate=spec.break_rate))[0].threshold)
            (out / "tau.json").write_text(json.dumps({"tau": tau, "break_rate": spec.break_rate,
                                            "pooled_samples": len(samples)}) + "\n")
        splits = {
            "confidence": split_samples(samples, "confidence", SplitParams(break_rate=spec.break_rate, tau=tau)),
            "newline": split_samples(samples, "newline", SplitParams()),
        }
        for method, sp in splits.items():
            write_atomic(out / f"split-{method}.jsonl", sp)
        checker = get_checker(problems[0].kind)
        lcfg = LabelConfig(rollouts=spec.rollouts, max_tokens=spec.rollout_tokens, seed=spec.seed,
                           early_stop=spec.early_stop, wave=spec.wave, first_error_search=spec.first_error_search)
        for method in ["confidence"] + (["newline"] if spec.newline_questions else []):
            t1 = time.perf_counter()
            summ = label_files(backend, lambda p, t: checker.check(p, t).correct, by_id, samples_path,
                               out / f"split-{method}.jsonl", out / f"labels-{method}.jsonl", lcfg,
                               progress=progress, limit=_newline_limit(spec, problems, splits[method], out)
                               if method == "newline" else None)
            figs[f"label_{method}_new_wall_s"] = time.perf_counter() - t1
            figs[f"label_{method}_failures"] = len(summ.failures)
    finally:
        backend.close()
    card = corpus_card(spec, out, tau)
    card["this_run"] = {**figs, "wall_s": time.perf_counter() - t0}
    card.update(_builds(out, card["this_run"]))  # a resumed corpus: every run's cost
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def _builds(out: Path, this_run: dict[str, Any] | None = None) -> dict[str, Any]:
    """The card's cost history: ``builds`` (every build run of ``out`` so far, plus ``this_run``) and their
    summed ``build_wall_s``."""
    old = json.loads((out / "card.json").read_text()) if (out / "card.json").exists() else {}
    builds = [*old.get("builds", []), *([this_run] if this_run else [])]
    return {"builds": builds, "build_wall_s": sum(b.get("wall_s", 0.0) for b in builds)}


def read_tau(out: Path) -> float | None:
    """The frozen AdaptiveStep threshold of the corpus in ``out`` (None before its first split)."""
    path = out / "tau.json"
    return float(json.loads(path.read_text())["tau"]) if path.exists() else None


def _newline_limit(spec: CorpusSpec, problems: Sequence[Any], splits: Sequence[Any], out: Path) -> int:
    """How many more newline splits to label so that exactly the first ``newline_questions`` questions are
    labelled (label_files takes its ``limit`` in split order, and the split file is in question order)."""
    from ..jsonl import read_records
    from ..records import LabeledRecord

    first = {p.id for p in problems[: spec.newline_questions]}
    want = sum(sp.problem_id in first for sp in splits)
    path = out / "labels-newline.jsonl"
    done = sum(1 for _ in read_records(path, LabeledRecord, tolerate_torn_tail=True)) if path.exists() else 0
    return max(0, want - done)


def complete_prefix(question_ids: Sequence[str], sampled: Mapping[str, set[int]],
                    labelled: Mapping[str, set[int]]) -> list[str]:
    """The longest prefix of ``question_ids`` (the corpus' question order) whose every sampled response
    (``sampled``: sample indices per question, as :func:`adaptivestep.sample.existing_indices` reads them) is
    labelled (``labelled``: the same for the labels), and which has at least one: what a build stopped part
    way may ship. Labels past the first incomplete question are left out, so a shipped corpus is always the
    corpus of some ``--questions K``.

    >>> complete_prefix(["a", "b", "c"], {"a": {0}, "b": {0, 1}, "c": {0}}, {"a": {0}, "b": {0}, "c": {0}})
    ['a']
    """
    out = []
    for q in question_ids:
        if not sampled.get(q) or not sampled[q] <= labelled.get(q, set()):
            break
        out.append(q)
    return out


def labelled_prefix(out: Path, questions: int | None = None) -> tuple[list[str], list[str], list[Any]]:
    """The corpus folder ``out``'s first ``questions`` question ids (all if None), their fully labelled prefix
    (:func:`complete_prefix`), and every confidence-split label record the folder holds (a torn tail left
    out), so a caller can keep the prefix's records without reading the labels twice."""
    from ..jsonl import read_records
    from ..records import LabeledRecord, Problem
    from ..sample import existing_indices

    order = [p.id for p in read_records(out / "problems.jsonl", Problem)][:questions]
    labelled = list(read_records(out / "labels-confidence.jsonl", LabeledRecord, tolerate_torn_tail=True))
    done: dict[str, set[int]] = {}
    for r in labelled:
        done.setdefault(r.problem_id, set()).add(r.sample_index)
    return order, complete_prefix(order, existing_indices(out / "samples.jsonl"), done), labelled


def corpus_card(spec: CorpusSpec, out: Path, tau: float | None, keep: set[str] | None = None) -> dict[str, Any]:
    """Figures of the corpus as it is on disk: questions, responses, pass rate, steps, labels, cost
    (with ``keep``: of those questions only)."""
    from ..checkers import check_samples
    from ..jsonl import read_records
    from ..records import LabeledRecord, Problem, Sample

    problems = {p.id: p for p in read_records(out / "problems.jsonl", Problem)}
    samples = [s for s in read_records(out / "samples.jsonl", Sample, tolerate_torn_tail=True)
               if keep is None or s.problem_id in keep]
    correct = check_samples(problems, samples)
    by_q: dict[str, list[bool]] = {}
    for s, c in zip(samples, correct):
        by_q.setdefault(s.problem_id, []).append(c)
    card: dict[str, Any] = {
        "command": command_line(spec),
        "spec": asdict(spec),
        "policy": f"{describe(spec.model)}, llama.cpp exact mode",
        "tau": tau,
        "questions": len(by_q),
        "responses": len(samples),
        "response_tokens": sum(len(s.token_ids) for s in samples),
        "truncated_share": float(np.mean([s.finish_reason == "length" for s in samples])) if samples else 0.0,
        "response_pass_rate": float(np.mean(correct)) if correct else 0.0,
        "questions_all_wrong": sum(not any(v) for v in by_q.values()),
        "questions_all_right": sum(all(v) for v in by_q.values()),
    }
    for method in ("confidence", "newline"):
        path = out / f"labels-{method}.jsonl"
        if not path.exists():
            continue
        recs = [r for r in read_records(path, LabeledRecord, tolerate_torn_tail=True)
                if keep is None or r.problem_id in keep]
        steps = [x for r in recs for x in r.labels]
        card[f"labels_{method}"] = {
            "questions": len({r.problem_id for r in recs}),  # a build stopped part way labels a prefix of them
            "responses": len(recs),
            "steps": len(steps),
            "steps_per_response": len(steps) / max(1, len(recs)),
            "positive_step_share": float(np.mean(steps)) if steps else 0.0,
            "rollouts": sum(r.cost.get("rollouts", 0) for r in recs),
            "rollout_tokens": sum(r.cost.get("generated_tokens", 0) for r in recs),
            "rollout_tokens_per_response": sum(r.cost.get("generated_tokens", 0) for r in recs) / max(1, len(recs)),
        }
    return card


def ship(spec: CorpusSpec, dest: Path, *, backbone: str = "smollm2-135m", quality: Path | None = None) -> dict[str, Any]:
    """Turn the built corpus of ``spec`` into a shipped PRM folder ``dest`` (``adaptivestep/data/prm/<name>``):
    ``labels.jsonl.gz`` (the confidence split's labels, byte-reproducible gzip), ``samples.jsonl.gz`` (the
    labelled responses' samples, with their exact token log-probs), ``head/`` (a head-mode PRM on
    ``backbone`` trained on every label, none held out: its quality is measured by ``bench prm-quality``'s
    question-grouped folds, whose summary ``quality`` is copied into the card) and ``card.json``.

    Only the corpus' fully labelled question prefix (:func:`complete_prefix`) ships, so a build stopped part
    way ships the corpus of a smaller ``--questions`` and its card (and rebuild command) says so."""
    from dataclasses import replace

    from ..prm.config import TrainConfig
    from ..prm.train import train

    out = Path(spec.out_dir)
    tau = read_tau(out)
    if tau is None:
        raise ValueError(f"{out}: no tau.json, so no split corpus to ship (build it first)")
    order, prefix, labelled = labelled_prefix(out, spec.questions)
    keep = set(prefix)
    if not keep:
        raise ValueError(f"{out}: its first question is not fully labelled, so there is nothing to ship")
    if len(keep) < len(order):
        print(f"shipping the first {len(keep)} of {len(order)} questions: question {len(keep) + 1} is not "
              f"fully labelled ({sum(r.problem_id not in keep for r in labelled)} labelled responses left out)")
        spec = replace(spec, questions=len(keep))
    keys = {(r.problem_id, r.sample_index) for r in labelled if r.problem_id in keep}

    def lines_of(path: Path) -> bytes:  # the same bytes, the kept responses only (one record per key)
        kept, seen = [], set()
        for ln in path.read_bytes().splitlines(keepends=True):
            try:
                d = json.loads(ln)
            except json.JSONDecodeError:  # a blank line or the torn tail of a killed build
                continue
            key = (d.get("problem_id"), d.get("sample_index"))
            if key in keys and key not in seen:
                kept.append(ln)
                seen.add(key)
        return b"".join(kept)

    dest.mkdir(parents=True, exist_ok=True)
    labels = dest / "labels.jsonl.gz"
    _write_gz(labels, lines_of(out / "labels-confidence.jsonl"))
    # the labelled responses' samples (token ids and exact log-probs): the confidence baselines of `bench
    # prm-quality --corpus embedded`, and what `--seed-from` extends the corpus from without re-sampling
    _write_gz(dest / "samples.jsonl.gz", lines_of(out / "samples.jsonl"))
    t0 = time.perf_counter()
    metrics = train(TrainConfig(mode="head", eval_fraction=0.0, seed=spec.seed, output_dir=str(dest / "head")),
                    labels, backbone)
    card = {**corpus_card(spec, out, tau, keep), **_builds(out)}
    card["head"] = {"backbone": backbone, "mode": "head", "l2": metrics.get("head_l2"),
                    "train_steps": metrics.get("n_train_steps"), "train_auc": metrics.get("train_auc"),
                    "train_wall_s": time.perf_counter() - t0,
                    "command": f"{command_line(spec)} --ship {dest} --ship-backbone {backbone}"}
    if quality is not None:
        card["quality"] = json.loads(quality.read_text())
    (dest / "card.json").write_text(json.dumps(card, indent=2, default=float) + "\n")
    return card


def _write_gz(path: Path, raw: bytes) -> None:
    """``raw`` gzip-compressed into ``path``, byte-reproducible (no time stamp, no file name)."""
    import gzip

    with open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw)


SEED_FREE = ("out_dir", "data_dir", "questions", "newline_questions", "label", "threads")
"""Spec fields that may differ from a seeding corpus' spec: every other one decides its samples or labels."""


def seed_from(shipped: Path, out: Path, spec: CorpusSpec | None = None) -> list[str]:
    """Start the corpus folder ``out`` from a shipped one (``shipped``: labels, samples and card): writes
    ``samples.jsonl``, ``labels-confidence.jsonl``, ``tau.json`` (the card's frozen tau) and ``card.json``
    (its build history), each only where ``out`` has none, and returns the names written. A build with the
    shipped spec and a larger ``--questions`` then samples and labels only the new questions: sampling is
    resumable per (question, index) and labelling skips labelled responses, so the shipped part is neither
    re-sampled nor re-labelled. With ``spec``, a setting that would make the new part differ from the shipped
    one (any field but :data:`SEED_FREE`) raises ValueError naming it.
    """
    import gzip

    if not (shipped / "samples.jsonl.gz").exists():
        raise ValueError(f"{shipped}: no samples.jsonl.gz, so it cannot seed a corpus (rebuild it with `bench corpus`)")
    card = json.loads((shipped / "card.json").read_text())
    if spec is not None:
        shipped_spec = {**asdict(CorpusSpec()), **card["spec"]}  # a setting newer than the card: its default
        diff = [f"{k} {v!r} (shipped: {shipped_spec[k]!r})" for k, v in asdict(spec).items()
                if k not in SEED_FREE and shipped_spec[k] != v]
        if diff:
            raise ValueError(f"--seed-from {shipped}: this build's settings differ from the shipped corpus': "
                             f"{', '.join(diff)}; use the shipped spec (its card's command) to extend it")
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "samples.jsonl": lambda: gzip.decompress((shipped / "samples.jsonl.gz").read_bytes()),
        "labels-confidence.jsonl": lambda: gzip.decompress((shipped / "labels.jsonl.gz").read_bytes()),
        "tau.json": lambda: (json.dumps({"tau": card["tau"], "break_rate": card["spec"]["break_rate"],
                                         "seeded_from": str(shipped)}) + "\n").encode(),
        "card.json": lambda: (json.dumps({"builds": card.get("builds", [])}, indent=2) + "\n").encode(),
    }
    written = []
    for name, make in files.items():
        if not (out / name).exists():
            (out / name).write_bytes(make())
            written.append(name)
    return written


def command_line(spec: CorpusSpec) -> str:
    """The command that builds (or resumes) this corpus: every setting that differs from the default.

    >>> command_line(CorpusSpec(out_dir="c", questions=5, early_stop=False))
    'adaptivestep bench corpus --out-dir c --questions 5 --no-early-stop'
    >>> command_line(CorpusSpec(model="qwen2.5-coder-1.5b"))
    'adaptivestep bench corpus --model qwen2.5-coder-1.5b'
    """
    parts = ["adaptivestep bench corpus"]
    for k, v in asdict(spec).items():
        if v == getattr(CorpusSpec(), k):
            continue
        flag = "--" + k.replace("_", "-")
        parts.append(flag if v is True else "--no-" + flag[2:] if v is False else f"{flag} {v}")
    return " ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    d = CorpusSpec()
    class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
        pass

    fields = inspect.cleandoc(CorpusSpec.__doc__ or "").split("\n", 1)[-1]  # the spec's fields, explained
    p = argparse.ArgumentParser(prog="adaptivestep bench corpus", description=__doc__.split("\n\n")[0],
                                epilog="settings (--flag = the field with - for _):\n" + fields,
                                formatter_class=Formatter)
    for name, default in asdict(d).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            p.add_argument(flag, type=type(default) if default is not None else int, default=default)
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 2 questions x 2 responses of <= 160 tokens, M = 2 rollouts of <= 48 tokens")
    p.add_argument("--card-only", action="store_true", help="print the card of what is on disk, build nothing")
    p.add_argument("--ship", default=None, metavar="DIR",
                   help="after building, write the shipped PRM folder DIR (labels.jsonl.gz, samples.jsonl.gz, head/, card.json)")
    p.add_argument("--ship-backbone", default="smollm2-135m", help="backbone of the shipped head")
    p.add_argument("--seed-from", default=None, metavar="DIR",
                   help="start OUT_DIR from a shipped corpus folder ('embedded' = the package's gsm8k one): its "
                   "samples, labels and tau, so a larger --questions samples and labels only the new questions")
    p.add_argument("--ship-quality", default=None, metavar="JSON",
                   help="a `bench prm-quality --out` file: its figures are copied into the shipped card")
    a = p.parse_args(argv)
    kw = {k: getattr(a, k) for k in asdict(d)}
    if a.quick:
        kw.update(out_dir="runs/corpus-quick" if a.out_dir == d.out_dir else a.out_dir, questions=2, n=2,
                  max_tokens=160, rollouts=2, rollout_tokens=48)
    spec = CorpusSpec(**kw)
    if a.seed_from:
        from ..prm.shipped import corpus_dir

        src = corpus_dir(spec.task) if a.seed_from == "embedded" else Path(a.seed_from)
        if src is None:
            p.error(f"--seed-from embedded: the package ships no corpus for task {spec.task!r}")
        try:
            written = seed_from(src, Path(spec.out_dir), spec)
        except ValueError as e:
            p.error(str(e))
        print(f"seeded {spec.out_dir} from {src}: {', '.join(written) or 'nothing (all present)'}")
    if a.card_only:
        card = corpus_card(spec, Path(spec.out_dir), read_tau(Path(spec.out_dir)))
    else:
        card = build(spec)
    if a.ship:
        card = ship(spec, Path(a.ship), backbone=a.ship_backbone,
                    quality=Path(a.ship_quality) if a.ship_quality else None)
    for k, v in card.items():
        if k != "spec":
            print(f"{k}: {v}")
    print(json.dumps(card, default=float))
    return 0
