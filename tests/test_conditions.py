"""The condition language: parsing, printing, errors, limits and compilation to Istio.

Faithfulness of the compilation is checked by evaluating the compiled ``match``
list the way Envoy does (``_istio_matches`` below) and the condition tree
directly (``_holds``) on the same requests, for random conditions and requests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest
import re2
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lamia_core.conditions import (
    MAX_DEPTH,
    MAX_MATCHES,
    MAX_TEXT,
    And,
    Condition,
    Not,
    Or,
    Term,
    compile_condition,
    cookie_regex,
    format_condition,
    parse_condition,
)
from lamia_core.errors import InvalidInput, LamiaError, LanguageError

README_EXAMPLES = {
    'header "User-Agent" regex "^.*(Chrome).*$" or header "User-Agent" regex "^.*(Nexus 6P).*$"': [
        {"headers": {"user-agent": {"regex": "^.*(Chrome).*$"}}},
        {"headers": {"user-agent": {"regex": "^.*(Nexus 6P).*$"}}},
    ],
    'uri prefix "/service1"': [{"uri": {"prefix": "/service1"}}],
    '( cookie "shop-experiment" exact "subset1" )': [
        {"headers": {"cookie": {"regex": r"^(?:.*;\s*)?shop-experiment=subset1(?:;.*)?$"}}},
    ],
}


# --- an Envoy-like evaluator of compiled match lists, and a direct one of trees -------------


@dataclass(frozen=True)
class Request:
    method: str = "GET"
    path: str = "/"
    authority: str = "h"
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    query: dict[str, str] = field(default_factory=dict)


def _string_match(m: dict[str, str], value: str) -> bool:
    ((kind, expected),) = m.items()
    if kind == "exact":
        return value == expected
    if kind == "prefix":
        return value.startswith(expected)
    assert kind == "regex"
    return re2.fullmatch(expected, value) is not None


def _entry_matches(entry: dict[str, Any], req: Request) -> bool:
    for key, attr in (("uri", req.path), ("method", req.method), ("authority", req.authority)):
        if key in entry and not _string_match(entry[key], attr):
            return False
    for name, m in entry.get("headers", {}).items():
        value = req.headers.get(name)
        if value is None or (m and not _string_match(m, value)):
            return False
    for name, m in entry.get("withoutHeaders", {}).items():
        value = req.headers.get(name)
        # Istio sets invert_match, plus treat_missing_header_as_empty unless it is a presence test.
        hit = value is not None if not m else _string_match(m, "" if value is None else value)
        if hit:
            return False
    for name, m in entry.get("queryParams", {}).items():
        value = req.query.get(name)
        if value is None or (m and not _string_match(m, value)):
            return False
    return True


def _istio_matches(match: list[dict[str, Any]], req: Request) -> bool:
    return any(_entry_matches(e, req) for e in match)


def _cookies(req: Request) -> list[tuple[str, str]]:
    header = req.headers.get("cookie")
    if header is None:
        return []
    pairs = []
    for part in header.split(";"):
        name, eq, value = part.strip().partition("=")
        if eq:
            pairs.append((name, value))
    return pairs


def _passes(t: Term, value: str) -> bool:
    if t.op == "present":
        return True
    assert t.value is not None
    if t.op == "exact":
        return value == t.value
    if t.op == "prefix":
        return value.startswith(t.value)
    return re2.fullmatch(t.value, value) is not None


def _holds(cond: Condition, req: Request) -> bool:
    if isinstance(cond, Not):
        return not _holds(cond.item, req)
    if isinstance(cond, And):
        return all(_holds(i, req) for i in cond.items)
    if isinstance(cond, Or):
        return any(_holds(i, req) for i in cond.items)
    t = cond
    if t.field == "cookie":
        return any(n == t.name and _passes(t, v) for n, v in _cookies(req))
    if t.field in ("header", "query"):
        source = req.headers if t.field == "header" else req.query
        key = (t.name or "").lower() if t.field == "header" else t.name or ""
        value = source.get(key)
        return value is not None and _passes(t, value)
    return _passes(t, {"uri": req.path, "method": req.method, "authority": req.authority}[t.field])


# --- examples ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", list(README_EXAMPLES))
def test_readme_examples_compile_as_documented(text: str) -> None:
    assert compile_condition(text) == README_EXAMPLES[text]


def test_readme_examples_route_the_requests_they_describe() -> None:
    ua = compile_condition(next(iter(README_EXAMPLES)))
    nexus = "Mozilla/5.0 (Linux; Android 8.0; Nexus 6P Build/OPD1) Chrome/67.0 Mobile Safari/537.36"
    assert _istio_matches(ua, Request(headers={"user-agent": nexus}))
    assert _istio_matches(ua, Request(headers={"user-agent": "Mozilla/5.0 Chrome/120.0"}))
    assert not _istio_matches(ua, Request(headers={"user-agent": "Mozilla/5.0 Firefox/121.0"}))
    assert not _istio_matches(ua, Request())
    uri = compile_condition('uri prefix "/service1"')
    assert _istio_matches(uri, Request(path="/service1/items"))
    assert not _istio_matches(uri, Request(path="/service2"))


@pytest.mark.parametrize(
    ("header", "hit"),
    [
        ("shop-experiment=subset1", True),
        ("a=1; shop-experiment=subset1", True),
        ("a=1;shop-experiment=subset1; b=2", True),
        ("shop-experiment=subset1;b=2", True),
        ("shop-experiment=subset10", False),  # longer value
        ("xshop-experiment=subset1", False),  # longer name
        ("a=1; xshop-experiment=subset1", False),
        ("shop-experiment2=subset1", False),
        ("shop-experiment=xsubset1", False),
        ("a=shop-experiment=subset1", False),  # the name inside another cookie's value
        ("shop-experiment=subset2; a=subset1", False),
        ("shop-experiment=subset2; shop-experiment=subset1", True),
        ("", False),
    ],
)
def test_cookie_exact_regex_matches_exactly_that_cookie(header: str, hit: bool) -> None:
    regex = compile_condition('cookie "shop-experiment" exact "subset1"')[0]["headers"]["cookie"]["regex"]
    assert (re2.fullmatch(regex, header) is not None) is hit


@pytest.mark.parametrize(
    ("op", "value", "header", "hit"),
    [
        ("prefix", "sub", "a=1; shop=subset1", True),
        ("prefix", "sub", "shop=xsub; a=sub", False),
        ("prefix", "", "a=1; shop=", True),
        ("regex", "^subset[0-9]$", "shop=subset1; a=b", True),
        ("regex", "subset[0-9]", "shop=subset10", False),
        ("regex", "[^;]*1", "shop=x; a=1", False),
        ("present", None, "shop=; a=1", True),
        ("present", None, "shops=1; a=shop", False),
        ("exact", "a.b", "shop=aXb", False),  # the dot is escaped
        ("exact", "a.b", "shop=a.b", True),
    ],
)
def test_cookie_prefix_regex_and_present(op: str, value: str | None, header: str, hit: bool) -> None:
    assert (re2.fullmatch(cookie_regex("shop", op, value), header) is not None) is hit


def test_header_present_is_an_empty_string_match() -> None:
    # Istio: "If the value is empty and only the name of header is specified, presence
    # of the header is checked"; `{}` becomes Envoy's present_match.
    assert compile_condition('header "X-Canary" present') == [{"headers": {"x-canary": {}}}]
    assert compile_condition('not header "X-Canary" present') == [{"withoutHeaders": {"x-canary": {}}}]


def test_every_field_compiles_to_its_istio_key() -> None:
    match = compile_condition(
        'uri regex "/a/[0-9]+" and method exact "POST" and authority prefix "shop." '
        'and query "debug" exact "1" and query "v" prefix "2." and query "q" present '
        'and header "X-A" exact "1" and not header "X-B" prefix "b"'
    )
    assert match == [{
        "uri": {"regex": "/a/[0-9]+"},
        "method": {"exact": "POST"},
        "authority": {"prefix": "shop."},
        "headers": {"x-a": {"exact": "1"}},
        "withoutHeaders": {"x-b": {"prefix": "b"}},
        # Istio documents prefix as unsupported on query parameters: it becomes a regex.
        "queryParams": {"debug": {"exact": "1"}, "v": {"regex": r"2\..*"}, "q": {}},
    }]


def test_compiled_routes_satisfy_istios_schema(istio_validator: Any) -> None:
    texts = [*README_EXAMPLES, 'not header "x" exact "" and query "a" present and method prefix "P"',
             'not (header "ua" regex ".*A.*" or cookie "c" exact "1") and authority exact "h"']
    routes = [{"name": f"lamia-r{i}", "match": compile_condition(t),
               "route": [{"destination": {"host": "app", "subset": "v1"}, "weight": 100}]}
              for i, t in enumerate(texts)]
    istio_validator.validate({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "app", "namespace": "ns"},
        "spec": {"hosts": ["app"], "http": routes},
    })


# --- syntax ------------------------------------------------------------------------------------


def test_keywords_are_case_insensitive_and_comments_ignored() -> None:
    a = parse_condition('HEADER "X" Exact "v" AND NoT Uri PREFIX "/a" oR Cookie "c" PRESENT')
    b = parse_condition('header "X" exact "v" and not uri prefix "/a" or cookie "c" present # comment')
    assert a == b


def test_precedence_not_and_or() -> None:
    x, y, z = (Term("header", n, "present", None) for n in "xyz")
    assert parse_condition('not header "x" present and header "y" present or header "z" present') == Or(
        (And((Not(x), y)), z)
    )
    assert parse_condition('header "x" present or header "y" present and header "z" present') == Or(
        (x, And((y, z)))
    )
    assert parse_condition('not (header "x" present or header "y" present)') == Not(Or((x, y)))


def test_string_escapes() -> None:
    t = parse_condition(r'header "x" exact "say \"hi\" \\ \d"')
    assert isinstance(t, Term)
    assert t.value == 'say "hi" \\ \\d'  # \" and \\ are escapes; any other backslash stays
    assert format_condition(t) == r'header "x" exact "say \"hi\" \\ \\d"'
    assert parse_condition(format_condition(t)) == t


def test_positions_of_terms_and_values() -> None:
    cond = parse_condition('uri exact "/"\n  or header "X" regex "a+"')
    assert isinstance(cond, Or)
    t = cond.items[1]
    assert isinstance(t, Term)
    assert (t.line, t.column, t.name_at, t.value_at) == (2, 6, (2, 13), (2, 23))


@pytest.mark.parametrize(
    ("text", "line", "column", "reason", "expected"),
    [
        ("", 1, 1, "the condition is empty", ["(", "authority", "cookie", "header", "method", "not",
                                               "query", "uri"]),
        ('heder "x" present', 1, 1, 'unknown word "heder" (did you mean "header"?)', None),
        ('header "x" equals "y"', 1, 12, 'unknown word "equals"', ["exact", "prefix", "present", "regex"]),
        ('header "x" exact', 1, 17, "unexpected end of input", ["a string in double quotes"]),
        ('uri exact "/" and\n', 1, 18, "unexpected end of input", None),
        ('uri exact "/" )', 1, 15, 'unexpected ")"', ["end of input"]),
        ('(uri exact "/"', 1, 15, "unexpected end of input", [")"]),
        ('uri exact "/" uri exact "/a"', 1, 15, 'unexpected "uri"', ["and", "end of input", "or"]),
        ('uri exact "/" oor uri exact "/a"', 1, 15, 'unknown word "oor" (did you mean "or"?)', None),
        ('uri present', 1, 5, 'unexpected "present"', ["exact", "prefix", "regex"]),
        ('uri exact "/a', 1, 11, "unterminated string", None),
        ("uri exact '/a'", 1, 11, "double quotes", None),
        ('uri exact "/" andheader "x" present', 1, 15, 'unknown word "andheader"', None),
        ('uri exact "/"\nand header "x" exact @', 2, 22, "unexpected character '@'", None),
        ('header "a b" present', 1, 8, "not a valid header name", None),
        ('header "Host" exact "a"', 1, 8, "use authority tests", None),
        ('cookie "a;b" present', 1, 8, "not a valid cookie name", None),
        ('query "" present', 1, 7, "cannot be empty", None),
        ('header "x" prefix ""', 1, 19, 'write header "x" present', None),
        ('method exact "get"', 1, 14, 'did you mean "GET"?', None),
        ('header "x" regex ""', 1, 18, "empty regex", None),
        ('header "x" regex "a(b"', 1, 18, "invalid RE2 regex: missing )", None),
        ('header "x" regex "(a)\\1"', 1, 18, "backreferences", None),
        ('cookie "c" exact "a;b"', 1, 18, "cannot contain", None),
        ('uri exact "/a?b=1"', 1, 11, "without the query string", None),
        ('cookie "c" regex "a$|b"', 1, 18, "only have ^ at its start", None),
    ],
)
def test_syntax_errors_say_where_and_what(
    text: str, line: int, column: int, reason: str, expected: list[str] | None
) -> None:
    with pytest.raises(LanguageError) as info:
        parse_condition(text)
    err = info.value
    assert (err.line, err.column) == (line, column), str(err)
    assert reason in err.reason
    if expected is not None:
        assert err.expected == expected
    rendered = str(err).splitlines()
    assert rendered[0].startswith(f"condition error at line {line}, column {column}: ")
    assert rendered[1] == "  " + (text.splitlines() or [""])[line - 1]
    assert rendered[2] == "  " + " " * (column - 1) + "^"


def test_lookahead_is_refused_with_a_suggestion() -> None:
    text = 'header "User-Agent" regex "^(?:(?!Chrome|Nexus 6P).)*$"'
    with pytest.raises(LanguageError) as info:
        compile_condition(text)
    assert (info.value.line, info.value.column) == (1, text.index('"^') + 1)
    assert "RE2" in info.value.reason and "lookaround" in info.value.reason
    assert "not header" in info.value.reason
    # ...and the suggestion compiles to what the lookahead meant.
    suggested = compile_condition('not header "User-Agent" regex "^.*(Chrome|Nexus 6P).*$"')
    assert not _istio_matches(suggested, Request(headers={"user-agent": "x Chrome y"}))
    assert _istio_matches(suggested, Request(headers={"user-agent": "Firefox"}))
    assert _istio_matches(suggested, Request())


# --- compilation -------------------------------------------------------------------------------


def test_not_not_and_de_morgan() -> None:
    assert compile_condition('not not header "x" present') == compile_condition('header "x" present')
    assert compile_condition('not (header "a" present or header "b" exact "1")') == [
        {"withoutHeaders": {"a": {}, "b": {"exact": "1"}}}
    ]
    assert compile_condition('not (header "a" present and header "b" exact "1")') == [
        {"withoutHeaders": {"a": {}}}, {"withoutHeaders": {"b": {"exact": "1"}}}
    ]


def test_dnf_distributes_and_over_or() -> None:
    match = compile_condition('uri prefix "/a" and (header "x" present or cookie "c" exact "1")')
    assert match == [
        {"uri": {"prefix": "/a"}, "headers": {"x": {}}},
        {"uri": {"prefix": "/a"}, "headers": {"cookie": {"regex": cookie_regex("c", "exact", "1")}}},
    ]


def test_identical_and_subsumed_tests_collapse() -> None:
    assert compile_condition('header "X" exact "1" and header "x" exact "1"') == [
        {"headers": {"x": {"exact": "1"}}}
    ]
    # An alternative implied by another adds nothing.
    assert compile_condition('header "a" present or header "a" present and uri exact "/"') == [
        {"headers": {"a": {}}}
    ]
    # A value test implies presence; an exact value decides the other tests; nested prefixes.
    assert compile_condition('header "x" present and header "x" regex "a.*"') == [
        {"headers": {"x": {"regex": "a.*"}}}
    ]
    assert compile_condition('uri prefix "/a" and uri exact "/ab" and not header "h" present') == [
        {"uri": {"exact": "/ab"}, "withoutHeaders": {"h": {}}}
    ]
    assert compile_condition('uri prefix "/a" and uri prefix "/ab/c"') == [{"uri": {"prefix": "/ab/c"}}]


def test_negated_tests_of_one_header_merge_into_one_regex() -> None:
    match = compile_condition('not header "ua" regex ".*Chrome.*" and not header "ua" exact "a.b"')
    assert match == [{"withoutHeaders": {"ua": {"regex": r"(?:.*Chrome.*)|(?:a\.b)"}}}]


def test_negated_test_that_matches_empty_keeps_requests_without_the_header() -> None:
    # withoutHeaders treats a missing header as "", which `exact ""` matches: split in two.
    match = compile_condition('not header "x" exact ""')
    assert match == [{"withoutHeaders": {"x": {}}}, {"withoutHeaders": {"x": {"exact": ""}}}]
    assert _istio_matches(match, Request())
    assert _istio_matches(match, Request(headers={"x": "a"}))
    assert not _istio_matches(match, Request(headers={"x": ""}))


def test_contradictions_are_dropped_and_a_never_true_condition_refused() -> None:
    assert compile_condition('uri exact "/a" and uri exact "/b" or uri exact "/c"') == [
        {"uri": {"exact": "/c"}}
    ]
    # Unsatisfiable alternatives go even when Istio could not express them.
    assert compile_condition('not uri prefix "/a" and header "x" present and not header "x" present '
                             'or uri exact "/c"') == [{"uri": {"exact": "/c"}}]
    with pytest.raises(LanguageError, match="can never be true"):
        compile_condition('header "x" present and not header "x" present')


@pytest.mark.parametrize(
    ("text", "at", "reason"),
    [
        ('header "x" regex "a.*" and header "X" regex ".*b"', 'header "X"', 'test header "x" only once'),
        ('cookie "a" exact "1" and cookie "b" exact "2"', 'cookie "b"', "the Cookie header"),
        ('uri regex "/a.*" and uri prefix "/b"', 'uri prefix', "test the uri only once"),
        ('query "q" regex "a" and query "q" regex "b"', 'query "q" regex "b"', 'parameter "q" only once'),
        ('not uri prefix "/a"', "uri", "only header and cookie tests can be negated"),
        ('not (method exact "GET" and header "x" present)', "method", "the method not matching"),
        ('not query "q" present', "query", 'query parameter "q" not matching'),
    ],
)
def test_what_istio_cannot_express_is_refused_at_the_term(text: str, at: str, reason: str) -> None:
    with pytest.raises(LanguageError) as info:
        compile_condition(text)
    assert (info.value.line, info.value.column) == (1, text.index(at) + 1)
    assert reason in info.value.reason


def test_compile_accepts_a_tree_and_points_errors_into_its_canonical_text() -> None:
    tree = And((Term("uri", None, "prefix", "/a"), Term("header", "X", "exact", "1")))
    assert compile_condition(tree) == compile_condition(format_condition(tree))
    bad = Not(Term("uri", None, "prefix", "/a"))
    with pytest.raises(LanguageError) as info:
        compile_condition(bad)
    assert info.value.text == 'not uri prefix "/a"' and info.value.column == 5


# --- limits ------------------------------------------------------------------------------------


def test_text_length_is_bounded() -> None:
    text = 'uri exact "/' + "a" * MAX_TEXT + '"'
    with pytest.raises(LanguageError, match="characters long"):
        parse_condition(text)


def test_nesting_depth_is_bounded_without_recursion_errors() -> None:
    deep = "not " * (MAX_DEPTH + 1) + 'header "x" present'
    with pytest.raises(LanguageError, match="nests deeper"):
        parse_condition(deep)
    parens = "(" * 3000 + 'header "x" present' + ")" * 3000  # parentheses alone add no depth
    assert parse_condition(parens) == Term("header", "x", "present", None)
    nested = 'header "x" present'
    for _ in range(MAX_DEPTH + 1):
        nested = f'uri exact "/" and ({nested} or header "y" present)'
    with pytest.raises(LanguageError, match="nests deeper"):
        compile_condition(nested)
    tree: Condition = Term("header", "x", "present", None)
    for _ in range(5000):
        tree = Not(tree)
    with pytest.raises(InvalidInput, match="nests deeper"):
        format_condition(tree)


def test_dnf_blow_up_is_refused() -> None:
    pairs = " and ".join(f'(header "a{i}" present or header "b{i}" present)' for i in range(40))
    with pytest.raises(LanguageError, match=f"more than {MAX_MATCHES} entries") as info:
        compile_condition(pairs)
    # 2^6 = 64 alternatives fit; the 7th pair is where it overflows.
    assert info.value.column == pairs.index('(header "a6"') + 2
    six = " and ".join(f'(header "a{i}" present or header "b{i}" present)' for i in range(6))
    assert len(compile_condition(six)) == MAX_MATCHES
    wide = " or ".join(f'header "h{i}" present' for i in range(MAX_MATCHES + 1))
    with pytest.raises(LanguageError, match="entries"):
        compile_condition(wide)


# --- properties --------------------------------------------------------------------------------

_HEADER_NAMES = ["x-a", "X-A", "x-b", "Cookie"]
_COOKIE_NAMES = ["shop", "a"]
_QUERY_NAMES = ["q", "r"]
_VALUES = ["", "a", "ab", "b", "subset1", "subset10", "/a", "/ab"]
_REGEXES = ["a.*", "(a|b)", "[ab]+", "a?", ".*", "b", "/a.*", "subset[0-9]+"]
_COOKIE_REGEXES = ["a+", "(a|b)", "[ab]*", "subset[0-9]", "^sub[^;]*$"]


@st.composite
def _terms(draw: st.DrawFn) -> Term:
    fld = draw(st.sampled_from(["header", "header", "cookie", "cookie", "query", "uri", "method",
                                "authority"]))
    name = {"header": _HEADER_NAMES, "cookie": _COOKIE_NAMES, "query": _QUERY_NAMES}.get(fld)
    ops = ["exact", "prefix", "regex"] + (["present"] if name else [])
    op = draw(st.sampled_from(ops))
    if op == "present":
        value = None
    elif op == "regex":
        value = draw(st.sampled_from(_COOKIE_REGEXES if fld == "cookie" else _REGEXES))
    elif fld == "method":
        value = draw(st.sampled_from(["GET", "POST", "P"]))
    else:
        value = draw(st.sampled_from([v for v in _VALUES if v or fld not in ("header", "authority")]))
    return Term(fld, draw(st.sampled_from(name)) if name else None, op, value)


def _trees(leaves: st.SearchStrategy[Term]) -> st.SearchStrategy[Condition]:
    def extend(children: st.SearchStrategy[Condition]) -> st.SearchStrategy[Condition]:
        items = st.lists(children, min_size=2, max_size=3).map(tuple)
        return st.one_of(children.map(Not), items.map(And), items.map(Or))

    return st.recursive(leaves, extend, max_leaves=6)


_requests = st.builds(
    Request,
    method=st.sampled_from(["GET", "POST"]),
    path=st.sampled_from(["/", "/a", "/ab", "/b"]),
    authority=st.sampled_from(["h", "a", "ab"]),
    headers=st.fixed_dictionaries({}, optional={
        "x-a": st.sampled_from(_VALUES),
        "x-b": st.sampled_from(_VALUES),
        "cookie": st.lists(
            st.tuples(st.sampled_from([*_COOKIE_NAMES, "xshop", "shop2"]), st.sampled_from(_VALUES)),
            max_size=3,
        ).map(lambda pairs: "; ".join(f"{n}={v}" for n, v in pairs)),
    }),
    query=st.fixed_dictionaries({}, optional={n: st.sampled_from(_VALUES) for n in _QUERY_NAMES}),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_trees(_terms()), st.lists(_requests, min_size=12, max_size=12))
def test_compiled_match_routes_exactly_the_requests_the_condition_holds_for(
    cond: Condition, requests: list[Request]
) -> None:
    try:
        match = compile_condition(cond)
    except LanguageError as exc:
        event(f"refused: {exc.reason.split(':')[0][:40]}")
        return
    event("compiled")
    assert 1 <= len(match) <= MAX_MATCHES
    for req in requests:
        assert _istio_matches(match, req) == _holds(cond, req), (format_condition(cond), match, req)


_any_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=8)
_token = st.text(alphabet="!#$%&'*+-.^_`|~0aZ9", min_size=1, max_size=6)
_VALID_REGEXES = [*_REGEXES, r"\d+", r'say "hi"', r"a\\b", "[\"\\\\]", r"\(\)"]


_RESERVED = ("uri", "method", "authority", "host", "scheme")


@st.composite
def _valid_terms(draw: st.DrawFn) -> Term:
    """Any test that parse_condition accepts, with quotes and backslashes in its strings."""
    fld = draw(st.sampled_from(["header", "cookie", "query", "uri", "method", "authority"]))
    name = None
    if fld == "query":
        name = draw(_any_text.filter(bool))
    elif fld in ("header", "cookie"):
        name = draw(_token.filter(lambda n: n.lower() not in _RESERVED))
    op = draw(st.sampled_from(["exact", "prefix", "regex"] + (["present"] if name is not None else [])))
    value: str | None = None
    if op == "regex":
        value = draw(st.sampled_from(_COOKIE_REGEXES if fld == "cookie" else _VALID_REGEXES))
    elif op != "present":
        value = draw(st.text(alphabet="ABCXYZ-", max_size=6) if fld == "method" else _any_text)
        if fld == "cookie":
            value = value.replace(";", "")
        if fld == "uri":
            value = value.replace("?", "")  # the path never holds the query string: refused
        if op == "prefix" and fld in ("header", "method", "authority") and not value:
            value = "Z"
    return Term(fld, name, op, value)


@settings(max_examples=300, deadline=None)
@given(_trees(_valid_terms()))
def test_format_then_parse_gives_the_same_tree(cond: Condition) -> None:
    text = format_condition(cond)
    parsed = parse_condition(text)
    assert parsed == cond
    assert format_condition(parsed) == text


@st.composite
def _any_terms(draw: st.DrawFn) -> Term:
    fld = draw(st.sampled_from(["header", "cookie", "query", "uri", "method", "authority"]))
    named = fld in ("header", "cookie", "query")
    op = draw(st.sampled_from(["exact", "prefix", "regex"] + (["present"] if named else [])))
    return Term(fld, draw(_any_text) if named else None, op, None if op == "present" else draw(_any_text))


@settings(max_examples=300, deadline=None)
@given(_trees(st.one_of(_any_terms(), _valid_terms(), _terms())))
def test_compiling_any_tree_raises_only_lamia_errors(cond: Condition) -> None:
    try:
        compile_condition(cond)
    except LamiaError:
        pass


_ALPHABET = 'headrcokiquymtsxpfgn"\\()# \n\t.*^$-_;=?!ABC01'
_TOKENS = ["header", "cookie", "query", "uri", "method", "authority", "exact", "prefix", "regex",
           "present", "and", "or", "not", "(", ")", '"x"', '"a.*"', '"(?!a)"', '"', " ", "\n"]


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.text(alphabet=_ALPHABET, max_size=60),
    st.text(max_size=40),
    st.lists(st.sampled_from(_TOKENS), max_size=25).map(" ".join),
))
def test_arbitrary_text_raises_nothing_but_language_errors(text: str) -> None:
    try:
        cond = parse_condition(text)
    except LanguageError as exc:
        assert 1 <= exc.line <= max(1, len(text.splitlines()) + 1)
        assert exc.column >= 1
        return
    try:
        compile_condition(text)
    except LanguageError:
        pass
    assert parse_condition(format_condition(cond)) == cond


def test_the_printer_refuses_strings_it_cannot_write() -> None:
    with pytest.raises(InvalidInput, match="line break"):
        format_condition(Term("header", "x", "exact", "a\nb"))


def test_tree_constructors_refuse_malformed_nodes() -> None:
    with pytest.raises(ValueError):
        Term("uri", "x", "exact", "/")
    with pytest.raises(ValueError):
        Term("uri", None, "present", None)
    with pytest.raises(ValueError):
        Term("header", "x", "exact", None)
    with pytest.raises(ValueError):
        And((Term("header", "x", "present", None),))


def test_error_messages_name_tokens_the_way_users_write_them() -> None:
    with pytest.raises(LanguageError) as info:
        parse_condition('header "x" present and')
    assert not any(re.fullmatch(r"_?[A-Z]+", e) for e in info.value.expected)
