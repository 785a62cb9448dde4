"""minicnn/errors.py: `shown`, the one way a message shows a name, key, path or value from a file or the disk."""

from pathlib import Path

import pytest

from minicnn.errors import MAX_SHOWN, shown

FORGED = "a\nminicnn: all good\x1b[2J"


def test_short_printable_text_is_shown_as_it_is_or_quoted():
    assert shown("cifar-10-batches-py/data_batch_1", quoted=False) == "cifar-10-batches-py/data_batch_1"
    assert shown(Path("pictures") / "cat.png", quoted=False) == str(Path("pictures") / "cat.png")
    assert shown("conv1.weight") == "'conv1.weight'"


@pytest.mark.parametrize("quoted", [True, False])
def test_a_newline_or_an_escape_code_is_escaped_on_one_line(quoted):
    assert shown(FORGED, quoted=quoted) == repr(FORGED)
    assert shown(Path(FORGED), quoted=quoted) == repr(FORGED)


@pytest.mark.parametrize("quoted", [True, False])
def test_long_text_is_cut_and_says_how_long_it_was(quoted):
    text = FORGED + "x" * 5000
    message = shown(text, quoted=quoted)
    assert message == repr(text[:MAX_SHOWN]) + f"... ({len(text)} characters)"
    assert "\n" not in message and "\x1b" not in message and len(message) < MAX_SHOWN + 60
    assert shown("y" * MAX_SHOWN, quoted=quoted) in ("y" * MAX_SHOWN, repr("y" * MAX_SHOWN))  # not cut at the limit


def test_other_values_are_a_bounded_repr():
    assert shown(5) == "5" and shown(b"k\n") == "b'k\\n'"
    assert shown(10**5000) == "<an integer of 16610 bits>"  # repr() itself refuses past 4300 digits
    message = shown(((FORGED + "z" * 10**5,) * 10**4,) * 100)  # six items of ~60 characters a level, three levels
    assert "\n" not in message and "\x1b" not in message and len(message) < 2500
