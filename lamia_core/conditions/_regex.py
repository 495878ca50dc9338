"""RE2 for the condition language: validation, escaping, full matching.

Istio hands regexes to Envoy, which runs them with RE2 and requires them to
match the *whole* value; Istio's validation also caps them at 1024 characters.
"""

from __future__ import annotations

import functools
from typing import Final

import re2

#: Istio refuses longer regexes.
MAX_REGEX: Final = 1024

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would otherwise log every rejected pattern on stderr

# RE2's syntax characters; escaping only these keeps generated regexes readable.
_SPECIAL: Final = frozenset("\\.+*?()|[]{}^$")

_LOOKAROUND: Final = ("(?=", "(?!", "(?<=", "(?<!")


def escape(s: str) -> str:
    return "".join("\\" + c if c in _SPECIAL else c for c in s)


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re2._Regexp:
    return re2.compile(pattern, options=_OPTIONS)


def problem(pattern: str) -> str | None:
    """Why RE2 (hence Istio) would refuse ``pattern``, or None if it is fine."""
    if not pattern:
        return 'an empty regex is refused by Istio; to match an empty value use exact ""'
    if len(pattern) > MAX_REGEX:
        return f"the regex is {len(pattern)} characters long; Istio accepts at most {MAX_REGEX}"
    try:
        _compiled(pattern)
    except re2.error as exc:
        detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) \
            else str(exc)
        if any(look in pattern for look in _LOOKAROUND):
            return (
                "RE2, the regex engine of Istio and Envoy, does not support lookaround "
                "((?=, (?!, (?<=, (?<!); to exclude values, test them positively and negate the test, "
                'e.g. not header "User-Agent" regex "^.*(Chrome|Nexus 6P).*$"'
            )
        if "invalid escape sequence: \\" in detail and detail[-1:].isdigit():
            return f"RE2 does not support backreferences ({detail})"
        return f"invalid RE2 regex: {detail}"
    return None


def fullmatch(pattern: str, value: str) -> bool:
    """Whether ``value`` matches all of ``pattern`` (which must be valid), as Envoy matches."""
    return _compiled(pattern).fullmatch(value) is not None


def strip_outer_anchors(pattern: str) -> str:
    """``pattern`` without one leading ``^`` and one trailing unescaped ``$``.

    Both are no-ops under full matching, so removing them changes nothing on
    its own; it lets the pattern be embedded in a larger regex.
    """
    if pattern.startswith("^"):
        pattern = pattern[1:]
    if pattern.endswith("$"):
        backslashes = len(pattern[:-1]) - len(pattern[:-1].rstrip("\\"))
        if backslashes % 2 == 0:
            pattern = pattern[:-1]
    return pattern


def has_anchor(pattern: str) -> bool:
    """Whether a valid RE2 ``pattern`` has ``^``, ``$``, ``\\A`` or ``\\z`` outside a character class."""
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if pattern[i + 1 : i + 2] in ("A", "z"):
                return True
            i += 2
            continue
        if c in "^$":
            return True
        if c == "[":
            i = _class_end(pattern, i)
        i += 1
    return False


def _class_end(pattern: str, start: int) -> int:
    """Index of the ``]`` closing the character class opened at ``start``."""
    i = start + 1
    if pattern[i : i + 1] == "^":
        i += 1
    if pattern[i : i + 1] == "]":  # a leading ] is a literal
        i += 1
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "[" and pattern[i + 1 : i + 2] == ":":
            close = pattern.find(":]", i + 2)
            if close != -1:
                i = close + 2
                continue
        if c == "]":
            return i
        i += 1
    return len(pattern)
