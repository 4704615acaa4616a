"""Every way images arrive goes through gather's steps (staged, committed, renamed): crash a real import from a zip
archive, from uploaded files and from a list of URLs on a local web server at each step; after `check --repair`,
importing again ends with every source image exactly once and its bytes intact, compared with the sources' hashes
kept outside the workspace. (The folder import, with more images and batches, is test_kill_gather.)"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from core.workspace import workspaces
from tests.faults import harness
from tests.helpers import colour_image
from tests.webserver import png_bytes, serve

pytestmark = pytest.mark.faults
IMAGES = 40  # one catalog batch
CRASHES = [("gather.staged", 1), ("gather.committed", 1), ("gather.renamed", 25)]
UPLOAD = """
import sys
from pathlib import Path
from core.data import gather
from core.workspace import workspaces
files = [(p.name, p.read_bytes()) for p in sorted(Path(sys.argv[1]).iterdir())]
gather.add_uploads(workspaces.resolve("w", create=True), files, "bear")
"""


def zip_source(tmp_path: Path, base: str) -> tuple[tuple[str, ...], str | None, set[str]]:
    members = {f"{('red', 'blue')[i % 2]}/{i:03d}.png": colour_image(i % 2, 7_000 + i) for i in range(IMAGES)}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    (tmp_path / "images.zip").write_bytes(buf.getvalue())
    truth = {hashlib.sha256(d).hexdigest() for d in members.values()}
    return ("gather", "--workspace", "w", "--zip", str(tmp_path / "images.zip"), "--json"), None, truth


def upload_source(tmp_path: Path, base: str) -> tuple[tuple[str, ...], str | None, set[str]]:
    folder = tmp_path / "chosen"
    folder.mkdir()
    for i in range(IMAGES):
        (folder / f"{i:03d}.png").write_bytes(colour_image(i % 3, 8_000 + i))
    truth = {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    return (str(folder),), UPLOAD, truth


def url_source(tmp_path: Path, base: str) -> tuple[tuple[str, ...], str | None, set[str]]:
    (tmp_path / "urls.txt").write_text("".join(f"{base}/img/{i}.png\n" for i in range(IMAGES)))
    truth = {hashlib.sha256(png_bytes(i, (96, 64))).hexdigest() for i in range(IMAGES)}
    args = ("gather", "--workspace", "w", "--urls", str(tmp_path / "urls.txt"), "--label", "bear", "--workers", "2",
            "--allow-private", "127.0.0.1", "--json")  # fmt: skip
    return args, None, truth


SOURCES: dict[str, Callable[[Path, str], tuple[tuple[str, ...], str | None, set[str]]]] = {
    "zip": zip_source,
    "uploads": upload_source,
    "urls": url_source,
}


@pytest.mark.parametrize("source", list(SOURCES))
def test_a_crashed_import_from_any_source_loses_nothing_and_duplicates_nothing(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve() as base:
        args, code, truth = SOURCES[source](tmp_path, base)
        assert len(truth) == IMAGES
        tally = harness.Tally(f"{source} import")
        for k, (point, nth) in enumerate(CRASHES):
            root = tmp_path / f"crash{k}"
            monkeypatch.setenv(workspaces.DATA_ROOT_ENV, str(root))
            harness.crash_at(root, point, *args, nth=nth, code=code, tally=tally)
            ws = workspaces.resolve("w", create=True)
            harness.repaired(ws, tally)
            harness.opens_in_app(ws)
            harness.finish(harness.start(root, *args, code=code))
            harness.images_match(ws, truth, tally, f"crash at {point}")
            harness.repaired(ws, tally)
    tally.print()
    assert tally.lost == 0 and tally.doubled == 0
