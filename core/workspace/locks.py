"""The training lock: who holds it, and whether that process is still alive (a lock a killed process left is stale)."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from core.workspace.paths import TRAINING_LOCK, Workspace


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder(ws: Workspace) -> dict[str, Any] | None:
    """What the training lock says (pid, host, started), or None without one."""
    path = ws.root / TRAINING_LOCK
    if not path.exists():
        return None
    try:
        held = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        held = {}
    return held if isinstance(held, dict) else {}


def is_live(held: dict[str, Any]) -> bool:
    """A lock from another host counts as live (its process cannot be seen from here). One that names no process
    (empty or unreadable: a full disk, or a version that wrote it in two steps) is stale: ours are written whole."""
    if not held.get("pid"):
        return False
    if held.get("host") != socket.gethostname():
        return True
    return pid_alive(int(held.get("pid", 0) or 0))


def training_alive(ws: Workspace) -> bool:
    """Whether a training process holds this workspace now."""
    held = holder(ws)
    return held is not None and is_live(held)
