"""`python -m core log compact | status --workspace W`: the prediction log's files."""

from __future__ import annotations

import argparse
from typing import Any

from core.errors import UserError


def cmd_log(args: argparse.Namespace) -> dict[str, Any]:
    from core.production import log_maintenance
    from core.workspace import workspaces

    ws = workspaces.resolve(args.workspace)
    if args.action == "status":
        return {"status": log_maintenance.status(ws)}
    if not 0 <= args.grace <= 86_400:
        raise UserError(f"--grace {args.grace} is outside 0-86400 seconds.")
    return log_maintenance.compact(ws, args.grace)


def print_log(data: dict[str, Any]) -> None:
    for kind, done in data.get("compacted", {}).items():
        busy = f"; {len(done['busy'])} partition(s) left alone: another compaction holds them" if done["busy"] else ""
        print(
            f"{kind}: folded {done['files_in']} file(s) into {done['files_out']} in {done['partitions_folded']} partition(s) "
            f"({done['rows']:,} rows); deleted {done['inputs_deleted']} input(s) of earlier compactions, whose rows have "
            f"been in their folded file for over {data['grace_s']:g} s{busy}"
        )
    if figures := data.get("figures"):
        said = f"prepared in {figures['seconds']:g} s" if figures["prepared"] else f"not prepared: {figures['why']}"
        print(f"the Monitor's figures for the days compacted: {said}")
    for kind, held in data["status"].items():
        replicas = ", ".join(f"{k} {v:,}" for k, v in sorted(held["by_replica"].items()))
        print(f"{kind}: {held['rows']:,} rows ({replicas or 'none'}); {held['files']} file(s), {held['file_bytes'] / 1e6:.1f} MB")


def add_commands(command: Any) -> None:
    c = command(
        "log",
        "the prediction log's files: `compact` folds each replica's files of a day into one (audited; never loses or "
        "doubles a row), `status` says what the log holds",
        cmd_log,
        print_log,
    )
    c.add_argument("action", choices=["compact", "status"])
    c.add_argument(
        "--grace", type=float, default=600.0, help="seconds a folded file's inputs stay on disk for readers that listed them"
    )
