"""Hypothesis strategies for hostile input to the languages (issue 11, item 6).

Each class starts from a valid text of the language and spoils it: a lone
surrogate (what undecodable bytes on a command line become) or a control
character put anywhere, megabytes of text, nesting far deeper than the limits,
or any text at all. Some results stay valid (a tab, a few parentheses): callers
check only that each input is refused cleanly or accepted, never a crash.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from unittest import mock

import typer.main
import typer.testing
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

#: Characters no text of either language may hold: C0/C1 controls but tab, LF and CR; surrogates.
FORBIDDEN = frozenset(
    [chr(c) for c in range(0x20) if chr(c) not in "\t\n\r"]
    + [chr(c) for c in range(0x7F, 0xA0)]
)


def is_forbidden(c: str) -> bool:
    return c in FORBIDDEN or "\ud800" <= c <= "\udfff"


def _spliced(valid: st.SearchStrategy[str], bad: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    @st.composite
    def build(draw: st.DrawFn) -> str:
        text = draw(valid)
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(bad) + text[at:]

    return build()


def hostile_texts(valid: list[str], *, openers: list[str], closer: str = ")") -> st.SearchStrategy[str]:
    """Hostile variants of the texts in ``valid``.

    ``openers`` are prefixes that nest (``"("``, ``"not "``, ``"-"``); each is
    repeated up to 30 000 times, with ``closer`` after the text for ``"("``.
    """
    base = st.sampled_from(valid)
    surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
    controls = st.sampled_from(sorted(FORBIDDEN))
    huge = st.builds(lambda t, size: (t + " ") * (size // (len(t) + 1) + 1), base,
                     st.sampled_from([1_000_000, 2_500_000]))
    deep = st.builds(
        lambda t, opener, n: opener * n + t + (closer * n if opener.strip() == "(" else ""),
        base, st.sampled_from(openers), st.integers(1, 30_000),
    )
    return st.one_of(
        _spliced(base, surrogates),
        _spliced(base, controls),
        _spliced(base, st.text(st.sampled_from(["\t", "\r", "\n", "\u2028", "\ufeff", "\x85"]), min_size=1)),
        huge,
        deep,
        st.text(max_size=200),
        st.binary(max_size=200).map(lambda b: b.decode("utf-8", "surrogateescape")),
    )


def assert_refused_cleanly(result: Result, text: str, *, max_text: int = 10_000) -> None:
    """A command given ``text`` exits 0, or 2 with one message on stderr; never a traceback.

    A message is one line, or three for the languages' errors (the line of source and a caret).
    """
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    must_refuse = len(text) > max_text or any(is_forbidden(c) for c in text)
    assert result.exit_code == 2 if must_refuse else result.exit_code in (0, 2), result.stderr[:500]
    if result.exit_code == 2:
        lines = result.stderr.splitlines()
        assert lines and lines[0].startswith("lamia: error: "), result.stderr[:500]
        assert len(lines) in (1, 3) and all(len(line) < 2000 for line in lines), result.stderr[:500]
        assert result.stdout == ""


def stdin_bytes(text: str) -> bytes:
    """``text`` as a file or a pipe would hold it: lone surrogates become bytes that are not UTF-8."""
    return text.encode("utf-8", "surrogatepass")


_RUNNER = CliRunner()
_COMMAND = functools.cache(typer.main.get_command)


def invoke(app: typer.Typer, args: Sequence[str], input: bytes | str | None = None) -> Result:
    """``CliRunner().invoke``, without typer building the click command again for every call: that
    takes 60 ms, most of the time of a property test that runs a command hundreds of times."""
    with mock.patch.object(typer.testing, "_get_command", _COMMAND):
        return _RUNNER.invoke(app, list(args), input=input)
