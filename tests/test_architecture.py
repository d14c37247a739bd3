"""The package's shape: every module imports on its own, and imports point one way.

The layers, bottom-up (a module may import its own layer's area and the layers below):

    errors, atomic, progress, tables, text, safejson (and the package's ``__init__``)   usable by all
    data          sources, rendering, recipes, the store
    models        the registry and one file per family
    bundle        the deployable model (and onnx_export, which makes its model.onnx)
    train, evaluate, quantize
    experiments, feedback
    serve
    cli           (and ``python -m imgclass`` above it)
    testing       helpers for the tests and bench scripts: nothing in imgclass imports it

Within a layer, one area may use another only in the directions listed in SIBLINGS,
so that no two areas need each other.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "imgclass"

LAYERS: list[set[str]] = [
    {"imgclass", "errors", "atomic", "progress", "tables", "text", "safejson"},
    {"data"},
    {"models"},
    {"bundle", "onnx_export"},
    {"train", "evaluate", "quantize"},
    {"experiments", "feedback"},
    {"serve"},
    {"cli"},
    {"__main__"},  # python -m imgclass
    {"testing"},  # the tests' and benches' local server and canvas drawing
]
SIBLINGS: dict[tuple[str, str], str] = {
    ("train", "evaluate"): "train measures the bundle it wrote with evaluate.metrics",
    ("quantize", "evaluate"): "an int8 bundle is judged by the same evaluation as the float one",
    ("feedback", "experiments"): "retraining tracks its runs and promotes through the registry",
}
# Imports that point the wrong way on purpose: (importer, imported) -> why. Keep it short.
EXCEPTIONS: dict[tuple[str, str], str] = {}
# Loaded by Alembic inside a migration context, never imported by imgclass itself.
NOT_IMPORTABLE_ALONE = ("imgclass.__main__", "imgclass.feedback.migrations.env")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def area(module: str) -> str:
    """``imgclass.data.sources.npz`` -> ``data``; ``imgclass`` -> ``imgclass``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def level(name: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if name in layer)


def imports(path: Path) -> list[tuple[str, int]]:
    """Every imgclass module ``path`` imports, anywhere in it (function bodies and
    ``TYPE_CHECKING`` blocks too), with the line."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((name, node.lineno))
    return [(name, line) for name, line in found if name.split(".")[0] == "imgclass"]


def sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


def test_every_area_has_a_layer():
    areas = {area(module_name(p)) for p in sources()}
    placed = set().union(*LAYERS)
    assert areas <= placed, f"put {sorted(areas - placed)} in a layer of LAYERS"


def test_imports_point_down_the_layers():
    wrong = []
    for path in sources():
        importer = module_name(path)
        for imported, line in imports(path):
            a, b = area(importer), area(imported)
            if a == b or (importer, imported) in EXCEPTIONS:
                continue
            up = level(b) > level(a)
            across = level(b) == level(a) and (a, b) not in SIBLINGS
            if up or across:
                wrong.append(f"{path.relative_to(SRC)}:{line}: {importer} -> {imported}")
    assert not wrong, "imports against the layers (see this file's docstring):\n" + "\n".join(wrong)


def test_the_rule_sees_function_level_imports():
    """The parser finds an import inside a function, so a lazy import cannot hide."""
    path = PACKAGE / "bundle.py"
    names = {name for name, _ in imports(path)}
    assert "imgclass.models.registry" in names  # imported inside load_torch_model
    assert "imgclass.data.preprocess" in names  # imported inside Bundle.predict_raw


def test_every_module_imports_on_its_own():
    """Each module imported first, in a fresh set of imgclass modules: no import cycle or
    hidden dependence on import order. One interpreter; imgclass's modules are dropped
    from sys.modules before each import (third-party ones stay, to keep this fast)."""
    names = sorted(
        module_name(p)
        for p in PACKAGE.rglob("*.py")
        if "migrations" not in p.parts or p.name == "__init__.py"
    )
    names = [n for n in names if n not in NOT_IMPORTABLE_ALONE]
    script = """
import importlib, json, sys
failed = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "imgclass" or m.startswith("imgclass.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except BaseException as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(failed))
"""
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(names)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    failed = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(names) > 80 and not failed, failed
