"""The README's code and the examples run as written, so they never go stale; README stays a short front door."""

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
    assert len(PYTHON_BLOCKS) >= 1


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[f"block{i}" for i in range(len(PYTHON_BLOCKS))])
def test_readme_python_block_runs(block):
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})


def test_readme_test_command_is_what_ci_runs():
    ci_script = (ROOT / ".ci" / "run").read_text()
    command = 'python3 -m pip install -e ".[dev,torch,viz,onnx,images,serve,tensorboard,browser,dist,threads]" && python3 -m pytest'
    assert command in README and command in ci_script


def test_quickstart_example_runs():
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert "loss:" in result.stdout and "gradcheck max errors" in result.stdout


# ----- the front door: short, the walk first, links that lead somewhere ---------------------------------------------
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
GUIDES = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_readme_is_a_front_door():
    lines = README.splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move the details to a guide in docs/"
    headings = [line[3:].strip() for line in lines if line.startswith("## ")]
    assert headings[:3] == ["Set up", "Quickstart", "Reading order"], headings
    reading_order = README.split("## Reading order", 1)[1].split("\n## ", 1)[0]
    assert "(docs/tour.md)" in reading_order


def test_readme_lists_every_command_once():
    from minicnn.cli import build_parser

    subparsers = next(action for action in build_parser()._actions if action.choices and "train" in action.choices)
    table = README.split("## Commands", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `(\w+)` \|", table, flags=re.MULTILINE)
    assert sorted(listed) == sorted(subparsers.choices)


def heading_anchor(heading):
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path):
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.DOTALL | re.MULTILINE)
    return {heading_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def test_the_anchor_rule():
    assert heading_anchor("## See a CNN think: `minicnn serve`".lstrip("#")) == "see-a-cnn-think-minicnn-serve"


@pytest.mark.parametrize("path", GUIDES, ids=[str(path.relative_to(ROOT)) for path in GUIDES])
def test_links_between_the_guides_lead_somewhere(path):
    for target in LINK.findall(path.read_text()):
        if re.match(r"[a-z]+:", target):  # http(s): the web, not checked here
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), f"{path.relative_to(ROOT)} links to {target}, which does not exist"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{path.relative_to(ROOT)} links to {target}: no such heading"
