"""A model whose files changed, were cut short or disagree with each other is refused everywhere with a clear
message: never scored, never evaluated, never promoted."""

from __future__ import annotations

import json

import pytest

from core.errors import UserError
from core.model import evaluation, registry, scoring
from core.production import rollout
from core.workspace import store
from core.workspace.paths import Workspace
from tests.helpers import app, cli, colour_image, derived_version, errors


def meta_path(ws: Workspace, version: str):  # noqa: ANN201 - a Path
    return ws.models_dir / version / registry.META


def test_an_intact_version_passes_and_its_checksums_were_recorded(prod: Workspace) -> None:
    version = registry.production_version(prod)
    sums, classes = registry.recorded(prod, version)
    assert set(sums) == {"model.safetensors", "model.json", "reference.safetensors"} and classes == ["blue", "green", "red"]
    assert registry.problems(prod, version) == []
    scoring.load_predictor(prod)  # loads


def reordered_classes(ws: Workspace, version: str) -> None:
    meta = json.loads(meta_path(ws, version).read_text())
    meta["classes"] = meta["classes"][::-1]
    meta_path(ws, version).write_text(json.dumps(meta))


def truncated_weights(ws: Workspace, version: str) -> None:
    path = ws.models_dir / version / registry.WEIGHTS
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def missing_key(ws: Workspace, version: str) -> None:
    meta = json.loads(meta_path(ws, version).read_text())
    del meta["preprocessing"]
    meta_path(ws, version).write_text(json.dumps(meta))


def invalid_json(ws: Workspace, version: str) -> None:
    meta_path(ws, version).write_text('{"classes": ["red", ')


@pytest.mark.parametrize(
    ("tamper", "says"),
    [
        (reordered_classes, "model.json changed since the version was registered"),
        (truncated_weights, "model.safetensors is damaged: truncated"),
        (missing_key, "model.json lacks preprocessing"),
        (invalid_json, "model.json is not readable JSON"),
    ],
    ids=["classes-reordered", "weights-truncated", "meta-missing-key", "meta-invalid-json"],
)
def test_a_changed_model_is_refused_everywhere(prod: Workspace, tamper: object, says: str) -> None:
    version = registry.production_version(prod)
    tamper(prod, version)
    for use in (
        lambda: scoring.load_predictor(prod),
        lambda: evaluation.load(prod, version),
        lambda: registry.promote(prod, version),
    ):
        with pytest.raises(UserError, match="is damaged or was changed on disk") as caught:
            use()
        assert says in str(caught.value)
    image = prod.root.parent / "one.png"
    image.write_bytes(colour_image(0, 1))
    done = cli("predict", "--workspace", "prod", str(image))
    assert done.returncode == 2 and "is damaged or was changed on disk" in done.stderr and "Traceback" not in done.stderr
    with store.connect(prod) as con:
        assert con.execute("SELECT count(*) FROM log_predictions").fetchone()[0] == 0  # nothing scored, nothing logged
    assert cli("evaluate", "--workspace", "prod").returncode == 2
    page = app("app_pages/evaluate.py", "prod")
    assert not page.exception and any("is damaged or was changed on disk" in e for e in errors(page))


def test_a_candidate_with_damaged_files_cannot_enter_a_rollout(prod: Workspace) -> None:
    v2 = derived_version(prod, registry.production_version(prod))
    truncated_weights(prod, v2)
    with pytest.raises(UserError, match="Model v2 is damaged"):
        rollout.start(prod, v2, "shadow")


def test_an_older_version_without_checksums_is_still_checked_for_consistency(prod: Workspace) -> None:
    version = registry.production_version(prod)
    with store.connect(prod) as con:
        con.execute("UPDATE models SET checksums = NULL")  # as registered before checksums existed
    assert registry.problems(prod, version) == []
    meta = json.loads(meta_path(prod, version).read_text())
    meta["classes"] = [*meta["classes"], "purple"]  # four classes for a three-output head
    meta_path(prod, version).write_text(json.dumps(meta))
    found = registry.problems(prod, version)
    assert "model.safetensors has 3 outputs for 4 classes" in found
    assert any("registered as" in f for f in found)
