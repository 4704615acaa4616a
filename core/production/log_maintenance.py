"""`python -m core log compact | status | location`: the log's tables optimized and vacuumed, what the log holds, and
where its tables are (the workspace's logs/, or an object store).

Vacuum is the one step that deletes log files: a file goes only once no version of the retention names it (a reader
that listed it within that time can still read it), and only after an audit row names it (core.workspace.log_table).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.errors import UserError
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
            files = log_table.files(ws, kind)
            size = sum(f.size for f in files)  # as the commits recorded them
            by_replica = dict(con.execute(f"SELECT coalesce(replica, '(database)'), count(*) FROM {view} GROUP BY 1").fetchall())
            out[kind] = {"table": log_table.table_uri(ws, kind),
                         "files": len(files), "file_bytes": size, "rows": int(sum(by_replica.values())), "by_replica": by_replica,
                         "version": log_table.version(ws, kind), "table_rows": log_table.rows(ws, kind),
                         "ingested_version": log_ingest.version(con, kind),
                         "ingested_rows": log_ingest.counted(con, kind)}  # fmt: skip
    return out


_SECRET = ("SECRET", "ACCESS_KEY", "TOKEN", "PASSWORD", "SAS_KEY", "ACCOUNT_KEY", "CREDENTIAL")


def set_location(ws: Workspace, uri: str | None, options: dict[str, str]) -> dict[str, Any]:
    """Point the log's tables at an object store (or back at the workspace's logs/ with None): refused while the log
    where it is now holds rows (they would drop out of every figure); the tables are made there first, so a location
    that cannot be reached or written is refused, and the change is audited."""
    before = log_table.location(ws)
    if uri is not None:
        uri = log_table.check_uri(uri)
        if secret := [k for k in options if any(word in k.upper() for word in _SECRET)]:
            raise UserError(
                f"{', '.join(secret)} would be written to {log_table.location_file(ws)} in the clear: give credentials "
                "to every process through its environment instead (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the like)."
            )
        if uri.split("://", 1)[0].lower() in ("s3", "s3a") and not {"conditional_put", "aws_s3_locking_provider"} & {
            k.lower() for k in options
        }:
            options = options | {"conditional_put": "etag"}  # concurrent appends commit safely (S3's conditional write)
    after = log_table.Location(uri, tuple(sorted(options.items())) if uri else ())
    if after == before:
        return {"location": shown(after), "changed": False}
    held = {kind: log_table.rows(ws, kind) for kind in log_table.COLUMNS}
    if any(held.values()):
        raise UserError(
            f"The prediction log at {shown(before)['uri']} holds {held['predictions']:,} prediction(s) and "
            f"{held['feedback']:,} label(s): pointing it elsewhere would leave them out of every figure. Set the "
            "location when a workspace starts serving, or copy its tables first (any Delta engine copies them)."
        )
    log_table.write_location(ws, after)
    try:
        for kind in log_table.COLUMNS:
            with log_table.using(ws, kind, create=True):
                pass
    except Exception as exc:  # noqa: BLE001 - whatever the store says: the location stays as it was
        log_table.write_location(ws, before)
        raise UserError(
            f"The log's tables cannot be made at {uri}: {str(exc).splitlines()[0][:300]}. Check the URI, the storage "
            "options and the credentials in this process's environment; the log stays where it was."
        ) from exc
    store.audit(ws, "log_location_set", before=shown(before), after=shown(after))
    return {"location": shown(after), "changed": True}


def shown(found: log_table.Location) -> dict[str, Any]:
    return {"uri": found.uri or "logs/ (this workspace's folder)", "storage_options": dict(found.options)}
