"""Every page through AppTest: no exception, and bad input shows st.error."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.data import gather
from core.workspace import store, workspaces
from tests.helpers import app, errors, links, png_bytes

PAGES = [
    "app_pages/overview.py",
    "app_pages/workspaces.py",
    "app_pages/objective.py",
    "app_pages/levers.py",
    "app_pages/policy.py",
    "app_pages/summary.py",
    "app_pages/gather.py",
    "app_pages/explore.py",
    "app_pages/clean.py",
    "app_pages/train.py",
    "app_pages/evaluate.py",
    "app_pages/predict.py",
    "app_pages/monitor.py",
]


def test_router_lists_workspaces_in_the_sidebar() -> None:
    workspaces.create_workspace("alpha")
    workspaces.create_workspace("demo")
    at = AppTest.from_file("../streamlit_app.py", default_timeout=120)
    at.run()
    assert not at.exception
    picker = at.sidebar.selectbox(key="workspace_name")
    assert picker.options == ["alpha", "demo"] and picker.value == "demo"


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_without_a_workspace(page: str) -> None:
    at = app(page)
    assert not at.exception
    if page != "app_pages/workspaces.py":
        assert "No workspace is open" in at.info[0].value and "workspaces" in links(at)["Go to Workspaces"]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_on_a_filled_workspace(page: str, make_folder) -> None:
    ws = workspaces.create_workspace("filled")
    gather.ingest(ws, gather.folder_items(make_folder({"cat": 3, "dog": 3}))[0])
    at = app(page, "filled")
    assert not at.exception and not errors(at)


def test_creating_the_demo_opens_it() -> None:
    at = app("app_pages/workspaces.py")
    at.multiselect(key="ws_demo_classes").set_value(["0", "1"])
    at.button(key="ws_demo_create").click()
    at.run()
    assert not at.exception
    assert at.session_state["workspace_name"] == "demo"
    assert at.sidebar.selectbox(key="workspace_name").value == "demo"
    assert set(store.label_counts(workspaces.resolve("demo"))) == {"0", "1"}
    assert any("Created 'demo'" in s.value for s in at.success)


def test_a_bad_workspace_name_shows_an_error() -> None:
    at = app("app_pages/workspaces.py")
    at.text_input(key="ws_new_name").input("a/b")
    at.button(key="ws_new_create").click()
    at.run()
    assert any("not allowed" in e for e in errors(at))
    assert workspaces.list_workspaces() == []


def test_delete_needs_the_name_typed() -> None:
    workspaces.create_workspace("keep")
    at = app("app_pages/workspaces.py")
    at.text_input(key="ws_delete_confirm").input("nope")
    at.button(key="ws_delete_go").click()
    at.run()
    assert any("type the workspace name" in e for e in errors(at))
    assert workspaces.list_workspaces() == ["keep"]


def test_gather_folder_import_and_its_report(make_folder) -> None:
    workspaces.create_workspace("w")
    at = app("app_pages/gather.py", "w")
    at.text_input(key="gather_folder_path").input(str(make_folder({"cat": 2, "dog": 2})))
    at.button(key="gather_folder_go").click()
    at.run()
    assert not at.exception and not errors(at)
    assert any("Added 4 image(s)" in s.value for s in at.success)


@pytest.mark.parametrize(
    "setup,button",
    [
        ({"gather_folder_path": "/no/such/folder"}, "gather_folder_go"),
        ({"gather_urls_text": "", "gather_urls_label": "cat"}, "gather_urls_go"),
        ({"gather_urls_text": "http://example.com/a.png", "gather_urls_label": "a/b"}, "gather_urls_go"),
        ({}, "gather_upload_go"),
        ({"gather_search_label": "bad/label"}, "gather_search_go"),
    ],
    ids=["missing-folder", "no-urls", "label-with-slash", "no-uploads", "search-bad-label"],
)
def test_gather_bad_input_shows_an_error(setup: dict[str, str], button: str) -> None:
    ws = workspaces.create_workspace("w")
    at = app("app_pages/gather.py", "w")
    for key, value in setup.items():
        widget = at.text_area(key=key) if key == "gather_urls_text" else at.text_input(key=key)
        widget.input(value)
    at.button(key=button).click()
    at.run()
    assert not at.exception and errors(at)
    assert store.images(ws).empty


def test_explore_verify_and_restore(make_folder) -> None:
    ws = workspaces.create_workspace("w")
    gather.ingest(ws, gather.folder_items(make_folder({"cat": 3, "dog": 3}))[0])
    broken = store.images(ws).iloc[0]
    (ws.root / broken["path"]).write_bytes(b"broken")
    at = app("app_pages/explore.py", "w")
    at.button(key="explore_verify").click()
    at.run()
    assert not at.exception
    assert any("1 quarantined" in s.value for s in at.success)
    at.multiselect(key="explore_restore_ids").set_value([broken["id"]])
    at.button(key="explore_restore_go").click()
    at.run()
    assert not at.exception
    assert len(store.images(ws)) == 6


def test_core_never_imports_streamlit() -> None:
    core = Path(__file__).resolve().parent.parent / "core"
    offenders = [p.name for p in core.glob("*.py") if "import streamlit" in p.read_text() or "from streamlit" in p.read_text()]
    assert offenders == []


def test_upload_images_and_a_zip() -> None:

    ws = workspaces.create_workspace("w")
    at = app("app_pages/gather.py", "w")
    at.file_uploader(key="gather_upload_files").set_value(
        [("a.png", png_bytes(1), "image/png"), ("b.png", png_bytes(2), "image/png"), ("bad.jpg", b"nope", "image/jpeg")]
    )
    at.text_input(key="gather_upload_label").input("cat")
    at.button(key="gather_upload_go").click()
    at.run()
    assert not at.exception and not errors(at)
    assert store.label_counts(ws) == {"cat": 2}
    assert any("1 source(s) failed" in w.value for w in at.warning)


def test_an_unsafe_zip_upload_shows_an_error_and_adds_nothing() -> None:
    from tests.helpers import make_zip

    ws = workspaces.create_workspace("w")
    at = app("app_pages/gather.py", "w")
    at.file_uploader(key="gather_upload_files").set_value(
        [("ok.png", png_bytes(1), "image/png"), ("evil.zip", make_zip({"../x.png": png_bytes(2)}), "application/zip")]
    )
    at.text_input(key="gather_upload_label").input("cat")
    at.button(key="gather_upload_go").click()
    at.run()
    assert any("unsafe path" in e for e in errors(at))
    assert store.images(ws).empty


def test_download_urls_from_the_page() -> None:
    from tests.webserver import serve

    ws = workspaces.create_workspace("w")
    with serve() as web:
        at = app("app_pages/gather.py", "w")
        at.text_area(key="gather_urls_text").input(f"{web}/img/1.png\n{web}/missing.png")
        at.text_input(key="gather_urls_label").input("cat")
        at.text_input(key="gather_urls_private").input("127.0.0.1/32")
        at.button(key="gather_urls_go").click()
        at.run()
    assert not at.exception
    assert store.label_counts(ws) == {"cat": 1}
    assert any("1 source(s) failed" in w.value for w in at.warning)


def test_train_page_trains_in_the_background_and_lists_the_version() -> None:
    from core.model import jobs, registry, runs
    from tests.helpers import fill

    ws = workspaces.create_workspace("w")
    fill(ws, {"red": 6, "blue": 6})
    at = app("app_pages/train.py", "w")
    assert not at.exception and not errors(at)
    at.number_input(key="train_freeze").set_value(1)
    at.selectbox(key="train_epochs").set_value(1)
    at.button(key="train_start").click()
    at.run()
    job = jobs.current(ws)
    assert job is not None
    job.thread.join(timeout=300)
    at.run()
    assert not at.exception, at.exception
    assert any("Trained v1" in s.value for s in at.success)
    said = next(s.value for s in at.success if "Trained v1" in s.value)
    assert "validation accuracy too few (n " in said or "95% CI" in said  # a rate from few images: no bare headline
    assert registry.list_versions(ws)["version"].tolist() == ["v1"]
    assert runs.defaults(ws).freeze_epochs == 1 and runs.defaults(ws).epochs == 1  # the form's settings are kept
    assert at.button(key="train_promote_new").label == "Make v1 production"  # at the top of the results
    at.button(key="train_promote_new").click()
    at.run()
    assert registry.production_version(ws) == "v1"
    assert any("v1 is the production model" in s.value for s in at.success)
    assert "policy" in links(at)["Next: choose a decision policy"]
    jobs.forget(ws)


def test_train_page_refuses_a_one_label_workspace() -> None:
    from tests.helpers import fill

    ws = workspaces.create_workspace("w")
    fill(ws, {"red": 4})
    at = app("app_pages/train.py", "w")
    assert any("at least two labels" in e for e in errors(at))


def test_train_page_preview_and_lr_finder() -> None:
    from tests.helpers import fill

    ws = workspaces.create_workspace("w")
    fill(ws, {"red": 6, "blue": 6})
    at = app("app_pages/train.py", "w")
    at.button(key="train_preview").click()
    at.run()
    assert not at.exception and len(at.get("image")) >= 2
    at.button(key="train_lr_find").click()
    at.run()
    assert not at.exception and any("Suggested head learning rate" in c.value for c in at.caption)


def test_clean_page_choices_persist_then_apply_and_undo() -> None:
    from core.model import cleaning, runs
    from tests.helpers import TINY, fill

    ws = workspaces.create_workspace("w")
    fill(ws, {"red": 6, "blue": 6})
    runs.train_workspace(ws, TINY)
    before = store.images(ws).set_index("id")["label"].to_dict()
    at = app("app_pages/clean.py", "w")
    assert not at.exception and not errors(at)
    first = at.selectbox(key="clean_label").value
    assert first == "all labels: the worst first"  # the worst across every label, then one label at a time
    flagged = int(cleaning.score_images(ws, "v1")["label_issue"].sum())
    assert any(f"**{flagged} likely label error(s)** among the 12 images here" in m.value for m in at.markdown)
    tile = next(s for s in at.selectbox if s.key and s.key.startswith("clean_w_"))
    image_id = tile.key.removeprefix("clean_w_")
    other = next(o for o in tile.options if o.startswith("→ "))
    tile.set_value(other)
    at.run()
    at.selectbox(key="clean_label").set_value(next(c for c in ("red", "blue") if c != first))
    at.run()
    at.radio(key="clean_split").set_value("train")
    at.run()
    assert any("1 relabel(s)" in h.value for h in at.subheader)  # the choice survived the view changes
    at.button(key="clean_apply").click()
    at.run()
    assert not at.exception
    assert store.images(ws).set_index("id").loc[image_id, "label"] == other.removeprefix("→ ")
    assert any("0 relabel(s)" in h.value for h in at.subheader)
    at.button(key="clean_undo").click()
    at.run()
    assert store.images(ws).set_index("id")["label"].to_dict() == before
    assert any("Undid 1 change(s)" in s.value for s in at.success)
    for view in ("Duplicates", "Train/held-out leakage", "Flagged by verification"):
        at.radio(key="clean_source").set_value(view)
        at.run()
        assert not at.exception and not errors(at)
