"""The Kubernetes adapter against the API-server emulator (and against servers that fail)."""

from __future__ import annotations

import copy
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from lamia_core.errors import (
    ConflictError,
    Forbidden,
    InvalidInput,
    LamiaError,
    MissingLabels,
    NotFound,
    ServerError,
    Timeout,
    Unreachable,
)
from lamia_core.istio import ISTIO_API, render_virtual_service
from lamia_core.kube import KubeAdapter, KubeConfig
from lamia_core.models import Application, Gateway, Route, Weights
from lamia_sandbox import _kube_resources as kr
from lamia_sandbox.kube_emulator import KubeEmulator
from lamia_sandbox.seed import seed_application
from tests.plugins.istio_schema import IstioValidator

NS, APP = "bookinfo", "reviews"
VS_PATH = f"/apis/networking.istio.io/v1/namespaces/{NS}/virtualservices/{APP}"
DR_PATH = f"/apis/networking.istio.io/v1/namespaces/{NS}/destinationrules/{APP}"
WRITES = ("POST", "PUT", "PATCH", "DELETE")


@pytest.fixture
def kube(kubeconfig: Path) -> Iterator[KubeAdapter]:
    with KubeAdapter(KubeConfig(kubeconfig=str(kubeconfig), context="lamia-emulator")) as adapter:
        yield adapter


@pytest.fixture
def reviews(kube_emulator: KubeEmulator, kube: KubeAdapter) -> Application:
    seed_application(kube_emulator, NS, APP, ["v1", "v2", "v3"])
    return kube.discover_application(NS, APP)


def vs_of(emu: KubeEmulator) -> dict[str, Any] | None:
    return emu.get_object(ISTIO_API, "VirtualService", NS, APP)


def weights_of(vs: dict[str, Any], route: str = "lamia-default") -> dict[str, int]:
    (r,) = [r for r in vs["spec"]["http"] if r.get("name") == route]
    return {d["destination"]["subset"]: d["weight"] for d in r["route"]}


def writes(emu: KubeEmulator, since: int = 0) -> list[tuple[str, str]]:
    return [r for r in emu.requests[since:] if r[0] in WRITES]


def one_route(app: Application, weights: dict[str, int]) -> Gateway:
    return Gateway(application=app, routes=(Route(weights=Weights(weights)),))


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "c", "user": {}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "c"}}],
    }))
    return path


# --- discovery ----------------------------------------------------------------------------------


def test_discover_application(kube_emulator: KubeEmulator, kube: KubeAdapter) -> None:
    seed_application(kube_emulator, NS, APP, ["v10", "v2", "v1"])
    seed_application(kube_emulator, NS, "ratings", ["v1"])
    app = kube.discover_application(NS, APP)
    assert app.namespace == NS and app.name == APP
    assert app.version_names == ["v1", "v2", "v10"]
    assert [v.deployment for v in app.versions] == ["reviews-v1", "reviews-v2", "reviews-v10"]
    assert app.service == "reviews"


def test_discover_reports_every_missing_label(kube_emulator: KubeEmulator, kube: KubeAdapter) -> None:
    seed_application(kube_emulator, NS, APP, ["v1", "v2", "v3"],
                     labels_missing={"v2": "version", "v3": ["deployment", "version"]})
    with pytest.raises(MissingLabels) as err:
        kube.discover_application(NS, APP)
    msg = str(err.value)
    assert "Deployment bookinfo/reviews-v2 lacks label version;" in msg
    assert "Deployment bookinfo/reviews-v3 lacks label version and deployment" in msg
    assert "reviews-v1" not in msg


def test_discover_without_deployments(kube_emulator: KubeEmulator, kube: KubeAdapter) -> None:
    seed_application(kube_emulator, NS, "ratings", ["v1"])
    with pytest.raises(NotFound, match="no Deployments labelled app=reviews in namespace 'bookinfo'"):
        kube.discover_application(NS, APP)
    with pytest.raises(NotFound, match=f"namespace 'nowhere' does not exist on {kube_emulator.url}"):
        kube.discover_application("nowhere", APP)


def test_discover_refuses_two_deployments_of_one_version(
    kube_emulator: KubeEmulator, kube: KubeAdapter
) -> None:
    (_, _, v1, _) = seed_application(kube_emulator, NS, APP, ["v1", "v2"])
    twin = copy.deepcopy(v1)
    twin["metadata"] = {"name": "reviews-v1-hotfix", "namespace": NS, "labels": {
        "app": APP, "version": "v1", "deployment": "reviews-v1-hotfix"}}
    kube_emulator.add_object(twin)
    with pytest.raises(InvalidInput, match="version=v1: reviews-v1, reviews-v1-hotfix"):
        kube.discover_application(NS, APP)


def test_discover_checks_names_before_asking(kube_emulator: KubeEmulator, kube: KubeAdapter) -> None:
    with pytest.raises(InvalidInput, match="application 'a,b' is not a valid Kubernetes label value"):
        kube.discover_application(NS, "a,b")
    assert kube_emulator.requests == []


# --- namespaces ---------------------------------------------------------------------------------


def test_init_namespace_labels_an_existing_one(kube_emulator: KubeEmulator, kube: KubeAdapter) -> None:
    kube_emulator.add_object({"apiVersion": "v1", "kind": "Namespace",
                              "metadata": {"name": NS, "labels": {"team": "books"}}})
    kube.init_namespace(NS)
    ns = kube_emulator.get_object("v1", "Namespace", None, NS)
    assert ns is not None
    assert ns["metadata"]["labels"]["team"] == "books"
    assert ns["metadata"]["labels"]["istio-injection"] == "enabled"
    assert ns["metadata"]["labels"]["lamia.io/managed"] == "true"
    since = len(kube_emulator.requests)
    kube.init_namespace(NS)
    assert writes(kube_emulator, since) == [], "labelling a labelled namespace writes nothing"


def test_init_namespace_creates_a_missing_one(kube_emulator: KubeEmulator, kube: KubeAdapter) -> None:
    kube.init_namespace("fresh")
    ns = kube_emulator.get_object("v1", "Namespace", None, "fresh")
    assert ns is not None and ns["metadata"]["labels"]["istio-injection"] == "enabled"
    assert writes(kube_emulator) == [("POST", "/api/v1/namespaces")]


# --- gateways -----------------------------------------------------------------------------------


def test_apply_gateway_creates_valid_objects_and_reapplying_writes_nothing(
    kube_emulator: KubeEmulator, kube: KubeAdapter, reviews: Application, istio_validator: IstioValidator
) -> None:
    gw = one_route(reviews, {"v1": 90, "v2": 10})
    dr, vs = kube.apply_gateway(gw)
    stored_dr = kube_emulator.get_object(ISTIO_API, "DestinationRule", NS, APP)
    stored_vs = vs_of(kube_emulator)
    assert stored_dr is not None and stored_vs is not None
    assert (dr["metadata"]["resourceVersion"], vs["metadata"]["resourceVersion"]) == (
        stored_dr["metadata"]["resourceVersion"], stored_vs["metadata"]["resourceVersion"])
    for obj in (stored_dr, stored_vs):
        istio_validator.validate({k: v for k, v in obj.items() if k != "status"})
    assert [s["name"] for s in stored_dr["spec"]["subsets"]] == ["v1", "v2", "v3"]
    assert weights_of(stored_vs) == {"v1": 90, "v2": 10}
    assert kube.read_gateway(reviews) == gw

    since = len(kube_emulator.requests)
    kube.apply_gateway(gw)
    assert writes(kube_emulator, since) == []


def test_apply_gateway_adopts_a_hand_written_virtual_service(
    kube_emulator: KubeEmulator, kube: KubeAdapter, reviews: Application
) -> None:
    jason = {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
             "route": [{"destination": {"host": APP, "subset": "v2"}}]}
    kube_emulator.add_object({
        "apiVersion": ISTIO_API, "kind": "VirtualService", "metadata": {"name": APP, "namespace": NS},
        "spec": {"hosts": [APP], "http": [jason, {"route": [
            {"destination": {"host": APP, "subset": "v1"}, "weight": 75},
            {"destination": {"host": APP, "subset": "v3"}, "weight": 25}]}]},
    })
    adopted = kube.read_gateway(reviews)
    assert adopted is not None and adopted.default_route.weights.as_dict() == {"v1": 75, "v3": 25}
    kube.apply_gateway(adopted)
    vs = vs_of(kube_emulator)
    assert vs is not None
    assert vs["spec"]["http"][0] == jason
    assert weights_of(vs) == {"v1": 75, "v3": 25}


def test_apply_gateway_refused_by_a_route_in_the_way_writes_nothing(
    kube_emulator: KubeEmulator, kube: KubeAdapter, reviews: Application
) -> None:
    kube_emulator.add_object({
        "apiVersion": ISTIO_API, "kind": "VirtualService", "metadata": {"name": APP, "namespace": NS},
        "spec": {"hosts": [APP], "http": [{"name": "primary", "route": [{"destination": {"host": APP}}]}]},
    })
    since = len(kube_emulator.requests)
    with pytest.raises(InvalidInput, match="bookinfo/reviews: HTTP route 'primary' has no match"):
        kube.apply_gateway(one_route(reviews, {"v1": 100}))
    assert writes(kube_emulator, since) == []
    assert kube_emulator.get_object(ISTIO_API, "DestinationRule", NS, APP) is None


def test_read_gateway_without_virtual_service(kube: KubeAdapter, reviews: Application) -> None:
    assert kube.read_gateway(reviews) is None


def test_set_weights(kube_emulator: KubeEmulator, kube: KubeAdapter, reviews: Application) -> None:
    kube.apply_gateway(one_route(reviews, {"v1": 100}))
    gw = kube.set_weights(reviews, Weights({"v1": 70, "v3": 30}))
    assert gw.default_route.weights.as_dict() == {"v1": 70, "v3": 30}
    vs = vs_of(kube_emulator)
    assert vs is not None and weights_of(vs) == {"v1": 70, "v3": 30}


@pytest.mark.parametrize(("weights", "route", "error", "message"), [
    ({"v1": 50, "v9": 50}, "default", InvalidInput, "unknown version 'v9' of application 'reviews'"),
    ({"v1": 100}, "canary", InvalidInput, "has no route 'canary'"),
])
def test_set_weights_refuses_before_writing(
    kube_emulator: KubeEmulator, kube: KubeAdapter, reviews: Application,
    weights: dict[str, int], route: str, error: type[Exception], message: str,
) -> None:
    kube.apply_gateway(one_route(reviews, {"v1": 100}))
    before = vs_of(kube_emulator)
    since = len(kube_emulator.requests)
    with pytest.raises(error, match=message):
        kube.set_weights(reviews, Weights(weights), route=route)
    assert writes(kube_emulator, since) == []
    assert vs_of(kube_emulator) == before


def test_set_weights_without_gateway(
    kube_emulator: KubeEmulator, kube: KubeAdapter, reviews: Application
) -> None:
    with pytest.raises(NotFound, match="has no gateway yet; create it with `lamia gateway apply"):
        kube.set_weights(reviews, Weights({"v1": 100}))
    assert writes(kube_emulator) == []


# --- optimistic concurrency ---------------------------------------------------------------------


def _other_writer(emu: KubeEmulator, times: int | None) -> list[int]:
    """Before Lamia's next ``times`` writes of the VirtualService (all, if None), another writer
    adds a route and an annotation of its own; returns the list counting its writes."""
    done: list[int] = []

    def hook(method: str, path: str, body: Any) -> None:
        if path != VS_PATH or (times is not None and len(done) >= times):
            return
        vs = vs_of(emu)
        assert vs is not None
        n = len(done) + 1
        vs["metadata"].setdefault("annotations", {})[f"other/{n}"] = "mine"
        vs["spec"]["http"].insert(0, {"name": f"other-{n}", "match": [{"uri": {"prefix": f"/o{n}"}}],
                                      "route": [{"destination": {"host": APP, "subset": "v1"}}]})
        emu.replace_object(vs)
        done.append(n)

    emu.before_write(hook)
    return done


def test_conflict_is_retried_onto_the_other_writers_change(
    kube_emulator: KubeEmulator, kube: KubeAdapter, reviews: Application
) -> None:
    kube.apply_gateway(one_route(reviews, {"v1": 100}))
    done = _other_writer(kube_emulator, times=2)
    since = len(kube_emulator.requests)
    kube.set_weights(reviews, Weights({"v1": 60, "v2": 40}))
    assert done == [1, 2]
    assert [r for r in writes(kube_emulator, since) if r[1] == VS_PATH] == [("PUT", VS_PATH)] * 3
    vs = vs_of(kube_emulator)
    assert vs is not None
    assert [r["name"] for r in vs["spec"]["http"]] == ["other-2", "other-1", "lamia-default"]
    assert vs["metadata"]["annotations"] == {"other/1": "mine", "other/2": "mine"}
    assert weights_of(vs) == {"v1": 60, "v2": 40}


def test_conflict_after_every_retry_gives_up_leaving_the_other_writers_object(
    kube_emulator: KubeEmulator, kubeconfig: Path, reviews: Application
) -> None:
    with KubeAdapter(KubeConfig(kubeconfig=str(kubeconfig), max_conflict_retries=3,
                                conflict_timeout=0)) as kube:
        kube.apply_gateway(one_route(reviews, {"v1": 100}))
        done = _other_writer(kube_emulator, times=None)
        with pytest.raises(ConflictError, match=r"VirtualService bookinfo/reviews was changed by another "
                                                r"writer each time .* gave up after 4 attempts in"):
            kube.set_weights(reviews, Weights({"v1": 60, "v2": 40}))
    assert done == [1, 2, 3, 4]
    vs = vs_of(kube_emulator)
    assert vs is not None
    assert [r["name"] for r in vs["spec"]["http"]] == [
        "other-4", "other-3", "other-2", "other-1", "lamia-default"]
    assert weights_of(vs) == {"v1": 100}


def test_update_object_creates_when_missing_and_none_means_no_write(
    kube_emulator: KubeEmulator, kube: KubeAdapter, reviews: Application
) -> None:
    seen: list[dict[str, Any] | None] = []

    def nothing(obj: dict[str, Any] | None) -> None:
        seen.append(obj)
        return None

    assert kube.update_object("VirtualService", NS, APP, nothing) is None
    assert seen == [None] and writes(kube_emulator) == []
    created = kube.update_object("VirtualService", NS, APP,
                                 lambda cur: render_virtual_service(one_route(reviews, {"v2": 100}), cur))
    assert created is not None and created == vs_of(kube_emulator)
    assert kube.get_object("VirtualService", NS, APP) == created


def test_object_deleted_between_read_and_write_is_created_afresh(
    kube_emulator: KubeEmulator, kube: KubeAdapter, reviews: Application
) -> None:
    kube.apply_gateway(one_route(reviews, {"v1": 100}))
    deleted: list[str] = []

    def hook(method: str, path: str, body: Any) -> None:
        if method == "PUT" and path == VS_PATH and not deleted:
            # Another writer deletes it (the emulator has no HTTP-free delete but its store's).
            res, version = kr.by_api_version(ISTIO_API, "VirtualService")
            kube_emulator.store.delete(res, version, NS, APP, None, dry_run=False)
            deleted.append(path)

    kube_emulator.before_write(hook)
    since = len(kube_emulator.requests)
    kube.apply_gateway(one_route(reviews, {"v1": 50, "v2": 50}))
    assert deleted
    collection = VS_PATH.rsplit("/", 1)[0]
    assert [r for r in writes(kube_emulator, since) if r[1].startswith(collection)] == [
        ("PUT", VS_PATH), ("POST", collection)]
    vs = vs_of(kube_emulator)
    assert vs is not None and weights_of(vs) == {"v1": 50, "v2": 50}


# --- failures -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "error", "message"), [
    (403, Forbidden,
     r"cannot read VirtualService bookinfo/reviews: http://127\.0\.0\.1:\d+ refused with HTTP 403"),
    (401, Forbidden, "refused with HTTP 401"),
    (422, InvalidInput,
     "cannot read VirtualService bookinfo/reviews: the cluster rejected it: injected failure"),
    (500, ServerError, r"answered HTTP 500: injected failure: HTTP 500 for GET"),
    (503, ServerError, "answered HTTP 503"),
    (429, ServerError, "answered HTTP 429"),
])
def test_http_failures_map_onto_lamia_errors(
    kube_emulator: KubeEmulator, kube: KubeAdapter, reviews: Application,
    status: int, error: type[LamiaError], message: str,
) -> None:
    kube_emulator.fail_next("GET", VS_PATH + "$", status)
    with pytest.raises(error, match=message) as err:
        kube.read_gateway(reviews)
    # Besides the message, the data a caller may act on; the client's exception stays the cause.
    assert (err.value.status, err.value.server, err.value.subject) == (
        status, kube_emulator.url, "VirtualService bookinfo/reviews")
    assert isinstance(err.value.__cause__, ApiException)


def test_rejected_write_is_invalid_input(kube_emulator: KubeEmulator, kube: KubeAdapter,
                                         reviews: Application) -> None:
    kube_emulator.fail_next("POST", r"/destinationrules$", 422)
    with pytest.raises(InvalidInput,
                       match="cannot create DestinationRule bookinfo/reviews: the cluster rejected"):
        kube.apply_gateway(one_route(reviews, {"v1": 100}))
    assert vs_of(kube_emulator) is None, "the VirtualService is not written without its DestinationRule"


def test_unreachable_cluster(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}")
    with KubeAdapter(KubeConfig(kubeconfig=str(config))) as kube, pytest.raises(Unreachable) as err:
        kube.discover_application(NS, APP)
    assert str(err.value).startswith(f"cannot reach the Kubernetes API server at http://127.0.0.1:{port} "
                                     "to list Deployments labelled app=reviews in namespace bookinfo: ")
    assert "Connection refused" in str(err.value)
    assert err.value.status is None and err.value.server == f"http://127.0.0.1:{port}"
    assert err.value.__cause__ is not None


def test_silent_cluster_times_out(tmp_path: Path) -> None:
    # A listening socket nobody accepts on: the connection opens, no answer ever comes.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        config = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{s.getsockname()[1]}")
        expected = r"did not answer within 0\.3s to read VirtualService bookinfo/x"
        with KubeAdapter(KubeConfig(kubeconfig=str(config), request_timeout=0.3)) as kube, \
                pytest.raises(Timeout, match=expected):
            kube.get_object("VirtualService", NS, "x")


def test_bad_kubeconfig(tmp_path: Path, kubeconfig: Path) -> None:
    with pytest.raises(InvalidInput, match=r"kubeconfig file .*/nope does not exist"):
        KubeAdapter(KubeConfig(kubeconfig=str(tmp_path / "nope")))
    with pytest.raises(InvalidInput, match="context 'elsewhere'"):
        KubeAdapter(KubeConfig(kubeconfig=str(kubeconfig), context="elsewhere"))
    garbage = tmp_path / "garbage"
    garbage.write_text("clusters: [unclosed\n")
    with pytest.raises(InvalidInput, match="cannot load the Kubernetes configuration from kubeconfig"):
        KubeAdapter(KubeConfig(kubeconfig=str(garbage)))


def test_default_config_in_a_pod_uses_the_service_account(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "1")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    # No service-account token in this test's "pod": the error names the in-cluster source,
    # which shows the default config was read as in-cluster rather than as a kubeconfig.
    with pytest.raises(InvalidInput, match="in-cluster service account"):
        KubeAdapter(KubeConfig())
    # An explicit kubeconfig is never second-guessed.
    with pytest.raises(InvalidInput, match="does not exist"):
        KubeAdapter(KubeConfig(kubeconfig=str(tmp_path / "absent")))


SAVED = {
    "apiVersion": "v1", "kind": "Config", "current-context": "prod-eu",
    "clusters": [{"name": "prod-eu", "cluster": {"server": "https://api.prod-eu.example.com:6443"}}],
    "users": [{"name": "deployer", "user": {"token": "prod-eu-deployer-token"}}],
    "contexts": [{"name": "prod-eu", "context": {"cluster": "prod-eu", "user": "deployer"}}],
}


def test_a_saved_clusters_content_is_secret_and_tells_configs_apart() -> None:
    eu = KubeConfig(config_data=SAVED, context="prod-eu", name="prod-eu")
    other = copy.deepcopy(SAVED)
    other["users"][0]["user"]["token"] = "rotated-token"
    rotated = KubeConfig(config_data=other, context="prod-eu", name="prod-eu")
    # Neither its JSON nor its repr holds the credentials ...
    for text in (eu.model_dump_json(), repr(eu), str(eu.model_dump())):
        assert "prod-eu-deployer-token" not in text
    # ... so the adapter cache keys on a digest of them: a re-saved cluster gets a new client.
    assert eu.model_dump_json() == rotated.model_dump_json()
    assert eu.cache_key() != rotated.cache_key()
    assert eu.cache_key() == KubeConfig(config_data=copy.deepcopy(SAVED), context="prod-eu",
                                        name="prod-eu").cache_key()
    assert eu.label == "cluster prod-eu"


@pytest.mark.parametrize("fields", [
    {"config_data": SAVED, "kubeconfig": "/home/ci/.kube/config"},
    {"config_data": SAVED, "in_cluster": True},
    {"in_cluster": True, "context": "prod-eu"},
])
def test_one_source_of_configuration_at_a_time(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"excludes|in_cluster uses"):
        KubeConfig(**fields)


def test_a_saved_config_in_a_pod_is_not_taken_for_the_service_account(
    monkeypatch: pytest.MonkeyPatch, kube_emulator: KubeEmulator
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    config = copy.deepcopy(SAVED)
    config["clusters"][0]["cluster"]["server"] = kube_emulator.url
    with KubeAdapter(KubeConfig(config_data=config, name="prod-eu")) as kube:
        assert kube.server == kube_emulator.url and kube.server_version()


def test_server_version_of_an_unreachable_server() -> None:
    config = copy.deepcopy(SAVED)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{port}"
    with KubeAdapter(KubeConfig(config_data=config, name="prod-us")) as kube:
        with pytest.raises(Unreachable) as err:
            kube.server_version()
    assert f"127.0.0.1:{port}" in str(err.value) and "server version" in str(err.value)
