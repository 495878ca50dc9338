"""How long a local Prefect server takes to become healthy, and to stop.

    .venv/bin/python bench/prefect_server_start.py [--runs 2] [--postgres]

Prints, per configuration: the time to a healthy ``/api/health`` on a fresh
home (the database is migrated then), on the same home again (already
migrated), and the time stop() takes.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from lamia_sandbox.postgres import PostgresServer
from lamia_sandbox.prefect_server import PrefectServer


@contextlib.contextmanager
def database(postgres: bool) -> Iterator[str | None]:
    if not postgres:
        yield None
        return
    with PostgresServer() as pg:
        yield pg.url


def one(home: Path, ui: bool, url: str | None) -> tuple[float, float]:
    server = PrefectServer(home, ui=ui, database_url=url).start()
    assert server.startup_seconds is not None
    started = time.monotonic()
    server.stop()
    return server.startup_seconds, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--postgres", action="store_true", help="also measure on a PostgreSQL database")
    args = parser.parse_args()
    backends = [False, True] if args.postgres else [False]
    print(f"{'backend':<10} {'ui':<4} {'fresh start s':>14} {'warm start s':>13} {'stop s':>7}")
    for pg in backends:
        for ui in (False, True):
            fresh, warm, stops = [], [], []
            for _ in range(args.runs):
                with tempfile.TemporaryDirectory() as home, database(pg) as url:
                    start, stop = one(Path(home), ui, url)
                    fresh.append(start)
                    stops.append(stop)
                    start, stop = one(Path(home), ui, url)
                    warm.append(start)
                    stops.append(stop)
            print(f"{'postgres' if pg else 'sqlite':<10} {'on' if ui else 'off':<4} "
                  f"{statistics.median(fresh):>14.1f} {statistics.median(warm):>13.1f} "
                  f"{statistics.median(stops):>7.2f}", flush=True)


if __name__ == "__main__":
    main()
