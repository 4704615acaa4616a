"""Workspaces: create (empty or the demo), open, rename and delete (to trash)."""

from collections.abc import Callable

import pandas as pd
import streamlit as st

from core.data import gather
from core.errors import UserError
from core.production import check
from core.workspace import store, workspaces
from ui.common import attempt, next_step, open_workspace, progress_bar

st.title("Workspaces")
st.write(
    "A workspace is one classification problem: its images, models, decisions and production "
    "log, in one folder with one DuckDB file. Copy the folder and you have copied everything."
)
if message := st.session_state.pop("ws_message", None):
    st.success(message)
if step := st.session_state.pop("ws_next", None):
    next_step(*step)

names = workspaces.list_workspaces()
if names:
    rows, unreadable = [], []
    for name in names:
        try:
            ws = workspaces.resolve(name)
            counts = store.label_counts(ws)
            quarantined = store.quarantined_count(ws)
        except UserError as exc:  # one unreadable workspace (read-only, newer, locked) does not hide the others
            unreadable.append(f"**{name}**: {exc}")
            continue
        rows.append(
            {
                "workspace": name,
                "images": sum(counts.values()),
                "labels": len(counts),
                "quarantined": quarantined,
                "folder": str(ws.root),
            }
        )
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    for line in unreadable:
        st.error(line)
else:
    st.info("No workspace yet. Start with the demo: 1,797 real handwritten digit scans, no network needed.")


def apply(action: Callable[[], str]) -> None:
    """Run a workspace action: show its error, or keep its message for the next run and rerun."""
    st.session_state["ws_message"] = attempt(action)
    st.rerun()


def create_demo(name: str, classes: list[str]) -> str:
    ws, report = gather.create_demo_workspace(name, classes or None, progress_bar("Writing digits"))
    open_workspace(ws.name)
    st.session_state["ws_next"] = ("app_pages/explore.py", "Next: verify the images")
    return f"Created {ws.name!r} with {len(report.added)} images; it is open now."


def create_empty(name: str) -> str:
    ws = workspaces.create_workspace(name)
    open_workspace(ws.name)
    st.session_state["ws_next"] = ("app_pages/gather.py", "Next: gather images")
    return f"Created {ws.name!r}; it is open now."


def rename(old: str, new: str) -> str:
    ws = workspaces.rename_workspace(old, new)
    open_workspace(ws.name)
    return f"Renamed {old!r} to {ws.name!r}."


def delete(name: str, confirm: str) -> str:
    return f"Moved {name!r} to {workspaces.delete_workspace(name, confirm)}."


demo_tab, new_tab, rename_tab, delete_tab, check_tab = st.tabs(
    ["Demo workspace", "New workspace", "Rename", "Delete", "Check and repair"]
)

with demo_tab:
    st.write("scikit-learn's bundled handwritten digits (1,797 real scans), written as PNG images.")
    demo_name = st.text_input("Name", value="demo", key="ws_demo_name")
    classes = st.multiselect("Digits (all when empty)", [str(d) for d in range(10)], key="ws_demo_classes")
    if st.button("Create demo workspace", type="primary", key="ws_demo_create"):
        apply(lambda: create_demo(demo_name, classes))

with new_tab:
    new_name = st.text_input("Name", key="ws_new_name", placeholder="bears")
    if st.button("Create empty workspace", key="ws_new_create"):
        apply(lambda: create_empty(new_name))

with rename_tab:
    if names:
        old = st.selectbox("Workspace", names, key="ws_rename_old")
        target = st.text_input("New name", key="ws_rename_new")
        if st.button("Rename", key="ws_rename_go"):
            apply(lambda: rename(old, target))

with delete_tab:
    if names:
        doomed = st.selectbox("Workspace", names, key="ws_delete_name")
        st.warning("Deleting moves the whole folder to the data root's trash/ (nothing is erased).")
        confirm = st.text_input(f"Type {doomed!r} to confirm", key="ws_delete_confirm")
        if st.button("Delete", key="ws_delete_go"):
            apply(lambda: delete(doomed, confirm))

with check_tab:
    if names:
        st.write(
            "Every catalog row has its file and every image file its row; every model is intact and the one "
            "registered; production, policies and the rollout name versions that exist; no run says running without "
            "a live training; the log's tables name only whole files, and an earlier layout's files are folded into them. "
            "Repair moves, marks and records; it never deletes."
        )
        checked = st.selectbox("Workspace", names, key="ws_check_name")
        left, right = st.columns(2)
        for column, label, fix in ((left, "Check", False), (right, "Repair what can be repaired", True)):
            if column.button(label, key=f"ws_check_{'repair' if fix else 'run'}"):
                found = attempt(lambda fix=fix: check.check(workspaces.resolve(checked), repair=fix))
                st.session_state["ws_check"] = (checked, found.as_dict())
        last = st.session_state.get("ws_check")
        if last and last[0] == checked:
            data = last[1]
            for line in data["repaired"]:
                st.success(f"Repaired: {line}")
            if not data["problems"]:
                st.success("No problems found.")
            elif data["remaining"]:
                st.warning(
                    f"{len(data['remaining'])} problem(s) " + ("remain: no repair for them." if data["repaired"] else "found.")
                )
            if data["problems"]:
                st.dataframe(
                    [{k: p[k] for k in ("kind", "subject", "detail", "repair")} for p in data["problems"]],
                    hide_index=True,
                    width="stretch",
                )
