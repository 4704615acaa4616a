"""The workspace database: several writer processes at once lose no row; SQL takes bound parameters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from core.workspace import store
from core.workspace.paths import Workspace

WRITER = """
import sys
from core.workspace import store, workspaces
ws = workspaces.resolve(sys.argv[1])
for i in range(int(sys.argv[2])):
    store.audit(ws, "concurrency_probe", detail={"writer": sys.argv[3], "i": i})
"""


def test_concurrent_writer_processes_lose_no_row(ws: Workspace) -> None:
    root = Path(__file__).resolve().parent.parent
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(ws.root), "60", str(n)], cwd=root) for n in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0, 0]
    log = store.audit_log(ws, limit=1000)
    assert (log["action"] == "concurrency_probe").sum() == 240


def test_hostile_text_is_stored_verbatim(ws: Workspace) -> None:
    store.record_failures(ws, [{"source": "x'); DROP TABLE images; --", "reason": "r", "kind": "url"}])
    assert store.failures(ws)["source"].tolist() == ["x'); DROP TABLE images; --"]
    assert store.images(ws).empty
