"""Dataset summaries and their plotly figures, for the Explore page."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go


def label_counts_figure(catalog: pd.DataFrame) -> go.Figure:
    """Images per label, as bars."""
    counts = catalog.groupby("label").size().rename("images").reset_index()
    fig = px.bar(counts, x="label", y="images", text="images", title="Images per label")
    fig.update_layout(xaxis_type="category", margin=dict(t=40, b=10))
    return fig


def size_figure(catalog: pd.DataFrame) -> go.Figure:
    """Width against height, one point per image, coloured by label."""
    fig = px.scatter(
        catalog,
        x="width",
        y="height",
        color="label",
        opacity=0.6,
        hover_data=["id", "format", "mode"],
        title="Image sizes (pixels)",
    )
    fig.update_layout(margin=dict(t=40, b=10))
    return fig


def aspect_figure(catalog: pd.DataFrame) -> go.Figure:
    """Aspect ratio (width / height) per label: crops and squishes hit odd shapes hardest."""
    frame = catalog.assign(aspect=catalog["width"] / catalog["height"])
    fig = px.box(
        frame,
        x="label",
        y="aspect",
        color="label",
        points="outliers",
        title="Aspect ratio per label (width / height; 1 = square)",
    )
    fig.update_layout(showlegend=False, xaxis_type="category", margin=dict(t=40, b=10))
    return fig


def brightness_figure(catalog: pd.DataFrame) -> go.Figure:
    """Brightness per label, as box plots: a label much darker than the rest is a shortcut risk."""
    fig = px.box(
        catalog, x="label", y="brightness", color="label", points="outliers", title="Brightness per label (0 = black, 1 = white)"
    )
    fig.update_layout(showlegend=False, xaxis_type="category", margin=dict(t=40, b=10))
    return fig


def summary(catalog: pd.DataFrame) -> pd.DataFrame:
    """Per label: count, median size, share of each source, conversions training applies."""
    if catalog.empty:
        return pd.DataFrame(columns=["label", "images", "median width", "median height", "sources", "notes"])
    rows = []
    for label, group in catalog.groupby("label"):
        notes = group["notes"].fillna("").str.split(",").explode()
        notes = notes[notes != ""].value_counts()
        rows.append(
            {
                "label": label,
                "images": len(group),
                "median width": int(group["width"].median()),
                "median height": int(group["height"].median()),
                "sources": ", ".join(f"{k} {v}" for k, v in group["source_kind"].value_counts().items()),
                "notes": ", ".join(f"{k} {v}" for k, v in notes.items()),
            }
        )
    return pd.DataFrame(rows)


def provenance(row: pd.Series) -> str:
    """One caption line saying where an image came from."""
    if row.get("query"):
        return f"search '{row['query']}'"
    if row.get("url"):
        return str(row["url"])[-60:]
    source = str(row.get("source") or "")
    if row["source_kind"] == "demo":
        return source.replace("sklearn digits ", "digits ")
    return f"{row['source_kind']}: {source.split('/')[-1][-40:]}"


LABELLED_BY = {
    "review": "a reviewer",
    "app": "feedback on the Predict page",
    "end user": "an end user of the app",
    "api": "a system calling the prediction API",
    "import": "imported labels",
    "model": "the model (no person confirmed it)",
}


def provenance_table(catalog: pd.DataFrame) -> pd.DataFrame:
    """The dataset's make-up: images per origin (how they came in) and who gave their labels, per label."""
    source = catalog.get("label_source", pd.Series(None, index=catalog.index, dtype=object))
    labelled_by = source.map(LABELLED_BY).where(catalog["source_kind"] == "production", "as gathered (folder, query or upload)")
    frame = catalog.assign(origin=catalog["source_kind"], labelled_by=labelled_by.fillna("feedback"))
    return frame.groupby(["origin", "labelled_by", "label"]).size().rename("images").reset_index()


def provenance_figure(table: pd.DataFrame) -> go.Figure:
    """Images per label, stacked by origin and who labelled them."""
    stacked = table.assign(provenance=table["origin"] + " · labelled by " + table["labelled_by"])
    fig = px.bar(stacked, x="label", y="images", color="provenance", title="Where the images and their labels came from")
    fig.update_layout(
        xaxis={"type": "category"},
        height=340,
        margin={"t": 40, "b": 10, "l": 10, "r": 10},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig
