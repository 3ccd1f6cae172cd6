"""The main job's configuration: one dataclass per stage, read from YAML (``config.yaml`` documents every field).

Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any


@dataclass
class DataConfig:
    """task: gsm8k | math500 | humaneval | leetcode. data_dir: shared/data-style folder (None = embedded GSM8K
    subset). train_*: questions the PRM is trained on; eval_*: held-apart questions searched on."""

    task: str = "gsm8k"
    data_dir: str | None = None
    train_split: str = "train"
    train_offset: int = 0
    train_limit: int = 5
    eval_split: str = "test"
    eval_offset: int = 0
    eval_limit: int = 12


@dataclass
class PolicyConfig:
    """model: embedded name / .gguf / HF dir. backend: auto | llamacpp | hf. n_ctx: context tokens.
    ray: null = engine in this process; a Ray address (host:port, auto) or "local" = a pool of Ray actors.
    ray_actors: actors in that pool (null = one per CPU of the cluster)."""

    model: str = "default"
    backend: str = "auto"
    n_ctx: int = 4096
    threads: int | None = None
    ray: str | None = None
    ray_actors: int | None = None


@dataclass
class SampleStage:
    """n: responses per training question. max_tokens: per response. temperature: 1.0 = model
    distribution. batch: sequences decoded together."""

    n: int = 4
    max_tokens: int = 400
    temperature: float = 1.0
    batch: int = 14


@dataclass
class SplitStage:
    """method: confidence (AdaptiveStep) | newline | fixed | random. break_rate: target fraction of tokens
    that end a step (sets tau as a quantile of the pooled confidences)."""

    method: str = "confidence"
    break_rate: float = 0.02


@dataclass
class LabelStage:
    """Rollout labelling (see ``adaptivestep label --help``): rollouts = M per step prefix."""

    rollouts: int = 2
    max_tokens: int = 256
    label_type: str = "hard"
    early_stop: bool = True
    wave: int = 2
    first_error_search: bool = True
    concurrent_samples: int = 7


@dataclass
class PRMStage:
    """backbone: embedded name / GGUF / HF dir of the PRM. mode: head | lora | full. epochs/lr: None = the
    mode's defaults. max_length: tokens per PRM input."""

    backbone: str = "smollm2-135m"
    mode: str = "head"
    epochs: int | None = None
    lr: float | None = None
    max_length: int = 1024
    eval_fraction: float = 0.2


@dataclass
class EvalStage:
    """n: candidates per eval question (the Best-of-N pool). rules: selection rules compared.
    tvd_threshold / tvd_k: TVD settings (None = the paper's threshold: 0.55 math, 0.28 code; k = 8).
    tvd_limit: eval questions decoded with TVD (None = all). resamples: random subsets per N for accuracy-vs-N."""

    n: int = 4
    max_tokens: int = 400
    rules: list[str] = field(default_factory=lambda: ["majority", "prm-min", "prm-mean", "prm-last", "prm-prod",
                                                       "weighted-majority", "oracle"])
    tvd_threshold: float | None = None
    tvd_k: int = 8
    tvd_limit: int | None = 2
    resamples: int = 200


@dataclass
class RunConfig:
    """The whole pipeline. run_dir holds every stage's output; re-running resumes."""

    run_dir: str = "runs/main"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    sample: SampleStage = field(default_factory=SampleStage)
    split: SplitStage = field(default_factory=SplitStage)
    label: LabelStage = field(default_factory=LabelStage)
    prm: PRMStage = field(default_factory=PRMStage)
    eval: EvalStage = field(default_factory=EvalStage)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _build(cls: type, d: dict[str, Any], where: str) -> Any:
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    kw = {}
    for k, v in d.items():
        default = getattr(cls(), k)
        kw[k] = _build(type(default), v, f"{where}.{k}") if is_dataclass(default) else v
    return cls(**kw)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults, then the YAML file, then ``overrides`` ({"eval.n": 4, ...})."""
    import yaml

    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ValueError(f"--config: {p} does not exist")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{p}: not valid YAML ({e})") from None
    for key, value in (overrides or {}).items():
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return _build(RunConfig, raw, str(path or "config"))


QUICK: dict[str, Any] = {
    "run_dir": "runs/quick",
    "data.train_limit": 2, "data.eval_limit": 3,
    "sample.n": 2, "sample.max_tokens": 320,
    "label.rollouts": 2, "label.max_tokens": 256, "label.wave": 2,
    "eval.n": 4, "eval.max_tokens": 320, "eval.tvd_limit": 1, "eval.resamples": 50,
}
