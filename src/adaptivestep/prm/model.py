"""The process reward model: a Hugging Face decoder + a 1-logit step head read at each step's last token.

Step score = sigmoid(head(h_end)), ``h_end`` the final hidden state (after the final norm) at the last token
of the step, with the input laid out as in :mod:`adaptivestep.prm.data`. Loss: BCE-with-logits against
float targets (soft labels stay soft). The only module that imports peft; torch / transformers are also
imported by ``prm.head``, ``prm.train``, ``prm.export``, ``prm.interop`` and ``prm.server`` (its tokenizer).

Saved PRM directory (``PRM.save``)::

    prm_config.json      PRMConfig: backbone, mode, max_length, prompt_format, hidden_size, dtype
    head.safetensors     "weight" (1, H) float32, "bias" (1,) float32
    tokenizer files      the backbone's tokenizer (tokenizer.json, tokenizer_config.json, ...); not written
                         in modes "head" / "lora" on an embedded backbone, which brings its own; a directory
                         without them loads its backbone's tokenizer
    README.md            model card: base model, data file, split, label type, metrics
    backbone/            mode "full" only: the fine-tuned decoder (config.json + model.safetensors)
    adapter/             mode "lora" only: the peft LoRA adapter of the decoder

In modes "head" and "lora" the backbone weights are NOT copied (a 0.5B backbone is 2 GB in float32):
``prm_config.json["backbone"]`` names it - an embedded model name (``qwen2.5-coder-0.5b``), a GGUF file or a
local HF directory - and :meth:`PRM.load` loads it from there (GGUF through ``backends.hf.load_hf_model``).
Copy or re-point that reference when moving the PRM to another machine.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..devices import DTYPES, resolve_device
from ..embedded_models import is_embedded
from .data import Chunk, default_prompt_format, encode_item

log = logging.getLogger(__name__)

PRM_CONFIG = "prm_config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
HEAD_FILE = "head.safetensors"
BACKBONE_DIR = "backbone"
ADAPTER_DIR = "adapter"
MODES: tuple[str, ...] = ("head", "lora", "full")


class BackboneError(RuntimeError):
    """The backbone (or a saved PRM) cannot be loaded; the message names the path and the cause."""


@dataclass
class PRMConfig:
    """What ``prm_config.json`` holds.

    backbone: where the decoder comes from: embedded model name, GGUF file, local HF directory, or
        ``"backbone"`` (relative to the PRM directory) for mode "full".
    base_model: the backbone the PRM was built from (for the model card; equals ``backbone`` unless "full").
    mode: how it was trained: "head" (frozen backbone), "lora" (adapter in ``adapter/``), "full".
    max_length: most tokens per model input; longer inputs are truncated from the left (every step kept).
    prompt_format: "chat" (question through the chat template) or "plain" (question + newline).
    hidden_size: the decoder's hidden size H (the head is Linear(H, 1)).
    dtype: decoder weights dtype at scoring time ("float32", "bfloat16", "float16"); the head is float32.
    format_version: this layout's version.
    """

    backbone: str
    base_model: str = ""
    mode: str = "head"
    max_length: int = 1024
    prompt_format: str = "chat"
    hidden_size: int = 0
    dtype: str = "float32"
    format_version: int = 1

    @classmethod
    def from_json(cls, path: Path) -> PRMConfig:
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise BackboneError(f"{path}: cannot read PRM config ({e})") from None
        known = {f.name for f in fields(cls)}
        if "backbone" not in d:
            raise BackboneError(f"{path}: missing 'backbone'")
        cfg = cls(**{k: v for k, v in d.items() if k in known})
        if cfg.mode not in MODES:
            raise BackboneError(f"{path}: mode {cfg.mode!r} is not one of {MODES}")
        return cfg


# ------------------------------------------------------------------------------------------ loading


def load_backbone(spec: str | Path, *, dtype: str = "float32", device: str = "cpu") -> tuple[Any, Any]:
    """Load a backbone as ``(decoder, tokenizer)``: the transformer body without its LM head.

    ``spec``: embedded model name, ``.gguf`` file, or local HF model directory. GGUF files go through
    ``adaptivestep.backends.hf.load_hf_model`` (converted once into a cached HF directory). Any failure
    raises :class:`BackboneError` naming the backbone.
    """
    from ..embedded_models import ModelError, resolve_model

    if dtype not in DTYPES:
        raise BackboneError(f"backbone {spec!r}: dtype must be one of {list(DTYPES)}, got {dtype!r}")
    try:
        path = resolve_model(str(spec))
    except ModelError as e:
        raise BackboneError(f"backbone {spec!r} cannot be loaded: {e}") from None
    try:
        model, tokenizer = _load_causal_lm(path, dtype, device)
    except BackboneError:
        raise
    except Exception as e:
        raise BackboneError(f"backbone {spec!r} ({path}) cannot be loaded: {type(e).__name__}: {e}") from e
    decoder: Any = model.base_model  # e.g. Qwen2Model: the body, final norm included, no lm_head
    decoder.eval()
    return decoder, tokenizer


def _load_causal_lm(path: Path, dtype: str, device: str) -> tuple[Any, Any]:
    try:
        from ..backends.hf import load_hf_model  # the one place that turns GGUF into HF weights
    except ImportError:
        pass
    else:
        return load_hf_model(str(path), dtype=dtype, device=device)
    # Interim path until backends/hf.py exists: transformers loads local HF dirs and (slowly) GGUF files.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw: dict[str, Any] = {}
    where = path
    if path.is_file():
        kw["gguf_file"] = path.name
        where = path.parent
    tok = AutoTokenizer.from_pretrained(str(where), **kw)
    model: Any = AutoModelForCausalLM.from_pretrained(str(where), dtype=DTYPES[dtype], **kw)
    return model.to(device), tok


def _load_saved_decoder(path: Path, dtype: str, device: str) -> Any:
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(path, dtype=DTYPES[dtype]).to(device).eval()
    except Exception as e:
        raise BackboneError(f"{path}: cannot load the fine-tuned backbone: {type(e).__name__}: {e}") from e


# ------------------------------------------------------------------------------------------- network


def step_bce_loss(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean BCE-with-logits over real steps. ``logits``, ``targets``: (B, K) float; ``mask``: (B, K) bool.

    Targets are used as floats (a 0.25 label is a 0.25 target, never rounded).
    """
    targets = targets.to(logits.dtype)
    if mask is None:
        return F.binary_cross_entropy_with_logits(logits, targets)
    if not bool(mask.any()):
        return logits.sum() * 0.0  # keeps the graph for a batch without steps
    return F.binary_cross_entropy_with_logits(logits[mask], targets[mask])


class PRMNetwork(nn.Module):
    """decoder + ``head`` = Linear(H, 1), float32, read at the given step-end positions."""

    def __init__(self, decoder: Any, hidden_size: int):
        super().__init__()
        self.decoder: Any = decoder
        self.head = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.head.weight, std=1.0 / hidden_size)  # small: initial scores near 0.5
        nn.init.zeros_(self.head.bias)

    def step_hidden(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """Hidden states at ``positions`` (B, K; -1 = padding, read as position 0): (B, K, H)."""
        hidden = self.decoder(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state
        idx = positions.clamp(min=0).unsqueeze(-1).expand(-1, -1, hidden.shape[-1])  # (B, K, H)
        return hidden.gather(1, idx)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        positions: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``logits`` (B, K) at the step ends; ``loss`` (BCE on float ``labels``, -100 = no step) if given."""
        h = self.step_hidden(input_ids, attention_mask, positions)
        logits = self.head(h.to(self.head.weight.dtype)).squeeze(-1)  # (B, K)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = step_bce_loss(logits, labels, positions >= 0)
        return out


def collate(
    chunks: Sequence[Chunk], targets: Sequence[Sequence[float]] | None = None, pad_id: int = 0
) -> dict[str, torch.Tensor]:
    """Right-pad chunks into tensors: input_ids, attention_mask (B, T); positions (B, K), -1 = none;
    labels (B, K) float, -100 = none (only when ``targets`` is given).

    Right padding leaves every real token's position and causal context unchanged, so a padded row gives
    the same hidden states as the chunk alone.
    """
    B = len(chunks)
    T = max(len(c.input_ids) for c in chunks)
    K = max(len(c.positions) for c in chunks)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    pos = torch.full((B, K), -1, dtype=torch.long)
    for i, c in enumerate(chunks):
        n = len(c.input_ids)
        ids[i, :n] = torch.tensor(c.input_ids, dtype=torch.long)
        mask[i, :n] = 1
        pos[i, : len(c.positions)] = torch.tensor(c.positions, dtype=torch.long)
    out = {"input_ids": ids, "attention_mask": mask, "positions": pos}
    if targets is not None:
        lab = torch.full((B, K), -100.0, dtype=torch.float32)
        for i, t in enumerate(targets):
            lab[i, : len(t)] = torch.tensor(list(t), dtype=torch.float32)
        out["labels"] = lab
    return out


def pad_token_id(tokenizer: Any) -> int:
    """Padding id: the tokenizer's pad token, else EOS, else 0 (masked anyway)."""
    for name in ("pad_token_id", "eos_token_id"):
        v = getattr(tokenizer, name, None)
        if isinstance(v, int):
            return v
    return 0


# ----------------------------------------------------------------------------------------------- PRM


class PRM:
    """A process reward model: ``score(question, steps)`` -> one probability per step.

    Implements :class:`adaptivestep.scoring.StepScorer`. Build a fresh (untrained-head) one with
    :meth:`from_backbone`, train it with :func:`adaptivestep.prm.train.train`, reload with :meth:`load`.

    batch_size: most chunks per forward pass; max_batch_tokens: most padded tokens per forward pass.
    share_prefix: run a prompt (and any longer common prefix) shared by several items once and reuse its
    KV cache for their continuations (best-of-N candidates, value-guided decoding candidates).
    """

    def __init__(
        self,
        network: PRMNetwork,
        tokenizer: Any,
        config: PRMConfig,
        *,
        device: str = "cpu",
        batch_size: int = 16,
        max_batch_tokens: int = 16384,
        share_prefix: bool = True,
        min_shared_tokens: int = 8,
    ):
        self.network = network
        self.tokenizer = tokenizer
        self.config = config
        self.device = device
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.share_prefix = share_prefix
        self.min_shared_tokens = min_shared_tokens
        self.pad_id = pad_token_id(tokenizer)
        self._adapter_src: Path | None = None  # adapter dir this PRM was loaded with (mode "lora")

    # -------------------------------------------------------------------------------- construction

    @classmethod
    def from_backbone(
        cls,
        backbone: str | Path,
        *,
        mode: str = "head",
        max_length: int = 1024,
        prompt_format: str = "auto",
        dtype: str = "float32",
        device: str | None = None,
        **kwargs: Any,
    ) -> PRM:
        """A PRM with a fresh head on ``backbone`` (embedded name, GGUF file or HF directory).

        prompt_format "auto" picks "chat" when the tokenizer has a chat template, else "plain".
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        device = resolve_device(device)
        decoder, tok = load_backbone(backbone, dtype=dtype, device=device)
        if prompt_format == "auto":
            prompt_format = default_prompt_format(tok)
        spec = str(backbone)
        if spec in ("", "default"):  # record the concrete model, not an alias whose meaning may change
            from ..embedded_models import DEFAULT_MODEL

            spec = DEFAULT_MODEL
        elif Path(spec).expanduser().exists():
            spec = str(Path(spec).expanduser().resolve())
        hidden = int(decoder.config.hidden_size)
        cfg = PRMConfig(
            backbone=spec,
            base_model=spec,
            mode=mode,
            max_length=max_length,
            prompt_format=prompt_format,
            hidden_size=hidden,
            dtype=dtype,
        )
        net = PRMNetwork(decoder, hidden).to(device)
        return cls(net, tok, cfg, device=device, **kwargs)

    @classmethod
    def load(
        cls, path: str | Path, *, device: str | None = None, dtype: str | None = None, **kwargs: Any
    ) -> PRM:
        """Load a PRM saved by :meth:`save` (see the module docstring for the layout); ``embedded`` or
        ``embedded:<task>`` = the one the package ships (:mod:`adaptivestep.prm.shipped`)."""
        from safetensors.torch import load_file
        from transformers import AutoTokenizer

        if str(path) == "embedded" or str(path).startswith("embedded:"):  # the PRM the package ships
            from .shipped import head_dir

            path = head_dir(str(path))
        root = Path(path).expanduser()
        if not (root / PRM_CONFIG).is_file():
            raise BackboneError(f"{root}: not a PRM directory (no {PRM_CONFIG})")
        cfg = PRMConfig.from_json(root / PRM_CONFIG)
        device = resolve_device(device)
        dtype = dtype or cfg.dtype
        decoder: Any
        backbone_tok = None
        if cfg.mode == "full":
            decoder = _load_saved_decoder(root / cfg.backbone, dtype, device)
        else:
            decoder, backbone_tok = load_backbone(cfg.backbone, dtype=dtype, device=device)
        if backbone_tok is not None and not (root / TOKENIZER_CONFIG).is_file():
            tok = backbone_tok  # a head / LoRA PRM saved without tokenizer files: its backbone's
        else:
            try:
                tok = AutoTokenizer.from_pretrained(root)
            except Exception as e:
                raise BackboneError(f"{root}: cannot load the PRM's tokenizer: {e}") from e
        adapter_src = None
        if cfg.mode == "lora":
            from peft import PeftModel

            adapter_src = root / ADAPTER_DIR
            try:
                with _peft_quiet():
                    decoder = PeftModel.from_pretrained(decoder, adapter_src).merge_and_unload()
            except Exception as e:
                raise BackboneError(f"{adapter_src}: cannot load the LoRA adapter: {e}") from e
        hidden = int(decoder.config.hidden_size)
        head = load_file(str(root / HEAD_FILE))
        if tuple(head["weight"].shape) != (1, hidden):
            raise BackboneError(
                f"{root}: head expects hidden size {tuple(head['weight'].shape)[-1]} but backbone "
                f"{cfg.backbone!r} has {hidden}: the PRM was trained on another backbone"
            )
        net = PRMNetwork(decoder, hidden)
        net.head.load_state_dict({"weight": head["weight"].float(), "bias": head["bias"].float()})
        net.to(device).eval()
        prm = cls(net, tok, cfg, device=device, **kwargs)
        prm._adapter_src = adapter_src
        return prm

    def save(
        self,
        path: str | Path,
        *,
        card: dict[str, Any] | None = None,
        state_dict: dict[str, torch.Tensor] | None = None,
    ) -> Path:
        """Write the PRM directory (layout in the module docstring); ``card`` feeds README.md.

        ``state_dict``: a gathered full state dict of the network (``head.*``, ``decoder.*``) to save instead
        of the live parameters (distributed runs, where the live ones are shards).
        """
        from safetensors.torch import save_file

        root = Path(path).expanduser()
        root.mkdir(parents=True, exist_ok=True)
        if state_dict is not None:
            hw, hb = state_dict["head.weight"], state_dict["head.bias"]
            dec_state: dict[str, torch.Tensor] | None = {
                k[len("decoder.") :]: v for k, v in state_dict.items() if k.startswith("decoder.")
            }
        else:
            hw, hb = self.network.head.weight, self.network.head.bias
            dec_state = None
        save_file(
            {
                "weight": hw.detach().float().cpu().contiguous(),
                "bias": hb.detach().float().cpu().contiguous(),
            },
            str(root / HEAD_FILE),
        )
        cfg = copy.copy(self.config)
        if cfg.mode == "full":
            save_decoder(self.network.decoder, root / BACKBONE_DIR, state_dict=dec_state)
            cfg.backbone = BACKBONE_DIR
        elif cfg.mode == "lora":
            save_adapter(
                self.network.decoder, root / ADAPTER_DIR, source=self._adapter_src, state_dict=dec_state
            )
        if cfg.mode == "full" or not is_embedded(cfg.backbone):
            self.tokenizer.save_pretrained(str(root))  # an embedded backbone brings its own (see load)
        (root / PRM_CONFIG).write_text(json.dumps(asdict(cfg), indent=2) + "\n")
        (root / "README.md").write_text(model_card(cfg, card or {}))
        return root

    # ----------------------------------------------------------------------------------- scoring

    def score(self, question: str, steps: Sequence[str]) -> list[float]:
        """Probability in [0, 1] that the solution is still right after each step (one per step)."""
        return self.score_batch([(question, steps)])[0]

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """Scores of every step of every item, in order (``[]`` for an item with no steps); batched with
        right padding, longest first, and prompt/prefix sharing (see the class docstring)."""
        logits = self.step_logits_batch(items)
        return [(1.0 / (1.0 + np.exp(-x.astype(np.float64)))).tolist() for x in logits]

    def step_logits_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[np.ndarray]:
        """Head logits per step: a list of (K_i,) float32 arrays."""
        hidden = self.features_batch(items)
        w = self.network.head.weight.detach().float().cpu().numpy()[0]  # (H,)
        b = float(self.network.head.bias.detach().float().cpu()[0])
        return [(h @ w + b).astype(np.float32) for h in hidden]

    def features_batch(
        self, items: Sequence[tuple[str, Sequence[str]]], *, progress: bool = False
    ) -> list[np.ndarray]:
        """Final hidden state at each step's last token: a list of (K_i, H) float32 arrays."""
        chunks: list[Chunk] = []
        for i, (question, steps) in enumerate(items):
            if not steps:  # nothing to score: an empty score list, as StepScorer requires
                continue
            chunks.extend(
                encode_item(
                    self.tokenizer,
                    question,
                    list(steps),
                    prompt_format=self.config.prompt_format,
                    max_length=self.config.max_length,
                    item=i,
                    where=f"item {i}",
                )
            )
        per_chunk = self.chunk_features(chunks, progress=progress)
        H = self.config.hidden_size or int(self.network.head.weight.shape[-1])
        out = [np.zeros((len(steps), H), dtype=np.float32) for _, steps in items]
        for c, h in zip(chunks, per_chunk):
            out[c.item][c.step_indices] = h
        return out

    @torch.no_grad()
    def chunk_features(self, chunks: Sequence[Chunk], *, progress: bool = False) -> list[np.ndarray]:
        """Hidden states at each chunk's positions: list of (len(c.positions), H) float32 arrays."""
        net = self.network
        was_training = net.training
        net.eval()
        try:
            results: list[np.ndarray | None] = [None] * len(chunks)
            shared, single = self._plan(chunks)
            bar = _progress(len(chunks), progress, "PRM features")
            for members, p in shared:
                self._run_shared([chunks[i] for i in members], p, members, results)
                bar.update(len(members))
            for batch in self._batches([chunks[i] for i in single], single):
                bc = [chunks[i] for i in batch]
                t = collate(bc, pad_id=self.pad_id)
                h = (
                    net.step_hidden(
                        t["input_ids"].to(self.device),
                        t["attention_mask"].to(self.device),
                        t["positions"].to(self.device),
                    )
                    .float()
                    .cpu()
                    .numpy()
                )
                for j, i in enumerate(batch):
                    results[i] = h[j, : len(chunks[i].positions)]
                bar.update(len(batch))
            bar.close()
            return [
                r if r is not None else np.zeros((0, self.config.hidden_size), np.float32) for r in results
            ]
        finally:
            net.train(was_training)

    # -------------------------------------------------------------------------------- internals

    def _batches(self, chunks: Sequence[Chunk], index: Sequence[int]) -> list[list[int]]:
        """Group indices (longest first, so rows of a batch have similar lengths) under both limits."""
        order = sorted(range(len(chunks)), key=lambda j: -len(chunks[j].input_ids))
        batches: list[list[int]] = []
        cur: list[int] = []
        cur_len = 0
        for j in order:
            n = len(chunks[j].input_ids)
            longest = max(cur_len, n)
            if cur and (len(cur) + 1 > self.batch_size or longest * (len(cur) + 1) > self.max_batch_tokens):
                batches.append(cur)
                cur, longest = [], n
            cur.append(index[j])
            cur_len = longest
        if cur:
            batches.append(cur)
        return batches

    def _plan(self, chunks: Sequence[Chunk]) -> tuple[list[tuple[list[int], int]], list[int]]:
        """Split chunk indices into prefix-sharing groups ``(members, prefix_len)`` and the rest."""
        if not self.share_prefix:
            return [], list(range(len(chunks)))
        by_prompt: dict[tuple[int, ...], list[int]] = {}
        single: list[int] = []
        for i, c in enumerate(chunks):
            if c.prompt_len > 0:
                by_prompt.setdefault(tuple(c.input_ids[: c.prompt_len]), []).append(i)
            else:
                single.append(i)
        shared: list[tuple[list[int], int]] = []
        for members in by_prompt.values():
            if len(members) < 2:
                single.extend(members)
                continue
            first = chunks[members[0]].input_ids
            lcp = len(first)
            for i in members[1:]:
                other = chunks[i].input_ids
                n = min(lcp, len(other))
                k = 0
                while k < n and first[k] == other[k]:
                    k += 1
                lcp = k
            p = min(lcp, min(len(chunks[i].input_ids) for i in members) - 1)  # every row keeps >= 1 new token
            if p >= self.min_shared_tokens:
                shared.append((members, p))
            else:
                single.extend(members)
        return shared, sorted(single)

    def _run_shared(
        self, group: list[Chunk], p: int, members: list[int], results: list[np.ndarray | None]
    ) -> None:
        """Run the shared prefix once, then the continuations in batches on copies of its KV cache."""
        from transformers import DynamicCache

        from ..backends.hf import cache_arg

        dec = self.network.decoder
        dev = self.device
        prefix = torch.tensor([group[0].input_ids[:p]], dtype=torch.long, device=dev)
        cache = DynamicCache(config=dec.config)  # ours, so we never read it back through a deprecated name
        out = dec(
            input_ids=prefix, attention_mask=torch.ones_like(prefix), **{cache_arg(): cache}, use_cache=True
        )
        h_prefix = out.last_hidden_state[0]  # (P, H)
        suffixes = [
            Chunk(c.input_ids[p:], [q - p for q in c.positions], c.step_indices, item=c.item) for c in group
        ]
        for batch in self._batches(suffixes, list(range(len(group)))):
            bc = [suffixes[j] for j in batch]
            t = collate(bc, pad_id=self.pad_id)
            b = len(bc)
            mask = torch.cat([torch.ones((b, p), dtype=torch.long), t["attention_mask"]], dim=1).to(dev)
            c = copy.deepcopy(cache)
            c.batch_repeat_interleave(b)
            hs = dec(
                input_ids=t["input_ids"].to(dev), attention_mask=mask, **{cache_arg(): c}, use_cache=True
            ).last_hidden_state
            for row, j in enumerate(batch):
                rows = []
                for q in group[j].positions:
                    rows.append(h_prefix[q] if q < p else hs[row, q - p])
                results[members[j]] = torch.stack(rows).float().cpu().numpy()


def save_decoder(decoder: Any, path: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Save a bare decoder as an HF directory (config.json + model.safetensors), loadable with AutoModel.

    Writes the state dict directly (works for GGUF-loaded models, which ``save_pretrained`` refuses).
    """
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    sd = state_dict if state_dict is not None else decoder.state_dict()
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in sd.items()},
        str(path / "model.safetensors"),
        metadata={"format": "pt"},
    )
    cfg = copy.deepcopy(decoder.config)
    cfg.architectures = [type(decoder).__name__]
    cfg.save_pretrained(str(path))


def save_adapter(
    decoder: nn.Module,
    path: Path,
    *,
    source: Path | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """Save the LoRA adapter of a peft-wrapped decoder (or copy the adapter it was loaded from)."""
    from peft import PeftModel

    if isinstance(decoder, PeftModel):
        decoder.save_pretrained(str(path), state_dict=state_dict)
    elif source is not None and source.is_dir():
        if source.resolve() != path.resolve():
            shutil.copytree(source, path, dirs_exist_ok=True)
    else:
        raise BackboneError("mode 'lora' PRM has no adapter to save (decoder is not a peft model)")


def wrap_lora(decoder: nn.Module, *, r: int = 16, alpha: int = 32, dropout: float = 0.05) -> nn.Module:
    """Wrap the decoder's linear layers with LoRA adapters (only they and the head then train)."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear", bias="none")
    with _peft_quiet():
        return get_peft_model(decoder, cfg)


@contextlib.contextmanager
def _peft_quiet() -> Iterator[None]:
    """peft reads transformers' deprecated ``is_gradient_checkpointing``: its FutureWarning is not ours to show."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def model_card(cfg: PRMConfig, card: dict[str, Any]) -> str:
    """README.md of a saved PRM: base model, data, split, label type, metrics, how to load it."""
    metrics = card.get("metrics", {})
    lines = [
        "---",
        "library_name: adaptivestep",
        "tags: [process-reward-model, adaptivestep]",
        "---",
        "",
        "# Process reward model (adaptivestep)",
        "",
        f"- base model: `{cfg.base_model or cfg.backbone}`",
        f"- mode: `{cfg.mode}`"
        + (" (backbone frozen; weights not copied, loaded from `backbone`)" if cfg.mode == "head" else ""),
        f"- backbone reference (prm_config.json): `{cfg.backbone}`",
        (
            f"- input: {cfg.prompt_format} prompt + steps, max_length {cfg.max_length}, "
            "score read at each step's last token"
        ),
        f"- data file: `{card.get('data_file', '?')}` (sha256 {str(card.get('data_sha256', '?'))[:16]})",
        f"- split: {card.get('split', '?')}",
        f"- label type: {card.get('label_type', '?')} (BCE on float targets)",
        "",
        "## Metrics (held-out steps; labels >= 0.5 count as positive)",
        "",
    ]
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        for k, v in metrics.items():
            if isinstance(v, (int, float, str)):
                lines.append(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |")
    else:
        lines.append("(none recorded)")
    if card.get("train_config"):
        lines += [
            "",
            "## Training config",
            "",
            "```json",
            json.dumps(card["train_config"], indent=2, default=str),
            "```",
        ]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from adaptivestep.prm import PRM",
        "prm = PRM.load('<this directory>')",
        "prm.score(question, steps)  # one probability per step",
        "```",
        "",
    ]
    return "\n".join(lines)


def _progress(total: int, enabled: bool, desc: str) -> Any:
    from ..progress import progress_bar

    return progress_bar(total=total, desc=desc, unit="seq", enabled=enabled)
