"""The names and commands the docs show are the ones that work: a renamed function or a removed flag fails here.

- Every `minicnn.xxx.yyy` name in backticks in README.md and docs/api.md resolves by getattr from
  `import minicnn` (optional subpackages load on first use; a name whose extra is missing is skipped).
- Every `python3 -m minicnn ...` / `minicnn ...` command line in the ```bash blocks of README.md and
  docs/*.md, and in inline `python3 -m minicnn ...` spans, parses with the command's own parser
  (nothing runs).
"""

import pathlib
import re
import shlex

import pytest

import minicnn

ROOT = pathlib.Path(__file__).resolve().parent.parent
NAME_FILES = [ROOT / "README.md", ROOT / "docs" / "api.md"]
COMMAND_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# The modules of the optional extras: a name that needs one of them is skipped where it is missing.
EXTRA_MODULES = {"onnx", "onnxruntime", "PIL", "tensorboardX", "tensorboard", "mpi4py", "matplotlib", "torch",
                 "threadpoolctl", "cupy", "selenium"}

SPAN = re.compile(r"`([^`\n]+)`")
DOTTED = re.compile(r"(?<![\w./-])minicnn(?:\.[A-Za-z_]\w*)+")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\s*$", flags=re.DOTALL | re.MULTILINE)
PYTHON_M = ("python3", "python")
SHELL_PREFIXES = {"mpiexec", "mpirun", "time", "sudo"}


# ----- names ----------------------------------------------------------------------------------------------------
def dotted_names(text):
    """Every `minicnn.a.b` inside a backtick span of a Markdown text, without call parentheses, in order, once."""
    names = []
    for span in SPAN.findall(text):
        for match in DOTTED.finditer(span):
            if span[:match.start()].endswith("-m "):  # python3 -m minicnn.x runs a module: not an attribute
                continue
            if match.group(0) not in names:
                names.append(match.group(0))
    return names


def resolve(name):
    """The object `minicnn.a.b` names, found by getattr from the minicnn package (AttributeError if none)."""
    obj = minicnn
    for part in name.split(".")[1:]:
        obj = getattr(obj, part)
    return obj


def test_the_name_reader_finds_names_and_a_planted_bad_one_fails():
    text = ("Call `minicnn.nn.Conv2D(1, 8, kernel_size=3)` or `x = minicnn.tensor([1.0])`; "
            "not `python3 -m minicnn.tools` nor `minicnn/nn/layers.py`. `minicnn.nn.NoSuchLayer(3)` is stale.")
    assert dotted_names(text) == ["minicnn.nn.Conv2D", "minicnn.tensor", "minicnn.nn.NoSuchLayer"]
    assert resolve("minicnn.nn.Conv2D") is minicnn.nn.Conv2D
    with pytest.raises(AttributeError):
        resolve("minicnn.nn.NoSuchLayer")


def _names():
    found = []
    for path in NAME_FILES:
        found += [(path.name, name) for name in dotted_names(path.read_text())]
    return found


NAMES = _names()


def test_the_docs_show_names():
    assert len([name for source, name in NAMES if source == "api.md"]) >= 100


@pytest.mark.parametrize("source, name", NAMES, ids=[f"{source}:{name}" for source, name in NAMES])
def test_every_name_the_docs_show_resolves(source, name):
    try:
        resolve(name)
    except ImportError as error:  # an optional subpackage whose extra is not installed
        missing = (getattr(error, "name", None) or "").split(".")[0]
        if missing in EXTRA_MODULES:
            pytest.skip(f"{name} needs {missing}, which is not installed")
        raise
    except AttributeError:
        pytest.fail(f"{source} shows `{name}`, but `import minicnn; {name}` raises AttributeError")


# ----- command lines --------------------------------------------------------------------------------------------
def command_argv(line):
    """The arguments after `minicnn` in one shell line, or None when the line does not run minicnn.

    Comments are dropped; environment assignments (`MINICNN_FAST=0 ...`) and launchers with their
    options (`mpiexec -f hosts -n 8 ...`) before the command are skipped.
    """
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    while words and re.fullmatch(r"[A-Za-z_]\w*=\S*", words[0]):
        words = words[1:]
    if words and words[0] in SHELL_PREFIXES:
        starts = [i for i, word in enumerate(words) if word in PYTHON_M or word == "minicnn"]
        words = words[starts[0]:] if starts else []
    if words[:1] == ["minicnn"]:
        return words[1:]
    if len(words) >= 3 and words[0] in PYTHON_M and words[1:3] == ["-m", "minicnn"]:
        return words[3:]
    return None


def command_lines(text):
    """[(line number, shell line)] for each command that runs minicnn in a Markdown text: in ```bash blocks
    (backslash continuations joined) and in inline spans that start with `python3 -m minicnn `."""
    found = []
    for fence in FENCE.finditer(text):
        if fence.group(1) not in ("bash", "sh", "shell", "console"):
            continue
        first_line = text.count("\n", 0, fence.start()) + 2
        joined, start = "", None
        for offset, line in enumerate(fence.group(2).splitlines()):
            start = first_line + offset if start is None else start
            if line.rstrip().endswith("\\"):
                joined += line.rstrip()[:-1] + " "
                continue
            joined += line
            if command_argv(joined) is not None:
                found.append((start, joined))
            joined, start = "", None
    prose = FENCE.sub(lambda fence: "\n" * fence.group(0).count("\n"), text)
    for match in SPAN.finditer(prose):
        if match.group(1).startswith("python3 -m minicnn "):
            found.append((prose.count("\n", 0, match.start()) + 1, match.group(1)))
    return found


def parse(argv):
    """Parse argv with the command's own parser; a usage error raises AssertionError with argparse's message."""
    from minicnn.cli import build_parser

    try:
        build_parser().parse_args(argv)
    except SystemExit as exit:
        if exit.code not in (0, None):  # --help and --version exit 0
            raise AssertionError(f"minicnn {shlex.join(argv)}: argparse refused it (exit {exit.code})") from None


def test_the_command_reader_finds_commands_and_a_stale_flag_fails(tmp_path, monkeypatch):
    text = ("```bash\npython3 -m pip install -e .\nMINICNN_FAST=0 python3 -m minicnn train --epochs 1  # a comment\n"
            "mpiexec -f hosts -n 8 python3 -m minicnn train \\\n    --distributed\nminicnn evaluate runs/x\n```\n"
            "Prose with `python3 -m minicnn fetch mnist` and `minicnn.nn`.\n")
    lines = command_lines(text)
    assert [command_argv(line) for _, line in lines] == [
        ["train", "--epochs", "1"], ["train", "--distributed"], ["evaluate", "runs/x"], ["fetch", "mnist"]]
    assert [number for number, _ in lines] == [3, 4, 6, 8]
    monkeypatch.chdir(tmp_path)
    parse(["train", "--model", "lenet"])
    with pytest.raises(AssertionError, match="refused"):
        parse(["train", "--model", "cnn", "--no-such-flag"])


def _commands():
    found = []
    for path in COMMAND_FILES:
        found += [(f"{path.name}:{number}", line) for number, line in command_lines(path.read_text())]
    return found


COMMANDS = _commands()


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 30
    assert {command_argv(line)[0] for _, line in COMMANDS} >= {
        "train", "evaluate", "fetch", "show", "graph", "export", "predict", "serve"}


@pytest.mark.parametrize("where, line", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_every_command_line_the_docs_show_parses(where, line, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the flags' types look at the file system: an empty folder, nothing is written
    parse(command_argv(line))
