"""The layers of docs/ARCHITECTURE.md hold: imports only run downwards, prediction never imports
training, and the keypoint layout lives in the skeleton's definition alone."""
from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "hybridpose"

# module (dotted, below hybridpose) -> layer; the longest matching prefix decides, so a package's layer
# covers its modules unless one of them is listed on its own
LAYERS = {
    "errors": 0, "atomic": 0, "progress": 0, "outputs": 0, "registry": 0, "defaults": 0,
    "data": 1, "run": 1,
    "skeletons": 2, "pose": 2,
    "nets": 3, "branches": 3, "engines": 3,
    "fusion": 4, "rules": 4, "viz": 4,
    "inference": 5, "export": 5,
    "executors": 6, "evaluation": 6, "explanation": 6,
    "train": 7, "inference.api": 7, "run.oof": 3,
    "serve": 8,
    "tracking": 1, "tracking.model": 5, "tracking.model_code": 5,
}

def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if p.name != "__init__.py" or p.parent != PKG)


def _name(path: Path) -> str:
    parts = path.relative_to(PKG).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def _layer(name: str) -> int:
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    raise AssertionError(f"hybridpose.{parts[0]} has no layer: add it to LAYERS here and to docs/ARCHITECTURE.md")


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


def _module_names() -> set[str]:
    return {_name(p) for p in _modules()}


def _target_module(target: str, known: set[str]) -> str | None:
    """The module an import names: itself, or the package it is in (``from .x import name``)."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def test_every_import_names_a_module_that_exists():
    """Function-local imports run late: one naming a moved or missing module fails only when its code runs."""
    known = _module_names()
    packages = {_name(p) for p in _modules() if p.name == "__init__.py"}
    for path in _modules():
        for target in _imports(path):  # `from . import name` reads as module pkg.name: a name of the package too
            assert target in known or target.rpartition(".")[0] in packages, \
                f"{path}: imports hybridpose.{target}, which does not exist"


def test_no_import_cycle():
    """No module reaches itself through imports (function-local ones included), not even within a layer."""
    known = _module_names()
    graph = {_name(p): {t for t in map(lambda t: _target_module(t, known), _imports(p)) if t and t != _name(p)}
             for p in _modules()}
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(node):] + [node]))
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, path + [node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@pytest.mark.parametrize("path", _modules(), ids=lambda p: _name(p))
def test_no_module_touches_another_modules_private_names(path):
    """``from .x import _name`` and ``x._name`` (x a hybridpose module) reach into another module's internals."""
    tree = ast.parse(path.read_text())
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("hybridpose")):
            for alias in node.names:
                assert not _private(alias.name), f"{path}:{node.lineno}: imports private {alias.name}"
                modules.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            assert not _private(node.attr), f"{path}:{node.lineno}: uses {node.value.id}.{node.attr}"


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
