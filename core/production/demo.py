"""The ready demo `make run` opens: digits, a trained production model, and two simulated weeks of traffic."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.data import gather
from core.model import registry, runs
from core.production import prediction_log, traffic
from core.workspace import store, workspaces
from core.workspace.paths import Workspace

Say = Callable[[str], None]


def prepare_demo(name: str = "demo", days: int = 14, say: Say = print) -> dict[str, Any]:
    """Each missing step only: gather the digits, train and promote a model, simulate `days` of traffic."""
    done: dict[str, Any] = {"workspace": name}
    ws: Workspace = workspaces.resolve(name, create=True)
    if not store.label_counts(ws):
        say("demo: writing the bundled digits")
        done["images"] = len(gather.add_demo(ws).added)
    if registry.production_version(ws) is None:
        say("demo: training a model (about 30 s on a laptop CPU)")
        summary = runs.train_workspace(ws, runs.defaults(ws))
        registry.promote(ws, summary["version"])
        done["trained"] = {k: summary[k] for k in ("version", "valid_accuracy", "wall_seconds")}
    if prediction_log.count(ws) == 0:
        say(f"demo: simulating {days} days of production traffic")
        result = traffic.replay_traffic(ws, traffic.TrafficConfig(days=days, shift_day=days // 2))
        done["simulated"] = {k: result[k] for k in ("predictions", "feedback", "start", "end")}
    done["production"] = registry.production_version(ws)
    done["predictions"] = prediction_log.count(ws)
    return done
