"""The layers of docs/ARCHITECTURE.md hold: imports only run downwards, prediction never imports
training, and the keypoint layout lives in the skeleton's definition alone."""
from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "hybridpose"

# module (dotted, below hybridpose) -> layer; a package's layer covers its modules
LAYERS = {
    "errors": 0, "atomic": 0, "progress": 0, "outputs": 0,
    "images": 1, "hierarchy": 1, "crossfit": 1, "crops": 1, "runfolder": 1, "sources": 1, "datasets": 1,
    "predtable": 1, "video": 1,
    "skeletons": 2, "pose": 2, "folds": 2, "clips": 2, "temporal": 2, "hand_pose": 2, "keypoint_file": 2,
    "backbones": 3, "network": 3, "branches": 3, "engines": 3,
    "fusion": 4, "rules": 4,
    "classifier": 5, "api": 5, "jobs": 5, "explain": 5, "metrics": 5, "plots": 5, "review": 5, "report": 5,
    "train": 5, "export": 5, "pipeline": 5, "executors": 5, "clippredict": 5, "annotate": 5, "clipexplain": 5,
}


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if p.name != "__init__.py" or p.parent != PKG)


def _name(path: Path) -> str:
    parts = path.relative_to(PKG).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def _layer(name: str) -> int:
    top = name.split(".")[0]
    if top not in LAYERS:
        raise AssertionError(f"hybridpose.{top} has no layer: add it to LAYERS here and to docs/ARCHITECTURE.md")
    return LAYERS[top]


def _imports(path: Path) -> set[str]:
    """hybridpose modules imported anywhere in the file (function-local imports too), dotted below hybridpose."""
    name = _name(path)
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] if node.level > 1 else package
                target = [*base, *(node.module.split(".") if node.module else [])]
            elif node.module and node.module.split(".")[0] == "hybridpose":
                target = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:  # `from . import body` imports a module
                out.add(".".join([*target, alias.name]) if not node.module and node.level else ".".join(target))
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".", 1)[1] for a in node.names if a.name.startswith("hybridpose.")}
    return {m for m in out if m}


def test_every_module_has_a_layer():
    for path in _modules():
        _layer(_name(path))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: _name(p))
def test_imports_run_downwards(path):
    me = _layer(_name(path))
    for target in _imports(path):
        assert _layer(target) <= me, f"hybridpose.{_name(path)} (layer {me}) imports hybridpose.{target} (layer {_layer(target)})"


def test_only_training_imports_training():
    for path in _modules():
        if _name(path).startswith("train"):
            continue
        assert not any(t == "train" or t.startswith("train.") for t in _imports(path)), _name(path)


def test_no_keypoint_count_outside_the_skeleton_definitions():
    for path in _modules():
        if _name(path).startswith("skeletons."):
            continue
        tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
        numbers = [t for t in tokens if t.type == tokenize.NUMBER and t.string in ("33", "21", "42")]
        assert not numbers, f"{path}:{numbers[0].start[0]}: a keypoint count belongs to the skeleton"


def test_every_public_name_resolves():
    import hybridpose

    for name in hybridpose.__all__:
        assert getattr(hybridpose, name) is not None, name


def test_every_package_is_installed():
    """A normal (non-editable) install ships every package of the library."""
    import tomllib

    config = tomllib.loads((PKG.parent / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    packages = {".".join(p.parent.relative_to(PKG.parent).parts) for p in PKG.rglob("__init__.py")}
    assert packages <= listed, sorted(packages - listed)
