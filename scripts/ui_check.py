"""Check what a person sees: the demo's runs as the Prefect UI renders them, in headless Chromium.

Runs the demo (on the Prefect server ``PREFECT_API_URL`` names, else on one it
starts with its UI), then one more release through a deployment (the demo runs
its flows in-process, without one), and while everything is still up drives
Debian's Chromium over the DevTools protocol, as a person would click:

- each release's run page, Artifacts tab, list view: the chart's picture must
  be rendered (an ``<img>`` of the SVG, loaded) next to the summary, and the
  run must have exactly one artifact of each kind;
- each release's chart and summary pages (the summary's last reason whole),
  and its steps table (every row's weights, decision and time);
- the deployment's page, Runs tab (its default filter): the promoted run must
  be listed, under its name, with its outcome tag;
- the deployment's custom-run form, with the policy kinds offered as a choice,
  and the event feed, titled by what happened.

Screenshots go to ``--out`` (default ``screenshots/``): ``run-page.png`` is the
rolled-back release's run page with its chart. Exits 1 when something is
missing, 2 without Chromium.

    .venv/bin/python scripts/ui_check.py [--out screenshots] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.deployments.runner import RunnerDeployment
from prefect.flow_engine import run_flow
from websockets.sync.client import ClientConnection, connect

from flows._history import run_outcome
from flows.demo import APP, GOOD, NAMESPACE, STABLE, DemoSettings, demo_environment, run_scenario
from flows.params import ReleaseParameters
from flows.release import canary_release
from lamia_core.outcome import Outcome

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--remote-debugging-port=0",
)
WIDTH, HEIGHT = 1600, 1300
#: How long the single-page app may take to show something on a busy machine.
RENDER_TIMEOUT = 90.0
#: The release the check runs through a deployment: the demo ends with the stable version serving
#: everything (its last scene routes by condition, then puts the gateway back).
DEPLOYED = (STABLE, GOOD)
CHART_IMG = "Array.from(document.images).filter(i => i.src.startsWith('data:image/svg+xml'))"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Browser:
    """Headless Chromium driven over the DevTools protocol: one page, navigated, read and clicked."""

    def __init__(self, chromium: str) -> None:
        self._profile = tempfile.mkdtemp(prefix="lamia-ui-check-chromium-")
        self._proc = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--window-size={WIDTH},{HEIGHT}", f"--user-data-dir={self._profile}",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self._profile)
        port_file = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self._proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=10) as resp:
            targets = json.load(resp)
        page = next(t for t in targets if t.get("type") == "page")
        self._ws: ClientConnection = connect(page["webSocketDebuggerUrl"], max_size=None)
        self._id = 0
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1,
                  mobile=False)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:  # events arrive in between; only the answer to this call counts
            message = json.loads(self._ws.recv(timeout=120))
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return cast(dict[str, Any], message.get("result", {}))

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", f"{url} to load")

    def wait_for(self, expression: str, what: str, timeout: float = RENDER_TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(f"(() => {{ try {{ return {expression}; }} catch (e) {{ return null; }} }})()")
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(0.25)

    def click_tab(self, label: str) -> None:
        tabs = "Array.from(document.querySelectorAll('li.p-tab'))"
        tab = f"{tabs}.find(t => t.textContent.trim() == {label!r})"
        self.wait_for(f"!!{tab}", f"the {label} tab")
        self.js(f"{tab}.click()")

    def text(self) -> str:
        return str(self.js("document.body.innerText"))

    def screenshot(self, path: Path) -> None:
        # The whole page, however long: the viewport grows to the document for the capture.
        height = int(self.js("document.documentElement.scrollHeight") or 0)
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=max(HEIGHT, min(height, 6000)),
                  deviceScaleFactor=1, mobile=False)
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1,
                  mobile=False)

    def close(self) -> None:
        if hasattr(self, "_ws"):
            self._ws.close()
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)


def artifacts_of(flow_run_id: str) -> dict[str, list[Any]]:
    """A run's artifacts by the last part of their key: summary, chart, steps, progress."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)])))
    by_kind: dict[str, list[Any]] = {}
    for a in found:
        by_kind.setdefault((a.key or "").rsplit("-", 1)[-1], []).append(a)
    return by_kind


def run_through_deployment(env: Any) -> tuple[str, str]:
    """One release triggered from a deployment (as the UI's Run button or CI does), run here: the
    deployment's id and the run's."""
    baseline, target = DEPLOYED
    params = ReleaseParameters(namespace=NAMESPACE, app=APP, baseline=baseline, target=target,
                               policy=DemoSettings().policy(), kubernetes=env.sandbox.kube,
                               prometheus=env.sandbox.prometheus)
    deployment = cast(RunnerDeployment, canary_release.to_deployment(name="ui-check"))
    deployment_id = cast(UUID, deployment.apply())
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run_from_deployment(
            deployment_id, parameters={"params": params.model_dump(mode="json")})
    url = env.run_url(str(flow_run.id))
    say(f"ui-check: release of {target} against {baseline} through a deployment: {url}")
    run_flow(canary_release, flow_run=flow_run, parameters={"params": params}, return_type="state")
    return str(deployment_id), str(flow_run.id)


class Check:
    """Pages to look at and what must be on them; every failure is kept, and said at the end."""

    def __init__(self, browser: Browser, ui: str, out: Path) -> None:
        self.browser, self.ui, self.out = browser, ui, out
        self.failures: list[str] = []

    def page(self, what: str, path: str, shot: str, look: Callable[[], None]) -> None:
        url = f"{self.ui}{path}"
        try:
            self.browser.goto(url)
            look()
            say(f"  ok: {what}")
        except (TimeoutError, AssertionError, RuntimeError) as exc:
            self.failures.append(f"{what} ({url}): {exc}")
            say(f"  FAILED: {what}: {exc}")
        finally:
            with _quiet():
                self.browser.screenshot(self.out / shot)

    def run_page(self, release: dict[str, Any], shot: str) -> None:
        run_id, target = release["flow_run_id"], release["target"]
        found = artifacts_of(run_id)
        counts = {k: len(v) for k, v in found.items()}
        if counts != {"summary": 1, "chart": 1, "steps": 1, "progress": 1}:
            self.failures.append(f"the release of {target} has artifacts {counts}, not one of each kind")

        def look() -> None:
            b = self.browser
            b.click_tab("Artifacts")
            # The list view shows each artifact's description: the chart's is its picture.
            b.wait_for("document.querySelectorAll('.p-button-group button').length >= 2", "the view buttons")
            b.js("Array.from(document.querySelectorAll('.p-button-group button')).at(-1).click()")
            b.wait_for(f"{CHART_IMG}.some(i => i.complete && i.naturalWidth > 0)", "the chart's picture")
            b.wait_for("document.body.innerText.includes('summary')", "the summary's card")

        self.page(f"run page of the release of {target}, with its chart", f"/runs/flow-run/{run_id}", shot,
                  look)

    def artifact(self, what: str, artifact: Any, shot: str, texts: list[str], image: bool = False) -> None:
        def look() -> None:
            b = self.browser
            for text in texts:
                b.wait_for(f"document.body.innerText.replace(/\\s+/g, ' ').includes({json.dumps(text)})",
                           f"{text[:60]!r} on the page")
            if image:
                b.wait_for(f"{CHART_IMG}.some(i => i.complete && i.naturalWidth > 0)", "the chart's picture")

        self.page(what, f"/artifacts/artifact/{artifact.id}", shot, look)


class _quiet:
    """Screenshots are evidence, not checks: a page that broke the browser still fails on its own."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> bool:
        if exc is not None:
            say(f"  (no screenshot: {exc})")
        return exc is not None and not isinstance(exc, KeyboardInterrupt)


def _words(text: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(text)).strip()


def check_release(check: Check, release: dict[str, Any], suffix: str) -> None:
    found = artifacts_of(release["flow_run_id"])
    check.run_page(release, f"run-page{suffix}.png")
    if not found.get("summary") or not found.get("steps") or not found.get("chart"):
        return
    rows = json.loads(found["steps"][0].data)
    last_reason = _words(str(rows[-1]["reason"]))
    check.artifact(f"summary of the release of {release['target']} (last reason whole)", found["summary"][0],
                   f"summary{suffix}.png", [last_reason])
    check.artifact(f"chart of the release of {release['target']}", found["chart"][0], f"chart{suffix}.png",
                   [], image=True)
    cells = list(dict.fromkeys(str(r[k]) for r in rows for k in ("weights", "decision", "time")))
    check.artifact(f"steps table of the release of {release['target']} ({len(rows)} rows)", found["steps"][0],
                   f"steps-table{suffix}.png", cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("screenshots"), help="where screenshots go")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args(argv)
    if not Path(args.chromium).exists():
        say(f"ui-check: error: no chromium at {args.chromium} (apt-get install chromium)")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    with demo_environment(DemoSettings(), say) as env:
        report = run_scenario(env, DemoSettings(), say)
        if not report["ok"]:
            failures.append("the demo went otherwise than expected")
        deployment_id, deployed_run = run_through_deployment(env)
        if run_outcome(deployed_run) is not Outcome.PROMOTED:
            failures.append(f"the release through the deployment ended {run_outcome(deployed_run)}")
        browser = Browser(args.chromium)
        try:
            check = Check(browser, env.ui_url, args.out)
            for release in report["releases"]:
                rolled_back = release["outcome"] == "rolled-back"
                check_release(check, release, "" if rolled_back else f"-{release['target']}")
            deployed_name = f"{APP} {DEPLOYED[0]}→{DEPLOYED[1]}"

            def runs_tab() -> None:
                browser.click_tab("Runs")
                browser.wait_for(f"document.body.innerText.includes({json.dumps(deployed_name)})",
                                 f"the promoted run {deployed_name!r} in the deployment's runs")
                browser.wait_for(f"document.body.innerText.includes({json.dumps(Outcome.PROMOTED.tag)})",
                                 "its outcome tag")

            check.page("the deployment page lists the promoted run under its default filter",
                       f"/deployments/deployment/{deployment_id}", "deployment-runs.png", runs_tab)

            def form() -> None:
                for kind in ("compare", "time", "health", "metric", "custom"):
                    browser.wait_for(f"Array.from(document.querySelectorAll('button')).some("
                                     f"b => b.textContent.trim() === {kind!r})", f"the policy kind {kind!r}")

            check.page("the custom-run form offers the policy kinds as a choice",
                       f"/deployments/deployment/{deployment_id}/run", "custom-run-form.png", form)

            def feed() -> None:
                browser.wait_for("document.body.innerText.includes('Lamia release weights shifted')",
                                 "an event titled for what happened")

            check.page("the event feed", "/events", "event-feed.png", feed)
            failures += check.failures
        finally:
            browser.close()
    for f in failures:
        say(f"ui-check: FAILED: {f}")
    if not failures:
        say(f"ui-check: ok; screenshots in {args.out}/ (run-page.png: the rolled-back release, its chart)")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
