"""SIGKILL a real `python -m core gather --urls` downloading from a local web server at seeded moments, a
cross-check of the crashes at named points (test_kill_sources crashes a download at each of gather's steps);
after each kill `check --repair` leaves a consistent workspace, it opens in the app, and downloading the same list
again ends with every image exactly once. Where a timed kill lands depends on the machine's speed, so how many
landed is printed, not asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.workspace import store, workspaces
from tests.faults import harness
from tests.webserver import serve

pytestmark = pytest.mark.faults
IMAGES = 200
KILLS = 3


def test_a_killed_download_loses_nothing_and_duplicates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve() as base:
        urls = tmp_path / "urls.txt"
        urls.write_text("".join(f"{base}/slowimg/{i}.png\n" for i in range(IMAGES)))
        args = ("gather", "--workspace", "w", "--urls", str(urls), "--label", "bear", "--workers", "2",
                "--allow-private", "127.0.0.1", "--json")  # fmt: skip
        duration, _ = harness.timed(tmp_path / "timing", *args)
        tally = harness.Tally("download")
        for k in range(KILLS):
            root = tmp_path / f"kill{k}"
            next(harness.kills(root, duration, 1, 10 + k, *args, lo=0.2, hi=0.95, tally=tally))
            monkeypatch.setenv(workspaces.DATA_ROOT_ENV, str(root))
            ws = workspaces.resolve("w", create=True)  # the kill may have come before the command made it
            harness.repaired(ws, tally)
            harness.opens_in_app(ws)
            out = json.loads(harness.finish(harness.start(root, *args)))
            catalog = store.images(ws)
            assert out["images"] == IMAGES == len(catalog) == catalog["sha256"].nunique() == catalog["url"].nunique(), f"kill {k}"
            files = sorted(str(p.relative_to(ws.root)) for p in ws.images_dir.rglob("*") if p.is_file())
            assert files == sorted(catalog["path"]), f"kill {k}"
            harness.repaired(ws, tally)
    tally.print()
