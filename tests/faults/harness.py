"""What every fault test does: start a real `python -m core` process on a data root and crash it (SIGKILL) at a
named failpoint (core/workspace/failpoints.py: the process kills itself there, so where it dies does not depend on
the machine's speed; a few seeded time-based kills stay as a cross-check), then hold the workspace to the promise:
`check --repair` leaves no problem, the workspace opens in the app, the interrupted command succeeds when run
again, and what is there matches a truth kept outside the workspace (source hashes, decisions, acknowledged ids,
the expected production version).

Each test prints one `FAULTS` line (the points it crashed at, kills, repairs made, items lost and doubled against
that truth) that `pytest -m faults -s` collects for the closing note."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np

from core.production import check
from core.workspace import failpoints
from core.workspace.paths import Workspace
from tests.helpers import app, armed, errors

ROOT = Path(__file__).resolve().parents[2]


def start(data_root: Path, *args: str, code: str | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m core ARGS` (or `python -c CODE ARGS`: a core call, for what has no command) on data_root."""
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "core", *args]
    unarmed = {k: v for k, v in os.environ.items() if k != failpoints.ENV}  # armed only where a test says
    armed((env or {}).get(failpoints.ENV, ""))
    env = unarmed | {"IMAGEDP_DATA_ROOT": str(data_root), **(env or {})}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    """Wait for a started process; its stdout, after checking it succeeded."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()
    return out.decode()


_WARM: list[bool] = []


def warm_up() -> None:
    """Once per session, import what the commands import: on a fresh clone the first process also compiles
    bytecode and reads libraries from a cold disk cache, and a run timed then is several times longer than the
    runs that are killed (whose kills would then land after they finished)."""
    if not _WARM:
        imports = "import torch, torchvision, PIL, duckdb, pandas, core.cli.main, core.data.gather, core.model.runs, " \
                  "core.production.check, core.production.rollout, core.model.cleaning"  # fmt: skip
        subprocess.run([sys.executable, "-c", imports], cwd=ROOT, check=True, capture_output=True)
        _WARM.append(True)


def timed(data_root: Path, *args: str, code: str | None = None) -> tuple[float, str]:
    """One whole run on this machine now (interpreter start and imports included, caches warm): seconds, stdout."""
    warm_up()
    started = time.monotonic()
    out = finish(start(data_root, *args, code=code))
    return time.monotonic() - started, out


@dataclass
class Tally:
    """What the fault tests injected and what it cost, printed for the closing note."""

    name: str
    kills: int = 0
    landed: int = 0  # killed before finishing on its own
    midway: int = 0  # killed after it had changed the workspace (its first audit row) and before it finished
    duration_s: float = 0.0  # one whole run, timed first
    repairs: int = 0
    lost: int = 0  # against the outside truth
    doubled: int = 0  # against the outside truth
    points: dict[str, int] = field(default_factory=dict)  # failpoint -> crashes there
    details: list[str] = field(default_factory=list)

    def print(self) -> None:
        at = ", ".join(f"{p} x{n}" for p, n in self.points.items()) or "none"
        timed = self.kills - sum(self.points.values())
        landed = self.landed - sum(self.points.values())
        print(f"\nFAULTS {self.name}: crashes at failpoints: {at}; time-based kills={timed} (landed {landed}); "
              f"repairs={self.repairs} lost={self.lost} doubled={self.doubled}")  # fmt: skip


def crash_at(
    data_root: Path,
    point: str,
    *args: str,
    tally: Tally,
    nth: int = 1,
    code: str | None = None,
    also: str = "",
    env: dict[str, str] | None = None,
) -> None:
    """Run the command with a failpoint armed (and `also`, more armed points: a pause or a mark); it must die
    there by SIGKILL, which proves the crash landed in the state the point names."""
    armed = ",".join(filter(None, [f"{point}:{nth}", also]))
    proc = start(data_root, *args, code=code, env={failpoints.ENV: armed, **(env or {})})
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL, f"{armed}: never reached (exit {proc.returncode}): {err.decode()[-2000:]}"
    tally.kills += 1
    tally.landed += 1
    tally.points[point] = tally.points.get(point, 0) + 1


def kills(
    data_root: Path,
    duration: float,
    n: int,
    seed: int,
    *args: str,
    tally: Tally,
    code: str | None = None,
    lo: float = 0.1,
    hi: float = 0.95,
    progress: Callable[[], int] | None = None,
) -> Iterator[int]:
    """Start the command n times, SIGKILL each after a seeded fraction of `duration`; yields after each kill.
    `progress` counts what the command has committed (default: audit rows) to tell a kill midway from one
    during the interpreter's start."""
    rng = np.random.default_rng(seed)
    tally.duration_s = duration
    progress = progress or (lambda: audit_rows(data_root / "workspaces"))
    for k in range(n):
        before = progress()
        proc = start(data_root, *args, code=code)
        time.sleep(float(rng.uniform(lo, hi)) * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        tally.kills += 1
        landed = proc.returncode == -signal.SIGKILL
        tally.landed += landed
        tally.midway += landed and progress() > before
        yield k


def audit_rows(workspaces_dir: Path) -> int:
    """Audit rows in every workspace under a data root: grows with each change a command commits."""
    total = 0
    for db in workspaces_dir.glob("*/workspace.duckdb"):
        total += count(db, "SELECT count(*) FROM audit")
    return total


def count(db: Path, sql: str) -> int:
    """One count from a workspace database; 0 when the tables are not there yet (killed while creating them)."""
    con = duckdb.connect(str(db))
    try:
        return con.execute(sql).fetchone()[0]
    except duckdb.CatalogException:
        return 0
    finally:
        con.close()


def repaired(ws: Workspace, tally: Tally) -> check.CheckReport:
    """check --repair, then check again: nothing may be left, and nothing may have been lost."""
    report = check.check(ws, repair=True)
    tally.repairs += len(report.repaired)
    tally.lost += sum(p.kind == "missing_file" for p in report.problems)
    assert report.remaining == () or not report.repaired, report.as_dict()
    again = check.check(ws)
    assert again.problems == (), again.as_dict()
    assert not any(p.kind == "missing_file" for p in report.problems), report.as_dict()  # a file lost
    return report


def opens_in_app(ws: Workspace) -> None:
    """The workspace opens on the Overview page without an exception or an error message."""
    at = app("app_pages/overview.py", ws.name)
    assert not at.exception and errors(at) == [], (at.exception, errors(at))


def images_match(ws: Workspace, truth: set[str], tally: Tally, where: str) -> None:
    """The catalog holds each source image once (its hash in `truth`, kept outside the workspace), each file its
    catalog row names, with its bytes intact; lost and doubled are counted against the truth."""
    import hashlib

    from core.workspace import store

    catalog = store.images(ws)
    tally.lost += len(truth - set(catalog["sha256"]))
    tally.doubled += len(catalog) - catalog["sha256"].nunique()
    assert set(catalog["sha256"]) == truth and len(catalog) == len(truth), where
    files = [p for p in ws.images_dir.rglob("*") if p.is_file()]
    assert sorted(str(p.relative_to(ws.root)) for p in files) == sorted(catalog["path"]), where
    assert {hashlib.sha256(p.read_bytes()).hexdigest() for p in files} == truth, f"{where}: a file's bytes changed"
