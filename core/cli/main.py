"""`python -m core <command> --workspace W ...`: the stable command-line contract.

Building the parser imports no torch, pandas or DuckDB: each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from core.cli import data, drivetrain, log, model, production, workspace
from core.errors import UserError, os_message

DEBUG_ENV = "IMAGEDP_DEBUG"
Command = Callable[[argparse.Namespace], dict[str, Any]]
Printer = Callable[[dict[str, Any]], None]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="Image-classifier data product.")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str, func: Command, printer: Printer | None = None) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--workspace", required=name not in ("workspace", "demo", "check"), help="workspace name or folder path")
        p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
        p.set_defaults(func=func, printer=printer or (lambda d: print(json.dumps(d, indent=2, default=str))))
        return p

    data.add_commands(command)
    workspace.add_commands(command)
    model.add_commands(command)
    production.add_commands(command)
    log.add_commands(command)
    drivetrain.add_commands(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command: 0 on success, 2 with a one-line error on bad input; 1 from `check` when problems remain."""
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
        if args.json:
            print(json.dumps(result, indent=2, default=str))
        else:
            args.printer(result)
        sys.stdout.flush()
        return int(getattr(args, "status", 0))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly, as cat and grep do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # a read-only or full disk, a folder where a file should be, ...
        print(f"error: {os_message(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # never a traceback for a user; IMAGEDP_DEBUG=1 shows it to whoever fixes the bug
        if os.environ.get(DEBUG_ENV):
            raise
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        if type(exc).__module__.split(".")[0].lstrip("_") == "duckdb":  # duckdb 2 raises from its _duckdb module
            print(f"error: {database_failed(getattr(args, 'workspace', None), first)}", file=sys.stderr)
            return 2
        print(f"internal error: {type(exc).__name__}: {first} (a bug; {DEBUG_ENV}=1 shows where)", file=sys.stderr)
        return 1


def database_failed(workspace: str | None, first: str) -> str:
    """What to say when DuckDB fails: which workspace's database, and what to do about it."""
    which, where, check = "the workspace database", "workspace.duckdb", "python -m core check --workspace NAME --repair"
    if workspace:
        try:
            from core.workspace import workspaces

            ws = workspaces.resolve(workspace)
            which, where = f"workspace {ws.name!r}'s database", str(ws.db_path)
            check = f"python -m core check --workspace {ws.name} --repair"
        except Exception:  # noqa: BLE001 - the message must come out whatever else is wrong
            which = f"workspace {workspace!r}'s database"
    return (
        f"{which} failed: {first}. If another program holds it, close that and retry. If the file is damaged (a copy "
        f"cut short, a full disk), put back a copy of {where} from a backup (images/ and models/ beside it are "
        f"intact), then run `{check}`: images the copy does not know go to quarantine (none is deleted) and rows "
        "whose files are gone are marked."
    )
