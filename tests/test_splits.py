"""Stable three-way splits: set on arrival from the content hash, never recomputed; folders win; earlier
workspaces keep their validation images and draw a test set on request; every move is audited."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import duckdb
import pytest

from core.data import gather
from core.errors import UserError
from core.model import cleaning, datasets
from core.workspace import split_ops, splits, store
from core.workspace.paths import Workspace
from core.workspace.splits import SplitPlan
from tests.helpers import arm, cli, colour_image, fill, until


def _splits(ws: Workspace) -> dict[str, str]:
    return store.images(ws, status=None).set_index("id")["split"].to_dict()


def test_the_rule_is_a_pure_function_of_content_and_seed_with_the_planned_shares() -> None:
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(20_000)]
    plan = SplitPlan(seed=7, valid=0.2, test=0.1)
    drawn = [splits.split_for(s, plan) for s in shas]
    assert drawn == [splits.split_for(s, SplitPlan(seed=7)) for s in shas]  # the same on every call
    shares = {s: drawn.count(s) / len(drawn) for s in splits.SPLITS}
    assert shares["train"] == pytest.approx(0.7, abs=0.015)
    assert shares["valid"] == pytest.approx(0.2, abs=0.015)
    assert shares["test"] == pytest.approx(0.1, abs=0.015)
    other = [splits.split_for(s, SplitPlan(seed=8)) for s in shas]
    assert sum(a != b for a, b in zip(drawn, other, strict=True)) > 0.3 * len(shas)  # the seed matters


def test_images_get_their_split_on_arrival_and_nothing_else_moves(ws: Workspace) -> None:
    fill(ws, {"red": 12, "blue": 12})
    catalog = store.images(ws)
    plan = split_ops.plan_of(ws)
    assert set(catalog["split_by"]) == {"hash"}
    assert catalog["split"].tolist() == [splits.split_for(s, plan) for s in catalog["sha256"]]
    before = _splits(ws)

    more = gather.upload_items([(f"g{i}.png", colour_image(2, 900 + i)) for i in range(6)], "green")
    gather.ingest(ws, more)
    after_adding = _splits(ws)
    assert {k: after_adding[k] for k in before} == before

    first, second = catalog["id"].iloc[0], catalog["id"].iloc[1]
    cleaning.apply(ws, [cleaning.Decision(first, "relabel", "blue"), cleaning.Decision(second, "delete")])
    after_cleaning = _splits(ws)
    assert after_cleaning == after_adding  # the relabelled and the deleted image keep theirs too
    assert store.images(ws).set_index("id").loc[first, "label"] == "blue"


def test_copies_of_one_file_share_a_split(ws: Workspace) -> None:
    same = colour_image(0, 5)
    gather.ingest(ws, gather.upload_items([("a.png", same)], "red") + gather.upload_items([("b.png", same)], "blue"))
    assert len(set(store.images(ws)["split"])) == 1


def test_train_valid_and_test_folders_win(ws: Workspace, make_folder, tmp_path: Path) -> None:
    make_folder({"cat": 3, "dog": 2}, name="split/train")
    make_folder({"cat": 1, "dog": 1}, name="split/valid")
    make_folder({"cat": 1, "dog": 2}, name="split/test")
    gather.ingest(ws, gather.folder_items(tmp_path / "split")[0])
    catalog = store.images(ws)
    assert catalog.groupby("split").size().to_dict() == {"test": 3, "train": 5, "valid": 2}
    assert set(catalog["split_by"]) == {"folder"}
    split_ops.resplit(ws, SplitPlan(seed=3))
    assert store.images(ws).groupby("split").size().to_dict() == {"test": 3, "train": 5, "valid": 2}


def _age(ws: Workspace, earlier: dict[str, str | None]) -> None:
    """Turn the workspace into one made before splits were stored per image: no split_by column, no plan,
    the given splits (None: never trained on)."""
    with duckdb.connect(str(ws.db_path)) as con:
        con.execute("ALTER TABLE images DROP COLUMN split_by")
        con.execute("DELETE FROM meta WHERE key = 'setting:split_plan'")
        for image_id, split in earlier.items():
            con.execute("UPDATE images SET split = ? WHERE id = ?", [split, image_id])
    store._READY.discard(str(ws.db_path))


def test_an_earlier_workspace_keeps_its_validation_images_and_draws_a_test_set_on_request(ws: Workspace) -> None:
    fill(ws, {"red": 20, "blue": 20})
    ids = store.images(ws)["id"].tolist()
    earlier = {i: ("valid" if n % 5 == 0 else "train") for n, i in enumerate(ids[:-4])} | {i: None for i in ids[-4:]}
    _age(ws, earlier)

    store.init_db(ws)  # what opening the workspace does
    now = _splits(ws)
    assert {i: now[i] for i in ids[:-4]} == {i: earlier[i] for i in ids[:-4]}  # kept, not recomputed
    plan = split_ops.plan_of(ws)
    by_sha = store.images(ws).set_index("id")["sha256"]
    assert [now[i] for i in ids[-4:]] == [splits.split_for(by_sha[i], plan) for i in ids[-4:]]
    assert split_ops.origins(ws)["earlier"] == 36

    moved = split_ops.draw_test(ws, 0.1)
    drawn = _splits(ws)
    assert sum(s == "test" for s in drawn.values()) == 4  # a tenth of the 40 images
    assert moved == 4 - sum(now[i] == "test" for i in ids[-4:])
    assert all(earlier[i] == "train" for i in ids[:-4] if drawn[i] == "test" and now[i] != "test")
    assert all(drawn[i] == "valid" for i in ids[:-4] if earlier[i] == "valid")  # validation images stay
    log = store.audit_log(ws)
    rows = log[log["action"] == "test_drawn"]
    assert len(rows) == moved and set(rows["after"]) == {json.dumps("test")} and set(rows["before"]) == {json.dumps("train")}
    with pytest.raises(UserError, match="Test already holds 4 of 40 images"):
        split_ops.draw_test(ws, 0.1)
    assert split_ops.draw_test(ws, 0.2) == 4 and _splits(ws)[ids[0]] == "valid"


def test_draw_test_says_what_is_wrong(ws: Workspace) -> None:
    fill(ws, {"red": 3, "blue": 3})
    with pytest.raises(UserError, match="outside 0.02-0.4"):
        split_ops.draw_test(ws, 0.9)


def test_a_label_with_no_training_or_validation_image_is_completed_visibly(ws: Workspace) -> None:
    fill(ws, {"red": 10, "blue": 3})
    blue = store.images(ws).query("label == 'blue'")["id"].tolist()
    with store.connect(ws) as con:
        con.execute("UPDATE images SET split = 'test' WHERE list_contains(?, id)", [blue])
    catalog, said = datasets.usable_split(ws, store.images(ws))
    blue_now = catalog.set_index("id").loc[blue, "split"]
    assert (blue_now == "train").sum() == 1 and (blue_now == "valid").sum() == 1 and (blue_now == "test").sum() == 1
    assert len(said) == 2 and all("'blue' had no" in s for s in said)
    assert (store.audit_log(ws)["action"] == "split_completed").sum() == 2
    assert _splits(ws) == catalog.set_index("id")["split"].to_dict()  # stored, so the next run sees the same
    assert datasets.usable_split(ws, store.images(ws))[1] == []  # and nothing moves twice


def test_resplit_uses_the_new_plan_and_is_audited(ws: Workspace) -> None:
    fill(ws, {"red": 15, "blue": 15})
    counts = split_ops.resplit(ws, SplitPlan(seed=9, valid=0.3, test=0.2))
    assert split_ops.plan_of(ws) == SplitPlan(seed=9, valid=0.3, test=0.2)
    catalog = store.images(ws)
    assert catalog["split"].tolist() == [splits.split_for(s, SplitPlan(9, 0.3, 0.2)) for s in catalog["sha256"]]
    assert sum(counts.values()) == 30
    assert (store.audit_log(ws)["action"] == "resplit").sum() == 30
    with pytest.raises(UserError, match="leave 10% for training"):
        split_ops.resplit(ws, SplitPlan(valid=0.5, test=0.4))


def test_split_command(ws: Workspace) -> None:
    fill(ws, {"red": 12, "blue": 12})
    shown = cli("split", "--workspace", ws.name, "--json")
    assert shown.returncode == 0
    data = json.loads(shown.stdout)
    assert sum(data["splits"].values()) == 24 and data["plan"] == {"seed": 42, "valid": 0.2, "test": 0.1}
    assert set(data["labels"]) == {"red", "blue"} and data["origins"] == {"hash": 24}
    text = cli("split", "--workspace", ws.name)
    assert "plan: seed 42, valid 20%, test 10%" in text.stdout and "all labels" in text.stdout
    redone = json.loads(cli("split", "--workspace", ws.name, "--resplit", "--seed", "5", "--json").stdout)
    assert redone["plan"]["seed"] == 5 and sum(redone["resplit"].values()) == 24
    drawn = json.loads(cli("split", "--workspace", ws.name, "--draw-test", "0.2", "--json").stdout)
    assert drawn["drawn"] >= 1 and drawn["origins"]["drawn"] == drawn["drawn"]
    for bad, message in (
        (("--seed", "3"), "only with --resplit"),
        (("--draw-test", "--resplit"), "Choose one of"),
        (("--resplit", "--valid", "0.9"), "outside 0.05-0.5"),
    ):
        result = cli("split", "--workspace", ws.name, *bad)
        assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr


def test_two_sessions_drawing_a_test_set_at_once_move_one_set(ws: Workspace, tmp_path: Path, monkeypatch) -> None:
    """Two sessions of one app process: the first holds still right after reading the catalog inside its
    transaction; the second starts meanwhile. The second must wait for the first and then find the test set drawn.
    With the catalog read before the transaction, both read 'no test set' and both drew (two audit rows per move)."""
    fill(ws, {"red": 20, "blue": 20})
    _age(ws, {i: "train" for i in store.images(ws)["id"]})
    store.init_db(ws)
    gate, waiting = tmp_path / "gate", tmp_path / "waiting"
    arm(monkeypatch, f"split.deciding:1:pause={gate},store.lock_wait:1:mark={waiting}")
    results: dict[str, object] = {}

    def draw(who: str) -> None:
        try:
            results[who] = split_ops.draw_test(ws, 0.1)
        except UserError as exc:
            results[who] = str(exc)

    first = threading.Thread(target=draw, args=("first",), daemon=True)
    first.start()
    until(lambda: gate.with_name("gate.reached").exists(), "the first draw never reached its decision")
    second = threading.Thread(target=draw, args=("second",), daemon=True)
    second.start()
    until(lambda: waiting.exists() or not second.is_alive(), "the second draw neither waited nor finished")
    assert waiting.exists() and "second" not in results  # it waits for the first, which holds the catalog
    gate.touch()
    first.join(60), second.join(60)
    assert results["first"] == 4 and "Test already holds 4 of 40 images" in str(results["second"])
    log = store.audit_log(ws)
    assert (log["action"] == "test_drawn").sum() == 4
