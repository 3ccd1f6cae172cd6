"""What the package ships for PRMs: a labelled training corpus per task and a head trained on it.

Both are built by the project's own commands (``adaptivestep bench corpus``, then ``adaptivestep train``); each
folder under ``adaptivestep/data/prm/`` holds ``labels.jsonl.gz`` (LabeledRecords), ``samples.jsonl.gz`` (the
labelled responses' Samples, with their token log-probs), ``card.json`` (the exact
command, policy, split, tau, M, wall time, tokens and metrics) and, where trained, ``head/`` (a saved PRM whose
backbone is an embedded model name, so it loads on any machine with the package).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

SHIPPED: dict[str, str] = {"gsm8k": "gsm8k-easy"}
"""Task -> shipped corpus folder (questions from the task's train split only)."""


def _root() -> Path:
    return Path(str(resources.files("adaptivestep") / "data" / "prm"))


def corpus_dir(task: str) -> Path | None:
    """The shipped corpus folder of ``task``, None when the package ships none for it."""
    name = SHIPPED.get(task)
    if name is None or not (_root() / name / "labels.jsonl.gz").exists():
        return None
    return _root() / name


def resolve_corpus(spec: str | None, task: str) -> Path | None:
    """A PRM stage's ``corpus`` setting as a labels file: None/"none" = no corpus; "embedded" = the shipped one
    of ``task`` (None when there is none); else a path to a labelled JSONL(.gz), which must exist."""
    if spec is None or spec == "none":
        return None
    if spec == "embedded":
        d = corpus_dir(task)
        return None if d is None else d / "labels.jsonl.gz"
    p = Path(spec).expanduser()
    if not p.exists():
        raise ValueError(f"prm.corpus: {p} does not exist (use 'embedded', 'none' or a labelled JSONL file)")
    return p


def shipped_tau(spec: str | None, task: str, break_rate: float) -> float | None:
    """The confidence threshold the shipped corpus of ``task`` was split at, when ``spec`` names it
    ("embedded") and its card's break rate is ``break_rate``; else None.

    A PRM trained mostly on that corpus should see steps cut the same way in the run's own training data and
    in the responses it scores; the corpus' tau is also the better estimate of the quantile (tens of thousands
    of tokens against a run's few thousand). Only meaningful for the policy the corpus was sampled from (the
    embedded default): the caller checks that.
    """
    d = corpus_dir(task) if spec == "embedded" else None
    if d is None or not (d / "card.json").exists():
        return None
    card = json.loads((d / "card.json").read_text())
    if card.get("tau") is None or card.get("spec", {}).get("break_rate") != break_rate:
        return None
    return float(card["tau"])


def spec_task(spec: str) -> str:
    """The task an ``embedded`` / ``embedded:<task>`` setting names (gsm8k when none is given).

    >>> spec_task("embedded"), spec_task("embedded:leetcode")
    ('gsm8k', 'leetcode')
    """
    return spec.partition(":")[2] or "gsm8k"


def head_dir(spec: str) -> Path:
    """The shipped PRM named by ``spec``: ``embedded`` (the default task's, gsm8k) or ``embedded:<task>``.

    Raises ValueError naming what is shipped when there is none for that task.
    """
    task = spec_task(spec)
    d = corpus_dir(task)
    if d is None or not (d / "head").is_dir():
        have = sorted(t for t in SHIPPED if (c := corpus_dir(t)) is not None and (c / "head").is_dir())
        raise ValueError(f"--prm {spec}: the package ships no trained PRM for task {task!r} (shipped: {have or 'none'})")
    return d / "head"
