"""`python -m core log compact | status --workspace W`: the prediction log's Delta tables."""

from __future__ import annotations

import argparse
from typing import Any

from core.errors import UserError

RETENTION_H = 24  # core.workspace.log_table.RETENTION_H (not imported here: `--help` stays light)


def cmd_log(args: argparse.Namespace) -> dict[str, Any]:
    from core.production import log_maintenance
    from core.workspace import workspaces

    ws = workspaces.resolve(args.workspace)
    if args.action == "status":
        return {"status": log_maintenance.status(ws)}
    if not 0 <= args.retention_hours <= 24 * 365:
        raise UserError(f"--retention-hours {args.retention_hours} is outside 0-8760 hours.")
    return log_maintenance.compact(ws, args.retention_hours)


def print_log(data: dict[str, Any]) -> None:
    for kind, done in data.get("compacted", {}).items():
        print(
            f"{kind}: optimize folded {done['files_in']} file(s) into {done['files_out']}; vacuum deleted "
            f"{done['files_deleted']} file(s) no version of the last {data['retention_h']} h names (audited); "
            f"version {done['version']}"
        )
    for kind, held in data["status"].items():
        replicas = ", ".join(f"{k} {v:,}" for k, v in sorted(held["by_replica"].items()))
        print(
            f"{kind}: {held['rows']:,} rows ({replicas or 'none'}); {held['files']} file(s), "
            f"{held['file_bytes'] / 1e6:.1f} MB; table version {held['version']}, ingested {held['ingested_version']} "
            f"({held['ingested_rows']:,} rows in the database)"
        )


def add_commands(command: Any) -> None:
    c = command(
        "log",
        "the prediction log's Delta tables: `compact` optimizes them (each day's small files folded into one) and "
        "vacuums what no recent version names (audited; never loses or doubles a row), `status` says what they hold",
        cmd_log,
        print_log,
    )
    c.add_argument("action", choices=["compact", "status"])
    c.add_argument(
        "--retention-hours", type=int, default=RETENTION_H,
        help="vacuum deletes a file only once no version of this many hours names it (readers that listed it)",
    )  # fmt: skip
