"""Export a trained PRM as a Hugging Face model directory that vLLM's pooling runner serves.

**The layout** (``--format vllm``): an ordinary ``<Arch>ForTokenClassification`` checkpoint with one label,

    config.json            the backbone's config, ``architectures = ["Qwen2ForTokenClassification"]`` (or
                           ``LlamaForTokenClassification``, ...), ``num_labels = 1``, dtype float32
    model.safetensors      ``model.*``: the decoder (LoRA merged, or the fine-tuned one); ``score.weight``
                           (1, H) and ``score.bias`` (1,): our step head
    tokenizer files        the PRM's tokenizer (chat template included)
    adaptivestep_prm.json  how to lay out an input (prompt_format, max_length) and where the scores are read

Why this layout and not the alternatives vLLM 0.32 documents (``vllm/model_executor/models``):

- ``Qwen2ForProcessRewardModel`` (STEP pooling) and ``Qwen2ForRewardModel`` put a two-layer MLP after the
  decoder, and STEP pooling reads the scores at a *step tag token* inserted after each step. Our PRM reads a
  linear head at each step's own last token with no tag in the input; inserting a tag would change every
  hidden state after the first step, so the scores could not equal ours.
- Any ``*ForTokenClassification`` / ``*ForSequenceClassification`` architecture whose ``*ForCausalLM`` vLLM
  knows is built by vLLM's ``as_seq_cls_model`` adapter: the decoder + ``score`` = Linear(H, num_labels)
  (its ``score.bias`` is loaded when the checkpoint has one), with the ``token_classify`` task (per-token
  pooling, "ALL") and sigmoid activation for one label. That is exactly ``sigmoid(head(h_t))`` at every
  token ``t``, for every backbone family vLLM supports, and transformers loads the same directory as
  ``AutoModelForTokenClassification``.

A client (:class:`adaptivestep.prm.server.PRMServerScorer`) tokenizes question and steps exactly as
:meth:`PRM.score` does (:func:`adaptivestep.prm.data.encode_item`), sends the token ids to the server's
``/pooling`` endpoint with ``task="token_classify"`` and reads the scores at the step-end positions.

Serve it with::

    vllm serve DIR --runner pooling --dtype float32 --max-model-len MAX_LENGTH
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

FORMATS = ("vllm",)
MANIFEST = "adaptivestep_prm.json"
MANIFEST_FORMAT = "token-classify-v1"


class ExportError(ValueError):
    """The PRM cannot be exported (unknown format, output exists, unsupported backbone)."""


def classifier_arch(decoder_class: str) -> str:
    """``Qwen2Model`` -> ``Qwen2ForTokenClassification`` (the decoder body's class names the family).

    >>> classifier_arch("LlamaModel")
    'LlamaForTokenClassification'
    """
    if not decoder_class.endswith("Model") or decoder_class == "Model":
        raise ExportError(
            f"cannot name a token-classification architecture for decoder class {decoder_class!r} "
            "(expected <Family>Model, e.g. Qwen2Model)"
        )
    return decoder_class[: -len("Model")] + "ForTokenClassification"


def export_prm(prm_dir: str | Path, out: str | Path, fmt: str = "vllm", *, prm: Any = None) -> Path:
    """Write the PRM in ``prm_dir`` (from ``train``) as ``fmt`` into the new directory ``out``; return it.

    ``prm``: an already loaded :class:`~adaptivestep.prm.model.PRM` of ``prm_dir`` (skips reloading).
    The decoder is written in float32 whatever dtype it was trained in, so served scores match ours.
    """
    import torch
    from safetensors.torch import save_file

    from .model import PRM

    if fmt not in FORMATS:
        raise ExportError(f"--format: unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"--out {out} exists and is not empty; exports never overwrite: choose another")
    if prm is None:
        prm = PRM.load(prm_dir, device="cpu", dtype="float32")
    decoder = prm.network.decoder
    arch = classifier_arch(type(decoder).__name__)
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        state = {f"model.{k}": v.detach().to(torch.float32).cpu().contiguous() for k, v in decoder.state_dict().items()}
        head = prm.network.head
        state["score.weight"] = head.weight.detach().to(torch.float32).cpu().contiguous()  # (1, H)
        state["score.bias"] = head.bias.detach().to(torch.float32).cpu().contiguous()  # (1,)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        cfg = decoder.config.to_dict()
        cfg.update(
            architectures=[arch],
            num_labels=1,
            id2label={0: "step_correct"},
            label2id={"step_correct": 0},
            problem_type=None,
            torch_dtype="float32",
            dtype="float32",
        )
        cfg.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, default=str) + "\n")
        prm.tokenizer.save_pretrained(str(tmp))
        manifest = {
            "format": MANIFEST_FORMAT,
            "source_prm": str(Path(prm_dir).expanduser().resolve()),
            "base_model": prm.config.base_model or prm.config.backbone,
            "mode": prm.config.mode,
            "prompt_format": prm.config.prompt_format,
            "max_length": prm.config.max_length,
            "architecture": arch,
            "task": "token_classify",
            "score": "sigmoid(score(h_t)) at each step's last token t, input laid out by prm.data.encode_item",
            "serve": f"vllm serve {out} --runner pooling --dtype float32 --max-model-len {prm.config.max_length}",
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    """The ``adaptivestep_prm.json`` of an exported directory (ExportError naming the path if absent)."""
    p = Path(model_dir) / MANIFEST
    try:
        m = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise ExportError(
            f"{model_dir} is not a PRM exported by 'adaptivestep export-prm --format vllm' ({p}: {e})"
        ) from None
    if m.get("format") != MANIFEST_FORMAT:
        raise ExportError(f"{p}: format {m.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    return m
