"""Workspaces: one folder and one DuckDB file per classification problem, found under the data root,
created, opened, renamed and moved to the trash."""

from __future__ import annotations

import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

from core.errors import UserError
from core.workspace import locks, published, store
from core.workspace.paths import DB_NAME, DEVICE_NAME, Workspace

DATA_ROOT_ENV = "IMAGEDP_DATA_ROOT"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")


def data_root() -> Path:
    """The data root: $IMAGEDP_DATA_ROOT, else the repository's data/ folder."""
    env = os.environ.get(DATA_ROOT_ENV)
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "data"
    return root.expanduser().resolve()


def workspaces_dir() -> Path:
    return data_root() / "workspaces"


def validate_name(name: str) -> str:
    """Return the stripped name, or raise UserError saying what a name may contain."""
    name = name.strip()
    if not _NAME_RE.match(name) or DEVICE_NAME.match(name):
        raise UserError(
            f"Workspace name {name!r} is not allowed: use 1-64 letters, digits, spaces, '_', '-' "
            "or '.', starting with a letter or digit (no slashes, not a device name like NUL or CON)."
        )
    return name


def list_workspaces() -> list[str]:
    """Names of the workspaces under the data root, sorted."""
    base = workspaces_dir()
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / DB_NAME).is_file())


def _init_folders(ws: Workspace) -> None:
    for d in (ws.images_dir, ws.quarantine_dir, ws.models_dir):
        d.mkdir(parents=True, exist_ok=True)


def create_workspace(name: str) -> Workspace:
    """Create an empty workspace; refuse a name already taken."""
    ws = Workspace(workspaces_dir() / validate_name(name))
    if ws.root.exists():
        raise UserError(f"A workspace named {ws.name!r} already exists; open it or pick another name.")
    _init_folders(ws)
    store.init_db(ws, force=True)
    store.audit(ws, "workspace_created", detail={"name": ws.name})
    return ws


def resolve(name_or_path: str, create: bool = False, serving: bool = False) -> Workspace:
    """A workspace from a name under the data root or a folder path; create it if asked. `serving`: for a process
    that only serves and logs (batch predict, an API replica): a workspace that has its deployment snapshot is
    opened without its database (another process may hold it)."""
    value = name_or_path.strip()
    if not value:
        raise UserError("No workspace given: pass --workspace NAME (or a folder path).")
    looks_like_path = os.sep in value or value.startswith(".") or (os.altsep and os.altsep in value)
    root = Path(value).expanduser().resolve() if looks_like_path else workspaces_dir() / validate_name(value)
    ws = Workspace(root)
    if ws.db_path.is_file():
        if serving and (ws.root / published.FILE).is_file():
            return ws
        _init_folders(ws)
        store.init_db(ws)  # older workspaces get tables added since they were made
        return ws
    if not create:
        known = ", ".join(list_workspaces()) or "none yet"
        raise UserError(f"No workspace at {root}. Known workspaces: {known}. Create one first.")
    if root.exists() and any(root.iterdir()):
        raise UserError(f"{root} exists and is not a workspace (no {DB_NAME}); pick an empty or new folder.")
    if looks_like_path:
        _init_folders(ws)
        store.init_db(ws, force=True)
        store.audit(ws, "workspace_created", detail={"path": str(root)})
        return ws
    return create_workspace(root.name)


def _refuse_while_training(ws: Workspace, what: str) -> None:
    if locks.training_alive(ws):  # a lock a killed training left does not block
        raise UserError(f"A training is running in {ws.name!r}; wait for it or cancel it before you {what} the workspace.")


def rename_workspace(old: str, new: str) -> Workspace:
    """Rename a workspace folder under the data root."""
    src = resolve(old)
    _refuse_while_training(src, "rename")
    dst = Workspace(workspaces_dir() / validate_name(new))
    if dst.root.exists():
        raise UserError(f"A workspace named {dst.name!r} already exists; pick another name.")
    src.root.rename(dst.root)
    store.audit(dst, "workspace_renamed", detail={"from": src.name, "to": dst.name})
    return dst


def delete_workspace(name: str, confirm: str) -> Path:
    """Move a workspace to the data root's trash/ (never erased); confirm must repeat its name."""
    ws = resolve(name)
    _refuse_while_training(ws, "delete")
    if confirm.strip() != ws.name:
        raise UserError(f"To delete, type the workspace name exactly ({ws.name!r}); nothing was deleted.")
    trash = data_root() / "trash"
    trash.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    target = trash / f"{ws.name}-{stamp}"
    shutil.move(str(ws.root), str(target))
    return target
