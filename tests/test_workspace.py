"""Workspaces: create, list, resolve, rename, delete to trash, and the data-root variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.errors import UserError
from core.workspace import paths, store, workspaces


def test_create_and_list(data_root: Path) -> None:
    ws = workspaces.create_workspace("bears")
    assert ws.root == data_root / "workspaces" / "bears"
    assert ws.db_path.is_file() and ws.images_dir.is_dir() and ws.quarantine_dir.is_dir()
    assert workspaces.list_workspaces() == ["bears"]
    assert store.audit_log(ws)["action"].tolist() == ["workspace_created"]


@pytest.mark.parametrize("name", ["a/b", "../x", "", ".hidden", "x" * 80], ids=["slash", "dotdot", "empty", "hidden", "too-long"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(UserError, match="not allowed"):
        workspaces.create_workspace(name)


def test_duplicate_name_is_refused() -> None:
    workspaces.create_workspace("bears")
    with pytest.raises(UserError, match="already exists"):
        workspaces.create_workspace("bears")


def test_resolve_unknown_names_the_known_ones() -> None:
    workspaces.create_workspace("bears")
    with pytest.raises(UserError, match="Known workspaces: bears"):
        workspaces.resolve("cats")


def test_resolve_creates_a_workspace_at_a_path(tmp_path: Path) -> None:
    ws = workspaces.resolve(str(tmp_path / "elsewhere" / "ws1"), create=True)
    assert ws.db_path.is_file()
    assert workspaces.resolve(str(ws.root)).root == ws.root


def test_resolve_refuses_a_folder_that_is_not_a_workspace(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("hello")
    with pytest.raises(UserError, match="not a workspace"):
        workspaces.resolve(str(tmp_path / "busy"), create=True)


def test_rename_keeps_the_contents() -> None:
    ws = workspaces.create_workspace("old")
    (ws.images_dir / "marker.txt").write_text("x")
    new = workspaces.rename_workspace("old", "new")
    assert (new.images_dir / "marker.txt").read_text() == "x"
    assert workspaces.list_workspaces() == ["new"]
    assert "workspace_renamed" in store.audit_log(new)["action"].tolist()


def test_delete_needs_the_name_and_moves_to_trash(data_root: Path) -> None:
    workspaces.create_workspace("doomed")
    with pytest.raises(UserError, match="type the workspace name"):
        workspaces.delete_workspace("doomed", "yes")
    assert workspaces.list_workspaces() == ["doomed"]
    target = workspaces.delete_workspace("doomed", "doomed")
    assert workspaces.list_workspaces() == []
    assert target.parent == data_root / "trash" and (target / "workspace.duckdb").is_file()


def test_data_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(workspaces.DATA_ROOT_ENV, str(tmp_path / "moved"))
    assert workspaces.data_root() == (tmp_path / "moved").resolve()


def test_rename_and_delete_wait_for_a_running_training() -> None:
    import json
    import socket

    ws = workspaces.create_workspace("busy")
    (ws.root / paths.TRAINING_LOCK).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    with pytest.raises(UserError, match="training is running"):
        workspaces.rename_workspace("busy", "other")
    with pytest.raises(UserError, match="training is running"):
        workspaces.delete_workspace("busy", "busy")
    assert workspaces.list_workspaces() == ["busy"]


def test_a_lock_a_killed_training_left_does_not_block_rename_or_delete() -> None:
    import json
    import socket
    import subprocess
    import sys

    ws = workspaces.create_workspace("was-busy")
    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)
    (ws.root / paths.TRAINING_LOCK).write_text(json.dumps({"pid": gone, "host": socket.gethostname(), "started": "x"}))
    renamed = workspaces.rename_workspace("was-busy", "free")
    assert renamed.name == "free" and workspaces.list_workspaces() == ["free"]
    live = workspaces.create_workspace("live")
    (live.root / paths.TRAINING_LOCK).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    with pytest.raises(UserError, match="training is running"):
        workspaces.delete_workspace("live", "live")
