"""Overview, Objective, Levers, Policy and Summary through AppTest."""

from __future__ import annotations

from core.drivetrain import accepted, levers, objective, optimizer
from core.model import registry
from core.model.rates import Rate
from core.workspace import store, workspaces
from core.workspace.paths import Workspace
from tests.helpers import app, colour_image, errors, upload

DONE, TODO = ":material/check_circle:", ":material/radio_button_unchecked:"


def test_overview_says_what_each_step_still_needs(prod: Workspace) -> None:
    at = app("app_pages/overview.py", "prod")
    assert not at.exception and not errors(at)
    text = " ".join(m.value for m in at.markdown)
    assert TODO + " 1. Objective" in text and DONE + " 3. Data" in text and TODO + " 4. Model" in text
    assert any("a production model and an accepted decision policy" in c.value for c in at.caption)
    metrics = registry.read_meta(prod, registry.production_version(prod))["metrics"]
    quoted = Rate.of(metrics["test_accuracy"], metrics["test_images"])  # a sample's rate: its n, an interval or too few
    said = (
        f"test accuracy {quoted.text()}"
        if quoted.enough
        else f"too few held-out test images to quote its accuracy (n {quoted.n})"
    )
    assert said in text  # the fixture's few test images: no headline without its interval
    objective.save_objective(prod, objective.Objective("Warn hikers", "alert or not", "hikers", "misses"))
    at.run()
    assert DONE + " 1. Objective" in " ".join(m.value for m in at.markdown)


def test_overview_on_an_empty_workspace() -> None:
    workspaces.create_workspace("empty")
    at = app("app_pages/overview.py", "empty")
    assert not at.exception and not errors(at)
    assert TODO + " 3. Data" in " ".join(m.value for m in at.markdown)


def test_objective_is_saved(prod: Workspace) -> None:
    at = app("app_pages/objective.py", "prod")
    areas = at.text_area
    for area, value in zip(
        areas, ["Warn hikers about grizzlies", "alert / ignore / refer", "hikers, rangers", "missed grizzlies"], strict=True
    ):
        area.input(value)
    at.button[0].click()
    at.run()
    assert not at.exception and any("Saved" in s.value for s in at.success)
    assert objective.load_objective(prod) == objective.Objective(
        "Warn hikers about grizzlies", "alert / ignore / refer", "hikers, rangers", "missed grizzlies"
    )


MATRIX = "levers_matrix_act on blue|act on green|act on red|refer to a human"  # the default actions' grid


def edit_cell(at: object, row: int, column: str, value: object) -> None:
    """What a browser edit sends: the editor's edit state (AppTest does not type into grids)."""
    assert any(e.key == MATRIX for e in at.data_editor)
    at.session_state[MATRIX] = {"edited_rows": {row: {column: value}}, "added_rows": [], "deleted_rows": []}


def test_levers_every_change_is_saved_as_it_arrives(prod: Workspace) -> None:
    at = app("app_pages/levers.py", "prod")
    assert not at.exception and "defaults" in at.info[0].value and not at.success
    assert not [b for b in at.button if b.key == "levers_save"]  # no button whose click could be dropped
    edit_cell(at, 2, "act on blue", -1000.0)  # row 2: the truth is red
    at.run()
    assert not at.exception and not errors(at) and at.success[0].value.startswith("Saved.")
    u, saved = levers.load_utility(prod, ["blue", "green", "red"])
    assert saved and u.payoff[2][0] == -1000.0 and u.unit == "points"
    at.text_input(key="levers_unit").input("dollars")
    at.run()
    at.run()  # any later rerun still says so, and saves nothing more
    assert at.success[0].value.startswith("Saved.")
    u, _ = levers.load_utility(prod, ["blue", "green", "red"])
    assert u.unit == "dollars" and u.payoff[2][0] == -1000.0 and u.payoff[2][2] == 10.0
    saves = store.audit_log(prod, limit=100).query("action == 'utility_saved'")
    assert len(saves) == 2  # one per change, none for the reruns that changed nothing


def test_levers_say_what_keeps_a_change_from_being_saved(prod: Workspace) -> None:
    at = app("app_pages/levers.py", "prod")
    edit_cell(at, 1, "act on green", None)
    at.run()
    assert not at.exception and not errors(at)
    assert any("payoff of 'act on green' when the truth is 'green'" in w.value for w in at.warning)
    assert levers.load_utility(prod, ["blue", "green", "red"])[1] is False  # nothing saved
    edit_cell(at, 1, "act on green", 5.0)  # the cell filled in: saved
    at.run()
    assert not at.warning and levers.load_utility(prod, ["blue", "green", "red"])[0].payoff[1][1] == 5.0


def test_levers_a_change_saved_by_another_session_meanwhile_is_kept(prod: Workspace) -> None:
    at = app("app_pages/levers.py", "prod")
    theirs, _ = levers.load_utility(prod, ["blue", "green", "red"])
    payoff = [list(r) for r in theirs.payoff]
    payoff[0][1] = -77.0  # another analyst: truth blue, act on green
    levers.save_utility(prod, levers.Utility(theirs.actions, theirs.costs, theirs.rows, tuple(map(tuple, payoff)),
                                             theirs.refer, theirs.unit))  # fmt: skip
    edit_cell(at, 2, "act on blue", -1000.0)  # this session, started before their save
    at.run()
    u, _ = levers.load_utility(prod, ["blue", "green", "red"])
    assert u.payoff[0][1] == -77.0 and u.payoff[2][0] == -1000.0  # both kept
    payoff = [list(r) for r in u.payoff]
    payoff[2][0] = -5.0  # then they change the very cell this session had changed
    levers.save_utility(prod, levers.Utility(u.actions, u.costs, u.rows, tuple(map(tuple, payoff)), u.refer, u.unit))
    at.run()  # this session's grid still holds its own edit of that cell: theirs is newer, so it is drawn afresh
    assert not at.exception and levers.load_utility(prod, ["blue", "green", "red"])[0].payoff[2][0] == -5.0
    grid = next(e for e in at.data_editor if e.key.startswith("levers_matrix_"))
    assert grid.value.loc["red", "act on blue"] == -5.0 and grid.value.loc["blue", "act on green"] == -77.0


def test_policy_optimize_accept_then_predict_shows_the_action(prod: Workspace) -> None:
    at = app("app_pages/policy.py", "prod")
    assert not at.exception and not errors(at)
    assert "No policy accepted" in at.info[0].value and len(at.get("plotly_chart")) == 1
    at.button(key="policy_optimize").click()
    at.run()
    assert any("held-out images" in m.value for m in at.markdown)
    v = optimizer.validation(prod)
    search = optimizer.optimize(levers.load_utility(prod, list(v.classes))[0], v)
    compared = optimizer.compare(levers.load_utility(prod, list(v.classes))[0], search.policy, v, search.seed)
    if compared.beats_baseline:
        assert any("beats" in s.value for s in at.success)
    else:  # the baseline is recommended; the optimized policy takes a deliberate second step
        assert any("Recommended: **" in w.value for w in at.warning)
        assert at.button(key="policy_accept").disabled
        at.checkbox(key="policy_anyway").check().run()
    at.button(key="policy_accept").click()
    at.run()
    assert not at.exception and at.success[0].value.startswith("Accepted for model")
    assert accepted.active(prod, registry.production_version(prod)) is not None
    predict = upload(app("app_pages/predict.py", "prod"), [("red.png", colour_image(0, 1))])
    assert any("(the accepted decision policy)" in m.value for m in predict.markdown)


def test_policy_page_without_a_production_model(prod: Workspace) -> None:
    with store.connect(prod) as con:
        con.execute("DELETE FROM deployments")
    store.publish_serving(prod)  # as a workspace never promoted has it published
    at = app("app_pages/policy.py", "prod")
    assert not at.exception and "Model v1 is trained but not in production yet" in at.info[0].value  # and which one to promote


def test_summary_page_offers_the_html(prod: Workspace) -> None:
    objective.save_objective(prod, objective.Objective("Warn hikers", "alert", "hikers", "misses"))
    at = app("app_pages/summary.py", "prod")
    assert not at.exception and not errors(at)
    assert len(at.get("download_button")) == 1
    assert any("Warn hikers" in m.value for m in at.markdown)
    assert any("Accept a decision policy" in m.value for m in at.markdown)  # the decision pending


def test_levers_offers_the_actions_the_objective_names(prod: Workspace) -> None:
    objective.save_objective(
        prod, objective.Objective("safe hikers", "alert rangers, do nothing or ask a ranger", "hikers", "no misses")
    )
    at = app("app_pages/levers.py", "prod")
    assert not at.exception and not errors(at)
    button = at.button(key="levers_use_suggested")
    assert button.label == "Use these actions: alert rangers, do nothing, ask a ranger"
    button.click().run()
    assert not at.exception and any("now say what each is worth" in s.value for s in at.success)
    classes = registry.read_meta(prod, registry.production_version(prod))["classes"]
    saved, ok = levers.load_utility(prod, classes)
    assert ok and saved.actions == ("alert rangers", "do nothing", "ask a ranger") and saved.refer == "ask a ranger"
    assert saved.costs == (0.0, 0.0, 2.0)
    assert not [b for b in at.button if b.key == "levers_use_suggested"]  # offered only while the table differs


def test_suggested_actions_and_renames_that_keep_their_column() -> None:
    assert levers.suggest_actions("Alert, do nothing, ask a ranger.") == ["Alert", "do nothing", "ask a ranger"]
    assert levers.suggest_actions("search and rescue or wait") == ["search and rescue", "wait"]
    assert levers.suggest_actions("decide whether to alert") == []
    u = levers.default_utility(["black", "grizzly"])
    renamed = levers.carried_matrix(levers.matrix_frame(u), ["alert", "act on grizzly", "ask a ranger"])  # two renames, same rows
    assert renamed["alert"].tolist() == [10.0, -10.0, -10.0] and renamed["ask a ranger"].tolist() == [0.0, 0.0, 10.0]
    grown = levers.carried_matrix(levers.matrix_frame(u), ["alert", "act on grizzly", "refer to a human", "wait"])  # a row added
    assert grown["alert"].isna().all() and grown["refer to a human"].tolist() == [0.0, 0.0, 10.0]
    plain = levers.suggested_utility(u, "alert or wait")
    assert plain.actions == ("alert", "wait", levers.REFER) and plain.refer == levers.REFER


def test_levers_a_rename_keeps_the_column_and_its_edits(prod: Workspace) -> None:
    at = app("app_pages/levers.py", "prod")
    edit_cell(at, 2, "act on blue", -1000.0)  # saved at once: the truth is red, act on blue
    at.run()
    at.session_state["levers_actions"] = {"edited_rows": {0: {"action": "alert"}}, "added_rows": [], "deleted_rows": []}
    at.run()  # a rename draws a new grid: it starts from the one on the page, edits included
    renamed = "levers_matrix_alert|act on green|act on red|refer to a human"
    grid = next(e for e in at.data_editor if e.key == renamed)
    assert grid.value.loc["red", "alert"] == -1000.0 and grid.value.loc["blue", "alert"] == 10.0
    assert not at.exception and at.success[0].value.startswith("Saved.")
    u, saved = levers.load_utility(prod, ["blue", "green", "red"])
    assert saved and u.actions[0] == "alert" and u.payoff[2][0] == -1000.0 and u.payoff[0][0] == 10.0


def test_the_headline_accuracy_carries_its_interval_and_n(prod: Workspace) -> None:
    import json

    version = registry.production_version(prod)
    path = prod.models_dir / version / "model.json"
    meta = json.loads(path.read_text())
    meta["metrics"] |= {"test_accuracy": 63 / 67, "test_images": 67}
    path.write_text(json.dumps(meta))
    assert registry.headline_accuracy(prod, version) == "test accuracy 94.0% (95% CI 85.6-97.7%, n 67) on held-out images"
    meta["metrics"] |= {"test_accuracy": None, "valid_accuracy": 0.9}
    meta["valid_ids"] = [str(i) for i in range(10)]
    path.write_text(json.dumps(meta))
    assert registry.headline_accuracy(prod, version) == (
        "no test images, and too few validation images to quote its accuracy (n 10)"
    )
