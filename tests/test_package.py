"""The names a user types after `import minicnn` work, and `import minicnn` imports no optional dependency.

Both are checked in a fresh interpreter: this test process has long since imported whatever other tests needed.
"""

import json
import pathlib
import subprocess
import sys
import types

import pytest

import minicnn
from conftest import EXTRA_OF_MODULE, name_the_extra

ROOT = pathlib.Path(__file__).resolve().parents[1]

# The import names of every extra in pyproject.toml, and CuPy (the GPU backend).
OPTIONAL = tuple(EXTRA_OF_MODULE)

# Prints what a fresh `import minicnn` loaded of the top-level packages named in argv, then what
# `minicnn.<part>` is for every module and subpackage of minicnn: the module itself (bound by `import minicnn`,
# or loaded on first use), the function the module is named after (`minicnn.tensor(...)`), or neither;
# then what is loaded after reaching them all.
PROBE = """
import importlib, json, pathlib, sys
import minicnn

def loaded():
    return sorted(name for name in sys.modules if name.split(".")[0] in sys.argv[1:])

after_import = loaded()
bound = dict(vars(minicnn))  # before anything else is imported: one lazy part may import another
package = pathlib.Path(minicnn.__file__).parent
parts = {path.stem for path in package.glob("*.py")} | {path.parent.name for path in package.glob("*/__init__.py")}
parts -= {"__init__", "__main__"}  # running __main__ runs the command line
reached = {}
for name in sorted(parts):
    if name in minicnn._LAZY_SUBMODULES:
        found = getattr(minicnn, name)
    else:
        found = bound.get(name)
    module = importlib.import_module("minicnn." + name)
    reached[name] = "module" if found is module else "its function" if found is getattr(module, name, 0) else "neither"
print(json.dumps({"after_import": after_import, "reached": reached, "after_use": loaded()}))
"""


def probe(*watched):
    done = subprocess.run([sys.executable, "-c", PROBE, *watched], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def fresh():
    # numpy is watched too, to show that the probe sees what is imported.
    return probe("numpy", *OPTIONAL)


def test_import_minicnn_imports_no_extra(fresh):
    assert "numpy" in fresh["after_import"]
    assert [name for name in fresh["after_import"] if name.split(".")[0] != "numpy"] == []


def test_reaching_every_part_of_the_package_imports_no_extra(fresh):
    assert [name for name in fresh["after_use"] if name.split(".")[0] != "numpy"] == []


def test_every_part_of_the_package_is_reachable_after_import_minicnn(fresh):
    unreachable = sorted(name for name, what in fresh["reached"].items() if what == "neither")
    assert unreachable == [], "import these in minicnn/__init__.py or add them to its _LAZY_SUBMODULES"
    assert {"onnx", "serve", "tensor"} <= set(fresh["reached"])


@pytest.mark.parametrize("name", ["cli", "distributed", "interop", "keras", "onnx", "serve", "tensorboard", "viz"])
def test_each_integration_is_a_module_of_the_package(fresh, name):
    assert fresh["reached"][name] == "module"
    submodule = getattr(minicnn, name)
    assert isinstance(submodule, types.ModuleType) and submodule.__name__ == f"minicnn.{name}"
    assert name in dir(minicnn)


def test_an_unknown_name_is_an_attribute_error():
    assert not hasattr(minicnn, "no_such_part")
    with pytest.raises(AttributeError, match="no_such_part"):
        minicnn.no_such_part


def test_a_skip_for_a_missing_module_names_the_extra_to_install():
    missing = "could not import 'PIL.Image': No module named 'PIL'"
    skipped = types.SimpleNamespace(skipped=True, longrepr=("t.py", 3, missing))
    name_the_extra(skipped)
    assert skipped.longrepr[2].endswith("(the images extra: pip install -e '.[images]')")
    told = "could not import 'onnx' (pip install -e '.[onnx]')"
    explained = types.SimpleNamespace(skipped=True, longrepr=("t.py", 3, told))
    name_the_extra(explained)
    assert explained.longrepr[2] == told
