"""The monitoring report the command line prints: windows, alerts and totals, as plain JSON-ready data."""

from __future__ import annotations

from dataclasses import asdict

from core.model import registry
from core.production import prediction_log
from core.production.monitoring.alerts import alerts
from core.production.monitoring.queries import LogFilter, json_records, windows
from core.production.monitoring.reference import log_reference
from core.workspace.paths import Workspace


def summary(ws: Workspace, f: LogFilter = LogFilter(), version: str | None = None) -> dict[str, object]:
    """Windows, alerts against the reference of `version` (default production) and totals, for the CLI."""
    win = windows(ws, f)
    reference = version or f.version or registry.production_version(ws)
    base = log_reference(ws, reference) if reference else None
    return {
        "window": f.window,
        "reference_version": reference,
        "predictions": int(win["predictions"].sum()) if len(win) else 0,
        "windows": json_records(win),
        "alerts": [asdict(a) for a in alerts(win, base)] if base is not None else [],
        "spooled": prediction_log.spooled_rows(ws),
    }
