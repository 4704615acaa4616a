"""`python -m core log compact | status`: the log's files folded into one per replica and day, and what the log holds.

Compaction is the one step that deletes log files: each input is deleted only after the file that holds its rows has
been in view for the grace period, and only after an audit row names it and that file (core.workspace.log_files).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import duckdb

from core.errors import UserError
from core.workspace import log_files, store
from core.workspace.paths import Workspace


def compact(
    ws: Workspace, grace_s: float = log_files.GRACE_S, on_progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Fold every partition's files of both kinds; returns what was done, per kind."""

    def audited(records: list[dict[str, object]]) -> None:
        store.audit(ws, "log_files_deleted", detail={"files": records, "why": "folded by `log compact` into the file named"})

    out: dict[str, Any] = {}
    for kind in log_files.COLUMNS:
        done = log_files.compact(ws, kind, grace_s, on_progress=on_progress, before_delete=audited)
        out[kind] = {
            "partitions_folded": done.partitions, "files_in": done.files_in, "files_out": done.files_out, "rows": done.rows,
            "inputs_deleted": done.removed, "busy": done.busy,
        }  # fmt: skip
    figures = None
    if any(v["partitions_folded"] for v in out.values()):
        store.audit(ws, "log_compacted", detail=out)
        figures = prepare_figures(ws)
    return {"compacted": out, "grace_s": grace_s, "status": status(ws), "figures": figures}


def prepare_figures(ws: Workspace) -> dict[str, Any]:
    """The Monitor's kept figures for its first view (day windows against production), computed now: a compaction
    renames every file it folds, so the first look after it would compute each of those days again."""
    from core.model import registry
    from core.production.monitoring import drift, queries

    if registry.production_version(ws) is None:
        return {"prepared": False, "why": "no model in production: nothing to measure drift against"}
    t0 = time.perf_counter()
    try:
        drift.drift_report(ws, queries.LogFilter(window="day", sources=queries.default_sources(ws)))
    except (UserError, duckdb.Error, OSError) as exc:  # only a head start: the Monitor computes them when opened
        return {"prepared": False, "why": str(exc).splitlines()[0][:300]}
    return {"prepared": True, "seconds": round(time.perf_counter() - t0, 2)}


def status(ws: Workspace) -> dict[str, Any]:
    """Files, bytes and rows of the log, per kind (files and the database's table), and rows per replica."""
    out: dict[str, Any] = {}
    with store.connect(ws, read_only=True) as con:
        for kind, view in log_files.VIEWS.items():
            files = log_files.visible(ws, kind)
            size = sum(f.stat().st_size for f in files if f.exists())
            try:
                by_replica = dict(
                    con.execute(f"SELECT coalesce(replica, '(database)'), count(*) FROM {view} GROUP BY 1").fetchall()
                )
            except duckdb.Error as exc:  # a damaged file: check says which
                raise_damaged(ws, exc)
            out[kind] = {"files": len(files), "file_bytes": size, "rows": int(sum(by_replica.values())), "by_replica": by_replica}
    return out


def raise_damaged(ws: Workspace, exc: Exception) -> None:
    raise UserError(
        f"A file of the prediction log cannot be read ({str(exc).splitlines()[0][:200]}): run "
        f"`python -m core check --workspace {ws.name} --repair` to move it to quarantine/log/."
    ) from exc
