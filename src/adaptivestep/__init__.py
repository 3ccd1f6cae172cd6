"""adaptivestep: Process Reward Models with AdaptiveStep (confidence-based reasoning steps).

The objects a script needs, one import away (README: "Python API")::

    import adaptivestep as astep
    llm = astep.open_policy(astep.PolicyConfig(model="default"))
    problems = astep.load_tasks("gsm8k", split="train", limit=2)
    samples = astep.generate_samples(llm, problems, astep.SampleConfig(n=4))
    splits = astep.split_samples(samples, "confidence", astep.SplitParams())
    records = astep.label_samples(llm, problems, samples, splits, astep.LabelConfig(rollouts=2))

Names load lazily (PEP 562): ``adaptivestep.split_samples`` does not import torch; only the PRM names do.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (relative to this package)
_API: dict[str, str] = {
    # records: the data contract, and reading / writing it
    **dict.fromkeys(["Problem", "Sample", "StepSplit", "StepRollouts", "LabeledRecord", "StepScores", "TVDRecord",
                     "BonChoice", "ErrorRecord", "RecordError"], "records"),
    **dict.fromkeys(["read_records", "JsonlWriter", "DataError"], "jsonl"),
    # problems
    **dict.fromkeys(["load_tasks", "load_problem_set", "ProblemSet", "render_prompt"], "tasks"),
    # the policy model
    **dict.fromkeys(["PolicyConfig", "open_policy"], "policy"),
    "load_backend": "backends",
    **dict.fromkeys(["GenRequest", "Generation", "SamplingConfig"], "backends.base"),
    # sample, split, label
    **dict.fromkeys(["SampleConfig", "generate_samples", "sample_set"], "sample"),
    **dict.fromkeys(["SplitParams", "split_samples", "step_texts"], "split"),
    **dict.fromkeys(["LabelConfig", "label_samples", "label_files", "judge_by_kind"], "label"),
    "get_checker": "checkers",
    # the PRM (PRM and train_prm import torch; TrainConfig does not)
    "PRM": "prm.model",
    "TrainConfig": "prm.config",
    "train_prm": "prm",
    # search
    **dict.fromkeys(["score_steps", "step_items", "candidate_pools", "full_pools", "bon_curves", "bon_choices",
                     "tvd_config_for", "tvd_problems"], "operations"),
    **dict.fromkeys(["Candidate", "select"], "search.bon"),
    **dict.fromkeys(["TVDConfig", "tvd_decode"], "search.tvd"),
    # the main job
    **dict.fromkeys(["RunConfig", "load_config"], "config"),
    "run": "pipeline",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    mod = _API.get(name)
    if mod is None:
        raise AttributeError(f"module 'adaptivestep' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
