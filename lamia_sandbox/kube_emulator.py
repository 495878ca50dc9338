"""A Kubernetes API server emulator over real HTTP, as strict as a cluster where Lamia relies on it.

Serves namespaces, services, pods, configmaps, deployments, leases, Ingresses
(``networking.k8s.io/v1``) and the Istio ``networking.istio.io``
virtualservices, destinationrules and gateways (v1, v1beta1, v1alpha3 over one
storage, or fewer: :meth:`KubeEmulator.serve_versions` plays an older Istio),
plus discovery, to the official ``kubernetes`` client. It answers
SelfSubjectAccessReviews and refuses requests (403) by RBAC rules a test sets
(:meth:`KubeEmulator.set_access`; everything is allowed by default), for the
requester or a user it impersonates (``Impersonate-User``, as ``kubectl --as``).

Faithful: a global resourceVersion bumped by every write that changes
something (a no-op write changes nothing, as in etcd),
``generation`` bumped by changes outside metadata and status, optimistic
concurrency (409 Conflict on a stale resourceVersion), the API server's
``Status`` bodies and codes, label and field selectors, merge and JSON patch.
Like the real thing, built-in kinds accept a PUT without resourceVersion and
custom resources refuse it (422), and custom resources refuse strategic merge
patches (415).

Every write that changes an object records its field manager in
``metadata.managedFields`` as the API server does: the ``fieldManager`` query
parameter, else the User-Agent up to its first ``/``; one ``Update`` entry per
manager, with the time of its last write (``fieldsV1`` lists only the
top-level fields that write changed, not the full ownership a real server
tracks).

Simplified, on purpose: strategic merge patch on built-in kinds is applied as
a JSON merge patch (lists are replaced, not merged by key; ``$patch``
directives are not read); no watch, pagination (``limit`` is ignored and the
whole list comes back), server-side apply, subresources (``/status``,
``/scale``), spec schema validation or field pruning; deletion is immediate
(no finalizers, grace periods or Terminating namespaces); no authentication
(every request is :data:`DEFAULT_USER`'s unless it impersonates), no admission
webhooks (seeding plays Istio's sidecar injector, see :mod:`lamia_sandbox.seed`).

Run ``python -m lamia_sandbox.kube_emulator --port N --kubeconfig PATH
[--seed-app NS:APP:v1,v2]`` to serve in the foreground until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from lamia_sandbox import _kube_resources as kr
from lamia_sandbox._kube_access import (
    DEFAULT_USER,
    AccessRules,
    Rule,
    forbidden_message,
    impersonation_refused,
    verb_of,
)
from lamia_sandbox._kube_selectors import parse_field_selector, parse_label_selector
from lamia_sandbox._kube_store import (
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_PATCH,
    ApiError,
    Obj,
    Store,
    bad_request,
)
from lamia_sandbox._lifecycle import Service, ServingThread

log = logging.getLogger(__name__)

WriteHook = Callable[[str, str, Any], None]
_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
            422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
            504: "Timeout"}
_WRITES = ("POST", "PUT", "PATCH", "DELETE")


@dataclass
class _Failure:
    method: str
    pattern: re.Pattern[str]
    status: int
    remaining: int
    body: Obj | None


class KubeEmulator(Service):
    """The API server; its objects live in memory for as long as the instance."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.store = Store()
        self.catalog = kr.Catalog()
        self.access = AccessRules()
        #: (method, path without query) of every request, in arrival order.
        self.requests: list[tuple[str, str]] = []
        self._failures: list[_Failure] = []
        self._hook: WriteHook | None = None
        self._serving: ServingThread | None = None

    # --- life cycle ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._serving is None:
            raise RuntimeError("the Kubernetes emulator is not started: call start() first")
        return f"http://{self.host}:{self.port}"

    def start(self) -> KubeEmulator:
        if self._serving is not None:
            return self
        server = _Server((self.host, self.port), _Handler)
        server.emulator = self
        self.port = server.server_address[1]
        self._serving = ServingThread(server, f"kube-emulator-{self.port}")
        return self

    def stop(self) -> None:
        serving, self._serving = self._serving, None
        if serving is not None:
            serving.stop(timeout=5)

    def write_kubeconfig(self, path: Path, *, context: str = "lamia-emulator",
                         namespace: str = "default") -> Path:
        """A kubeconfig whose current context points at this emulator (no credentials: none are checked)."""
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": {}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context,
                                                       "namespace": namespace}}],
            "current-context": context,
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    # --- direct access for tests ---------------------------------------------------------------

    def add_object(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store ``obj`` without HTTP (create, or overwrite like :meth:`replace_object`); the stored copy.

        Sets uid, creationTimestamp (both kept if given), generation and a new
        resourceVersion. ValueError for what a real server would refuse: an
        unserved kind, a bad name or label, a missing namespace.
        """
        return self.store.put(obj)

    def replace_object(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Overwrite an existing object as another writer would: a new resourceVersion, no check of it."""
        return self.store.put(obj, must_exist=True)

    def get_object(self, api_version: str, kind: str, namespace: str | None,
                   name: str) -> dict[str, Any] | None:
        return self.store.get(api_version, kind, namespace, name)

    def delete_object(self, api_version: str, kind: str, namespace: str | None, name: str) -> None:
        """Delete an object as another writer would (KeyError when it does not exist)."""
        res, version = kr.by_api_version(api_version, kind)
        try:
            self.store.delete(res, version, namespace, name, None, dry_run=False)
        except ApiError as exc:
            raise KeyError(str(exc)) from None

    def list_objects(self, api_version: str, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        res, version = kr.by_api_version(api_version, kind)
        return self.store.select(res, version, namespace)

    def fail_next(self, method: str, path_regex: str, status: int, *, count: int = 1,
                  body: dict[str, Any] | None = None) -> None:
        """Answer the next ``count`` requests of ``method`` ("*" for any) whose path matches
        ``path_regex`` (searched, query excluded) with ``status`` and ``body`` (default: a
        Status), without touching the store."""
        with self.store.lock:
            self._failures.append(_Failure(method.upper(), re.compile(path_regex), status, count, body))

    def before_write(self, hook: WriteHook | None) -> None:
        """Call ``hook(method, path, parsed_body)`` before each write is applied, outside the lock.

        ``parsed_body`` is the JSON sent (a list for a JSON patch, None when
        empty). Requests refused before that (bad JSON, injected failures) do
        not reach it. An exception from the hook answers the request with 500.
        """
        self._hook = hook

    def serve_versions(self, group: str, versions: tuple[str, ...] | None) -> None:
        """Serve only ``versions`` of ``group`` (None: all again), e.g. an Istio older than 1.22 serves
        ``networking.istio.io`` as v1beta1 and v1alpha3 only. Stored objects stay as they are."""
        with self.store.lock:
            overrides = {r.group: r.versions for r in self.catalog.resources
                         if r.group and r.versions != kr.groups()[r.group]}
            if versions is None:
                overrides.pop(group, None)
            else:
                overrides[group] = tuple(versions)
            self.catalog.set_versions(overrides)

    def set_access(self, rules: list[Rule] | None, *, user: str = DEFAULT_USER) -> None:
        """Let ``user`` do only what ``rules`` grant (RBAC PolicyRules; a rule with the extra key
        ``namespace`` grants in that namespace only); None lets ``user`` do everything again."""
        self.access.set(user, rules)

    # --- request handling ----------------------------------------------------------------------

    def handle(self, method: str, target: str, content_type: str,
               raw: bytes, impersonate: str | None = None,
               user_agent: str = "") -> tuple[int, Obj, dict[str, str]]:
        """Status code, JSON body and extra headers for one request (``impersonate``: the
        ``Impersonate-User`` header)."""
        url = urlsplit(target)
        path = url.path
        with self.store.lock:
            self.requests.append((method, path))
            failure = next((f for f in self._failures
                            if f.method in ("*", method) and f.pattern.search(path)), None)
            if failure is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.remove(failure)
        if failure is not None:
            return self._injected(failure, method, path)
        try:
            query = parse_qs(url.query, keep_blank_values=True)
            if method in _WRITES and not query.get("fieldManager"):
                # The API server's default: the client's User-Agent up to its first '/'.
                query["fieldManager"] = [user_agent.split("/", 1)[0][:128] or "unknown"]
            user = DEFAULT_USER
            if impersonate:
                if not self.access.may_impersonate(DEFAULT_USER, impersonate):
                    raise ApiError(403, "Forbidden", impersonation_refused(DEFAULT_USER, impersonate))
                user = impersonate
            code, doc = self._route(method, path, query, content_type, raw, user)
            return code, doc, {}
        except ApiError as exc:
            return exc.code, exc.status, {}

    @staticmethod
    def _injected(failure: _Failure, method: str, path: str) -> tuple[int, Obj, dict[str, str]]:
        # As the API server does when it sheds load; urllib3 honours it by retrying.
        headers = {"Retry-After": "1"} if failure.status == 429 else {}
        if failure.body is not None:
            return failure.status, failure.body, headers
        error = ApiError(failure.status, _REASONS.get(failure.status, "Unknown"),
                         f"injected failure: HTTP {failure.status} for {method} {path}",
                         {"retryAfterSeconds": 1} if headers else None)
        return failure.status, error.status, headers

    def _route(self, method: str, path: str, query: dict[str, list[str]], content_type: str,
               raw: bytes, user: str = DEFAULT_USER) -> tuple[int, Obj]:
        catalog = self.catalog
        segs = [unquote(s) for s in path.split("/") if s]
        if segs == ["version"]:
            return self._discovery(method, dict(kr.VERSION_INFO))
        if segs[:1] == ["api"]:
            group, rest = "", segs[1:]
            if not rest:
                return self._discovery(method, {"kind": "APIVersions", "versions": ["v1"],
                                                "serverAddressByClientCIDRs": [
                                                    {"clientCIDR": "0.0.0.0/0", "serverAddress":
                                                     f"{self.host}:{self.port}"}]})
        elif segs[:1] == ["apis"]:
            if len(segs) == 1:
                return self._discovery(method, catalog.api_group_list())
            group, rest = segs[1], segs[2:]
            if group not in catalog.groups() or not group:
                raise _no_such_path()
            if not rest:
                return self._discovery(method, catalog.api_group(group))
        else:
            raise _no_such_path()
        version, rest = rest[0], rest[1:]
        if version not in catalog.groups().get(group, ()):
            raise _no_such_path()
        if not rest:
            listing = catalog.api_resource_list(group, version)
            if listing is None:
                raise _no_such_path()
            return self._discovery(method, listing)
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 2:
            raise _no_such_path()  # subresources are not served
        res = catalog.find(group, version, rest[0])
        name = rest[1] if len(rest) == 2 else None
        if res is None or (namespace is not None and not res.namespaced) or (
                res.namespaced and namespace is None and name is not None):
            raise _no_such_path()
        if res.kind in kr.REVIEWS:
            if method != "POST" or name is not None:
                raise _method_not_allowed(method)
            return self._review(user, res, version, _parse(raw))
        verb = verb_of(method, name is not None)
        if not self.access.allows(user, verb, res.group, res.plural, namespace, name):
            raise ApiError(403, "Forbidden", forbidden_message(user, verb, res, namespace, name),
                           {"name": name or "", **({"group": res.group} if res.group else {}),
                            "kind": res.plural})
        return self._resource(method, res, version, namespace, name, query, content_type, raw, path)

    def _review(self, user: str, res: kr.Resource, version: str, body: Any) -> tuple[int, Obj]:
        """A SelfSubjectAccessReview answered from the rules set for ``user`` (anyone may ask)."""
        if not isinstance(body, dict) or body.get("kind") not in (None, res.kind):
            raise bad_request(f"the body must be a {res.kind}")
        spec = body.get("spec")
        attrs = spec.get("resourceAttributes") if isinstance(spec, dict) else None
        if not isinstance(spec, dict) or (attrs is None) == (spec.get("nonResourceAttributes") is None):
            raise ApiError(422, "Invalid", f'{res.qualified_kind} "" is invalid: spec.resourceAttributes: '
                           "Invalid value: \"null\": exactly one of nonResourceAttributes or "
                           "resourceAttributes must be specified")
        if attrs is None:
            allowed = self.access.allows(user, str(spec["nonResourceAttributes"].get("verb", "")),
                                         "", str(spec["nonResourceAttributes"].get("path", "")))
            reason = ""
        else:
            resource = str(attrs.get("resource") or "")
            if attrs.get("subresource"):
                resource += "/" + str(attrs["subresource"])
            verb = str(attrs.get("verb") or "")
            if not verb:
                raise ApiError(422, "Invalid", f'{res.qualified_kind} "" is invalid: '
                               "spec.resourceAttributes.verb: Required value")
            allowed = self.access.allows(user, verb, str(attrs.get("group") or ""), resource,
                                         attrs.get("namespace") or None, attrs.get("name") or None)
            reason = "" if allowed else f"no RBAC rule of the Lamia emulator lets {user} {verb} {resource}"
        status: Obj = {"allowed": allowed}
        if reason:
            status["reason"] = reason
        return 201, {"kind": res.kind, "apiVersion": res.api_version(version),
                     "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}

    @staticmethod
    def _discovery(method: str, doc: Obj) -> tuple[int, Obj]:
        if method != "GET":
            raise _method_not_allowed(method)
        return 200, doc

    def _resource(self, method: str, res: kr.Resource, version: str, namespace: str | None, name: str | None,
                  query: dict[str, list[str]], content_type: str, raw: bytes, path: str) -> tuple[int, Obj]:
        def arg(key: str) -> str:
            return query.get(key, [""])[-1]

        if arg("watch") in ("true", "1"):
            raise ApiError(405, "MethodNotAllowed", "watch is not supported by the Lamia Kubernetes emulator")
        if arg("dryRun") not in ("", "All"):
            raise bad_request(f"invalid dry run option {arg('dryRun')!r}: only 'All' is supported")
        dry_run = arg("dryRun") == "All"
        store = self.store
        if method == "GET":
            if name is not None:
                return 200, store.read(res, version, namespace, name)
            try:
                labels = parse_label_selector(arg("labelSelector"))
                fields = parse_field_selector(arg("fieldSelector"))
            except ValueError as exc:
                raise bad_request(str(exc)) from None
            return 200, store.list(res, version, namespace,
                                   lambda o: labels(o["metadata"].get("labels") or {}) and fields(o))
        if method not in _WRITES or (name is None) != (method == "POST") or (
                method == "POST" and res.namespaced and namespace is None):
            raise _method_not_allowed(method)
        media = content_type.split(";")[0].strip().lower()
        if method == "PATCH":
            _check_patch_type(res, media)
        elif media and "json" not in media:
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format "
                           f"({media}): the Lamia Kubernetes emulator accepts application/json")
        body = _parse(raw)
        if body is None and method != "DELETE":
            raise bad_request(f"the {method} request has no body")
        hook = self._hook
        if hook is not None:
            try:
                hook(method, path, body)
            except Exception as exc:
                log.exception("before_write hook failed on %s %s", method, path)
                raise ApiError(500, "InternalError", f"the before_write hook failed: {exc!r}") from None
        manager = arg("fieldManager")
        if method == "POST":
            return 201, store.create(res, version, namespace, body, dry_run=dry_run, manager=manager)
        assert name is not None
        if method == "PUT":
            return 200, store.update(res, version, namespace, name, body, dry_run=dry_run, manager=manager)
        if method == "PATCH":
            return 200, store.patch(res, version, namespace, name, media, body, dry_run=dry_run,
                                    manager=manager)
        return 200, store.delete(res, version, namespace, name, body, dry_run=dry_run)


def _no_such_path() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource")


def _method_not_allowed(method: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested "
                    f"resource ({method})")


def _check_patch_type(res: kr.Resource, media: str) -> None:
    accepted = [JSON_PATCH, MERGE_PATCH] + ([] if res.custom else [STRATEGIC_PATCH])
    if media in accepted:
        return
    if media == "application/apply-patch+yaml":
        raise ApiError(415, "UnsupportedMediaType",
                       "server-side apply (application/apply-patch+yaml) is not implemented by the Lamia "
                       "Kubernetes emulator")
    raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted "
                   f"media types include: {', '.join([*accepted, 'application/apply-patch+yaml'])}")


def _parse(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    emulator: KubeEmulator

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._conn_lock:
            (self._connections.add if alive else self._connections.discard)(conn)

    def shutdown(self) -> None:
        super().shutdown()
        self.close_connections()

    def close_connections(self) -> None:
        """Drop kept-alive client connections so that their handler threads end with the server."""
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 60  # an idle kept-alive connection is let go after this
    # Headers and body go out in two writes; without this, Nagle and delayed ACKs add 40 ms a request.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        try:
            super().finish()
        except OSError:
            pass

    def _serve(self) -> None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raw = b""
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                raw += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()  # the blank line after the last chunk (trailers are not expected)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length > 0 else b""
        try:
            code, doc, headers = self.server.emulator.handle(
                self.command, self.path, self.headers.get("Content-Type", ""), raw,
                self.headers.get("Impersonate-User"), self.headers.get("User-Agent", ""))
        except Exception as exc:  # a bug here must still answer, or the client hangs
            log.exception("kube emulator failed on %s %s", self.command, self.path)
            code, doc, headers = 500, ApiError(500, "InternalError", f"emulator error: {exc!r}").status, {}
        data = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def main(argv: list[str] | None = None) -> int:
    from lamia_sandbox.seed import seed_application

    parser = argparse.ArgumentParser(prog="python -m lamia_sandbox.kube_emulator",
                                     description="Serve the Lamia Kubernetes emulator until SIGTERM/SIGINT.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    parser.add_argument("--seed-app", action="append", default=[], metavar="NS:APP:V1,V2",
                        help="create a namespace, Service and one Deployment per version (repeatable)")
    parser.add_argument("--kubeconfig", type=Path, help="write a kubeconfig pointing at the emulator here")
    parser.add_argument("--context", default="lamia-emulator")
    args = parser.parse_args(argv)
    seeds = []
    for spec in args.seed_app:
        parts = spec.split(":")
        versions = [v for v in parts[-1].split(",") if v] if len(parts) == 3 else []
        if len(parts) != 3 or not parts[0] or not parts[1] or not versions:
            parser.error(f"--seed-app {spec!r}: expected NAMESPACE:APP:VERSION[,VERSION...], "
                         "e.g. shop:cart:v1,v2")
        seeds.append((parts[0], parts[1], versions))
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    emulator = KubeEmulator(args.host, args.port).start()
    try:
        for namespace, app, versions in seeds:
            try:
                seed_application(emulator, namespace, app, versions)
            except ValueError as exc:
                print(f"kube_emulator: error: --seed-app {namespace}:{app}: {exc}", file=sys.stderr)
                return 2
        if args.kubeconfig:
            emulator.write_kubeconfig(args.kubeconfig, context=args.context)
        print(f"Kubernetes emulator serving {emulator.url}"
              + (f" (kubeconfig {args.kubeconfig})" if args.kubeconfig else ""), flush=True)
        stopping.wait()
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
