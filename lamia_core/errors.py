"""Lamia's one error hierarchy.

Every failure that Lamia reports derives from :class:`LamiaError`. The split
that matters to callers is whether trying again can help::

    LamiaError
    ├── PermanentError            trying again gives the same answer
    │   ├── InvalidInput          the user's input is wrong
    │   │   ├── LanguageError     a condition or expression with line and column
    │   │   └── WeightsError      weights that are not integers 0..100 summing to 100
    │   ├── NotFound              the object asked for does not exist
    │   ├── MissingLabels         Deployments lack a label Lamia needs
    │   ├── Forbidden             the cluster refuses us (RBAC)
    │   ├── QueryError            Prometheus rejected a query as malformed
    │   └── ReleaseLocked         another release of the same app is running
    ├── ConflictError             another writer won a resourceVersion race; a
    │                             fresh read and re-applied change may succeed,
    │                             which the adapter does a bounded number of times
    ├── ForeignChange             another writer changed what a release wrote (its
    │                             route's weights, the route, its lease): writing
    │                             again would undo a person's or a controller's
    │                             decision, so the release stops and leaves it
    └── TemporaryError            the world may be different in a moment
        ├── Unreachable           connection refused, DNS, TLS handshake
        ├── Timeout               no answer in time
        └── ServerError           5xx from the cluster, Prometheus or Slack
            └── BadAnswer         an answer that is not what was asked for (a proxy's
                                  HTML page, a cut-off body, a wrong JSON shape)

Retrying code needs exactly one line: ``retry if isinstance(exc, TemporaryError)``.
An error from a service carries what a caller may want to act on besides the
message: the HTTP ``status`` (None without an answer), the ``server`` asked and
the ``subject`` (the object or the query); the cause stays chained (``from exc``).
Conflicts are their own kind because retrying them blindly would overwrite
another writer; only the code that knows how to re-apply its change retries them.
"""

from __future__ import annotations

from typing import TypedDict


class About(TypedDict, total=False):
    """What an error from a service is about, as keyword arguments of any :class:`LamiaError`."""

    status: int | None
    server: str | None
    subject: str | None


class LamiaError(Exception):
    """Base of every error Lamia raises on purpose."""

    def __init__(self, message: str, *, status: int | None = None, server: str | None = None,
                 subject: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.server = server
        self.subject = subject

    def __str__(self) -> str:
        return self.message


class PermanentError(LamiaError):
    """Trying again will not help."""



class InvalidInput(PermanentError):
    """The user's input is wrong; nothing was changed."""


class LanguageError(InvalidInput):
    """A syntax or semantic error in a condition or expression, with its position.

    ``line`` and ``column`` are 1-based. ``str()`` gives the message followed by
    the offending line and a caret under the column, so a CLI can print it as is.
    """

    def __init__(
        self,
        message: str,
        *,
        text: str,
        line: int,
        column: int,
        expected: list[str] | None = None,
        language: str = "input",
    ) -> None:
        self.reason = message
        self.text = text
        self.line = line
        self.column = column
        self.expected = sorted(set(expected or []))
        self.language = language
        super().__init__(self._format())

    def _format(self) -> str:
        lines = self.text.split("\n")
        idx = min(max(self.line, 1), len(lines)) - 1
        src, offset = _excerpt(lines[idx], max(self.column - 1, 0))
        caret = " " * offset + "^"
        head = f"{self.language} error at line {self.line}, column {self.column}: {self.reason}"
        if self.expected:
            head += "; expected one of: " + ", ".join(self.expected)
        return f"{_escaped(head)}\n  {src}\n  {caret}"


#: Longest source line shown under a LanguageError; a longer one is cut around the column.
_SHOWN = 200


def _shown_char(c: str) -> str:
    # One column per character, so the caret stays under its character; nothing that would
    # move the terminal's cursor or fail to encode (lone surrogates) reaches stderr.
    if c.isprintable():
        return c
    return " " if c.isspace() else "\ufffd"


def _escaped(text: str) -> str:
    # The message quotes user text, which must not break it over lines (U+2028) or into pieces.
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _excerpt(src: str, offset: int) -> tuple[str, int]:
    """The part of ``src`` to show around ``offset`` and the caret's offset in it."""
    if len(src) > _SHOWN:
        start = min(max(offset - _SHOWN // 2, 0), max(len(src) - _SHOWN, 0))
        end = start + _SHOWN
        head, tail = ("..." if start else ""), ("..." if end < len(src) else "")
        src, offset = head + src[start:end] + tail, offset - start + len(head)
    return "".join(_shown_char(c) for c in src), offset


class WeightsError(InvalidInput):
    """Weights are not integers 0..100 per version summing to exactly 100."""


class NotFound(PermanentError):
    """The object (namespace, Deployment, VirtualService, version...) does not exist."""


class MissingLabels(PermanentError):
    """Deployments of an app lack the labels Lamia relies on."""


class Forbidden(PermanentError):
    """The server refused the request for lack of permission."""


class QueryError(PermanentError):
    """Prometheus rejected a query (bad PromQL); retrying gives the same answer."""


class ReleaseLocked(PermanentError):
    """Another release of the same application holds the lock."""


class ConflictError(LamiaError):
    """A write lost an optimistic-concurrency race (HTTP 409) too many times."""



class ForeignChange(LamiaError):
    """Another writer changed a release's route (weights or presence) or its lease since Lamia wrote it.

    Carries what Lamia expected and what it found (None: the route is gone),
    and who wrote, as far as the object tells (managedFields, annotations).
    """


    def __init__(
        self,
        message: str,
        *,
        route: str,
        expected: dict[str, int] | None = None,
        found: dict[str, int] | None = None,
        writer: str | None = None,
    ) -> None:
        super().__init__(message)
        self.route = route
        self.expected = expected
        self.found = found
        self.writer = writer


class TemporaryError(LamiaError):
    """The failure may go away: worth retrying with backoff."""



class Unreachable(TemporaryError):
    """The server could not be reached (refused, DNS, TLS)."""


class Timeout(TemporaryError):
    """The server did not answer in time."""


class ServerError(TemporaryError):
    """The server answered 5xx (or 429)."""


class BadAnswer(ServerError):
    """The server answered, but with something that is not an answer to the question (a proxy's
    page, a cut-off body, JSON of another shape): temporary, like an outage."""


def is_temporary(exc: BaseException) -> bool:
    """The one retry condition used by every task."""
    return isinstance(exc, TemporaryError)
