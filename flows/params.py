"""Flow parameters as pydantic models, so the Prefect UI renders them as forms."""

from __future__ import annotations

import os
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from lamia_core.kube import KubeConfig
from lamia_core.models import AppName, NamespaceName, RouteName, ServiceName, VersionName
from lamia_core.policies import ComparePolicy, Policy
from lamia_core.prometheus import PrometheusConfig
from lamia_core.slack import SlackConfig


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

    baseline: VersionName = Field(
        description="Version serving traffic now; it gets everything back on rollback")
    target: VersionName = Field(description="Version to release")
    policy: Policy = Field(
        default_factory=ComparePolicy,
        description="How weight moves, and when to roll back; default: compare the target with the baseline",
    )
    condition: str | None = Field(
        None,
        description='Only requests matching this condition take part, e.g. header "User-Agent" regex '
        '"^.*(Chrome).*$"; everyone else stays on the baseline',
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

    def approval_weight(self) -> int:
        """Where the release waits for approval: ``approval_at``, else the step before the last."""
        if self.approval_at is not None:
            return self.approval_at
        policy = self.policy
        return policy.max_weight if policy.max_weight < 100 else max(0, 100 - policy.step)


class WeightsParameters(Target):
    """Set a route's weights by hand (manual canary)."""

    weights: dict[str, int] = Field(description="Weight per version, integers summing to 100")
    route: RouteName = Field("default", description="Route whose weights to set")


class RouteParameters(Target):
    """Route the requests matching a condition by their own weights."""

    condition: str = Field(description='e.g. header "User-Agent" regex "^.*(Chrome).*$"')
    weights: dict[str, int] = Field(description="Weights for the matching requests")
    route: RouteName = Field("condition", description="Name of the route (Lamia names it lamia-<route>)")
