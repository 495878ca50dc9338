"""Every command refuses hostile input with one line and exit code 2, in bounded time, writing nothing.

Hostile: numbers of any size, lone surrogates and control characters, names that are not
Kubernetes names, and megabytes of text, in every option and argument that takes a name, a
number, weights or a URL. The cluster is a real emulator (so that the commands get past their
configuration) and Prefect's API address is a closed port: input must be refused before any of
them is asked, and the emulator must see no write.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.cli import app
from lamia_sandbox._lifecycle import free_port
from lamia_sandbox.kube_emulator import KubeEmulator
from lamia_sandbox.seed import seed_application
from tests.plugins.hostile import invoke

WRITES = ("POST", "PUT", "PATCH", "DELETE")

#: Values no name, number or weight may be; each must be refused.
NUMBERS = st.sampled_from(["9" * 5000, "-" + "9" * 5000, "1e999999", "0x10", "1_000", "nan", "inf", "-inf",
                           "\u0661\u0660", "10\x00", "4.5e+307", "99999999999999999999"])
NAMES = st.sampled_from(["Shop", "a" * 64, "-front", "back-", "x/y", "..", "shop.example", "a b", "ñ",
                         "shop\n", "\ud800", "s\x07p", "x" * 2_000_000])
SURROGATES = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3)
CONTROLS = st.text(st.sampled_from([chr(c) for c in (*range(0, 9), 11, 12, *range(14, 32), 127)]),
                   min_size=1, max_size=3)


def spoiled(base: str) -> st.SearchStrategy[str]:
    """``base`` with a lone surrogate or a control character put in, or blown up to megabytes."""
    @st.composite
    def build(draw: st.DrawFn) -> str:
        bad = draw(st.one_of(SURROGATES, CONTROLS))
        at = draw(st.integers(0, len(base)))
        return base[:at] + bad + base[at:]

    return st.one_of(build(), st.just(base * (2_000_000 // len(base) + 1)))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeEmulator, Path]]:
    with KubeEmulator() as emulator:
        seed_application(emulator, "shop", "cart", ["stable", "canary"])
        path = emulator.write_kubeconfig(tmp_path_factory.mktemp("hostile") / "kubeconfig")
        closed = f"http://127.0.0.1:{free_port()}/api"
        saved = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = closed
        try:
            yield emulator, path
        finally:
            if saved is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = saved


def refused(cluster: tuple[KubeEmulator, Path], args: list[str]) -> None:
    emulator, path = cluster
    before = len([r for r in emulator.requests if r[0] in WRITES])
    result = invoke(app, [*args, "--kubeconfig", str(path)] if "--kubeconfig" not in args else args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, (args[:3], result.exit_code, result.stderr[:300])
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lamia: error: "), result.stderr[:300]
    assert len(lines[0]) < 2000, "an error does not echo megabytes back"
    assert len([r for r in emulator.requests if r[0] in WRITES]) == before, "nothing was written"


APP = ["-n", "shop", "--app", "cart"]

#: Commands with a slot ({}) for a name.
NAME_SLOTS: list[list[str]] = [
    ["gateway", "apply", "-n", "{}", "--app", "cart", "--weights", "stable=100,canary=0"],
    ["gateway", "apply", "-n", "shop", "--app", "{}", "--weights", "stable=100,canary=0"],
    ["gateway", "apply", *APP, "--service", "{}", "--weights", "stable=100,canary=0"],
    ["gateway", "show", "-n", "{}", "--app", "cart"],
    ["weights", "set", "-n", "shop", "--app", "{}", "stable=100", "canary=0"],
    ["weights", "set", *APP, "--route", "{}", "stable=100", "canary=0"],
    ["weights", "set", *APP, "{}=100"],
    ["render", "gateway", "-n", "{}", "--app", "cart", "--weights", "stable=100"],
    ["render", "gateway", "-n", "shop", "--app", "cart", "--weights", "{}=100"],
    ["cluster", "init", "{}"],
    ["release", "start", *APP, "--baseline", "{}", "--target", "canary", "--prometheus", "http://p:9"],
    ["release", "start", *APP, "--baseline", "stable", "--target", "{}", "--prometheus", "http://p:9"],
    ["release", "start", "-n", "{}", "--app", "cart", "--baseline", "stable", "--target", "canary",
     "--prometheus", "http://p:9"],
    ["release", "status", "-a", "{}", "-n", "shop"],
    ["release", "abort", "-a", "cart", "-n", "{}"],
    ["release", "history", "-a", "{}", "-n", "shop"],
    ["expose", *APP, "--host", "{}"],
    ["expose", *APP, "--host", "shop.example.com", "--gateway", "{}"],
    ["doctor", "-n", "{}", "--app", "cart"],
]

#: Commands with a slot for a number.
NUMBER_SLOTS: list[list[str]] = [
    ["weights", "set", *APP, "stable={}", "canary=0"],
    ["gateway", "apply", *APP, "--weights", "stable={},canary=0"],
    ["render", "gateway", "-n", "shop", "--app", "cart", "--weights", "stable={}"],
    *[["release", "start", *APP, "--baseline", "stable", "--target", "canary", "--prometheus", "http://p:9",
       option, "{}"]
      for option in ("--step", "--interval", "--max-weight", "--min-requests", "--failure-limit",
                     "--progress-deadline", "--threshold", "--tolerance", "--confidence",
                     "--worker-loss-timeout")],
    ["release", "abort", "-a", "cart", "-n", "shop", "--timeout", "{}"],
    ["release", "history", "-a", "cart", "-n", "shop", "--limit", "{}"],
]


def _fill(template: list[str], value: str) -> list[str]:
    return [value if part == "{}" else part.replace("{}", value) for part in template]


@settings(max_examples=60)
@given(template=st.sampled_from(NAME_SLOTS), value=NAMES)
def test_a_name_that_is_no_kubernetes_name_is_refused_everywhere(
    cluster: Any, template: list[str], value: str
) -> None:
    refused(cluster, _fill(template, value))


@settings(max_examples=60)
@given(template=st.sampled_from(NUMBER_SLOTS), value=NUMBERS)
def test_a_number_of_any_size_is_refused_everywhere(cluster: Any, template: list[str], value: str) -> None:
    refused(cluster, _fill(template, value))


@settings(max_examples=40)
@given(data=st.data())
def test_lone_surrogates_control_characters_and_megabytes_are_refused_in_urls_and_windows(
    cluster: Any, data: st.DataObject
) -> None:
    url = data.draw(spoiled("http://prometheus.istio-system:9090"))
    window = data.draw(spoiled("1m"))
    base = ["release", "start", *APP, "--baseline", "stable", "--target", "canary", "--policy", "health"]
    refused(cluster, [*base, "--prometheus", url])
    refused(cluster, [*base, "--prometheus", "http://p:9", "--window", window])
