"""Flow parameters as pydantic models, so the Prefect UI renders them as forms.

What the Prefect UI's form (its custom-run page) does with a JSON schema, and so
what the schemas here are shaped for:

- it orders an object's fields by their ``position``, else as listed: the
  fields a person fills in first come first (:func:`form`);
- it offers an ``anyOf`` as a choice (one button per option, named by its
  ``title``) and shows the chosen option's fields, but renders a ``oneOf`` (what
  pydantic writes for a discriminated union) as a raw JSON box: the policy's
  schema is an ``anyOf`` of its kinds, named ``compare``, ``time``...
  (validation stays pydantic's discriminated union on ``kind``);
- it renders descriptions as Markdown: examples are code spans, so that
  ``.*`` and ``<route>`` show as written.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, SecretStr, WithJsonSchema, model_validator

from lamia_core.kube import KubeConfig
from lamia_core.models import AppName, NamespaceName, RouteName, ServiceName, VersionName
from lamia_core.policies import ComparePolicy, Policy
from lamia_core.prometheus import PrometheusConfig
from lamia_core.slack import SlackConfig


def _markdown_text(text: str) -> str:
    """Plain text as Markdown that shows it as written: characters Markdown would take as emphasis
    or HTML are escaped, outside code spans."""
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(p if p.startswith("`") else re.sub(r"([\\*_<>\[\]])", r"\\\1", p) for p in parts)


def form(*first: str) -> Callable[[dict[str, Any]], None]:
    """A ``json_schema_extra`` that lists the fields ``first`` before the others (which keep their
    order, so fields added later come after them) and gives every field its ``position``."""

    def shape(schema: dict[str, Any]) -> None:
        props: dict[str, Any] = schema.get("properties", {})
        order = [name for name in first if name in props] + [name for name in props if name not in first]
        schema["properties"] = {name: {**props[name], "position": i} for i, name in enumerate(order)}

    return shape


def _policy_choice() -> dict[str, Any]:
    """The policy's schema as the form's choice of kinds, the default (compare) first: each kind's
    fields inline under its name, its summary (the first paragraph of its docstring) as description."""
    union = typing.get_args(typing.get_args(Policy)[0])
    kinds = sorted(union, key=lambda cls: cls is not ComparePolicy)
    options = []
    for cls in kinds:
        schema = cls.model_json_schema()
        summary = (cls.__doc__ or "").strip().split("\n\n")[0]
        props = {name: {**prop, "description": _markdown_text(prop["description"])} if "description" in prop
                 else prop for name, prop in schema["properties"].items()}
        options.append({**schema, "title": schema["properties"]["kind"]["const"],
                        "description": _markdown_text(" ".join(summary.split())), "properties": props})
    return {"anyOf": options, "title": "Policy"}


class SlackSettings(BaseModel):
    """Where release notifications go. The token or webhook comes from a Prefect Secret
    block when named, else from the environment, so no secret is stored in a parameter."""

    model_config = ConfigDict(extra="forbid")

    channel: str | None = Field(None, description="Channel for a bot token, e.g. #releases")
    token_secret_block: str | None = Field(
        None, description="Name of a Prefect Secret block holding the bot token (xoxb-...)"
    )
    token_env: str = Field("SLACK_BOT_TOKEN", description="Environment variable with the bot token")
    webhook_secret_block: str | None = Field(
        None, description="Name of a Prefect Secret block holding an incoming-webhook URL"
    )
    webhook_env: str = Field("SLACK_WEBHOOK_URL", description="Environment variable with a webhook URL")
    base_url: str | None = Field(None, description="Slack API base URL (only to point at a test server)")
    notify_steps: bool = Field(True, description="Post each weight change in the release's thread")

    def resolve(self) -> SlackConfig | None:
        """The notifier's config, or None when no credential can be found (then nothing is posted)."""
        token = _secret(self.token_secret_block) or os.environ.get(self.token_env)
        webhook = _secret(self.webhook_secret_block) or os.environ.get(self.webhook_env)
        if token and self.channel:
            return SlackConfig(
                token=SecretStr(token),
                channel=self.channel,
                base_url=self.base_url,
                notify_steps=self.notify_steps,
            )
        if webhook:
            return SlackConfig(
                webhook_url=SecretStr(webhook), base_url=self.base_url, notify_steps=self.notify_steps
            )
        return None


def _secret(block_name: str | None) -> str | None:
    if not block_name:
        return None
    from prefect.blocks.system import Secret

    block = cast("Secret[Any]", Secret.load(block_name))
    value = block.get()
    return str(value) if value else None


class Target(BaseModel):
    """The application and the cluster it runs on."""

    namespace: NamespaceName = Field(description="Namespace (virtual cluster) of the application")
    app: AppName = Field(description="Value of the `app` label shared by the application's Deployments")
    service: ServiceName | None = Field(
        None,
        description="The Service in front of the application, when several select its pods (e.g. Argo "
        "Rollouts' stable and canary Services); empty: the only one, or the one named like the app",
    )
    cluster: str | None = Field(
        None, pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="A saved cluster (`lamia cluster add`, a Lamia Cluster block) to run on, e.g. prod-eu; "
        "empty: `kubernetes` below says how to reach the cluster",
    )
    kubernetes: KubeConfig = Field(default_factory=KubeConfig, description="How to reach the cluster")
    slack: SlackSettings | None = Field(None, description="Slack notifications (none when empty)")

    @model_validator(mode="after")
    def _one_way_to_the_cluster(self) -> Target:
        k = self.kubernetes
        # A config resolved from the cluster itself carries its name: that is no second way.
        if self.cluster is not None and k.name != self.cluster and (
                k.kubeconfig or k.context or k.in_cluster or k.config_data is not None):
            raise ValueError(f"cluster {self.cluster!r} and kubernetes ({k.label}) both say which cluster "
                             "to use: give one")
        return self


class ReleaseParameters(Target):
    """A canary release of `target` against `baseline`."""

    model_config = ConfigDict(json_schema_extra=form(
        "baseline", "target", "namespace", "app", "policy", "condition", "prometheus", "approval",
        "approval_timeout_seconds", "cluster", "service", "kubernetes", "slack"))

    baseline: VersionName = Field(
        description="Version serving traffic now; it gets everything back on rollback")
    target: VersionName = Field(description="Version to release")
    policy: Annotated[Policy, WithJsonSchema(_policy_choice())] = Field(
        default_factory=ComparePolicy,
        description="How weight moves, and when to roll back; default: compare the target with the baseline",
    )
    condition: str | None = Field(
        None,
        description='Only requests matching this condition take part, e.g. `header "User-Agent" regex '
        '"^.*(Chrome).*$"`; everyone else stays on the baseline',
    )
    prometheus: PrometheusConfig = Field(
        default_factory=lambda: PrometheusConfig(
            url=os.environ.get("LAMIA_PROMETHEUS_URL", "http://prometheus:9090")
        ),
        description="The Prometheus that scrapes Istio's metrics",
    )
    on_worker_loss: Literal["rollback", "resume"] = Field(
        "rollback",
        description="When the process running the release dies: 'rollback' puts the baseline back; "
        "'resume' starts a new run of the deployment that continues from the last step",
    )
    worker_loss_timeout: float | None = Field(
        None, ge=1,
        description="Seconds without a heartbeat after which the release's process counts as dead; "
        "empty: three intervals, at least 30 s",
    )
    approval: bool = Field(
        False, description="Wait for a person's approval before the target goes past the approval weight")
    approval_at: int | None = Field(
        None, ge=1, le=100,
        description="The target's weight at which the release waits for approval, checks going on; empty: "
        "the step before the last (max weight, or 100 minus one step when max weight is 100)")
    approval_timeout_seconds: int = Field(3600, ge=1, description="Roll back when nobody approves in time")

    @property
    def run_name(self) -> str:
        """The flow run's name: ``reviews v1→v2``."""
        return f"{self.app} {self.baseline}→{self.target}"

    def with_scrape_interval(self, seconds: float) -> ReleaseParameters:
        """These parameters with the policy's scrape interval set to ``seconds``, as Prometheus reports it."""
        policy = type(self.policy).model_validate({**self.policy.model_dump(), "scrape_interval": seconds})
        return self.model_copy(update={"policy": policy})

    def approval_weight(self) -> int:
        """Where the release waits for approval: ``approval_at``, else the step before the last."""
        if self.approval_at is not None:
            return self.approval_at
        policy = self.policy
        return policy.max_weight if policy.max_weight < 100 else max(0, 100 - policy.step)


class WeightsParameters(Target):
    """Set a route's weights by hand (manual canary)."""

    model_config = ConfigDict(json_schema_extra=form("namespace", "app", "weights", "route"))

    weights: dict[str, int] = Field(description="Weight per version, integers summing to 100, e.g. "
                                    '`{"v1": 90, "v2": 10}`')
    route: RouteName = Field("default", description="Route whose weights to set")

    @property
    def run_name(self) -> str:
        """``reviews weights v1=90 v2=10`` (``reviews weights canary: ...`` on another route)."""
        route = "" if self.route == "default" else f"{self.route}: "
        return f"{self.app} weights {route}{_weights(self.weights)}"


class RouteParameters(Target):
    """Route the requests matching a condition by their own weights."""

    model_config = ConfigDict(json_schema_extra=form("namespace", "app", "condition", "weights", "route"))

    condition: str = Field(description='Which requests, e.g. `header "User-Agent" regex "^.*(Chrome).*$"`')
    weights: dict[str, int] = Field(
        description='Weights for the matching requests, e.g. `{"v1": 50, "v2": 50}`')
    route: RouteName = Field("condition", description="Name of the route (Lamia names it `lamia-<route>`)")

    @property
    def run_name(self) -> str:
        """``reviews route condition: v1=50 v2=50``."""
        return f"{self.app} route {self.route}: {_weights(self.weights)}"


def _weights(weights: dict[str, int]) -> str:
    return " ".join(f"{v}={w}" for v, w in weights.items())
