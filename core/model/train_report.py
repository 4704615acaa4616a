"""Figures for the Train page: the growing loss/error chart and the learning-rate finder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.model.config import TrainConfig
from core.model.events import BatchEvent, EpochMetrics


def history_of(meta: dict[str, Any]) -> list[EpochMetrics]:
    """A saved version's epochs, from its model.json."""
    return [EpochMetrics(**e) for e in meta["metrics"]["history"]]


def history_figure(epochs: Sequence[EpochMetrics], planned: int | None = None) -> go.Figure:
    """Train and valid loss (left axis) and error rate (right axis) per epoch; frozen epochs shaded.
    With `planned`, the x axis already spans every epoch to come, so the chart visibly grows."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    x = [e.epoch for e in epochs]
    fig.add_trace(go.Scatter(x=x, y=[e.train_loss for e in epochs], name="train loss", mode="lines+markers"))
    fig.add_trace(go.Scatter(x=x, y=[e.valid_loss for e in epochs], name="valid loss", mode="lines+markers"))
    fig.add_trace(
        go.Scatter(x=x, y=[e.error_rate for e in epochs], name="error rate", mode="lines+markers", line={"dash": "dot"}),
        secondary_y=True,
    )
    frozen = [e.epoch for e in epochs if e.stage == "frozen"]
    if frozen:
        fig.add_vrect(
            x0=min(frozen) - 0.5,
            x1=max(frozen) + 0.5,
            fillcolor="lightblue",
            opacity=0.25,
            line_width=0,
            annotation_text="body frozen",
            annotation_position="top left",
        )
    fig.update_xaxes(title_text="epoch", dtick=1, range=[-0.5, planned - 0.5] if planned else None)
    fig.update_yaxes(title_text="loss", rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title_text="error rate", rangemode="tozero", tickformat=".0%", secondary_y=True)
    fig.update_layout(title="Losses and error rate", margin={"t": 50, "b": 10}, legend={"orientation": "h", "y": -0.2})
    return fig


def lr_find_figure(rates: np.ndarray, losses: np.ndarray, suggestion: float) -> go.Figure:
    """Loss against learning rate on a log axis, with the suggested rate marked."""
    fig = go.Figure(go.Scatter(x=rates, y=losses, mode="lines", name="smoothed loss"))
    # a trace, not add_vline: shapes on a log axis need log10 positions
    fig.add_trace(
        go.Scatter(
            x=[suggestion, suggestion],
            y=[float(np.min(losses)), float(np.max(losses))],
            mode="lines",
            line={"dash": "dash", "color": "red"},
            name=f"suggested {suggestion:.1e}",
        )
    )
    fig.update_xaxes(type="log", title_text="learning rate (head)")
    fig.update_yaxes(title_text="loss")
    fig.update_layout(title="Learning-rate finder", margin={"t": 50, "b": 10})
    return fig


def progress_words(event: BatchEvent, cfg: TrainConfig) -> str:
    """A training step as a person says it ("training the new head: epoch 1 of 2, batch 3/16"), with its ETA."""
    eta = f" · about {event.eta_s:.0f} s left in this step" if event.eta_s is not None else ""
    if event.stage == "cache":
        return f"preparing images {event.done}/{event.total} (decoded once, reused by later runs){eta}"
    if event.stage == "features":
        return f"measuring the validation images {event.done}/{event.total}{eta}"
    epochs = {"frozen": cfg.freeze_epochs, "unfrozen": cfg.epochs if cfg.epochs is not None else cfg.auto_epochs}.get(event.stage)
    if not epochs:
        return f"{event.stage}: {event.done}/{event.total}{eta}"
    per = max(event.total // epochs, 1)
    epoch = min((max(event.done, 1) - 1) // per + 1, epochs)
    batch = event.done - (epoch - 1) * per
    what = "training the new head" if event.stage == "frozen" else "training all layers"
    return f"{what}: epoch {epoch} of {epochs}, batch {batch}/{per}{eta}"
