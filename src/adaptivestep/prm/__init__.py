"""Process reward model: train it (``train``), score with it (``PRM``); its benchmark is
:mod:`adaptivestep.bench.prm` (``adaptivestep bench prm``).

Importing this package is cheap: torch / transformers load only when a name from ``prm.model`` (``PRM``,
...) or ``train_prm`` is first used (``TrainConfig`` and the ``prm.data`` names do not import them).

The training function lives at ``adaptivestep.prm.train.train`` (re-exported here as ``train_prm``, since
the name ``train`` is the submodule).

::

    from adaptivestep.prm import PRM, TrainConfig, train_prm
    metrics = train_prm(TrainConfig(mode="head", output_dir="prm"), "labeled.jsonl", "qwen2.5-coder-0.5b")
    PRM.load("prm").score("What is 2+3?", ["2+3 = 5.", " The answer is 5."])
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "PRM": "model",
    "PRMConfig": "model",
    "BackboneError": "model",
    "load_backbone": "model",
    "TrainConfig": "config",
    "train_prm": "train",
    "StepExample": "data",
    "load_examples": "data",
    "roc_auc": "data",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'adaptivestep.prm' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(f".{mod}", __name__)
    value = getattr(module, "train" if name == "train_prm" else name)
    globals()[name] = value
    return value
