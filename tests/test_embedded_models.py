"""Embedded models: assembly of a model split over packages, its checks, and the registry (no real weights)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from adaptivestep import embedded_models as em


def _fake_parts(root: Path, chunks: list[bytes], stem: str) -> tuple[str, ...]:
    names = []
    for i, chunk in enumerate(chunks, 1):
        pkg = root / f"{stem}{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(chunk)
        names.append(pkg.name)
    return tuple(names)


def _register(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, chunks: list[bytes], *, size: int, sha: str,
              stem: str) -> em.EmbeddedModel:
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    model = em.EmbeddedModel(name="fake-model", filename="fake.gguf", size=size, sha256=sha,
                             packages=_fake_parts(tmp_path / "site", chunks, stem), pip="fake-model-parts",
                             title="Fake")
    monkeypatch.setitem(em.EMBEDDED, model.name, model)
    monkeypatch.setenv("ADAPTIVESTEP_CACHE", str(tmp_path / "cache"))
    return model


def test_a_split_model_is_assembled_in_package_order_and_checked(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # 12 parts, so that a lexical order (part1, part10, part11, part2, ...) would give other bytes
    chunks = [bytes([i]) * (100 + i) for i in range(1, 13)]
    whole = b"".join(chunks)
    _register(monkeypatch, tmp_path, chunks, size=len(whole), sha=hashlib.sha256(whole).hexdigest(),
              stem="fakeorder_part")
    path = em.resolve_model("fake-model")
    assert path.read_bytes() == whole
    assert path.parent == tmp_path / "cache"
    assert em.verify("fake-model") == path
    assert em.describe("fake-model") == "Fake (embedded fake-model)"


def test_a_corrupt_split_model_is_refused_and_leaves_no_file(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    chunks = [b"GGUF" + b"a" * 60, b"b" * 64]
    _register(monkeypatch, tmp_path, chunks, size=128, sha="0" * 64, stem="fakecorrupt_part")
    with pytest.raises(em.ModelError, match="corrupt.*pip install --force-reinstall fake-model-parts"):
        em.resolve_model("fake-model")
    assert not list((tmp_path / "cache").iterdir())


def test_a_missing_part_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    model = em.EmbeddedModel(name="fake-missing", filename="m.gguf", size=1, sha256=None,
                             packages=("no_such_package_part1",), pip="no-such-package-part1==1")
    monkeypatch.setitem(em.EMBEDDED, model.name, model)
    with pytest.raises(em.ModelError, match="pip install no-such-package-part1==1"):
        em.resolve_model("fake-missing")


def test_the_15b_policy_is_registered_with_the_packages_the_extra_installs() -> None:
    import tomllib

    model = em.EMBEDDED["qwen2.5-coder-1.5b"]
    root = Path(__file__).resolve().parents[1]
    extra = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["policy-1-5b"]
    assert extra == model.pip.split()
    assert [p.replace("_", "-") for p in model.packages] == [e.split("==")[0] for e in extra]
    assert em.is_embedded("qwen2.5-coder-1.5b") and model.size == 1_117_320_768
    assert model.extra == "policy-1-5b" and em.QWEN_05B.extra == "default-model"


def test_a_missing_part_of_a_model_with_an_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    model = em.EmbeddedModel(name="fake-extra", filename="m.gguf", size=1, sha256=None,
                             packages=("no_such_package_part1",), pip="no-such-package-part1==1", extra="fake-x")
    monkeypatch.setitem(em.EMBEDDED, model.name, model)
    with pytest.raises(em.ModelError, match=r"pip install 'adaptivestep\[fake-x\]' \(or: pip install no-such"):
        em.resolve_model("fake-extra")
