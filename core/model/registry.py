"""Model versions: their metadata, reference arrays and registry rows; listed, compared, promoted, rolled back.
Imports no torch (the weights themselves are core.model.weights), so listing and monitoring start fast."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from safetensors.numpy import load_file as load_arrays

from core.errors import UserError
from core.model import integrity
from core.model.rates import Rate
from core.workspace import failpoints, published, store
from core.workspace.paths import Workspace

WEIGHTS = integrity.WEIGHTS  # written and read by core.model.weights (torch)
META = integrity.META
REFERENCE = integrity.REFERENCE  # validation probabilities, embeddings, labels: what later pages compare to


def next_version(ws: Workspace) -> str:
    taken = [int(m.group(1)) for p in ws.models_dir.iterdir() if (m := re.fullmatch(r"v(\d+)", p.name))]
    with store.connect(ws) as con:
        taken += [int(v[1:]) for (v,) in con.execute("SELECT version FROM models").fetchall() if v[1:].isdigit()]
    return f"v{max(taken, default=0) + 1}"


def register(ws: Workspace, version: str, meta: dict[str, Any]) -> None:
    """The registry row and audit entry of a version whose files are in place."""
    metrics = meta.get("metrics", {})
    failpoints.hit("registry.registering")
    sums = integrity.checksums(ws.models_dir / version)  # what later loads compare the files with
    with store.transaction(ws) as con:
        con.execute(
            "INSERT INTO models (version, created_at, run_id, backbone, classes, valid_accuracy, valid_error, path, "
            "checksums) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                version,
                store.now(),
                meta.get("run_id"),
                meta["backbone"],
                json.dumps(meta["classes"]),
                metrics.get("valid_accuracy"),
                metrics.get("valid_error"),
                f"models/{version}",
                json.dumps(sums),
            ],
        )
        store.audit(ws, "model_registered", detail={"version": version, "backbone": meta["backbone"]}, con=con)
    failpoints.hit("registry.registered")


def read_meta(ws: Workspace, version: str) -> dict[str, Any]:
    path = ws.models_dir / version / META
    if not re.fullmatch(r"v\d+", version) or not path.is_file():
        known = ", ".join(list_versions(ws)["version"]) or "none yet"
        raise UserError(f"No model version {version!r} in this workspace (versions: {known}).")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(damaged(version, [f"{META} is not readable JSON"])) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("classes"), list):
        raise UserError(damaged(version, [f"{META} names no classes"]))
    return meta


def damaged(version: str, found: list[str]) -> str:
    return (
        f"Model {version} is damaged or was changed on disk ({'; '.join(found)}), so it is not used: not scored, "
        "not evaluated, not promoted. Train a new version or use another; `python -m core check` lists every problem."
    )


def recorded(ws: Workspace, version: str) -> tuple[dict[str, str] | None, list[str] | None]:
    """The checksums and classes registered for a version (None where it predates checksums or has no row): from the
    deployment snapshot when it names the version (a replica opens no database), else from the database."""
    snap = published.read(ws)
    if snap is None or version not in snap.models:
        return registered(ws, version)
    return _parsed(snap.models[version])


def registered(ws: Workspace, version: str) -> tuple[dict[str, str] | None, list[str] | None]:
    """The checksums and classes the database holds for a version (the control plane's own view, for check)."""
    with store.connect(ws) as con:
        return _parsed(con.execute("SELECT checksums, classes FROM models WHERE version = ?", [version]).fetchone())


def _parsed(row: Sequence[Any] | None) -> tuple[dict[str, str] | None, list[str] | None]:
    if row is None:
        return None, None
    return (json.loads(row[0]) if row[0] else None), (json.loads(row[1]) if row[1] else None)


def problems(ws: Workspace, version: str) -> list[str]:
    """What is wrong with a version's files, in words ([] when intact); hashed once per change of the files."""
    sums, classes = recorded(ws, version)
    return integrity.checked(ws.models_dir / version, sums, classes)


def require_intact(ws: Workspace, version: str) -> dict[str, Any]:
    """The version's metadata, or UserError when its files are damaged, changed or inconsistent."""
    meta = read_meta(ws, version)
    found = problems(ws, version)
    if found:
        raise UserError(damaged(version, found))
    return meta


def load_reference(ws: Workspace, version: str) -> dict[str, np.ndarray]:
    require_intact(ws, version)
    return load_arrays(str(ws.models_dir / version / REFERENCE))


def check_classes(ws: Workspace, meta: dict[str, Any]) -> None:
    """Refuse a model whose classes are not the workspace's labels."""
    labels = sorted(store.label_counts(ws))
    if sorted(meta["classes"]) != labels:
        raise UserError(
            f"Model {meta.get('version')} knows classes {meta['classes']}, but this workspace has "
            f"{labels}; retrain, or open the workspace it was trained on."
        )


def list_versions(ws: Workspace) -> pd.DataFrame:
    with store.connect(ws) as con:
        frame = con.execute(
            "SELECT version, created_at, backbone, classes, valid_accuracy, valid_error, run_id FROM models ORDER BY created_at"
        ).df()
    production = production_version(ws)
    return frame.assign(production=frame["version"] == production)


def _production_stack(ws: Workspace, con: duckdb.DuckDBPyConnection | None = None) -> list[str]:
    """Promotions push, rollbacks pop: the top is production, the one below is what a rollback restores."""
    with store.reuse(ws, con) as con:
        return stack_of(con.execute("SELECT version, action FROM deployments ORDER BY ts, rowid").fetchall())


def stack_of(deployments: Sequence[tuple[str, str]]) -> list[str]:
    """The production stack from the deployments' rows in order (version, action)."""
    stack: list[str] = []
    for version, action in deployments:
        if action == "promote":
            stack.append(version)
        elif stack:
            stack.pop()
    return stack


def production_version(ws: Workspace, con: duckdb.DuckDBPyConnection | None = None) -> str | None:
    stack = _production_stack(ws, con)
    return stack[-1] if stack else None


def promote(ws: Workspace, version: str) -> None:
    """Make version the production model (recorded, so it can be rolled back)."""
    check_classes(ws, require_intact(ws, version))
    with store.transaction(ws) as con:
        promote_rows(ws, version, con)
        failpoints.hit("registry.promoting")
    failpoints.hit("registry.promoted")
    store.publish_serving(ws)  # after the commit: every process serving predictions picks it up on its next request


def promote_rows(ws: Workspace, version: str, con: duckdb.DuckDBPyConnection) -> None:
    """The promotion's rows, inside the caller's transaction (a rollout writes its own row in the same one); none
    when the version is production already (read inside the transaction: two processes promoting the same version
    at once record it once, so a rollback returns to the one before)."""
    before = production_version(ws, con=con)
    if before == version:
        return
    con.execute("INSERT INTO deployments VALUES (?, ?, 'promote')", [store.now(), version])
    store.audit(ws, "model_promoted", before={"production": before}, after={"production": version}, con=con)


def rollback(ws: Workspace) -> str:
    """Return production to the version it had before the latest promotion."""
    with store.transaction(ws) as con:
        restored = rollback_rows(ws, con)
        failpoints.hit("registry.rolling_back")
    store.publish_serving(ws)
    return restored


def rollback_rows(ws: Workspace, con: duckdb.DuckDBPyConnection) -> str:
    """The rollback's rows, inside the caller's transaction; returns the version production returns to."""
    stack = _production_stack(ws, con)
    if len(stack) < 2:
        raise UserError("There is no earlier production model to roll back to.")
    current, target = stack[-1], stack[-2]
    con.execute("INSERT INTO deployments VALUES (?, ?, 'rollback')", [store.now(), target])
    store.audit(ws, "model_rolled_back", before={"production": current}, after={"production": target}, con=con)
    return target


def headline_accuracy(ws: Workspace, version: str) -> str:
    """The accuracy to quote for a version: test when it had test images, else validation, said which."""
    meta = read_meta(ws, version)
    metrics = meta["metrics"]
    if metrics.get("test_accuracy") is not None:
        test = Rate.of(metrics["test_accuracy"], int(metrics["test_images"]))
        if not test.enough:
            return f"too few held-out test images to quote its accuracy (n {test.n})"
        return f"test accuracy {test.text()} on held-out images"
    valid = Rate.of(metrics["valid_accuracy"], len(meta.get("valid_ids", [])))
    if not valid.enough:
        return f"no test images, and too few validation images to quote its accuracy (n {valid.n})"
    return f"validation accuracy {valid.text()}, optimistic: no test images"


def compare(ws: Workspace, versions: list[str]) -> pd.DataFrame:
    """Side-by-side summary of versions as trained: backbone, size, epochs, valid and test accuracy, wall time."""
    rows = []
    for version in versions:
        meta = read_meta(ws, version)
        cfg = meta.get("config", {})
        rows.append(
            {
                "version": version,
                "backbone": meta["backbone"],
                "size": cfg.get("data", {}).get("size"),
                "freeze_epochs": cfg.get("freeze_epochs"),
                "epochs": cfg.get("epochs"),
                "valid_accuracy": meta["metrics"]["valid_accuracy"],
                "valid_error": meta["metrics"]["valid_error"],
                "test_accuracy": meta["metrics"].get("test_accuracy"),
                "train_images": len(meta["train_ids"]),
                "valid_images": len(meta["valid_ids"]),
                "test_images": meta["metrics"].get("test_images", 0),
                "wall_seconds": meta["metrics"].get("wall_seconds"),
            }
        )
    return pd.DataFrame(rows)
