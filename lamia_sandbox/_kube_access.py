"""Who may do what on the emulator: RBAC rules per user, the checks the API server makes.

Rules are RBAC ``PolicyRule`` dicts (``apiGroups``, ``resources``, ``verbs``,
optionally ``resourceNames``), each granted cluster-wide (a ClusterRoleBinding)
or, with the emulator's extra key ``namespace``, in one namespace (a
RoleBinding). A user with no rules set may do everything, as the emulator did
before it knew about access; a user with rules may do only what they grant.

The requester is :data:`DEFAULT_USER` unless the request impersonates another
(``Impersonate-User``), which the requester must be allowed to do (verb
``impersonate`` on ``users``, or on ``serviceaccounts`` for a service account's
user name), as with ``kubectl --as``.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from typing import Any

from lamia_sandbox._kube_resources import Resource

#: The user of requests that impersonate nobody: the emulator checks no credentials.
DEFAULT_USER = "lamia-emulator"

Rule = dict[str, Any]
_SA_PREFIX = "system:serviceaccount:"


def _covers(values: Any, value: str) -> bool:
    return isinstance(values, list) and ("*" in values or value in values)


def rule_allows(rule: Mapping[str, Any], verb: str, group: str, resource: str, namespace: str | None,
                name: str | None) -> bool:
    """Whether one rule grants ``verb`` on ``group``/``resource`` (``resource/subresource`` too)."""
    scope = rule.get("namespace")
    if scope is not None and scope != namespace:
        return False
    if not (_covers(rule.get("verbs"), verb) and _covers(rule.get("apiGroups"), group)
            and _covers(rule.get("resources"), resource)):
        return False
    names = rule.get("resourceNames")
    return not names or (name is not None and name in names)


def check_rule(rule: Any) -> Rule:
    if not isinstance(rule, dict):
        raise ValueError(f"an access rule is a dict like an RBAC PolicyRule, got {rule!r}")
    for key in ("apiGroups", "resources", "verbs"):
        if not isinstance(rule.get(key), list) or not all(isinstance(v, str) for v in rule[key]):
            raise ValueError(f"access rule {rule!r} needs {key} as a list of strings")
    unknown = set(rule) - {"apiGroups", "resources", "verbs", "resourceNames", "namespace"}
    if unknown:
        raise ValueError(f"access rule {rule!r} has unknown keys {sorted(unknown)}")
    return copy.deepcopy(rule)


class AccessRules:
    """Rules per user; thread-safe, since requests are served from many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: dict[str, list[Rule]] = {}

    def set(self, user: str, rules: list[Rule] | None) -> None:
        checked = None if rules is None else [check_rule(r) for r in rules]
        with self._lock:
            if checked is None:
                self._rules.pop(user, None)
            else:
                self._rules[user] = checked

    def allows(self, user: str, verb: str, group: str, resource: str, namespace: str | None = None,
               name: str | None = None) -> bool:
        with self._lock:
            rules = self._rules.get(user)
        if rules is None:
            return True
        return any(rule_allows(r, verb, group, resource, namespace, name) for r in rules)

    def may_impersonate(self, requester: str, user: str) -> bool:
        resource, namespace, name = _impersonated(user)
        return self.allows(requester, "impersonate", "", resource, namespace, name)


def _impersonated(user: str) -> tuple[str, str | None, str]:
    """What impersonating ``user`` is checked against: (resource, namespace, name)."""
    if user.startswith(_SA_PREFIX) and user.count(":") == 3:
        namespace, name = user[len(_SA_PREFIX):].split(":")
        return "serviceaccounts", namespace, name
    return "users", None, user


def impersonation_refused(requester: str, user: str) -> str:
    resource, namespace, name = _impersonated(user)
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    return (f'{resource} "{name}" is forbidden: User "{requester}" cannot impersonate resource '
            f'"{resource}" in API group ""{where}')


def verb_of(method: str, named: bool) -> str:
    """The RBAC verb of a request: GET of one object is get, of a collection list, and so on."""
    return {"GET": "get" if named else "list", "POST": "create", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete" if named else "deletecollection"}.get(method, method.lower())


def forbidden_message(user: str, verb: str, res: Resource, namespace: str | None, name: str | None) -> str:
    """The API server's words for a request RBAC refuses."""
    what = f'{res.qualified} "{name}"' if name else res.qualified
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    return (f'{what} is forbidden: User "{user}" cannot {verb} resource "{res.plural}" in API group '
            f'"{res.group}"{where}')
