"""Label and field selectors with the grammar and checks of k8s.io/apimachinery.

Label selectors: comma-separated requirements (AND) of the forms ``k=v``,
``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a)``, ``k``, ``!k``, ``k>1``,
``k<1``. Field selectors: ``metadata.name`` and ``metadata.namespace`` with
``=``, ``==``, ``!=``, as for custom resources. Bad text raises ValueError
with a message like the API server's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Matcher = Callable[[Mapping[str, str]], bool]

_TOKEN = re.compile(r"\s*(!=|==|=|!|>|<|\(|\)|,|[A-Za-z0-9_./-]+)")
_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
FIELDS = ("metadata.name", "metadata.namespace")


def label_key_error(key: str) -> str | None:
    """Why ``key`` is not a qualified label key, or None when it is one."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _PREFIX.match(prefix)):
        return f"prefix part of {key!r} must be a lowercase DNS-1123 subdomain"
    if not _NAME.match(name):
        return (f"name part of {key!r} must consist of alphanumeric characters, '-', '_' or '.', at most 63, "
                "and must start and end with an alphanumeric character")
    return None


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        if not text[pos:].strip():
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"unable to parse requirement: invalid character {text[pos:].lstrip()[0]!r} "
                             f"at position {pos} of {text!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


_OPERATORS = frozenset({"!=", "==", "=", "!", ">", "<", "(", ")", ","})


def _ident(tok: str | None) -> bool:
    return tok is not None and tok not in _OPERATORS


def parse_label_selector(text: str) -> Matcher:
    toks = _tokens(text)
    reqs: list[Matcher] = []
    i = 0

    def take() -> str | None:
        nonlocal i
        i += 1
        return toks[i - 1] if i <= len(toks) else None

    def expect_value(tok: str | None, where: str) -> str:
        if tok is None or not _ident(tok):
            raise ValueError(f"unable to parse requirement: found {tok or 'end of string'!r}, expected: "
                             f"identifier after {where!r}")
        if not LABEL_VALUE.match(tok):
            raise ValueError(f"unable to parse requirement: invalid label value {tok!r}: a valid label value "
                             "must be 63 characters or less, alphanumeric, '-', '_' or '.' inside")
        return tok

    while i < len(toks):
        tok = take()
        negate = tok == "!"
        key = take() if negate else tok
        if key is None or not _ident(key):
            raise ValueError(f"unable to parse requirement: found {key or 'end of string'!r}, "
                             "expected: identifier")
        if err := label_key_error(key):
            raise ValueError(f"unable to parse requirement: invalid label key {key!r}: {err}")
        op = toks[i] if i < len(toks) and toks[i] != "," else None
        if negate or op is None:
            reqs.append(_exists(key, not negate))
        else:
            take()
            if op in ("=", "==", "!="):
                # An empty value (``a=``) is allowed and matches an empty label.
                value = "" if i >= len(toks) or toks[i] == "," else expect_value(take(), op)
                reqs.append(_equals(key, value, op != "!="))
            elif op in ("in", "notin"):
                if take() != "(":
                    raise ValueError(f"unable to parse requirement: expected '(' after {op!r} in {text!r}")
                if i < len(toks) and toks[i] == ")":
                    raise ValueError(f"unable to parse requirement: for 'in', 'notin' operators, "
                                     f"values set can't be empty in {text!r}")
                values: set[str] = set()
                while True:
                    nxt = toks[i] if i < len(toks) else None
                    values.add("" if nxt in (",", ")") else expect_value(take(), op))
                    sep = take()
                    if sep == ")":
                        break
                    if sep != ",":
                        raise ValueError(f"unable to parse requirement: found {sep or 'end of string'!r}, "
                                         f"expected ',' or ')' in {text!r}")
                reqs.append(_member(key, values, op == "in"))
            elif op in (">", "<"):
                raw = take()
                if raw is None or not re.fullmatch(r"-?\d+", raw):
                    raise ValueError(f"unable to parse requirement: for {op!r}, the value must be an integer")
                reqs.append(_compare(key, int(raw), op == ">"))
            else:
                raise ValueError(f"unable to parse requirement: found {op!r}, expected: "
                                 "'=', '!=', '==', 'in', 'notin', '>', '<' or ','")
        if i < len(toks):
            if take() != "," or i >= len(toks):
                raise ValueError("unable to parse requirement: expected ',' between requirements "
                                 f"in {text!r}")
    return lambda labels: all(r(labels) for r in reqs)


def _exists(key: str, present: bool) -> Matcher:
    return lambda labels: (key in labels) == present


def _equals(key: str, value: str, equal: bool) -> Matcher:
    # ``!=`` matches objects without the label too, as in Kubernetes.
    return lambda labels: (labels.get(key) == value) == equal


def _member(key: str, values: set[str], inside: bool) -> Matcher:
    return lambda labels: (key in labels and labels[key] in values) == inside


def _compare(key: str, bound: int, greater: bool) -> Matcher:
    def match(labels: Mapping[str, str]) -> bool:
        raw = labels.get(key)
        if raw is None or not re.fullmatch(r"-?\d+", raw):
            return False
        return int(raw) > bound if greater else int(raw) < bound

    return match


def parse_field_selector(text: str) -> Callable[[dict[str, Any]], bool]:
    reqs: list[tuple[str, str, bool]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        m = re.fullmatch(r"([^=!]+?)\s*(==|=|!=)\s*(.*)", part)
        if not m:
            raise ValueError(f"invalid selector: {text!r}; can't understand {part!r}")
        field, op, value = m.groups()
        if field not in FIELDS:
            raise ValueError(f"field label not supported: {field} (only {' and '.join(FIELDS)})")
        reqs.append((field, value, op != "!="))

    def match(obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        return all((str(meta.get(f.split(".")[1]) or "") == v) == eq for f, v, eq in reqs)

    return match
