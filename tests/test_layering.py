"""Imports run one way: cli -> training -> {checkpoint, data, optim, metrics, models} -> nn -> functional -> tensor -> backend.

Every module of the package is parsed (imports inside functions count too) and each
import of another minicnn module is checked against the layer table below: a module
may import from its own layer or any layer beneath it, never from one above.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "minicnn"

# Top to bottom. The package's own __init__ gathers everything, so it sits at the top.
LAYERS = [
    {"__init__", "__main__", "cli", "keras", "pictures", "pytorch_names", "serve", "tensorboard", "viz"},
    {"training", "distributed", "recipe"},
    {"checkpoint", "data", "optim", "metrics", "models", "interop", "onnx", "run_settings"},
    {"nn"},
    {"functional", "gradcheck", "profiler"},
    {"kernels"},
    {"tensor"},
    {"backend", "errors", "files", "runs"},
]
LEVEL = {unit: level for level, units in enumerate(LAYERS) for unit in units}


def unit_of(path):
    """The top-level module or subpackage a file belongs to: minicnn/nn/layers.py -> 'nn'."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0] if len(parts) > 1 else parts[0]


def imported_units(path):
    """(line, unit) for every import of another part of minicnn in the file at `path`."""
    package_parts = ("minicnn",) + path.relative_to(PACKAGE).parent.parts
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package_parts[: len(package_parts) - node.level + 1] if node.level else ()
            module = ".".join(base + ((node.module,) if node.module else ()))
            # `from minicnn import cli` and `from .. import nn` name a part of the package in the alias.
            names = [f"{module}.{alias.name}" for alias in node.names] if module == "minicnn" else [module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "minicnn":
                # `from minicnn import __version__` names an attribute of the package itself
                is_part = len(parts) > 1 and ((PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").exists())
                found.append((node.lineno, parts[1] if is_part else "__init__"))
    return found


def all_imports():
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = unit_of(path)
        for line, target in imported_units(path):
            if target != unit:
                yield path, line, unit, target


def test_every_part_of_the_package_has_a_layer():
    units = {unit_of(path) for path in PACKAGE.rglob("*.py")}
    assert units - set(LEVEL) == set(), "add these to the layer table (and to README's reading order)"


def test_no_module_imports_from_a_layer_above_it():
    upward = [f"{path.relative_to(PACKAGE.parent)}:{line}: {unit} (layer {LEVEL[unit]}) imports {target} "
              f"(layer {LEVEL[target]})"
              for path, line, unit, target in all_imports() if LEVEL[target] < LEVEL[unit]]
    assert upward == []


def test_only_functional_uses_the_kernels():
    users = sorted({unit for _, _, unit, target in all_imports() if target == "kernels"} - {"__init__"})
    assert users in ([], ["functional"])


def test_nn_knows_nothing_of_training():
    import minicnn.nn

    for name in ("compile", "fit", "evaluate", "predict"):
        assert not hasattr(minicnn.nn.Sequential, name)


@pytest.mark.parametrize("source, unit, target", [
    ("from ..training import Trainer\n", "nn", "training"),
    ("def f():\n    from minicnn import cli\n", "training", "cli"),
])
def test_the_check_sees_upward_imports_even_inside_functions(tmp_path, monkeypatch, source, unit, target):
    # The check must be able to fail: a planted upward import is found, wherever it hides.
    fake = tmp_path / "minicnn"
    (fake / unit).mkdir(parents=True)
    planted = fake / unit / "planted.py"
    planted.write_text(source)
    (fake / f"{target}.py").write_text("")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    found = [(u, t) for _, _, u, t in all_imports()]
    assert (unit, target) in found and LEVEL[target] < LEVEL[unit]
