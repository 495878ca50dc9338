"""Prometheus adapter: instant queries through prometheus-api-client, with Lamia's errors.

prometheus-api-client turns every non-200 answer into one exception carrying
only a message, and by default retries 5xx and refused connections itself
(three times, with backoff). Here it gets a session that does not retry (the
tasks layer retries, with its own policy) and a response hook that classifies a
failed answer from its status code and Prometheus' ``errorType`` before the
client sees it. Every error names the URL and the query.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Collection, Mapping
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from urllib3.util.retry import Retry

from lamia_core.errors import (
    About,
    BadAnswer,
    Forbidden,
    InvalidInput,
    LamiaError,
    NotFound,
    QueryError,
    ServerError,
    Timeout,
    Unreachable,
)
from lamia_core.judge import CounterReading
from lamia_core.metrics import (
    DESTINATION_VERSION_LABEL,
    SCRAPE_TARGET_LABELS,
    TOTAL,
    build_query,
    check_window,
    combine,
    counter_queries,
    sample_value,
    samples_query,
)

T = TypeVar("T")


class PrometheusConfig(BaseModel):
    """Where Prometheus is and how to talk to it. ``bearer_token`` becomes an Authorization header."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    timeout: float = Field(default=10.0, gt=0)
    headers: dict[str, str] = {}
    verify_tls: bool = True
    ca_file: str | None = None
    bearer_token: SecretStr | None = Field(
        default=None, description="Bearer token for a Prometheus behind authentication; stored as a secret "
        "(shown obfuscated by the Prefect UI and API)")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidInput(f"Prometheus URL {v!r} must be http:// or https:// with a host")
        return v.strip().rstrip("/")


class _HTTPFailure(Exception):
    """Raised by the response hook so the status and body reach us unmangled."""

    def __init__(self, response: requests.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _fail_on_error_status(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
    if response.status_code >= 400:
        raise _HTTPFailure(response)
    return response


def _root_cause(exc: BaseException) -> str:
    """The operating system's reason behind a requests error ("Connection refused"), else the error.

    requests' own text starts with "Max retries exceeded", which misleads: nothing was retried.
    """
    todo: list[object] = [exc]
    seen: set[int] = set()
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.strerror:
            return str(e.strerror)
        todo.extend([e.__cause__, e.__context__, getattr(e, "reason", None), *e.args[:1]])
    return str(exc)


def _sample(value: object, limit: int = 120) -> str:
    """A short, one-line sample of what came back, for the error message."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _prometheus_error(response: requests.Response) -> tuple[str, str]:
    """(errorType, error) from a Prometheus error body, or ("", start of the body)."""
    try:
        body = response.json()
        if isinstance(body, dict) and "error" in body:
            return str(body.get("errorType", "")), str(body["error"])
    except ValueError:
        pass
    return "", response.text[:200].strip()


class PrometheusAdapter:
    """Instant queries and Lamia's metrics of an application, per version."""

    def __init__(self, config: PrometheusConfig) -> None:
        self.config = config
        self.url = config.url
        self.queries = 0
        self._lock = threading.Lock()
        session = requests.Session()
        session.verify = config.ca_file if config.ca_file else config.verify_tls
        session.hooks["response"].append(_fail_on_error_status)
        headers = dict(config.headers)
        if config.bearer_token is not None and config.bearer_token.get_secret_value():
            headers["Authorization"] = f"Bearer {config.bearer_token.get_secret_value()}"
        self._session = session
        self._headers = headers
        self._client = PrometheusConnect(
            url=config.url,
            headers=headers or None,
            # requests' own default: no retry at all, connection errors raise at once.
            retry=Retry(total=0, read=False),
            session=session,
            timeout=config.timeout,  # annotated int there, but passed on to requests, which takes a float
        )

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._client.close()

    # --- raw queries --------------------------------------------------------------------------

    def query(self, promql: str, *, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query (at Unix time ``at``, default now); the result vector as Prometheus returns it."""
        with self._lock:
            self.queries += 1
        params = {"time": f"{at:.3f}"} if at is not None else None
        result = self._call(promql, lambda: self._client.custom_query(promql, params=params))
        if (isinstance(result, list) and len(result) == 2 and isinstance(result[0], int | float)
                and isinstance(result[1], str)):
            # Prometheus' own answer to a query whose result is a scalar or a string: the query's fault.
            raise QueryError(
                f"Prometheus at {self.url} answered query {promql!r} with a scalar or string, "
                "not an instant vector", server=self.url, subject=promql
            )
        if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
            raise BadAnswer(
                f"Prometheus at {self.url} answered something that is not a query result to query "
                f"{promql!r}: {_sample(result)} (an instant vector was expected)",
                server=self.url, subject=promql,
            )
        return result

    def healthy(self) -> bool:
        """Whether Prometheus answers a trivial query (not counted in :attr:`queries`)."""
        try:
            self._call("1", lambda: self._client.custom_query("1"))
        except LamiaError:
            return False
        return True

    def _call(self, promql: str, fn: Callable[[], T]) -> T:
        about: About = {"server": self.url, "subject": promql}
        try:
            return fn()
        except _HTTPFailure as exc:
            self._raise_for_status(promql, exc.response)
        except requests.exceptions.Timeout as exc:
            raise Timeout(
                f"Prometheus at {self.url} did not answer within {self.config.timeout:g}s "
                f"to query {promql!r}", **about
            ) from exc
        except requests.exceptions.SSLError as exc:
            raise Unreachable(
                f"TLS with Prometheus at {self.url} failed for query {promql!r}: {_root_cause(exc)}", **about
            ) from exc
        except requests.exceptions.ConnectionError as exc:
            raise Unreachable(
                f"cannot reach Prometheus at {self.url} for query {promql!r}: {_root_cause(exc)}", **about
            ) from exc
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                requests.exceptions.MissingSchema) as exc:
            raise InvalidInput(f"Prometheus URL {self.url!r} is not usable: {exc}", **about) from exc
        except (requests.exceptions.RequestException, ValueError, KeyError, TypeError,
                PrometheusApiClientException) as exc:
            # A body that is not Prometheus' JSON (a proxy's page, a cut-off answer).
            raise BadAnswer(
                f"Prometheus at {self.url} answered something that is not a query result to query "
                f"{promql!r}: {type(exc).__name__}: {_sample(exc)}", **about
            ) from exc

    def _raise_for_status(self, promql: str, response: requests.Response) -> NoReturn:
        status = response.status_code
        kind, detail = _prometheus_error(response)
        what = f"Prometheus at {self.url} answered HTTP {status}" + (f" ({kind})" if kind else "")
        msg = f"{what} to query {promql!r}: {detail}"
        about: About = {"status": status, "server": self.url, "subject": promql}
        if status in (400, 422):
            # bad_data (syntax) and execution errors: the same query fails the same way.
            raise QueryError(msg, **about)
        if status in (401, 403):
            raise Forbidden(msg, **about)
        if status == 404:
            raise NotFound(f"no Prometheus query API at {self.url} (HTTP 404 for query {promql!r})", **about)
        if status == 408 or kind == "timeout":
            raise Timeout(msg, **about)
        if status == 429 or status >= 500:
            raise ServerError(msg, **about)
        raise QueryError(msg, **about)

    def config_text(self) -> str:
        """Prometheus' configuration as it runs it (``/api/v1/status/config``), defaults filled in."""
        what = "its configuration (/api/v1/status/config)"

        def fetch() -> str:
            response = self._session.get(f"{self.url}/api/v1/status/config", headers=self._headers,
                                         timeout=self.config.timeout)
            return str(response.json()["data"]["yaml"])

        return self._call(what, fetch)

    # --- Lamia's metrics ----------------------------------------------------------------------

    def vector_by_version(
        self, promql: str, *, at: float | None = None
    ) -> tuple[dict[str, float | None], float | None]:
        """(version → value, evaluation time) of a query grouped by ``destination_version``.

        The evaluation time is Prometheus' own, read from the samples; None for an empty result.
        """
        out: dict[str, float | None] = {}
        evaluated_at: float | None = None
        for series in self.query(promql, at=at):
            labels = series.get("metric", {})
            if DESTINATION_VERSION_LABEL not in labels:
                raise QueryError(
                    f"query {promql!r} to Prometheus at {self.url} returned a series without the label "
                    f"{DESTINATION_VERSION_LABEL!r} ({labels}); metric queries must be grouped by it"
                )
            try:
                evaluated_at = float(series["value"][0])
                out[labels[DESTINATION_VERSION_LABEL]] = sample_value(series["value"][1])
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                raise BadAnswer(
                    f"Prometheus at {self.url} answered something that is not a query result to query "
                    f"{promql!r}: a malformed sample {_sample(series)}"
                ) from exc
        return out, evaluated_at

    def query_metrics(
        self,
        namespace: str,
        app: str,
        names: Collection[str],
        *,
        window: str = "1m",
        versions: Collection[str] | None = None,
        raw: Mapping[str, str] | None = None,
    ) -> dict[str, dict[str, float | None]]:
        """version → metric → value over the last ``window``; None means no data, unlike 0.

        ``upstream_rq_total`` is queried first (also when not asked for): it tells
        versions with traffic from versions without, and when no version has any,
        nothing else is queried. Then one query per distinct PromQL (aliases share
        one), all evaluated at the instant Prometheus evaluated the first:
        ``increase()`` extrapolates to that instant, so metrics of the same requests
        agree exactly (``external_upstream_rq_2xx / upstream_rq_total`` is exactly 1
        for a version without errors), however long the queries take.
        """
        check_window(window)
        wanted = list(dict.fromkeys(names))
        promql = {
            n: build_query(n, namespace=namespace, app=app, window=window, raw=raw)
            for n in [TOTAL, *wanted]
        }
        totals, at = self.vector_by_version(promql[TOTAL])
        results: dict[str, dict[str, float | None]] = {promql[TOTAL]: totals}
        for q in dict.fromkeys(promql.values()):
            if q not in results:
                results[q] = self.vector_by_version(q, at=at)[0] if at is not None else {}
        by_name = {n: results[q] for n, q in promql.items()}
        return combine(wanted, by_name, versions=list(versions) if versions is not None else None, raw=raw)

    # --- raw counters (compare policy) --------------------------------------------------------

    def read_counters(self, namespace: str, app: str, versions: Collection[str], *,
                      at: float | None = None) -> CounterReading:
        """Istio's raw counters of ``versions`` per scrape target, all evaluated at one instant
        (``at``, default Prometheus' now): see :func:`lamia_core.metrics.counter_queries`."""
        queries = counter_queries(namespace, app)
        scraped, evaluated = self.vector_by_version(queries["scraped"], at=at)
        at = evaluated if at is None else at
        if at is None:
            return CounterReading()
        wanted = set(versions)
        series: dict[str, dict[str, list[float]]] = {}
        bounds: set[float] = set()
        buckets: dict[tuple[str, str], dict[float, float]] = {}
        for name in ("requests", "errors", "buckets"):
            for row in self.query(queries[name], at=at):
                labels = row.get("metric", {})
                version = labels.get(DESTINATION_VERSION_LABEL)
                if version not in wanted:
                    continue
                group = "|".join(labels.get(k, "") for k in SCRAPE_TARGET_LABELS)
                try:
                    value = float(row["value"][1])
                except (KeyError, IndexError, TypeError, ValueError) as exc:
                    raise BadAnswer(f"Prometheus at {self.url} returned a malformed sample for query "
                                      f"{queries[name]!r}: {row!r}") from exc
                if not math.isfinite(value):
                    continue
                entry = series.setdefault(version, {}).setdefault(group, [0.0, 0.0])
                if name == "requests":
                    entry[0] = value
                elif name == "errors":
                    entry[1] = value
                else:
                    le = float(labels.get("le", "nan"))
                    if math.isfinite(le):
                        bounds.add(le)
                        buckets.setdefault((version, group), {})[le] = value
        order = tuple(sorted(bounds))
        out: dict[str, dict[str, tuple[float, ...]]] = {}
        for version, groups in series.items():
            for group, (n_requests, n_errors) in groups.items():
                counts = buckets.get((version, group), {})
                # A bound a proxy does not report has, cumulatively, what the next one it reports has.
                filled, nxt = [], n_requests
                for le in reversed(order):
                    nxt = counts.get(le, nxt)
                    filled.append(nxt)
                out.setdefault(version, {})[group] = (n_requests, n_errors, *reversed(filled))
        times = [t for v, t in scraped.items() if v in wanted and t is not None]
        return CounterReading(buckets=order, series=out, scraped_at=max(times) if times else None)

    def latest_scrape(self, namespace: str, app: str) -> float | None:
        """Time of the newest sample of ``app``'s request counters (any version); None without one."""
        values, _ = self.vector_by_version(counter_queries(namespace, app)["scraped"])
        times = [t for t in values.values() if t is not None]
        return max(times) if times else None

    def scrape_interval(self, namespace: str, app: str, *, seconds: int = 120) -> float | None:
        """The median spacing of ``app``'s request-counter samples over the last ``seconds``: the real
        scrape interval; None when there are too few samples to tell."""
        gaps: list[float] = []
        for row in self.query(samples_query(namespace, app, seconds)):
            stamps = sorted(float(v[0]) for v in row.get("values", []) if isinstance(v, list) and v)
            gaps.extend(b - a for a, b in itertools.pairwise(stamps) if b > a)
        if len(gaps) < 3:
            return None
        gaps.sort()
        return gaps[len(gaps) // 2]
