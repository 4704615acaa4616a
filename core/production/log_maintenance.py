"""`python -m core log compact | status`: the log's tables optimized and vacuumed, and what the log holds.

Vacuum is the one step that deletes log files: a file goes only once no version of the retention names it (a reader
that listed it within that time can still read it), and only after an audit row names it (core.workspace.log_table).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.workspace import log_ingest, log_table, store
from core.workspace.paths import Workspace


def compact(
    ws: Workspace, retention_h: int = log_table.RETENTION_H, on_progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Optimize and vacuum both kinds' tables; returns what was done, per kind."""
    out: dict[str, Any] = {}
    for i, kind in enumerate(log_table.COLUMNS):

        def audited(files: list[str], kind: str = kind) -> None:
            store.audit(ws, "log_files_deleted", detail={"kind": kind, "files": files,
                        "why": f"vacuumed by `log compact`: no version of the last {retention_h} h names them"})  # fmt: skip

        done = log_table.compact(ws, kind, retention_h, before_delete=audited)
        out[kind] = {"files_in": done.files_in, "files_out": done.files_out, "files_deleted": done.removed,
                     "version": done.version}  # fmt: skip
        if on_progress:
            on_progress(i + 1, len(log_table.COLUMNS))
    if any(v["files_in"] or v["files_deleted"] for v in out.values()):
        store.audit(ws, "log_compacted", detail=out)
    return {"compacted": out, "retention_h": retention_h, "status": status(ws)}


def status(ws: Workspace) -> dict[str, Any]:
    """Per kind: the table's files, bytes, rows (as its commits count them) and version, and what the database
    ingested of it (version, rows, rows per replica; feedback also counts the analyst's labels, kept in the database)."""
    out: dict[str, Any] = {}
    with store.connect(ws) as con:  # brought up to date first (log_ingest)
        for kind, view in log_table.VIEWS.items():
            files = log_table.visible(ws, kind)
            size = sum(f.stat().st_size for f in files if f.exists())
            by_replica = dict(con.execute(f"SELECT coalesce(replica, '(database)'), count(*) FROM {view} GROUP BY 1").fetchall())
            out[kind] = {"files": len(files), "file_bytes": size, "rows": int(sum(by_replica.values())), "by_replica": by_replica,
                         "version": log_table.version(ws, kind), "table_rows": log_table.rows(ws, kind),
                         "ingested_version": log_ingest.version(con, kind),
                         "ingested_rows": log_ingest.counted(con, kind)}  # fmt: skip
    return out
