"""Compiling a condition to the ``match`` list of one Istio HTTP route.

Istio ORs the entries of ``match`` and ANDs the fields inside one entry, so the
condition is brought to disjunctive normal form: each conjunction becomes one
``HTTPMatchRequest``. Inside an entry Istio can test the uri, method and
authority once each, each header once in ``headers`` and once in
``withoutHeaders``, and each query parameter once, with no negation. Within a
conjunction, tests of the same thing are therefore combined where logic allows
(an exact value decides every other test of the same thing; nested prefixes
keep the longer; several negated tests of one header become one
``withoutHeaders`` regex) and refused with a reason where it does not.

Istio's ``withoutHeaders`` treats a missing header as an empty value, so a
negated test that matches the empty string (``not header "x" exact ""``) would
also exclude requests without the header; such a test is split into "header
absent" or "header present and not matching", two entries.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Final

from lamia_core.conditions import _regex as rx
from lamia_core.conditions._ast import PRESENT, And, Condition, Not, Term, first_term, write_condition
from lamia_core.conditions._parse import LANGUAGE, parse_condition, terms
from lamia_core.errors import LanguageError

#: Most entries a compiled ``match`` list may have.
MAX_MATCHES: Final = 64

_PLAIN: Final = ("uri", "method", "authority")
_ENTRY_ORDER: Final = ("uri", "method", "authority", "headers", "withoutHeaders", "queryParams")


@dataclass(frozen=True)
class Matcher:
    """An Istio ``StringMatch``; ``present`` is the empty one, ``{}``."""

    kind: str
    value: str = ""

    def test(self, s: str) -> bool:
        if self.kind == "exact":
            return s == self.value
        if self.kind == "prefix":
            return s.startswith(self.value)
        if self.kind == "regex":
            return rx.fullmatch(self.value, s)
        return True

    def as_regex(self) -> str:
        if self.kind == "exact":
            return rx.escape(self.value)
        if self.kind == "prefix":
            return rx.escape(self.value) + ".*"
        if self.kind == "regex":
            return self.value
        return ".*"

    def istio(self) -> dict[str, str]:
        return {} if self.kind == PRESENT else {self.kind: self.value}


@dataclass(frozen=True)
class Slot:
    """What a test looks at: ``header``/``query`` and a name (lower-cased for headers), or uri etc."""

    kind: str
    name: str = ""


@dataclass(frozen=True)
class Lit:
    """A term or its negation, translated to what Istio tests; equal when they test the same."""

    slot: Slot
    matcher: Matcher
    negated: bool
    term: Term = dc_field(compare=False)


Conj = tuple[Lit, ...]


def cookie_regex(name: str, op: str, value: str | None) -> str:
    """A regex on the whole Cookie header that holds when cookie ``name`` passes the test.

    The name must start the header or follow ``;`` and blanks, so
    ``xshop-experiment=`` is not ``shop-experiment=``; the value must run to
    ``;`` or the end, so ``subset10`` is not ``subset1``.
    """
    head = r"^(?:.*;\s*)?" + rx.escape(name) + "="
    tail = r"(?:;.*)?$"
    if op == "exact":
        return head + rx.escape(value or "") + tail
    if op == "prefix":
        return head + rx.escape(value or "") + "[^;]*" + tail
    if op == "regex":
        return head + "(?:" + rx.strip_outer_anchors(value or "") + ")" + tail
    return head + "[^;]*" + tail


def _error(text: str, t: Term, reason: str, *, at_value: bool = False) -> LanguageError:
    line, column = t.value_at if at_value else (t.line, t.column)
    return LanguageError(reason, text=text, line=line, column=column, language=LANGUAGE)


def _literal(t: Term, text: str) -> Lit:
    value = t.value or ""
    if t.field == "header":
        return Lit(Slot("header", (t.name or "").lower()), Matcher(t.op, value), False, t)
    if t.field == "cookie":
        regex = cookie_regex(t.name or "", t.op, t.value)
        if len(regex) > rx.MAX_REGEX:
            raise _error(text, t, f"the regex that tests this cookie would be {len(regex)} characters "
                         f"long; Istio accepts at most {rx.MAX_REGEX}", at_value=True)
        return Lit(Slot("header", "cookie"), Matcher("regex", regex), False, t)
    if t.field == "query":
        # Istio documents prefix as unsupported for query parameters; a regex says the same.
        matcher = Matcher("regex", rx.escape(value) + ".*") if t.op == "prefix" else Matcher(t.op, value)
        return Lit(Slot("query", t.name or ""), matcher, False, t)
    return Lit(Slot(t.field), Matcher(t.op, value), False, t)


def _too_many(text: str, node: Condition) -> LanguageError:
    return _error(text, first_term(node), f"the condition needs more than {MAX_MATCHES} entries in Istio's "
                  "match list once written as an OR of ANDs; simplify it")


def _dedupe(conjs: list[Conj]) -> list[Conj]:
    seen: set[frozenset[Lit]] = set()
    out: list[Conj] = []
    for c in conjs:
        key = frozenset(c)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def _dnf(node: Condition, negated: bool, lits: dict[int, Lit], text: str) -> list[Conj]:
    """Disjunctive normal form, negations pushed to the terms; bounded by MAX_MATCHES."""
    if isinstance(node, Term):
        lit = lits[id(node)]
        return [(Lit(lit.slot, lit.matcher, negated, lit.term),)]
    if isinstance(node, Not):
        return _dnf(node.item, not negated, lits, text)
    conjunctive = isinstance(node, And) != negated  # De Morgan
    parts = [_dnf(item, negated, lits, text) for item in node.items]
    if not conjunctive:
        out = _dedupe([c for p in parts for c in p])
        if len(out) > MAX_MATCHES:
            raise _too_many(text, node)
        return out
    acc: list[Conj] = [()]
    for item, p in zip(node.items, parts, strict=True):
        # Checked before multiplying, so a blow-up is refused before it is built.
        if len(acc) * len(p) > MAX_MATCHES * MAX_MATCHES:
            raise _too_many(text, item)
        acc = _dedupe([tuple(dict.fromkeys(a + b)) for a in acc for b in p])
        if len(acc) > MAX_MATCHES:
            raise _too_many(text, item)
    return acc


def _implies(p: Matcher, n: Matcher) -> bool:
    """Whether a value passing ``p`` surely passes ``n`` (False when unsure)."""
    if n.kind == PRESENT or p == n:
        return True
    if p.kind == "exact":
        return n.test(p.value)
    return p.kind == n.kind == "prefix" and p.value.startswith(n.value)


def _what(lit: Lit) -> str:
    if lit.term.field == "cookie" or lit.slot == Slot("header", "cookie"):
        return "the Cookie header (a cookie test is a regex on it)"
    if lit.slot.kind == "header":
        return f'header "{lit.slot.name}"'
    if lit.slot.kind == "query":
        return f'query parameter "{lit.slot.name}"'
    return f"the {lit.slot.kind}"


@dataclass
class _Slotted:
    positive: Lit | None
    negatives: list[Lit]


def _simplify(conj: Conj, text: str) -> dict[Slot, _Slotted] | None:
    """Combine the tests of each slot of a conjunction; None if it can never hold.

    A conjunction that can never hold is dropped even if Istio could not express it.
    """
    by_slot: dict[Slot, tuple[list[Lit], list[Lit]]] = {}
    for lit in conj:
        pos, neg = by_slot.setdefault(lit.slot, ([], []))
        (neg if lit.negated else pos).append(lit)
    out: dict[Slot, _Slotted] = {}
    inexpressible: LanguageError | None = None
    for slot, (pos, neg) in by_slot.items():
        try:
            positive = _combine_positives(pos, text)
        except _Never:
            return None
        except LanguageError as exc:
            inexpressible = inexpressible or exc
            continue
        negatives: list[Lit] = []
        for n in neg:
            if positive is not None:
                if _implies(positive.matcher, n.matcher):
                    return None
                if positive.matcher.kind == "exact":
                    continue  # the exact value already fails this test
            negatives.append(n)
        if any(n.matcher.kind == PRESENT for n in negatives):
            negatives = [next(n for n in negatives if n.matcher.kind == PRESENT)]
        if negatives and slot.kind != "header":
            n = negatives[0]
            inexpressible = inexpressible or _error(
                text, n.term, f"Istio cannot route on {_what(n)} not matching: only header and cookie tests "
                "can be negated (the not may come from De Morgan's laws applied to a not around parentheses)")
        out[slot] = _Slotted(positive, negatives)
    if inexpressible is not None:
        raise inexpressible
    return out


class _Never(Exception):
    """Tests of one slot that no value passes together."""


def _combine_positives(pos: list[Lit], text: str) -> Lit | None:
    """The one positive test equivalent to all of ``pos`` (None if there are none).

    Raises _Never when no value passes them all.
    """
    if not pos:
        return None
    values = [p for p in pos if p.matcher.kind != PRESENT]
    if not values:
        return pos[0]
    exact = next((p for p in values if p.matcher.kind == "exact"), None)
    if exact is not None:
        if not all(p.matcher.test(exact.matcher.value) for p in values):
            raise _Never
        return exact
    prefixes = sorted((p for p in values if p.matcher.kind == "prefix"), key=lambda p: -len(p.matcher.value))
    for shorter in prefixes[1:]:
        if not prefixes[0].matcher.value.startswith(shorter.matcher.value):
            raise _Never
    rest = ([prefixes[0]] if prefixes else []) + [p for p in values if p.matcher.kind == "regex"]
    if len(rest) > 1:
        first, second = sorted(rest[:2], key=lambda p: (p.term.line, p.term.column))
        raise _error(text, second.term, f"an Istio match can test {_what(second)} only once, but one "
                     f"alternative of this condition (written as an OR of ANDs) needs both "
                     f"{write_condition(first.term)} and {write_condition(second.term)}; "
                     "combine them into one test")
    return rest[0]


def _absorb(conjs: list[dict[Slot, _Slotted]]) -> list[dict[Slot, _Slotted]]:
    """Drop each conjunction that another, more general one already covers."""
    sets = []
    for c in conjs:
        lits = {s.positive for s in c.values() if s.positive is not None}
        sets.append(frozenset(lits | {n for s in c.values() for n in s.negatives}))
    keep = []
    for i, si in enumerate(sets):
        covered = any((sj < si) or (sj == si and j < i) for j, sj in enumerate(sets) if j != i)
        if not covered:
            keep.append(conjs[i])
    return keep


def _render(conj: dict[Slot, _Slotted], text: str) -> list[dict[str, Any]]:
    entry: dict[str, Any] = {}
    alternatives: list[list[tuple[str, dict[str, str]]]] = []
    for slot, s in conj.items():
        if s.positive is not None:
            m = s.positive.matcher.istio()
            if slot.kind in _PLAIN:
                entry[slot.kind] = m
            else:
                entry.setdefault("headers" if slot.kind == "header" else "queryParams", {})[slot.name] = m
        if not s.negatives:
            continue
        if len(s.negatives) == 1:
            without = s.negatives[0].matcher
        else:
            without = Matcher("regex", "|".join(f"(?:{n.matcher.as_regex()})" for n in s.negatives))
            if len(without.value) > rx.MAX_REGEX:
                raise _error(text, s.negatives[-1].term, f"the negated tests of {_what(s.negatives[0])} "
                             f"combine into a regex of {len(without.value)} characters; Istio accepts "
                             f"at most {rx.MAX_REGEX}")
        if s.positive is None and without.kind != PRESENT and without.test(""):
            alternatives.append([(slot.name, {}), (slot.name, without.istio())])
        else:
            entry.setdefault("withoutHeaders", {})[slot.name] = without.istio()
    out: list[dict[str, Any]] = []
    for choice in itertools.product(*alternatives):
        e = copy.deepcopy(entry)  # entries share no objects (YAML would print anchors)
        for name, m in choice:
            e.setdefault("withoutHeaders", {})[name] = m
        out.append({k: e[k] for k in _ENTRY_ORDER if k in e})
    return out


def compile_condition(text_or_cond: str | Condition) -> list[dict[str, Any]]:
    """The Istio ``match`` list (``HTTPMatchRequest`` dicts) of a condition given as text or tree.

    A tree is printed and parsed again, so errors point into its canonical text.
    """
    text = text_or_cond if isinstance(text_or_cond, str) else write_condition(text_or_cond)
    cond = parse_condition(text)
    lits = {id(t): _literal(t, text) for t in terms(cond)}
    simplified = []
    for conj in _dnf(cond, False, lits, text):
        combined = _simplify(conj, text)
        if combined is not None:
            simplified.append(combined)
    if not simplified:
        raise _error(text, first_term(cond), "the condition can never be true: each of its alternatives "
                     "(written as an OR of ANDs) contradicts itself")
    match: list[dict[str, Any]] = []
    for entry in _absorb(simplified):
        match.extend(_render(entry, text))
    if len(match) > MAX_MATCHES:
        raise _too_many(text, cond)
    return match
