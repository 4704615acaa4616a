"""`python -m core log compact | status | location --workspace W`: the prediction log's Delta tables."""

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
    if args.action == "location":
        return _location(ws, args)
    if not 0 <= args.retention_hours <= 24 * 365:
        raise UserError(f"--retention-hours {args.retention_hours} is outside 0-8760 hours.")
    return log_maintenance.compact(ws, args.retention_hours)


def _location(ws: Any, args: argparse.Namespace) -> dict[str, Any]:
    from core.production import log_maintenance
    from core.workspace import log_table

    if args.uri and args.local:
        raise UserError("Give --uri or --local, not both.")
    options = {}
    for given in args.option or []:
        key, sep, value = given.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--option {given!r} is not KEY=VALUE (for instance AWS_ENDPOINT_URL=http://127.0.0.1:9000).")
        options[key.strip()] = value
    if not args.uri and not args.local:
        if options:
            raise UserError("--option goes with --uri: give the location it is for.")
        found = log_table.location(ws)
        return {"location": log_maintenance.shown(found), "changed": False}
    return log_maintenance.set_location(ws, None if args.local else args.uri, options)


def print_log(data: dict[str, Any]) -> None:
    if "location" in data:
        where = data["location"]
        options = ", ".join(f"{k}={v}" for k, v in sorted(where["storage_options"].items()))
        said = f"the log's tables: {where['uri']}" + (f" ({options})" if options else "")
        print(said + (" (changed)" if data["changed"] else ""))
        return
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
        "vacuums what no recent version names (audited; never loses or doubles a row), `status` says what they hold, "
        "`location` says or sets where they are (an object store for replicas on several machines)",
        cmd_log,
        print_log,
    )
    c.add_argument("action", choices=["compact", "status", "location"])
    c.add_argument("--uri", help="location: the object store's prefix the tables go under (s3://bucket/prefix)")
    c.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="location: a delta-rs storage option (endpoint, region; credentials stay in the environment)",
    )
    c.add_argument("--local", action="store_true", help="location: the tables back under the workspace's logs/")
    c.add_argument(
        "--retention-hours", type=int, default=RETENTION_H,
        help="vacuum deletes a file only once no version of this many hours names it (readers that listed it)",
    )  # fmt: skip
