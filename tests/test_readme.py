"""The README's code and the examples run as written, so they never go stale."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def test_readme_has_python_examples():
    assert len(PYTHON_BLOCKS) >= 2


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[f"block{i}" for i in range(len(PYTHON_BLOCKS))])
def test_readme_python_block_runs(block):
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})


def test_readme_test_command_is_what_ci_runs():
    ci_script = (ROOT / ".ci" / "run").read_text()
    command = 'python3 -m pip install -e ".[dev,torch,viz,onnx,images,tensorboard,browser,dist,threads]" && python3 -m pytest'
    assert command in README and command in ci_script


def test_quickstart_example_runs():
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert "loss:" in result.stdout and "gradcheck max errors" in result.stdout
