"""Every Python block of docs/*.md runs, and prints what the doc shows under it, so the docs never go stale.

The blocks of one file run in order in one shared namespace (a later block may use an
earlier block's variables). A ```text block that directly follows a ```python block is
that block's expected output, compared line by line (trailing spaces ignored).
"""

import contextlib
import io
import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
DOC_FILES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\s*$", flags=re.DOTALL | re.MULTILINE)


def code_blocks(text):
    """[(python source, expected output or None, line number)] for each ```python block of a Markdown text."""
    fences = list(FENCE.finditer(text))
    blocks = []
    for position, fence in enumerate(fences):
        if fence.group(1) != "python":
            continue
        expected = None
        following = fences[position + 1] if position + 1 < len(fences) else None
        if following is not None and following.group(1) == "text" and not text[fence.end():following.start()].strip():
            expected = following.group(2)
        blocks.append((fence.group(2), expected, text.count("\n", 0, fence.start()) + 1))
    return blocks


def _normalised(output):
    return "\n".join(line.rstrip() for line in output.strip("\n").splitlines())


def test_the_block_reader_pairs_outputs_with_their_blocks():
    text = ("intro\n```python\nprint(1)\n```\n\n```text\n1\n```\nprose\n```python\nx = 2\n```\n"
            "between\n```text\nnot an output: prose came first\n```\n```bash\nls\n```\n")
    assert code_blocks(text) == [("print(1)\n", "1\n", 2), ("x = 2\n", None, 10)]


def test_there_is_a_tour():
    assert DOCS / "tour.md" in DOC_FILES
    assert len(code_blocks((DOCS / "tour.md").read_text())) >= 8


@pytest.mark.parametrize("path", DOC_FILES, ids=[path.name for path in DOC_FILES])
def test_doc_blocks_run_and_print_what_the_doc_shows(path):
    namespace = {"__name__": f"docs.{path.stem}"}
    for source, expected, line in code_blocks(path.read_text()):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(source, f"{path.name}, block at line {line}", "exec"), namespace)
        if expected is not None:
            assert _normalised(printed.getvalue()) == _normalised(expected), (
                f"{path.name}, block at line {line}: the output shown in the doc is stale.\n"
                f"--- the doc shows ---\n{expected}--- the block printed ---\n{printed.getvalue()}"
            )
