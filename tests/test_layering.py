"""Imports run one way: cli -> training -> {checkpoint, data, optim, metrics, models} -> nn -> functional -> tensor -> backend.

Every module of the package is parsed (imports inside functions count too) and each
import of another minicnn module is checked against the layer table below: a module
may import from any layer beneath it, never from one above, and from another unit of
its own layer only where ALLOWED_SIDEWAYS says why.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "minicnn"

# Top to bottom. The package's own __init__ gathers everything, so it sits at the top.
LAYERS = [
    {"__init__", "__main__", "cli", "keras", "pictures", "pytorch_names", "serve", "tensorboard", "viz"},
    {"training", "distributed", "recipe", "runs"},
    {"checkpoint", "checkpoint_guards", "data", "optim", "metrics", "models", "interop", "onnx", "run_settings"},
    {"nn"},
    {"functional", "gradcheck", "profiler"},
    {"kernels"},
    {"windows"},
    {"tensor"},
    {"backend", "errors", "files", "pickle_reader"},
]
LEVEL = {unit: level for level, units in enumerate(LAYERS) for unit in units}

# Imports between two units of one layer, each with the reason it is needed. Any other is a mistake: move the
# shared code down a layer, or pass it in from above. (The package's __init__ gathers everything; it is not checked.)
ALLOWED_SIDEWAYS = {
    ("__main__", "cli"): "`python -m minicnn` runs the command line",
    ("cli", "__init__"): "`minicnn --version` prints the package's __version__",
    ("cli", "pictures"): "`minicnn predict` runs it",
    ("cli", "serve"): "`minicnn serve` runs it",
    ("cli", "tensorboard"): "`minicnn train --tensorboard` writes the event files",
    ("cli", "viz"): "`minicnn show`, `graph` and `train --health` draw with it",
    ("serve", "pictures"): "the page classifies what is drawn on it",
    ("serve", "viz"): "the page shows saliency and the model's graph",
    ("tensorboard", "viz"): "the event files hold viz's pictures",
    ("training", "distributed"): "the loop reduces gradients and sums across ranks",
    ("models", "interop"): "resnet18(weights=...) reads torch's files",
    ("onnx", "checkpoint"): "an ONNX file is exported from, and imported as, a checkpoint",
    ("backend", "errors"): "the backend raises the package's errors",
    ("pickle_reader", "errors"): "a hostile pickle raises the package's errors",
    ("checkpoint", "checkpoint_guards"): "the checkpoint reader's guards sit beside it",
    ("checkpoint", "run_settings"): "a checkpoint's saved run settings are checked against their one schema",
    ("run_settings", "optim"): "the optimizers' names and default learning rates",
    ("recipe", "runs"): "a resumed run's settings are read from the checkpoint its folder holds",
}

# Never allowed: each one ties a general mechanism to a particular user of it.
FORBIDDEN_SIDEWAYS = {
    ("interop", "data"): "the torch reader needs the bounded pickle reader, not a dataset module",
    ("checkpoint", "models"): "loading a checkpoint must not import the model zoo for a side effect",
}



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


def sideways_imports():
    """(path, line, unit, target) for every import between two units of one layer that is not allowed."""
    return [(path, line, unit, target) for path, line, unit, target in all_imports()
            if LEVEL[target] == LEVEL[unit] and unit != "__init__"
            and (unit, target) not in ALLOWED_SIDEWAYS.keys()]


def test_no_module_imports_sideways_unless_allowed():
    sideways = [f"{path.relative_to(PACKAGE.parent)}:{line}: {unit} imports {target}, of its own layer "
                f"{LEVEL[unit]}: {FORBIDDEN_SIDEWAYS.get((unit, target), 'not in ALLOWED_SIDEWAYS')}"
                for path, line, unit, target in sideways_imports()]
    assert sideways == []


def test_the_sideways_lists_say_what_is_true():
    assert ALLOWED_SIDEWAYS.keys() & FORBIDDEN_SIDEWAYS.keys() == set()
    assert all(LEVEL[unit] == LEVEL[target] for unit, target in ALLOWED_SIDEWAYS.keys() | FORBIDDEN_SIDEWAYS.keys())
    present = {(unit, target) for _, _, unit, target in all_imports()}
    stale = sorted((ALLOWED_SIDEWAYS.keys()) - present)
    assert stale == [], "these imports are gone: remove them from ALLOWED_SIDEWAYS"


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


@pytest.mark.parametrize("source, unit, target", [
    ("from ..models import resnet18\n", "optim", "models"),
    ("def f():\n    from minicnn import cli\n", "viz", "cli"),
])
def test_the_check_sees_sideways_imports_even_inside_functions(tmp_path, monkeypatch, source, unit, target):
    # The check must be able to fail: a planted import within one layer is found, wherever it hides.
    fake = tmp_path / "minicnn"
    (fake / unit).mkdir(parents=True)
    (fake / unit / "planted.py").write_text(source)
    (fake / f"{target}.py").write_text("")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    assert [(u, t) for _, _, u, t in sideways_imports()] == [(unit, target)]
    assert LEVEL[target] == LEVEL[unit]
