"""How to train a PRM: :class:`TrainConfig`, importable without torch (the run config and the CLI read it).

``adaptivestep.prm.train`` re-exports it; the training code lives there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class TrainConfig:
    """How to train a PRM. ``None`` means "the mode's default" (shown per field).

    mode: "head" (frozen backbone, cached features, logistic head), "lora" (LoRA adapters + head) or
        "full" (every weight).
    epochs: lora/full: epochs over the sequences (default 1, as in the paper). Not used by head mode
        (its convex objective is solved to convergence, see :mod:`adaptivestep.prm.head`).
    lr: lora/full peak learning rate (defaults lora 1e-4, full 1e-5). Not used by head mode.
    batch_size: sequences per device per optimizer micro-step (lora/full) and per forward pass when
        extracting features (head).
    grad_accum: micro-steps accumulated per optimizer step (lora/full); effective batch =
        batch_size * grad_accum * number of processes.
    max_length: most tokens per model input; longer responses are truncated from the left, every step kept.
    eval_fraction: share of problems (grouped by problem id) held out for evaluation; 0 = none.
    seed: seeds the split, the head initialisation and the Trainer.
    bf16: bfloat16 autocast (lora/full) or bfloat16 backbone weights for feature extraction (head).
    gradient_checkpointing: recompute activations in the backward pass (lora/full): less memory, ~30% slower.
    label_type: "hard" (1.0 if any rollout from the step reached a correct answer) or "soft" (fraction
        correct). Targets are floats either way.
    output_dir: where the trained PRM, ``train_metrics.json`` and (lora/full) ``checkpoints/`` go.
    resume: lora/full: continue from the last checkpoint in ``<output_dir>/checkpoints`` (fresh start if
        none). head: cached features are always reused when data, backbone and layout match.
    weight_decay: decoupled weight decay of lora/full (AdamW). Default 0.0.
    l2: head mode: L2 strength on standardised features; None = chosen by grouped cross-validation.
    cv_folds: head mode: folds (over problem ids) of that cross-validation.
    max_steps: stop after this many optimizer steps (lora/full; -1 = run all epochs).
    save_steps: checkpoint every N optimizer steps (lora/full; 0 = at the end of each epoch).
    lora_r, lora_alpha, lora_dropout: LoRA rank, scaling numerator and dropout (mode "lora").
    prompt_format: "chat", "plain" or "auto" (chat when the tokenizer has a chat template).
    feature_cache: folder for head-mode feature files (None = ``<adaptivestep cache>/prm-features``).
    device: "cpu", "cuda", ... (None = cuda if available). Under ``accelerate launch`` the launcher decides.
    """

    mode: str = "head"
    epochs: int | None = None
    lr: float | None = None
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 1024
    eval_fraction: float = 0.1
    seed: int = 0
    bf16: bool = False
    gradient_checkpointing: bool = False
    label_type: str = "hard"
    output_dir: str = "prm"
    resume: bool = False
    weight_decay: float | None = None
    l2: float | None = None
    cv_folds: int = 5
    max_steps: int = -1
    save_steps: int = 0
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    prompt_format: str = "auto"
    feature_cache: str | None = None
    device: str | None = None

    def validate(self) -> None:
        """Raise ValueError naming the bad option."""
        if self.mode not in ("head", "lora", "full"):
            raise ValueError(f"mode: must be 'head', 'lora' or 'full', got {self.mode!r}")
        if self.label_type not in ("hard", "soft"):
            raise ValueError(f"label_type: must be 'hard' or 'soft', got {self.label_type!r}")
        if self.prompt_format not in ("auto", "chat", "plain"):
            raise ValueError(f"prompt_format: must be 'auto', 'chat' or 'plain', got {self.prompt_format!r}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction: must be in [0, 1), got {self.eval_fraction}")
        for name in ("batch_size", "grad_accum", "max_length"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs: must be >= 1, got {self.epochs}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if self.l2 is not None and not self.l2 >= 0:
            raise ValueError(f"l2: must be >= 0, got {self.l2}")
        if self.cv_folds < 2:
            raise ValueError(f"cv_folds: must be >= 2, got {self.cv_folds}")

    def resolved(self) -> TrainConfig:
        """A copy with the mode defaults filled in."""
        d = asdict(self)
        if d["epochs"] is None:
            d["epochs"] = 1
        if d["lr"] is None and self.mode != "head":
            d["lr"] = {"lora": 1e-4, "full": 1e-5}[self.mode]
        if d["weight_decay"] is None:
            d["weight_decay"] = 0.0
        return TrainConfig(**d)
