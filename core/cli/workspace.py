"""`python -m core workspace list | create | rename | delete`."""

from __future__ import annotations

import argparse
from typing import Any

from core.errors import UserError


def cmd_workspace(args: argparse.Namespace) -> dict[str, Any]:
    from core.workspace import workspaces

    if args.action == "list":
        return {"workspaces": workspaces.list_workspaces(), "data_root": str(workspaces.data_root())}
    if not args.name:
        raise UserError(f"workspace {args.action} needs a NAME.")
    if args.action == "create":
        return {"created": str(workspaces.create_workspace(args.name).root)}
    if args.action == "rename":
        if not args.new_name:
            raise UserError("workspace rename needs NAME NEW_NAME.")
        return {"renamed": str(workspaces.rename_workspace(args.name, args.new_name).root)}
    return {"moved_to_trash": str(workspaces.delete_workspace(args.name, args.confirm or ""))}


def add_commands(command: Any) -> None:
    w = command("workspace", "list, create, rename or delete (to trash) workspaces", cmd_workspace)
    w.add_argument("action", choices=["list", "create", "rename", "delete"])
    w.add_argument("name", nargs="?")
    w.add_argument("new_name", nargs="?")
    w.add_argument("--confirm", help="for delete: the workspace name again")
