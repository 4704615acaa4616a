"""The sidebar workspace picker, error display and progress bars shared by every page."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pandas as pd
import streamlit as st
from PIL import Image
from streamlit.delta_generator import DeltaGenerator

from core.data.gather import GatherReport
from core.data.images import thumbnail
from core.errors import UserError, os_message
from core.model.rates import Rate
from core.production import prediction_log
from core.progress import ProgressFn, ProgressJob
from core.workspace import store, workspaces
from core.workspace.paths import Workspace

T = TypeVar("T")
PICKED = "workspace_name"  # owner: this module (the sidebar picker)
PENDING = "workspace_to_open"  # pages set this to switch the picker on the next run
DEFAULT_ENV = "IMAGEDP_WORKSPACE"


def next_step(page: str, label: str) -> None:
    """The guided path's next step, as a link to its page."""
    st.page_link(page, label=label, icon=":material/arrow_forward:")


def needs(text: str, page: str, label: str) -> None:
    """A page that needs something missing: say what, link where it is done, and stop here."""
    st.info(text)
    next_step(page, label)
    st.stop()


def needs_production(ws: Workspace, purpose: str) -> str:
    """The production version, or stop with what is missing: a model at all, or the promotion of a trained one."""
    from core.model import registry

    production = registry.production_version(ws)
    if production:
        return production
    versions = registry.list_versions(ws)
    if versions.empty:
        needs(f"No model yet: {purpose}, so train one first.", "app_pages/train.py", "Go to Train")
    newest = versions["version"].iloc[-1]
    needs(
        f"Model {newest} is trained but not in production yet: {purpose}. Make it production at the top of Train "
        "(or run it in shadow first, once another model is in production).",
        "app_pages/train.py",
        f"Go to Train: make {newest} production",
    )
    return ""  # not reached: needs() stops the page


def table(frame: pd.DataFrame, where: DeltaGenerator | None = None, index: bool = False) -> None:
    """A small table with every column on screen: st.table wraps a long cell or header instead of hiding the
    columns past the edge behind a sideways scroll (where "refer to a human" tends to be)."""
    (where or st).table(frame, hide_index=not index, border="horizontal")


def rate_metric(where: DeltaGenerator, label: str, rate: Rate, empty: str = "none", help: str | None = None) -> None:
    """A rate as a metric: the share with its 95% interval and n beneath it, or "too few (n)" on a small sample."""
    if not rate.n:
        where.metric(label, empty, help=help)
    elif not rate.enough:
        where.metric(label, rate.short(), help=help)
    else:
        where.metric(label, rate.short(), f"{rate.ci()}, n {rate.n:,}", delta_color="off", delta_arrow="off", help=help)


def workspace_picker(visible: bool = True) -> None:
    """Sidebar selectbox over the data root's workspaces (end-user mode: fixed to IMAGEDP_WORKSPACE, no sidebar)."""
    names = workspaces.list_workspaces()
    if not visible:
        st.session_state[PICKED] = os.environ.get(DEFAULT_ENV, "demo")
        return
    if PENDING in st.session_state:
        st.session_state[PICKED] = st.session_state.pop(PENDING)
    if st.session_state.get(PICKED) not in names:
        preferred = os.environ.get(DEFAULT_ENV, "demo")
        st.session_state[PICKED] = preferred if preferred in names else (names[0] if names else None)
    with st.sidebar:
        if names:
            st.selectbox("Workspace", names, key=PICKED, help="Each workspace is one classification problem.")
        else:
            st.caption("No workspace yet: create one on the Workspaces page.")
        st.caption(f"Data root: `{workspaces.data_root()}`")


def attempt(action: Callable[[], T]) -> T:
    """Run a core call; on a UserError or what the disk said (read-only, full) show the message (never a
    traceback) and stop the page."""
    try:
        return action()
    except UserError as exc:
        st.error(str(exc))
        st.stop()
    except OSError as exc:
        st.error(os_message(exc))
        st.stop()


def open_workspace(name: str) -> None:
    st.session_state[PENDING] = name


def current_workspace() -> Workspace:
    """The picked workspace, or an explanation and a stop."""
    name = st.session_state.get(PICKED)
    if not name:
        if end_user_mode():  # the public app has no Workspaces page to link to
            st.info("No workspace is open: the app's IMAGEDP_WORKSPACE is not set.")
            st.stop()
        needs(
            "No workspace is open. Create one (or the demo) on the **Workspaces** page.",
            "app_pages/workspaces.py",
            "Go to Workspaces",
        )
    return attempt(lambda: workspaces.resolve(name))


LOG_SETTLE_S = 10.0  # a page that reads the log waits this long at most for the rows this app just scored


def log_settled(ws: Workspace) -> None:
    """Before a page reads the log: the predictions this app just made are written first (they go to the log in the
    background), or the page says they are still on their way."""
    waiting = prediction_log.settle(ws, LOG_SETTLE_S)
    if waiting:
        st.caption(
            f"{waiting:,} prediction(s) made in this app are still being written to the log and are not in these "
            "figures yet: reload the page in a moment."
        )


def progress_bar(label: str) -> ProgressFn:
    """A st.progress bar driven by core's (done, total, message) callbacks."""
    bar = st.progress(0.0, text=label)

    def update(done: int, total: int, message: str) -> None:
        bar.progress(min(done / max(total, 1), 1.0), text=f"{label}: {done}/{total} · {message[-60:]}")

    return update


def show_report(ws: Workspace, report: GatherReport) -> None:
    """What a gather run added, skipped and why each failure failed."""
    counts = store.label_counts(ws)
    st.success(
        f"Added {len(report.added)} image(s). The workspace now has {sum(counts.values())} images in {len(counts)} label(s)."
    )
    if report.skipped:
        with st.expander(f"Skipped {len(report.skipped)} already there"):
            st.dataframe(pd.DataFrame(report.skipped), hide_index=True, width="stretch")
    if report.failed:
        st.warning(f"{len(report.failed)} source(s) failed; each reason is below and kept in the workspace log.")
        st.dataframe(pd.DataFrame(report.failed)[["source", "reason"]], hide_index=True, width="stretch")


@st.cache_data(max_entries=5000, show_spinner=False)
def _thumb(path: str, mtime: float, side: int) -> Image.Image:
    return thumbnail(Path(path), side)


def thumbnails(paths: list[Path], side: int = 160) -> list[Image.Image]:
    """Cached previews (keyed by path and modification time) for st.image grids."""
    return [_thumb(str(p), p.stat().st_mtime if p.exists() else 0.0, side) for p in paths]


def image_grid(paths: list[Path], captions: list[str], columns: int = 8, side: int = 160) -> None:
    """Thumbnails in rows of `columns`, each with a wrapped caption under it."""
    thumbs = thumbnails(paths, side)
    for start in range(0, len(thumbs), columns):
        cells = st.columns(columns)
        for cell, thumb, caption in zip(cells, thumbs[start : start + columns], captions[start : start + columns], strict=False):
            cell.image(thumb, width="stretch")
            cell.caption(caption)


def pick_version(ws: Workspace, label: str, key: str, missing: str) -> tuple[str, list[str]]:
    """A model-version selectbox, newest first, production preselected; stops with `missing` when none."""
    from core.model import registry

    versions = registry.list_versions(ws)
    if versions.empty:
        needs(missing, "app_pages/train.py", "Go to Train")
    names = versions["version"].tolist()[::-1]
    production = registry.production_version(ws)
    version = st.selectbox(
        label,
        names,
        index=names.index(production) if production in names else 0,
        key=key,
        format_func=lambda v: f"{v} (production)" if v == production else v,
    )
    return version, names


END_USER_ENV = "IMAGEDP_END_USER"  # "1": serve only the prediction page for IMAGEDP_WORKSPACE


def end_user_mode() -> bool:
    return os.environ.get(END_USER_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@st.cache_resource(max_entries=4, show_spinner=False)
def _service(root: str) -> object:
    from core.production import serving

    return serving.Service(workspaces.resolve(root))


def served(ws: Workspace) -> tuple[object, object]:
    """The process's serving path for this workspace (one per process: every session's uploads share its batcher)
    and the snapshot it serves now; or what is missing, with a link."""
    service = _service(str(ws.root))

    def now() -> object:
        try:
            return service.snapshot()
        except UserError:
            needs_production(ws, "predictions come from the production model")  # stops when none is there
            raise  # another reason (a damaged model): said as it is

    if service.ready:
        return service, attempt(now)
    with st.spinner("Loading the model…"):  # the first request of this process
        return service, attempt(now)


def job_progress(job: ProgressJob | None, text: Callable[[int, int, str], str]) -> None:
    """A background job's progress bar (call it from a fragment that runs every second); the whole page again once
    the job has ended, so the page shows its result. `text(done, total, message)` says what it is doing."""
    if job is None or not job.running:
        st.rerun()
    done, total, message = job.progress
    st.progress(min(done / max(total, 1), 1.0), text=text(done, total, message))
