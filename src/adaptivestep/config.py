"""The main job's configuration, read from YAML (``config.yaml`` documents every field).

The run config nests the stages' own config dataclasses (:class:`~adaptivestep.label.LabelConfig`,
:class:`~adaptivestep.prm.config.TrainConfig`, :class:`~adaptivestep.sample.SampleConfig`, ...), the same
ones the verbs' flags are derived from; where the main job's default differs from a verb's, the run config's
default factory says so. Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from .label import LabelConfig
from .operations import DEFAULT_RESAMPLES, DEFAULT_RULES
from .policy import PolicyConfig
from .prm.config import TrainConfig
from .sample import SampleConfig
from .split import SplitParams
from .tasks import ProblemSet


@dataclass
class DataConfig:
    """task: gsm8k | math500 | humaneval | leetcode. data_dir: shared/data-style folder (None = embedded GSM8K
    subset). train_*: questions the PRM is trained on; eval_*: held-apart questions searched on.
    max_solution_lines: both sides keep only questions whose reference solution has at most this many lines
    (GSM8K; 0 = all): the difficulty the shipped corpus was built at, where the 0.5B policy's answers sit in the
    useful middle (docs/prm_quality.md)."""

    task: str = "gsm8k"
    data_dir: str | None = None
    train_split: str = "train"
    train_offset: int = 0
    train_limit: int = 4
    eval_split: str = "test"
    eval_offset: int = 0
    eval_limit: int = 20
    max_solution_lines: int = 3

    def problem_set(self, part: str) -> ProblemSet:
        """The ``train`` or ``eval`` questions as a :class:`~adaptivestep.tasks.ProblemSet`."""
        return ProblemSet(task=self.task, data_dir=self.data_dir, split=getattr(self, f"{part}_split"),
                          offset=getattr(self, f"{part}_offset"), limit=getattr(self, f"{part}_limit"),
                          max_solution_lines=self.max_solution_lines)


@dataclass(frozen=True)
class SplitStage(SplitParams):
    """The main job's splitter: :class:`~adaptivestep.split.SplitParams` (every field, same meaning) plus the
    method.

    method: confidence (AdaptiveStep) | newline | fixed | random.
    """

    method: str = "confidence"

    def params(self, **changes: Any) -> SplitParams:
        """The plain SplitParams (without ``method``) that :func:`adaptivestep.split.split_samples` takes."""
        d = {f.name: getattr(self, f.name) for f in fields(SplitParams)}
        return SplitParams(**{**d, **changes})


@dataclass
class PRMStage(TrainConfig):
    """The main job's PRM: :class:`~adaptivestep.prm.config.TrainConfig` (every field, same meaning) plus the
    backbone it trains on.

    backbone: embedded name / GGUF / HF dir of the PRM backbone.
    corpus: labelled records trained on beside the run's own labels (never held out): "embedded" = the corpus
        the package ships for the task (none for tasks without one), "none", or a labelled JSONL(.gz) path.
    corpus_questions: train on the corpus' first this many questions only (None = all of it): what a first
        look trades for time, since the corpus' features are computed on the first run.
    """

    backbone: str = "smollm2-135m"
    corpus: str | None = "embedded"
    corpus_questions: int | None = None
    eval_fraction: float = 0.2  # the run holds out more: its few training questions give few held-out steps

    def train_config(self) -> TrainConfig:
        """The plain TrainConfig (without ``backbone``) that :func:`adaptivestep.prm.train.train` takes."""
        return TrainConfig(**{f.name: getattr(self, f.name) for f in fields(TrainConfig)})


@dataclass
class EvalStage:
    """n: candidates per eval question (the Best-of-N pool). rules: selection rules compared.
    tvd_threshold / tvd_k: TVD settings (None = the paper's threshold: 0.55 math, 0.28 code; k = 8).
    tvd_limit: eval questions decoded with TVD (None = all, 0 = TVD off).
    resamples: random subsets per N for accuracy-vs-N."""

    n: int = 4
    max_tokens: int = 400
    rules: list[str] = field(default_factory=lambda: list(DEFAULT_RULES))
    tvd_threshold: float | None = None
    tvd_k: int = 8
    tvd_limit: int | None = 2
    resamples: int = DEFAULT_RESAMPLES


@dataclass
class RunConfig:
    """The whole pipeline. run_dir holds every stage's output; re-running resumes."""

    run_dir: str = "runs/main"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    # The main job's stage defaults differ from the verbs' (a 20-minute CPU budget): they live here, once.
    sample: SampleConfig = field(default_factory=lambda: SampleConfig(max_tokens=400))
    split: SplitStage = field(default_factory=SplitStage)
    label: LabelConfig = field(default_factory=lambda: LabelConfig(
        rollouts=2, max_tokens=256, early_stop=True, first_error_search=True))
    prm: PRMStage = field(default_factory=PRMStage)
    eval: EvalStage = field(default_factory=EvalStage)

    def __post_init__(self) -> None:
        for section, fixed in RUN_SET.items():  # the run's one seed (and run folder) reaches every stage
            stage = getattr(self, section)
            setattr(self, section, replace(stage, **{k: get(self) for k, (get, _) in fixed.items()}))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for section, fixed in RUN_SET.items():
            for k in fixed:
                d[section].pop(k)
        return d


# Stage fields the run sets from its own fields (section -> field -> (value, what to set instead)); a YAML
# file setting one of them is an error, so one setting never silently loses to another.
RUN_SET: dict[str, dict[str, tuple[Callable[[RunConfig], Any], str]]] = {
    "sample": {"seed": (lambda c: c.seed, "seed")},
    "label": {"seed": (lambda c: c.seed, "seed")},
    "prm": {"seed": (lambda c: c.seed, "seed"), "label_type": (lambda c: c.label.label_type, "label.label_type"),
            "output_dir": (lambda c: str(Path(c.run_dir) / "prm"), "run_dir")},
}


def _build(base: Any, d: dict[str, Any], where: str, fixed: Mapping[str, Any] | None = None) -> Any:
    """``base`` (a dataclass instance: the defaults) with the keys of ``d`` set, recursively."""
    fixed = fixed or {}
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(d).__name__}")
    known = {f.name for f in fields(base)} - set(fixed)
    unknown = sorted(set(d) - known)
    if unknown:
        set_by_run = [f"{k} (set {fixed[k][1]} instead)" for k in unknown if k in fixed]
        if set_by_run:
            raise ValueError(f"{where}: the run sets {', '.join(set_by_run)}")
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    kw = {}
    for k, v in d.items():
        default = getattr(base, k)
        if is_dataclass(default):
            kw[k] = _build(default, v, f"{where}.{k}", RUN_SET.get(k, {}) if base.__class__ is RunConfig else {})
        else:
            kw[k] = v
    try:
        return replace(base, **kw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


def shipped_config(name: str) -> Path:
    """The path of the config named ``name`` that the package ships (``adaptivestep/configs/<name>.yaml``)."""
    from importlib import resources

    return Path(str(resources.files("adaptivestep") / "configs" / f"{name}.yaml"))


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults, then the YAML file, then ``overrides`` ({"eval.n": 4, ...})."""
    import yaml

    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists() and not p.suffix and shipped_config(str(path)).exists():
            p = shipped_config(str(path))  # a config the package ships, by name (e.g. "code")
        if not p.exists():
            names = sorted(f.stem for f in shipped_config("x").parent.glob("*.yaml"))
            raise ValueError(f"--config: {p} does not exist (shipped configs: {', '.join(names) or 'none'})")
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
    cfg = _build(RunConfig(), raw, str(path or "config"))
    return replace(cfg)  # re-runs __post_init__: the run's seed and folder reach the stages


QUICK: dict[str, Any] = {
    "run_dir": "runs/quick",
    "data.train_limit": 2, "data.eval_limit": 3,
    "sample.n": 2, "sample.max_tokens": 320,
    "label.rollouts": 2, "label.max_tokens": 256, "label.wave": 2,
    "prm.corpus_questions": 50,  # its features are computed on a fresh machine's first run: 50 of its 62 questions
    "eval.n": 4, "eval.max_tokens": 320, "eval.tvd_limit": 1, "eval.resamples": 50,
}
