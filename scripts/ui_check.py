"""Check what a person sees: the demo's step tables, rendered by the Prefect UI in headless Chromium.

Runs the demo (on the Prefect server ``PREFECT_API_URL`` names, else on one it
starts with its UI), and while everything is still up loads each release's
steps-table artifact page in Chromium, waits for the single-page app to render
(``--virtual-time-budget``), checks that every row of the table (its weights and
decision, and the last row's reason) is in the rendered page, and saves
screenshots: ``screenshots/steps-table.png`` is the rolled-back release of 1.6.0-rc.1.
Exits 1 when a table is missing from its page or the demo went otherwise than expected.

    .venv/bin/python scripts/ui_check.py [--out screenshots] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from flows.demo import STEPS_KEY, DemoSettings, demo_environment, read_table, run_scenario

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--window-size=1600,1000",
)
#: The table of the rolled-back release (set_weights, hold, rollback) is the one worth looking at.
MAIN_SCREENSHOT = "steps-table.png"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def render(chromium: str, url: str, screenshot: Path, budget_ms: int) -> str:
    """The page's DOM once the app had ``budget_ms`` of virtual time, and its screenshot."""
    profile = tempfile.mkdtemp(prefix="lamia-ui-check-chromium-")
    try:
        proc = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
             "--dump-dom", f"--screenshot={screenshot.resolve()}", url],
            capture_output=True, text=True, timeout=120, check=False, cwd=profile,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium exited with {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout


def page_text(dom: str) -> str:
    """The visible text of a DOM dump, whitespace collapsed (good enough to look for cell contents)."""
    dom = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", dom)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def expected_texts(rows: list[dict[str, Any]]) -> list[str]:
    texts = [t for r in rows for t in (str(r["weights"]), str(r["decision"]), str(r["time"]))]
    # The reason cell may be cut by the table's width; its beginning is always shown.
    return [*dict.fromkeys(texts), str(rows[-1]["reason"])[:40]]


def check_page(chromium: str, url: str, texts: list[str], screenshot: Path,
               budgets: tuple[int, ...] = (15000, 30000, 60000)) -> list[str]:
    """Load ``url`` until every text is on the rendered page (a slow machine gets more virtual
    time); returns the texts still missing after the last try."""
    missing = texts
    for budget in budgets:
        text = page_text(render(chromium, url, screenshot, budget))
        missing = [t for t in texts if t not in text]
        if not missing:
            break
        say(f"  {len(missing)} of {len(texts)} texts not rendered with {budget} ms of virtual time")
    return missing


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
        for release in report["releases"]:
            artifact_id, rows = read_table(release["flow_run_id"], STEPS_KEY)
            if artifact_id is None or not rows:
                failures.append(f"the release of {release['target']} has no steps table artifact")
                continue
            url = f"{env.ui_url}/artifacts/artifact/{artifact_id}"
            rolled_back = release["outcome"] == "rolled-back"
            shot = args.out / (MAIN_SCREENSHOT if rolled_back else f"steps-table-{release['target']}.png")
            say(f"ui-check: steps table of the release of {release['target']} ({len(rows)} rows): {url}")
            missing = check_page(args.chromium, url, expected_texts(rows), shot)
            if missing:
                failures.append(f"{url} does not show {missing}")
            elif not shot.exists() or shot.stat().st_size == 0:
                failures.append(f"no screenshot of {url}")
            else:
                say(f"  every row is on the page; screenshot {shot}")
    for f in failures:
        say(f"ui-check: FAILED: {f}")
    if not failures:
        say("ui-check: ok")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
