"""The cleaner: honest scores find a planted mislabel; apply and undo never lose a file."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pandas as pd
import pytest

from core.data import gather
from core.errors import UserError
from core.model import cleaning, runs
from core.model.cleaning import Decision
from core.workspace import store
from core.workspace.paths import Workspace
from tests.helpers import TINY, colour_image, fill


def snapshot(ws: Workspace) -> tuple[pd.DataFrame, dict[str, str]]:
    catalog = store.images(ws, status=None)[["id", "label", "path", "status"]].sort_values("id").reset_index(drop=True)
    files = {
        str(p.relative_to(ws.root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for d in (ws.images_dir, ws.quarantine_dir)
        for p in d.rglob("*")
        if p.is_file()
    }
    return catalog, files


@pytest.fixture
def filled(ws: Workspace) -> Workspace:
    fill(ws, {"red": 6, "blue": 6})
    return ws


def test_apply_then_undo_restores_files_and_catalog_exactly(filled: Workspace) -> None:
    before = snapshot(filled)
    ids = store.images(filled).sort_values("id")["id"].tolist()
    batch = cleaning.apply(
        filled, [Decision(ids[0], "delete"), Decision(ids[1], "relabel", "green"), Decision(ids[2], "keep")]
    ).batch
    after = store.images(filled, status=None).set_index("id")
    assert after.loc[ids[0], "status"] == "quarantined" and after.loc[ids[1], "label"] == "green"
    assert (filled.root / after.loc[ids[1], "path"]).is_file()
    assert cleaning.undo_last(filled) == 2
    catalog, files = snapshot(filled)
    pd.testing.assert_frame_equal(catalog, before[0])
    assert files == before[1]
    log = store.audit_log(filled)
    assert {"clean_delete", "clean_relabel", "clean_batch", "clean_undo", "restored"} <= set(log["action"])
    in_batch = log[log["detail"].map(lambda d: isinstance(d, str) and json.loads(d).get("batch") == batch)]
    assert sorted(in_batch["action"]) == ["clean_batch", "clean_delete", "clean_relabel", "clean_undo"]
    assert sorted(in_batch["image_id"].dropna()) == sorted(ids[:2])  # the kept image is in no batch row
    with pytest.raises(UserError, match="no cleaning batch left"):
        cleaning.undo_last(filled)


def test_relabel_onto_an_existing_file_name_keeps_both(filled: Workspace) -> None:
    row = store.images(filled).iloc[0]
    other = "blue" if row["label"] == "red" else "red"
    squatter = filled.images_dir / other / Path(row["path"]).name
    squatter.write_bytes(b"someone else's file")
    cleaning.apply(filled, [Decision(row["id"], "relabel", other)])
    moved = store.images(filled).set_index("id").loc[row["id"], "path"]
    assert moved.endswith("-1.png") and squatter.read_bytes() == b"someone else's file"
    assert (filled.root / moved).is_file()


@pytest.mark.parametrize(
    "decision,message",
    [
        (Decision("x", "burn"), "Unknown action"),
        (Decision("x", "relabel", "a/b"), "not allowed"),
        (Decision("x", "relabel", None), "not allowed"),
    ],
    ids=["unknown-action", "label-with-slash", "no-label"],
)
def test_bad_decisions_are_refused_before_anything_moves(filled: Workspace, decision: Decision, message: str) -> None:
    before = snapshot(filled)
    with pytest.raises(UserError, match=message):
        cleaning.apply(filled, [decision])
    assert snapshot(filled)[1] == before[1]


def test_two_sessions_applying_at_once_lose_no_file(filled: Workspace) -> None:
    ids = store.images(filled).sort_values("id")["id"].tolist()
    files_before = len(snapshot(filled)[1])
    first = [Decision(i, "relabel", "green") for i in ids[:6]]
    second = [Decision(i, "delete") for i in ids[3:9]]  # overlaps the first on three images
    errors: list[Exception] = []

    def run(decisions: list[Decision]) -> None:
        try:
            cleaning.apply(filled, decisions)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(d,)) for d in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    catalog, files = snapshot(filled)
    assert len(files) == files_before
    assert all((filled.root / p).is_file() for p in catalog["path"])
    assert set(catalog["path"]) == set(files)


def test_a_planted_mislabel_rises_to_the_top(ws: Workspace) -> None:
    fill(ws, {"red": 8, "blue": 8})
    planted = gather.ingest(ws, gather.upload_items([("odd.png", colour_image(0, 999))], "blue")).added[0]
    version = runs.train_workspace(ws, TINY)["version"]
    said: list[tuple[int, int, str]] = []
    scores = cleaning.score_images(ws, version, lambda d, t, m: said.append((d, t, m)))
    assert cleaning.queue(scores, "blue", "all")["id"].iloc[0] == planted
    # the bar moves through each phase to its end: the images measured, then every out-of-fold fit
    phases = {m.split(" ")[0]: (d, t) for d, t, m in said}
    assert phases["measuring"] == (17, 17) and phases["fitting"][0] == phases["fitting"][1] >= 2
    assert [m.split(" ")[0] for _, _, m in said][-1] == "fitting"
    assert cleaning.queue(scores, "blue", "all", "confident learning")["id"].iloc[0] == planted
    assert scores.set_index("id").loc[planted, "label_issue"]
    assert scores.set_index("id").loc[planted, "predicted"] == "red"


def test_applying_choices_re_scores_without_running_the_network_again(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Body features are kept by image content per version: a relabel or a deletion changes no image's bytes, so the
    next scoring runs no forward pass; a new image is the only one that goes through the network."""
    fill(ws, {"red": 8, "blue": 8})
    version = runs.train_workspace(ws, TINY)["version"]
    first = cleaning.score_images(ws, version)
    forwarded: list[int] = []
    real = cleaning._forward
    monkeypatch.setattr(cleaning, "_forward", lambda w, v, c, p=None: forwarded.append(len(c)) or real(w, v, c, p))
    victim, moved = first["id"].iloc[0], first["id"].iloc[1]
    cleaning.apply(
        ws, [Decision(victim, "delete"), Decision(moved, "relabel", "red" if first["label"].iloc[1] == "blue" else "blue")]
    )
    again = cleaning.score_images(ws, version)
    assert forwarded == [] and victim not in set(again["id"]) and len(again) == len(first) - 1
    assert again.set_index("id").loc[moved, "label"] != first.set_index("id").loc[moved, "label"]
    gather.ingest(ws, gather.upload_items([("new.png", colour_image(1, 4242))], "blue"))
    cleaning.score_images(ws, version)
    assert forwarded == [1]  # only the new image
    (ws.models_dir / version / cleaning.FEATURES).write_bytes(b"damaged")  # a cache, not data: computed again
    assert len(cleaning.score_images(ws, version)) == len(first) and forwarded[-1] == len(first)


def test_duplicates_across_train_and_valid_are_leakage(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "src" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "src" / "valid" / "cat").mkdir(parents=True)
    (tmp_path / "src" / "train" / "cat" / "x.png").write_bytes(colour_image(0, 1))
    (tmp_path / "src" / "valid" / "cat" / "x.png").write_bytes(colour_image(0, 1))
    (tmp_path / "src" / "valid" / "cat" / "y.png").write_bytes(colour_image(1, 2))
    gather.ingest(ws, gather.folder_items(tmp_path / "src")[0])
    groups = cleaning.leakage_groups(store.images(ws))
    assert len(groups) == 1 and len(groups[0]) == 2


def test_flagged_by_verification(ws: Workspace) -> None:
    from tests.helpers import alpha_png, exif_rotated_jpeg, png_bytes

    gather.ingest(
        ws, gather.upload_items([("a.png", alpha_png()), ("r.jpg", exif_rotated_jpeg()), ("plain.png", png_bytes(5))], "cat")
    )
    flagged = cleaning.flagged(store.images(ws)).set_index("source")
    assert sorted(flagged.index) == ["a.png", "r.jpg"]
    assert flagged.loc["r.jpg", "notes"] == "exif-rotated"


def test_a_choice_on_an_image_another_session_changed_is_skipped_not_applied_twice(filled: Workspace) -> None:
    """Two analysts chose for the same images from the same page: the second's choices on images the first
    changed meanwhile are skipped and reported, never applied on top; their other choices apply."""
    catalog = store.images(filled).sort_values("id")
    seen = dict(zip(catalog["id"], catalog["label"], strict=True))
    ids = catalog["id"].tolist()
    first = cleaning.apply(
        filled, [Decision(ids[0], "relabel", "green", seen[ids[0]]), Decision(ids[1], "delete", seen=seen[ids[1]])]
    )
    assert (first.changed, first.skipped) == (2, ())
    second = cleaning.apply(
        filled,
        [Decision(ids[0], "relabel", "blue", seen[ids[0]]), Decision(ids[1], "relabel", "blue", seen[ids[1]]),
         Decision(ids[2], "delete", seen=seen[ids[2]])],
    )  # fmt: skip
    assert second.changed == 1 and set(second.skipped) == {ids[0], ids[1]}
    after = store.images(filled, status=None).set_index("id")
    assert after.loc[ids[0], "label"] == "green" and after.loc[ids[1], "status"] == "quarantined"
    assert after.loc[ids[2], "status"] == "quarantined"
    relabels = store.audit_log(filled).query("action == 'clean_relabel'")
    assert list(relabels["image_id"]) == [ids[0]]  # changed once


def test_a_deletion_stopped_halfway_is_repaired_then_done_and_undone_with_its_batch(
    filled: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies after moving a deleted image's file to quarantine/ and before its row says so. check
    --repair puts the file back where the row says; applying again deletes it in a batch that undo reverses.
    (Completing the quarantine instead left it quarantined by no batch: undo could never bring it back.)"""
    from core.production import check

    image = store.images(filled).sort_values("id")["id"].iloc[0]

    def dies(*args: object, **kwargs: object) -> None:
        raise SystemExit("killed")

    monkeypatch.setattr(store, "update_image", dies)
    with pytest.raises(SystemExit):
        cleaning.apply(filled, [Decision(image, "delete")])
    monkeypatch.undo()
    check.check(filled, repair=True)
    assert check.check(filled).problems == ()
    cleaning.apply(filled, [Decision(image, "delete")])
    assert store.images(filled, status=None).set_index("id").loc[image, "status"] == "quarantined"
    while True:
        try:
            cleaning.undo_last(filled)
        except UserError:
            break
    assert store.images(filled, status=None).set_index("id").loc[image, "status"] == "ok"


def test_an_undo_stopped_halfway_finishes_when_run_again(filled: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo restores deletions one by one and writes its own row last: stopped after the first restore, running
    it again restores the rest instead of failing on the image already back."""
    ids = store.images(filled).sort_values("id")["id"].tolist()[:3]
    cleaning.apply(filled, [Decision(i, "delete") for i in ids])
    real, calls = cleaning.verify.restore, []

    def once_then_die(ws: Workspace, image_id: str) -> str:
        if calls:
            raise SystemExit("killed")
        calls.append(image_id)
        return real(ws, image_id)

    monkeypatch.setattr(cleaning.verify, "restore", once_then_die)
    with pytest.raises(SystemExit):
        cleaning.undo_last(filled)
    monkeypatch.undo()
    assert cleaning.undo_last(filled) == 3
    assert (store.images(filled, status=None).set_index("id").loc[ids, "status"] == "ok").all()
