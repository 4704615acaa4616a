"""Folder, upload, zip and demo imports: what is added, skipped and refused, and why."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest

from core.data import gather
from core.data.gather import GatherReport
from core.errors import UserError
from core.workspace import store, workspaces
from core.workspace.paths import Workspace
from tests.helpers import encode, make_zip, picture, png_bytes


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


def test_folder_import_catalogs_every_image_by_label(ws: Workspace, make_folder) -> None:
    items, failed = gather.folder_items(make_folder({"cat": 3, "dog": 2}))
    report = gather.ingest(ws, items)
    assert not failed and len(report.added) == 5
    assert store.label_counts(ws) == {"cat": 3, "dog": 2}
    catalog = store.images(ws)
    for _, row in catalog.iterrows():
        assert (ws.root / row["path"]).is_file()
        assert row["path"] == f"images/{row['label']}/{row['id']}.png"
    assert len(store.audit_log(ws).query("action == 'image_added'")) == 5


def test_rerunning_a_folder_import_adds_nothing(ws: Workspace, make_folder) -> None:
    src = make_folder({"cat": 2, "dog": 2})
    gather.ingest(ws, gather.folder_items(src)[0])
    again = gather.ingest(ws, gather.folder_items(src)[0])
    assert again.added == [] and len(again.skipped) == 4
    assert all("already imported" in s["reason"] for s in again.skipped)


def test_a_copy_from_another_file_is_kept_and_numbered(ws: Workspace, tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / "src" / "cat").mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / "cat" / f"{name}.png").write_bytes(png_bytes(1))
    report = gather.ingest(ws, gather.folder_items(tmp_path / "src")[0])
    first, second = sorted(report.added)
    assert second == f"{first}-2"


def test_train_and_valid_folders_keep_their_split(ws: Workspace, make_folder, tmp_path: Path) -> None:
    root = tmp_path / "split"
    make_folder({"cat": 2, "dog": 1}, name="split/train")
    make_folder({"cat": 1, "dog": 1}, name="split/valid")
    gather.ingest(ws, gather.folder_items(root)[0])
    splits = store.images(ws).groupby("split").size().to_dict()
    assert splits == {"train": 3, "valid": 2}


@pytest.mark.parametrize(
    "folder", ["bad:label", "with space ok", "-dash", ".hidden"], ids=["colon", "space-is-fine", "leading-dash", "hidden"]
)
def test_folder_label_names_are_checked(ws: Workspace, tmp_path: Path, folder: str) -> None:
    (tmp_path / "src" / folder).mkdir(parents=True)
    (tmp_path / "src" / folder / "x.png").write_bytes(png_bytes(2))
    (tmp_path / "src" / "good").mkdir()
    (tmp_path / "src" / "good" / "y.png").write_bytes(png_bytes(3))
    items, failed = gather.folder_items(tmp_path / "src")
    labels = {i.label for i in items}
    if folder == "with space ok":
        assert labels == {"good", "with space ok"} and not failed
    elif folder == ".hidden":
        assert labels == {"good"} and not failed
    else:
        assert labels == {"good"} and "not allowed" in failed[0]["reason"]


@pytest.mark.parametrize(
    "label",
    ["a/b", "../up", "", "train", "x" * 65, "tab\tlabel"],
    ids=["slash", "dotdot", "empty", "reserved-split", "too-long", "control-char"],
)
def test_bad_labels_are_refused_with_a_message(label: str) -> None:
    with pytest.raises(UserError, match="not allowed"):
        gather.validate_label(label)


def test_bad_files_in_a_folder_fail_with_reasons_and_the_rest_import(ws: Workspace, tmp_path: Path) -> None:
    cat = tmp_path / "src" / "cat"
    cat.mkdir(parents=True)
    (cat / "good.png").write_bytes(png_bytes(1))
    (cat / "empty.jpg").write_bytes(b"")
    (cat / "page.jpg").write_bytes(b"<html></html>")
    (cat / "cut.png").write_bytes(png_bytes(2)[:-50])
    (cat / "webp-named.jpg").write_bytes(encode(picture(3), "WEBP"))
    report = gather.ingest(ws, gather.folder_items(tmp_path / "src")[0])
    reasons = {Path(f["source"]).name: f["reason"] for f in report.failed}
    assert len(report.added) == 2
    assert set(reasons) == {"empty.jpg", "page.jpg", "cut.png"}
    assert store.images(ws).set_index("source").loc[str(cat / "webp-named.jpg"), "format"] == "WEBP"
    assert len(store.failures(ws)) == 3


def test_loose_files_at_the_top_of_a_folder_are_reported(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "src" / "cat").mkdir(parents=True)
    (tmp_path / "src" / "cat" / "a.png").write_bytes(png_bytes(1))
    (tmp_path / "src" / "stray.png").write_bytes(png_bytes(2))
    items, failed = gather.folder_items(tmp_path / "src")
    assert len(items) == 1 and "not inside a <label>/ folder" in failed[0]["reason"]


def test_missing_folder_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        gather.folder_items(tmp_path / "nope")


def test_flat_folder_with_a_label(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "flat").mkdir()
    for i in range(3):
        (tmp_path / "flat" / f"{i}.png").write_bytes(png_bytes(i + 10))
    report = gather.ingest(ws, gather.folder_items(tmp_path / "flat", label="bird")[0])
    assert len(report.added) == 3 and store.label_counts(ws) == {"bird": 3}


def test_uploads_go_into_the_chosen_label(ws: Workspace) -> None:
    report = gather.ingest(ws, gather.upload_items([("a.png", png_bytes(1)), ("b.jpg", b"nope")], "cat"))
    assert len(report.added) == 1 and report.failed[0]["source"] == "b.jpg"


def test_zip_with_label_folders(ws: Workspace) -> None:
    data = make_zip({"cat/a.png": png_bytes(1), "dog/b.png": png_bytes(2), "__MACOSX/cat/._a.png": b"x"})
    report = gather.ingest(ws, gather.zip_items(data, None))
    assert len(report.added) == 2 and store.label_counts(ws) == {"cat": 1, "dog": 1}


ZIP_ATTACKS = [
    (make_zip({"../evil.png": png_bytes(1)}), "unsafe path", "dotdot"),
    (make_zip({"/abs/evil.png": png_bytes(1)}), "unsafe path", "absolute"),
    (make_zip({"cat/ok.png": png_bytes(1)}, links=("cat/link.png",)), "is a link", "symlink"),
    (make_zip({"cat/bomb.png": b"\0" * 50_000_000}), "zip bomb", "bomb"),
    (b"PK\x03\x04 not really a zip", "not a readable zip", "not-a-zip"),
]


@pytest.mark.parametrize("data,message", [a[:2] for a in ZIP_ATTACKS], ids=[a[2] for a in ZIP_ATTACKS])
def test_unsafe_archives_are_refused_whole(ws: Workspace, data: bytes, message: str) -> None:
    before = files_under(ws.root)
    with pytest.raises(UserError, match=message):
        gather.zip_items(data, "cat")
    assert files_under(ws.root) == before


def test_zip_total_size_limit() -> None:
    data = make_zip({f"cat/{i}.png": png_bytes(i) for i in range(3)})
    with pytest.raises(UserError, match="expands past"):
        gather.zip_items(data, None, limits=gather.ZipLimits(max_total_bytes=100))


def test_demo_subset_writes_real_digit_scans(ws: Workspace) -> None:
    report = gather.ingest(ws, gather.demo_items(["0", "1"]))
    counts = store.label_counts(ws)
    assert set(counts) == {"0", "1"} and sum(counts.values()) == len(report.added) > 300
    row = store.images(ws).iloc[0]
    assert (row["width"], row["height"], row["format"]) == (64, 64, "PNG")


def test_demo_rejects_unknown_classes() -> None:
    with pytest.raises(UserError, match="digits 0-9"):
        gather.demo_items(["cat"])


def test_progress_callback_sees_every_item(ws: Workspace, make_folder) -> None:
    events: list[tuple[int, int, str]] = []
    gather.ingest(ws, gather.folder_items(make_folder({"cat": 3}))[0], on_progress=lambda *e: events.append(e))
    assert [e[0] for e in events] == [1, 2, 3] and all(e[1] == 3 for e in events)


def test_report_merge_keeps_everything() -> None:
    a = GatherReport(["1"], [{"source": "s", "reason": "r"}], [])
    b = GatherReport(["2"], [], [{"source": "f", "reason": "x"}])
    merged = a.merge(b)
    assert merged.added == ["1", "2"] and len(merged.skipped) == len(merged.failed) == 1


def test_uploads_open_zips_and_label_them_by_folder_unless_a_label_is_given(ws: Workspace) -> None:
    archive = make_zip({"cat/a.png": png_bytes(70), "dog/b.png": png_bytes(71)})
    report = gather.add_uploads(ws, [("pets.zip", archive)], "  ")
    assert len(report.added) == 2 and store.label_counts(ws) == {"cat": 1, "dog": 1}
    other = make_zip({"x/d.png": png_bytes(76)})
    report = gather.add_uploads(ws, [("more.ZIP", other), ("c.png", png_bytes(72))], "cat")
    assert len(report.added) == 2 and report.failed == []
    assert store.label_counts(ws) == {"cat": 3, "dog": 1}


@pytest.mark.parametrize(
    "files,label,message",
    [
        ([], "cat", "Choose one or more image files"),
        ([("c.png", png_bytes(73))], "  ", "Choose a label for the uploaded images"),
    ],
    ids=["nothing-chosen", "image-without-label"],
)
def test_uploads_that_cannot_be_routed_say_why(ws: Workspace, files: list, label: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        gather.add_uploads(ws, files, label)
    assert store.label_counts(ws) == {}


def test_folder_import_records_bad_folders_and_imports_the_rest(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "src" / "cat").mkdir(parents=True)
    (tmp_path / "src" / "cat" / "a.png").write_bytes(png_bytes(74))
    (tmp_path / "src" / "bad:label").mkdir()
    (tmp_path / "src" / "bad:label" / "b.png").write_bytes(png_bytes(75))
    report = gather.import_folder(ws, f"  {tmp_path / 'src'}  ")
    assert store.label_counts(ws) == {"cat": 1}
    assert [f["source"] for f in report.failed] == [str(tmp_path / "src" / "bad:label")]
    assert store.failures(ws)["source"].tolist() == [str(tmp_path / "src" / "bad:label")]
    with pytest.raises(UserError, match="Enter the path of a folder"):
        gather.import_folder(ws, "   ")


def test_a_demo_workspace_is_created_with_the_chosen_digits() -> None:
    ws, report = gather.create_demo_workspace("digits", ["3", "8"])
    assert set(store.label_counts(ws)) == {"3", "8"} and len(report.added) == sum(store.label_counts(ws).values()) > 300
    with pytest.raises(UserError, match="digits 0-9"):
        gather.create_demo_workspace("nope", ["cat"])
    assert workspaces.list_workspaces() == ["digits"]  # the refused one made no folder


def test_a_huge_file_is_refused_before_it_is_read(ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "src" / "cat"
    folder.mkdir(parents=True)
    (folder / "ok.png").write_bytes(png_bytes(1))
    with (folder / "huge.png").open("wb") as fh:  # 3 GB on paper, nothing on disk (sparse)
        fh.truncate(3_000_000_000)
    read: list[str] = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self.name) or real(self))
    report = gather.import_folder(ws, tmp_path / "src")
    assert len(report.added) == 1 and "huge.png" not in read
    assert [f["reason"] for f in report.failed] == ["file too large (3000 MB > 50 MB)"]


def test_a_zip_entry_larger_than_a_file_may_be_is_refused_before_it_is_read(ws: Workspace) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # stored: no ratio gives it away
        zf.writestr("cat/big.png", os.urandom(51_000_000))
        zf.writestr("cat/ok.png", png_bytes(2))
    report = gather.ingest(ws, gather.zip_items(buf.getvalue(), None))
    assert len(report.added) == 1 and report.failed[0]["reason"] == "file too large (51 MB > 50 MB)"
