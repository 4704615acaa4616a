"""Verification: broken files go to quarantine (never unlinked), can come back; duplicates in groups."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.data import gather, verify
from core.errors import UserError
from core.workspace import store
from core.workspace.paths import Workspace
from tests.helpers import encode, picture, png_bytes


def all_files(ws: Workspace) -> int:
    return sum(1 for p in ws.root.rglob("*") if p.is_file() and p.suffix != ".wal" and p.name != "workspace.duckdb")


@pytest.fixture
def filled(ws: Workspace, make_folder) -> Workspace:
    gather.ingest(ws, gather.folder_items(make_folder({"cat": 4, "dog": 4}))[0])
    return ws


def test_clean_workspace_verifies_without_changes(filled: Workspace) -> None:
    report = verify.verify_workspace(filled)
    assert report.checked == 8 and not report.quarantined and not report.adopted


def test_a_file_broken_on_disk_is_quarantined_with_its_reason(filled: Workspace) -> None:
    row = store.images(filled).iloc[0]
    path = filled.root / row["path"]
    path.write_bytes(path.read_bytes()[:100])
    files_before = all_files(filled)
    report = verify.verify_workspace(filled)
    assert [q["id"] for q in report.quarantined] == [row["id"]]
    assert not path.exists() and (filled.quarantine_dir / path.name).exists()
    assert all_files(filled) == files_before
    moved = store.images(filled, status="quarantined").iloc[0]
    assert "truncated" in moved["reason"]
    assert "quarantined" in store.audit_log(filled)["action"].tolist()


def test_restore_brings_it_back(filled: Workspace) -> None:
    row = store.images(filled).iloc[0]
    verify.quarantine(filled, row["id"], "looked wrong")
    assert store.label_counts(filled)["cat"] == 3
    rel = verify.restore(filled, row["id"])
    assert rel == row["path"] and (filled.root / rel).is_file()
    assert store.label_counts(filled)["cat"] == 4
    assert store.audit_log(filled)["action"].tolist()[:2] == ["restored", "quarantined"]


def test_restore_refuses_what_is_not_quarantined(filled: Workspace) -> None:
    with pytest.raises(UserError, match="not in quarantine"):
        verify.restore(filled, store.images(filled).iloc[0]["id"])


def test_a_missing_file_is_marked_not_lost(filled: Workspace) -> None:
    row = store.images(filled).iloc[0]
    (filled.root / row["path"]).rename(filled.root / "elsewhere.png")
    report = verify.verify_workspace(filled)
    assert report.quarantined[0]["reason"] == "file missing on disk"
    assert len(store.images(filled, status=None)) == 8


def test_files_dropped_in_by_hand_are_cataloged_or_quarantined(filled: Workspace) -> None:
    (filled.images_dir / "cat" / "new.png").write_bytes(png_bytes(999))
    (filled.images_dir / "cat" / "broken.jpg").write_bytes(b"garbage")
    (filled.images_dir / "bird").mkdir()
    (filled.images_dir / "bird" / "b.png").write_bytes(png_bytes(998))
    files_before = all_files(filled)
    report = verify.verify_workspace(filled)
    assert len(report.adopted) == 2
    assert store.label_counts(filled) == {"bird": 1, "cat": 5, "dog": 4}
    assert any("not an image" in q["reason"] for q in report.quarantined)
    assert all_files(filled) == files_before
    assert not (filled.images_dir / "cat" / "broken.jpg").exists()


def test_one_label_and_tiny_labels_are_warned(ws: Workspace, make_folder) -> None:
    gather.ingest(ws, gather.folder_items(make_folder({"cat": 2}))[0])
    warnings = verify.verify_workspace(ws).warnings
    assert any("at least two" in w for w in warnings) and any("only 2" in w for w in warnings)


def test_an_empty_label_folder_is_warned(filled: Workspace) -> None:
    (filled.images_dir / "bird").mkdir()
    assert any("'bird' is empty" in w for w in verify.verify_workspace(filled).warnings)


def test_duplicate_groups(ws: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "src" / "cat"
    src.mkdir(parents=True)
    (src / "a.png").write_bytes(png_bytes(1, (128, 96)))
    (src / "a-copy.png").write_bytes(png_bytes(1, (128, 96)))
    (src / "a-small.jpg").write_bytes(encode(picture(1, (128, 96)).resize((96, 72)), "JPEG", quality=85))
    (src / "other.png").write_bytes(png_bytes(2, (128, 96)))
    gather.ingest(ws, gather.folder_items(tmp_path / "src")[0])
    catalog = store.images(ws).set_index("source")
    exact = verify.exact_duplicate_groups(catalog.reset_index())
    near = verify.near_duplicate_groups(catalog.reset_index())
    a, copy, small = (catalog.loc[str(src / n), "id"] for n in ("a.png", "a-copy.png", "a-small.jpg"))
    assert exact == [sorted([a, copy])]
    assert near == [sorted([a, copy, small])]
