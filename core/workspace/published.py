"""The deployment snapshot: what a serving process needs from the control plane, published as one file.

    <workspace>/serving.json    the production stack, the rollout, the accepted policies, the models' checksums and
                                classes, the settings; written atomically (hidden name, fsync, rename)

The database is the control plane; serving never opens it. Every change a replica must serve (a promotion, a rollback,
a stage change, a policy accepted, a setting written) publishes the file again, from the database's rows, while the
publishing process still holds the database (store.publish_serving): two processes' publications follow their commits'
order, so the file on disk is never older than the last commit. A replica reads it again when its identity (inode and
modification time) changes: a stat per request, no connection. The rows are kept as the database holds them; the
stages that own them read them (registry, rollout, accepted, deployment, audit).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from typing import Any

import duckdb

from core.workspace.paths import Workspace, write_atomic

FILE = "serving.json"
FORMAT = 1


@dataclass(frozen=True)
class Published:
    deployments: tuple[tuple[str, str], ...]  # (version, action) in order: promotions push, rollbacks pop
    rollout: tuple[Any, ...] | None  # the latest rollouts row: candidate, stage, production, scope (JSON), ts (ISO)
    policies: dict[str, tuple[Any, ...]]  # model version -> its latest accepted (policy_id, policy, utility, report)
    models: dict[str, tuple[str | None, str | None]]  # version -> (checksums, classes), JSON as registered
    settings: dict[str, Any]  # setting key -> value
    identity: tuple[int, int]  # the file's (inode, mtime_ns) when read: what a replica compares


def rows(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """The control plane's rows a replica serves from, read through `con` (a connection of the database)."""
    rollout = con.execute(
        "SELECT candidate, stage, production, scope, strftime(ts, '%Y-%m-%dT%H:%M:%S.%f') FROM rollouts "
        "ORDER BY ts DESC, rowid DESC LIMIT 1"
    ).fetchone()
    policies = con.execute(
        "SELECT model_version, arg_max(policy_id, accepted_at), arg_max(policy, accepted_at), "
        "arg_max(utility, accepted_at), arg_max(report, accepted_at) FROM policies GROUP BY model_version"
    ).fetchall()
    settings = con.execute("SELECT key, value FROM meta WHERE key LIKE 'setting:%'").fetchall()
    return {
        "format": FORMAT,
        "deployments": con.execute("SELECT version, action FROM deployments ORDER BY ts, rowid").fetchall(),
        "rollout": list(rollout) if rollout else None,
        "policies": {r[0]: list(r[1:]) for r in policies},
        "models": {r[0]: [r[1], r[2]] for r in con.execute("SELECT version, checksums, classes FROM models").fetchall()},
        "settings": {k.removeprefix("setting:"): json.loads(v) for k, v in settings},
    }


def publish(ws: Workspace, con: duckdb.DuckDBPyConnection) -> None:
    """Write the snapshot from the database's rows (the caller holds the database: see the module's docstring)."""
    write_atomic(ws.root / FILE, json.dumps(rows(con), sort_keys=True, default=str))


def identity(ws: Workspace) -> tuple[int, int] | None:
    """The published file's identity (None: never published): changes with every publication, in any process."""
    try:
        st = os.stat(ws.root / FILE)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def differs(ws: Workspace, con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the published file is missing or says other than the database (a change made by another tool)."""
    try:
        body = json.loads((ws.root / FILE).read_text())
    except (OSError, ValueError):
        return True
    return body != json.loads(json.dumps(rows(con), sort_keys=True, default=str))


_READ: dict[str, Published] = {}
_GUARD = threading.Lock()


def read(ws: Workspace) -> Published | None:
    """The snapshot as last published (None: never, or unreadable), parsed once per publication."""
    found = identity(ws)
    if found is None:
        return None
    with _GUARD:
        held = _READ.get(str(ws.root))
    if held is not None and held.identity == found:
        return held
    try:
        body = json.loads((ws.root / FILE).read_text())
    except (OSError, ValueError):
        return None  # replaced between the stat and the read (read again next time), or damaged: check says so
    snap = Published(
        tuple((str(v), str(a)) for v, a in body["deployments"]),
        tuple(body["rollout"]) if body["rollout"] else None,
        {k: tuple(v) for k, v in body["policies"].items()},
        {k: (v[0], v[1]) for k, v in body["models"].items()},
        dict(body["settings"]),
        found,
    )
    with _GUARD:
        _READ[str(ws.root)] = snap
    return snap
