"""Step labelling (``adaptivestep label``).

- :mod:`adaptivestep.label.engine`: the rollout engine: plans each sample's rollouts, streams them through
  a backend, judges them with a checker, commits each to the work log (``LabelConfig``, ``label_files``...).
- :mod:`adaptivestep.label.rules`: the label rules: rollout outcomes -> hard / soft step labels, early-stop
  waves, first-error search. Pure functions, no model.

The public names of both are re-exported here.
"""

from __future__ import annotations

from .engine import (
    Judge,
    LabelConfig,
    LabelFailure,
    LabelSummary,
    iter_labels,
    judge_by_kind,
    label_files,
    label_samples,
    label_stream,
)
from .rules import early_stop_waves, first_error_search, hard_label, run_first_error_search, soft_label

__all__ = [
    # engine
    "Judge",
    "LabelConfig",
    "LabelFailure",
    "LabelSummary",
    "iter_labels",
    "judge_by_kind",
    "label_files",
    "label_samples",
    "label_stream",
    # rules
    "early_stop_waves",
    "first_error_search",
    "hard_label",
    "run_first_error_search",
    "soft_label",
]
