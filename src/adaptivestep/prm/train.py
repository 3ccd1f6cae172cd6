"""Train a PRM on labelled stepwise records: ``train(TrainConfig(...), data_path, backbone) -> metrics``.

Modes:
- ``head``: backbone frozen. The hidden state at every step end is computed once (``torch.no_grad``) and
  cached on disk, keyed by the data file's sha256 + backbone + layout; then an L2-regularised logistic head
  is fitted on the cached features (:mod:`adaptivestep.prm.head`: strength chosen by cross-validation over
  problem ids, solved to convergence). This is what makes CPU training practical.
- ``lora`` / ``full``: the transformers ``Trainer`` with a BCE ``compute_loss``. ``accelerate launch`` (or
  ``torchrun``) on the same entry point gives multi-GPU / DeepSpeed / FSDP with no distributed code here;
  checkpoints go to ``<output_dir>/checkpoints`` and ``resume=True`` continues from the last one.

Held-out evaluation each epoch: step AUC (Mann-Whitney, ties half), accuracy (labels thresholded at 0.5)
and BCE loss. The trained PRM is saved to ``output_dir`` (see :mod:`adaptivestep.prm.model`) with a model
card and ``train_metrics.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import resource
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import TrainConfig
from .data import (
    Encoded,
    StepExample,
    encode_examples,
    file_sha256,
    load_examples,
    split_examples,
    step_metrics,
)
from .head import fit_head
from .model import PRM, collate, step_bce_loss, wrap_lora

log = logging.getLogger(__name__)

FEATURE_CACHE_VERSION = 1
METRICS_FILE = "train_metrics.json"


def train(config: TrainConfig, data_path: str | Path, backbone: str | Path,
          extra_data: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Train a PRM on ``data_path`` (LabeledRecord JSONL) over ``backbone``; save it to ``config.output_dir``.

    ``extra_data``: more labelled files trained on as well, never held out (e.g. the shipped corpus beside a
    run's own labels): the held-out evaluation comes from ``data_path``'s questions only. A question of
    ``data_path``'s eval side that also appears in ``extra_data`` is dropped from the extra records.

    Returns metrics: final ``eval_auc`` / ``eval_accuracy`` / ``eval_loss`` (nan without an eval split),
    ``train_loss``, ``history`` (one entry per epoch), ``step_losses`` (lora/full), throughput (``labelled_steps_per_s``), timings and
    ``peak_rss_mb``. Raises DataError (file:line) on bad records, BackboneError on an unloadable backbone,
    ValueError on a bad option.
    """
    config.validate()
    cfg = config.resolved()
    data_path = Path(data_path)
    examples = load_examples(data_path, cfg.label_type)  # type: ignore[arg-type]
    train_ex, eval_ex = split_examples(examples, cfg.eval_fraction, cfg.seed)
    held = {e.group for e in eval_ex}
    extra = [(Path(p), load_examples(Path(p), cfg.label_type)) for p in extra_data]  # type: ignore[arg-type]
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    state: dict[str, torch.Tensor] | None = None
    prm: PRM | None
    if cfg.mode == "head":
        prm, metrics = _train_head(cfg, data_path, backbone, train_ex, eval_ex, extra)
    else:
        more = [e for _, ex in extra for e in ex if e.group not in held]
        prm, metrics, state = _train_trainer(cfg, backbone, train_ex + more, eval_ex)
    metrics.update(
        mode=cfg.mode,
        backbone=str(backbone),
        data_file=str(data_path),
        n_train_records=len(train_ex) + sum(e.group not in held for _, ex in extra for e in ex),
        n_extra_records=sum(e.group not in held for _, ex in extra for e in ex),
        extra_data=[str(p) for p, _ in extra],
        n_eval_records=len(eval_ex),
        n_train_steps=sum(len(e.labels) for e in train_ex),
        n_eval_steps=sum(len(e.labels) for e in eval_ex),
        total_seconds=time.perf_counter() - t0,
        peak_rss_mb=peak_rss_mb(),
    )
    if torch.cuda.is_available():
        metrics["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if prm is not None:  # None on non-main processes of a distributed run
        out = Path(cfg.output_dir)
        card = {
            "data_file": str(data_path),
            "data_sha256": file_sha256(data_path),
            "extra_data": {str(p): file_sha256(p) for p, _ in extra},
            "split": f"held-out by problem id, eval_fraction={cfg.eval_fraction}, seed={cfg.seed}",
            "label_type": cfg.label_type,
            "metrics": {
                k: v
                for k, v in metrics.items()
                if k.startswith(("eval_", "train_")) and not isinstance(v, list)
            },
            "train_config": asdict(cfg),
        }
        prm.save(out, card=card, state_dict=state)
        (out / METRICS_FILE).write_text(json.dumps(_jsonable(metrics), indent=2) + "\n")
    return metrics


# ------------------------------------------------------------------------------------------- head mode


def _train_head(
    cfg: TrainConfig,
    data_path: Path,
    backbone: str | Path,
    train_ex: list[StepExample],
    eval_ex: list[StepExample],
    extra: Sequence[tuple[Path, list[StepExample]]] = (),
) -> tuple[PRM, dict[str, Any]]:
    prm = PRM.from_backbone(
        backbone,
        mode="head",
        max_length=cfg.max_length,
        prompt_format=cfg.prompt_format,
        dtype="bfloat16" if cfg.bf16 else "float32",
        device=cfg.device,
        batch_size=cfg.batch_size,
    )
    examples = train_ex + eval_ex
    t_feat = time.perf_counter()
    feats, cached = cached_features(prm, examples, data_path, cfg.feature_cache)
    held = {e.group for e in eval_ex}
    for path, ex in extra:  # each file its own cache entry: the shipped corpus' features are computed once
        if ex:
            f_ex, c_ex = cached_features(prm, ex, path, cfg.feature_cache)
            keep = [j for j, e in enumerate(ex) if e.group not in held]
            feats = feats[: len(train_ex)] + [f_ex[j] for j in keep] + feats[len(train_ex):]
            train_ex = train_ex + [ex[j] for j in keep]
            cached = cached and c_ex
    examples = train_ex + eval_ex
    feat_s = time.perf_counter() - t_feat
    n_tr = len(train_ex)
    x_tr = np.concatenate(feats[:n_tr]) if n_tr else np.zeros((0, prm.config.hidden_size), np.float32)
    y_tr = np.concatenate([np.asarray(e.labels, np.float32) for e in train_ex])
    x_ev = np.concatenate(feats[n_tr:]) if eval_ex else None
    y_ev = np.concatenate([np.asarray(e.labels, np.float32) for e in eval_ex]) if eval_ex else None
    t_fit = time.perf_counter()
    groups = [e.group for e in train_ex for _ in e.labels]
    fit = fit_head(x_tr, y_tr, groups, l2=cfg.l2, folds=cfg.cv_folds, seed=cfg.seed)
    w, b = fit.w, fit.b
    history = [{"l2": lam, "cv_auc": v} for lam, v in fit.cv.items()]
    fit_s = time.perf_counter() - t_fit
    with torch.no_grad():
        prm.network.head.weight.copy_(torch.from_numpy(w).view(1, -1))
        prm.network.head.bias.fill_(float(b))
    n_steps = sum(len(e.labels) for e in examples)
    metrics: dict[str, Any] = {
        "feature_seconds": feat_s,
        "features_cached": cached,
        "head_fit_seconds": fit_s,
        "feature_steps_per_s": n_steps / feat_s if feat_s > 0 and not cached else float("nan"),
        "labelled_steps_per_s": n_steps / (feat_s + fit_s) if feat_s + fit_s > 0 else float("nan"),
        "history": history,
        "head_l2": fit.l2,
    }
    logits_tr = x_tr @ w + b
    metrics.update(
        {
            f"train_{k}": v
            for k, v in step_metrics(logits_tr, y_tr).items()
            if k in ("auc", "accuracy", "loss")
        }
    )
    if x_ev is not None and y_ev is not None:
        metrics.update({f"eval_{k}": v for k, v in step_metrics(x_ev @ w + b, y_ev).items()})
    else:
        metrics.update(eval_auc=float("nan"), eval_accuracy=float("nan"), eval_loss=float("nan"))
    return prm, metrics


def cached_features(
    prm: PRM, examples: list[StepExample], data_path: Path, cache_dir: str | None
) -> tuple[list[np.ndarray], bool]:
    """Step-end hidden states of every example ((K_i, H) arrays), from the disk cache when present.

    The cache file name is a hash of: the data file's sha256, the backbone (path, size, mtime or config),
    dtype, max_length, prompt format and this code's feature version. Returns ``(features, was_cached)``.
    """
    from safetensors.numpy import load_file, save_file

    from ..embedded_models import cache_dir as default_cache

    root = Path(cache_dir) if cache_dir else default_cache() / "prm-features"
    c = prm.config
    key_src = json.dumps(
        {
            "data": file_sha256(data_path),
            "backbone": backbone_fingerprint(c.backbone),
            "dtype": c.dtype,
            "max_length": c.max_length,
            "prompt_format": c.prompt_format,
            "version": FEATURE_CACHE_VERSION,
        },
        sort_keys=True,
    )
    key = hashlib.sha256(key_src.encode()).hexdigest()[:24]
    path = root / f"{key}.safetensors"
    sizes = np.asarray([len(e.steps) for e in examples], dtype=np.int64)
    # examples arrive as train + eval; store in file order so any split reuses one cache
    order = sorted(range(len(examples)), key=lambda i: _line_of(examples[i].where))
    if path.exists():
        try:
            d = load_file(str(path))
            flat, counts = d["features"], d["counts"]
            if len(counts) == len(examples) and np.array_equal(counts, sizes[order]):
                offs = np.concatenate([[0], np.cumsum(counts)])
                by_file = [flat[offs[j] : offs[j + 1]] for j in range(len(order))]
                out: list[np.ndarray] = [np.zeros(0)] * len(examples)
                for j, i in enumerate(order):
                    out[i] = by_file[j]
                log.info("PRM features from cache %s", path)
                return out, True
        except Exception as e:  # noqa: BLE001  (corrupt or foreign file: recompute)
            log.warning("ignoring unreadable feature cache %s (%s)", path, e)
    ordered = [examples[i] for i in order]
    feats_ordered: list[np.ndarray] = []
    block = 256
    for s in range(0, len(ordered), block):
        part = ordered[s : s + block]
        feats_ordered.extend(prm.features_batch([(e.question, e.steps) for e in part], progress=True))
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(
        {"features": np.concatenate(feats_ordered).astype(np.float32), "counts": sizes[order]},
        str(tmp),
        metadata={"key": key_src},
    )
    tmp.replace(path)
    out = [np.zeros(0)] * len(examples)
    for j, i in enumerate(order):
        out[i] = feats_ordered[j]
    return out, False


def _line_of(where: str) -> int:
    try:
        return int(where.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return 0


def backbone_fingerprint(spec: str) -> dict[str, Any]:
    """What identifies a backbone's weights cheaply: resolved path + size + mtime (file) or config (dir)."""
    from ..embedded_models import resolve_model

    p = resolve_model(spec)
    if p.is_file():
        st = p.stat()
        return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in p.glob("*.safetensors"))
    return {"path": str(p.resolve()), "config": (p / "config.json").read_text(), "weights": files}


# ----------------------------------------------------------------------------------- lora / full modes


class _StepDataset(torch.utils.data.Dataset):
    def __init__(self, enc: Encoded):
        self.enc = enc

    def __len__(self) -> int:
        return len(self.enc.chunks)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"chunk": self.enc.chunks[i], "targets": self.enc.targets[i]}


class _Collator:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return collate([r["chunk"] for r in rows], [r["targets"] for r in rows], pad_id=self.pad_id)


def _make_trainer_class() -> type:
    from transformers import Trainer

    class PRMTrainer(Trainer):
        """Trainer whose loss is step BCE on float targets at the step-end positions."""

        loss_is_scaled_for_ga = False  # our loss is a per-batch mean: let Trainer divide by grad_accum

        def compute_loss(  # type: ignore[override]
            self, model, inputs, return_outputs=False, num_items_in_batch=None
        ):
            labels = inputs["labels"]
            out = model(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                positions=inputs["positions"],
            )
            loss = step_bce_loss(out["logits"], labels, inputs["positions"] >= 0)
            return (loss, out) if return_outputs else loss

    return PRMTrainer


def _compute_metrics(pred: Any) -> dict[str, float]:
    logits = np.asarray(pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions)
    labels = np.asarray(pred.label_ids)
    mask = labels > -1.0  # -100 = padding (no step); real labels are in [0, 1]
    m = step_metrics(logits[mask], labels[mask])
    return {"auc": m["auc"], "accuracy": m["accuracy"], "bce": m["loss"], "n_steps": m["n_steps"]}


def _train_trainer(
    cfg: TrainConfig, backbone: str | Path, train_ex: list[StepExample], eval_ex: list[StepExample]
) -> tuple[PRM | None, dict[str, Any], dict[str, torch.Tensor] | None]:
    from transformers import TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    prm = PRM.from_backbone(
        backbone, mode=cfg.mode, max_length=cfg.max_length, prompt_format=cfg.prompt_format, device=cfg.device
    )
    net = prm.network
    if cfg.mode == "lora":
        net.decoder = wrap_lora(net.decoder, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout)
    if cfg.gradient_checkpointing:
        kw = {"use_reentrant": False}
        if hasattr(net.decoder, "activation_checkpointing_enable"):  # transformers >= 5.x name
            net.decoder.activation_checkpointing_enable(activation_checkpointing_kwargs=kw)
        else:
            net.decoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)
    for p in net.head.parameters():
        p.requires_grad_(True)
    tr = encode_examples(
        prm.tokenizer, train_ex, prompt_format=prm.config.prompt_format, max_length=cfg.max_length
    )
    ev = (
        encode_examples(
            prm.tokenizer, eval_ex, prompt_format=prm.config.prompt_format, max_length=cfg.max_length
        )
        if eval_ex
        else None
    )
    if not tr.chunks:
        raise ValueError("no training records (every record went to the eval split?); lower eval_fraction")
    ckpt_dir = Path(cfg.output_dir) / "checkpoints"
    use_cpu = prm.device == "cpu"
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=float(cfg.epochs or 1),
        max_steps=cfg.max_steps,
        learning_rate=float(cfg.lr or 1e-5),
        weight_decay=float(cfg.weight_decay or 0.0),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        eval_strategy="epoch" if ev is not None else "no",
        save_strategy="steps" if cfg.save_steps > 0 else "epoch",
        save_steps=cfg.save_steps if cfg.save_steps > 0 else 500,
        save_total_limit=2,
        logging_steps=1,
        logging_first_step=True,
        bf16=cfg.bf16,
        seed=cfg.seed,
        use_cpu=use_cpu,
        report_to="none",
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_pin_memory=not use_cpu,
        disable_tqdm=False,
        lr_scheduler_type="linear",
    )
    trainer = _make_trainer_class()(
        model=net,
        args=args,
        train_dataset=_StepDataset(tr),
        eval_dataset=_StepDataset(ev) if ev is not None else None,
        data_collator=_Collator(prm.pad_id),
        compute_metrics=_compute_metrics,
    )
    last = get_last_checkpoint(str(ckpt_dir)) if cfg.resume and ckpt_dir.is_dir() else None
    if cfg.resume and last is None:
        log.info("resume: no checkpoint in %s, starting fresh", ckpt_dir)
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=last)
    train_s = time.perf_counter() - t0
    history = _epoch_history(trainer.state.log_history)
    metrics: dict[str, Any] = {
        "train_loss": float(result.training_loss),
        "train_seconds": train_s,
        "global_steps": int(trainer.state.global_step),
        "resumed_from": last,
        "history": history,
        # the loss of every optimizer step (logging_steps=1); under a launcher it is the mean over processes
        "step_losses": [float(e["loss"]) for e in trainer.state.log_history if "loss" in e],
    }
    world = max(1, trainer.args.world_size)
    avg_steps = float(np.mean([len(t) for t in tr.targets]))  # labelled steps per sequence
    seqs_done = (trainer.state.global_step - _step_of(last)) * cfg.batch_size * cfg.grad_accum * world
    seqs_done = min(seqs_done, len(tr.chunks) * math.ceil(float(cfg.epochs or 1)))
    metrics["labelled_steps_per_s"] = seqs_done * avg_steps / train_s if train_s > 0 else float("nan")
    if ev is not None:
        em = trainer.evaluate()
        metrics.update(
            eval_auc=float(em.get("eval_auc", float("nan"))),
            eval_accuracy=float(em.get("eval_accuracy", float("nan"))),
            eval_loss=float(em.get("eval_bce", float("nan"))),
            eval_n_steps=float(em.get("eval_n_steps", 0)),
        )
    else:
        metrics.update(eval_auc=float("nan"), eval_accuracy=float("nan"), eval_loss=float("nan"))
    # FSDP / ZeRO-3 shard the parameters: gather a full state dict; only the main process saves
    acc = trainer.accelerator
    state = acc.get_state_dict(trainer.model) if acc.num_processes > 1 else None
    if not trainer.is_world_process_zero():
        return None, metrics, None
    net.eval()
    return prm, metrics, state


def _epoch_history(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Per-epoch eval entries of the Trainer log (and the last train loss before each)."""
    out: list[dict[str, float]] = []
    last_loss = float("nan")
    for e in log_history:
        if "loss" in e:
            last_loss = float(e["loss"])
        if "eval_auc" in e:
            out.append(
                {
                    "epoch": float(e.get("epoch", 0.0)),
                    "train_loss": last_loss,
                    "eval_auc": float(e["eval_auc"]),
                    "eval_accuracy": float(e["eval_accuracy"]),
                    "eval_loss": float(e.get("eval_bce", float("nan"))),
                }
            )
    if not out and not math.isnan(last_loss):
        out.append(
            {
                "epoch": float(log_history[-1].get("epoch", 0.0)) if log_history else 0.0,
                "train_loss": last_loss,
            }
        )
    return out


def _step_of(checkpoint: str | None) -> int:
    if not checkpoint:
        return 0
    try:
        return int(Path(checkpoint).name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0


# ------------------------------------------------------------------------------------------------ misc


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (np.floating, np.integer)):
        return _jsonable(x.item())
    return x
