"""The production verdict for pages that show it (Overview, Summary), computed again only when the log changes."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.production import prediction_log
from core.production.monitoring import floors, verdict
from core.workspace.paths import Workspace

ICONS = {  # Streamlit's own icons: the same everywhere (an emoji needs a font the machine may lack)
    verdict.HEALTHY: ":green[:material/check_circle:]",
    verdict.ATTENTION: ":orange[:material/warning:]",
    verdict.FAILING: ":red[:material/error:]",
}


def verdict_icon(found: verdict.Verdict) -> str:
    return ICONS.get(found.status, ":gray[:material/hourglass_empty:]")


@st.cache_data(max_entries=8, show_spinner="Judging production...")
def _verdict(root: str, stamp: tuple, chosen: tuple) -> verdict.Verdict:
    return verdict.production_verdict(Workspace(Path(root)))[0]


def production_verdict(ws: Workspace) -> verdict.Verdict:
    """The verdict on production's log (day windows, simulated traffic left out once real rows exist)."""
    chosen = tuple(sorted(floors.chosen_floors(ws).items()))
    return _verdict(str(ws.root), prediction_log.stamp(ws), chosen)
