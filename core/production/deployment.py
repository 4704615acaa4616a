"""The deployed prediction app: its settings (heading, scope statement, whether scored images are kept, whether
end users see the policy's action, example images), what it tells the public (a plain answer, what is kept), and
what it does with one set of uploads: score, decide, and hand every prediction to the log."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import duckdb

from core.errors import UserError
from core.production import audit, prediction_log
from core.workspace import store
from core.workspace.paths import Workspace

if TYPE_CHECKING:
    from core.production.prediction import Prediction

TITLE = "app_title"  # workspace settings the analyst writes on the Predict page
SCOPE = "scope_statement"
INTERNALS = "app_show_internals"
EXAMPLES = "app_examples"
MAX_EXAMPLES = 8
DEFAULT_TITLE = "What is in this picture?"


@dataclass(frozen=True)
class AppSettings:
    title: str = DEFAULT_TITLE  # the end-user app's heading
    scope: str = ""  # what the model knows, shown to end users above the uploader
    keep_images: bool = False  # keep a copy of every scored image under production/
    show_internals: bool = False  # end users also see the action the policy took and whether a person will check
    examples: tuple[str, ...] = ()  # catalog image ids end users can click to try the app (at most MAX_EXAMPLES)
    audit_share: float = audit.DEFAULT_SHARE  # served predictions drawn at random into the review queue


def load_settings(ws: Workspace, con: duckdb.DuckDBPyConnection | None = None) -> AppSettings:
    """The app's settings, read through one connection."""
    keys = (TITLE, SCOPE, prediction_log.KEEP_IMAGES, INTERNALS, EXAMPLES, audit.AUDIT_SHARE)
    return settings_of(store.get_settings(ws, keys, con))


def settings_of(values: dict[str, Any]) -> AppSettings:
    """The app's settings from the workspace's setting values (key -> value; a missing key is unset)."""
    values = defaultdict(lambda: None, values)
    return AppSettings(
        values[TITLE] or DEFAULT_TITLE,
        values[SCOPE] or "",
        bool(values[prediction_log.KEEP_IMAGES]),
        bool(values[INTERNALS]),
        tuple(str(i) for i in values[EXAMPLES] or ())[:MAX_EXAMPLES],
        audit.DEFAULT_SHARE if values[audit.AUDIT_SHARE] is None else float(values[audit.AUDIT_SHARE]),
    )


def save_settings(ws: Workspace, settings: AppSettings) -> None:
    if settings.audit_share != load_settings(ws).audit_share:
        audit.set_share(ws, settings.audit_share)  # checked against its bound and audited
    store.set_setting(ws, TITLE, settings.title.strip() or DEFAULT_TITLE)
    store.set_setting(ws, SCOPE, settings.scope.strip())
    store.set_setting(ws, prediction_log.KEEP_IMAGES, settings.keep_images)
    store.set_setting(ws, INTERNALS, settings.show_internals)
    if len(settings.examples) > MAX_EXAMPLES:
        raise UserError(f"Pick at most {MAX_EXAMPLES} example images, not {len(settings.examples)}.")
    store.set_setting(ws, EXAMPLES, list(settings.examples))


def answer(p: Prediction, classes: Sequence[str]) -> tuple[str, str]:
    """What the public reads about one image: a plain headline and one line under it. An image the model flagged
    out of domain gets no class as its headline: the closest class is named under it, with why it means little."""
    if p.ood:
        return (
            f"This doesn't look like any of: {', '.join(classes)}.",
            f"The closest is {p.label} ({p.confidence:.0%}), but the picture is unlike the ones the model learnt from, "
            "so that answer would mean little.",
        )
    return f"This looks like {p.label} ({p.confidence:.0%} sure).", ""


def privacy_notice(settings: AppSettings) -> str:
    """What happens to the images a user sends, in their terms (the app always keeps those a person must check)."""
    if settings.keep_images:
        return "The images you send are kept, with the answers, so that the team behind this app can check and improve it."
    sample = (
        f", and about {settings.audit_share:.0%} of the others, chosen at random, so that a person can check how often "
        "it is right"
        if settings.audit_share > 0
        else ""
    )
    return (
        "Images the model is unsure about, or that look unlike what it knows, are kept so that a person can check the "
        f"answer{sample}; the others are not kept. Answers are logged without the image."
    )
