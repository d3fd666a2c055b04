"""crate_edu.errors: one-line messages."""

from __future__ import annotations

from crate_edu.errors import first_line, one_line


def test_first_line_is_short_and_never_empty():
    assert first_line(ValueError("one  two\nthree")) == "one two"
    assert first_line(KeyError()) == "KeyError"
    assert len(first_line(RuntimeError("x" * 500))) == 200


def test_one_line_joins_every_line():
    assert one_line(ValueError("one  two\nthree")) == "one two three"
