"""Named points in the code where a crash leaves a different state on disk, for the fault suite to crash at.

A test arms points through the environment of the process it starts:

    IMAGEDP_FAILPOINT="gather.committed"            SIGKILL itself the first time the point is reached
    IMAGEDP_FAILPOINT="gather.renamed:150"          ... the 150th time
    IMAGEDP_FAILPOINT="rollout.deciding:1:pause=/tmp/go"
                                                    write /tmp/go.reached, then wait until /tmp/go exists
    IMAGEDP_FAILPOINT="store.lock_wait:1:mark=/tmp/m"  touch /tmp/m and go on (a test learns the point was passed)

(several, separated by commas). Unarmed (the variable unset, as in every real run), `hit` is one truth test of an
empty dict. `python -m core check --failpoints` lists them; the same list is POINTS below, and a test keeps it
equal to the points the code names."""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ENV = "IMAGEDP_FAILPOINT"

POINTS: dict[str, str] = {
    # gather (folder, URLs, uploads, zips, the demo: all through gather.ingest)
    "gather.staged": "a batch of new images is written to hidden staged files; their catalog rows are not committed",
    "gather.committed": "a batch's catalog rows are committed; its staged files do not have their names yet",
    "gather.renamed": "one staged file has taken its name (nth: which one)",
    # verify
    "verify.moved": "a broken image's file is in quarantine/; its row still names its old path and status",
    "verify.adopted": "a file placed by hand has its catalog name (nth: which one); no row names it yet",
    # split changes (drawing a test set, re-splitting)
    "split.deciding": "a split change has read the catalog inside its transaction and moved nothing yet",
    "split.changing": "a split change's moves and audit rows are written inside its transaction, not committed",
    # cleaning apply and undo
    "clean.moved": "a relabelled image's file is in its new label's folder; its catalog row still names the old one",
    "clean.applied": "one decision of a cleaning batch is committed (nth: which one); the batch is not finished",
    "clean.undone": "one change of a cleaning batch is undone (nth: which one); the undo is not finished",
    # the model registry and rollout
    "registry.registering": "a trained version's files are in models/; no registry row names them",
    "registry.registered": "a trained version is registered; the run is not marked finished",
    "registry.promoting": "a promotion's rows are written inside their transaction, not committed",
    "registry.promoted": "a promotion is committed; the serving stamp is not touched yet",
    "registry.rolling_back": "a rollback's rows are written inside their transaction, not committed",
    "rollout.deciding": "a stage change has read the rollout state inside its transaction and written nothing yet",
    "rollout.changing": "a stage change's rows (and its promotion or rollback) are written, not committed",
    "rollout.changed": "a stage change is committed; the serving stamp is not touched yet",
    # the prediction log
    "log.kept": "a kept image's file is in production/; its prediction row is not written",
    "log.writing": "a batch of rows is ready (its kept images written); none of it is in the log",
    "log.appending": "a batch's rows are ready for the log's table; nothing of it is written",
    "log.committed": "a batch's commit is in the log's table (readers see it); its files are not fsynced, it is not acknowledged",
    "log.synced": "a batch's commit and files are fsynced; the batch is not acknowledged to its writer yet",
    "log.optimized": "optimize's commit is in the table (a partition's files folded into one); nothing is vacuumed",
    "log.vacuum_listed": "the files vacuum will delete are named in an audit row; none is deleted yet",
    "log.vacuumed": "vacuum deleted the files no version of the retention names",
    "log.ingesting": "an ingest's rows and watermark are written in the database's transaction, not committed",
    "log.migrated": "a folder of the earlier log layout is committed to the table; its files are not deleted yet",
    "log.migrated_table": "the database's predictions rows are committed to the log's table; not deleted from the database",
    "log.migrated_deleted": "the first file of a migrated folder of the earlier layout is deleted; the others are not",
    # the prediction API
    "api.answering": "a request's predictions are committed to the log; its answer is not sent yet",
    # the review queue
    "review.labelling": "a review label is checked and written inside its transaction, not committed",
    "review.undoing": "a label taken back is deleted and its audit row written inside its transaction, not committed",
    "review.importing": "an import's labels and audit row are written inside its transaction, not committed",
    # adding reviewed production images to the data: gather's points (staged, committed, renamed)
    # check --repair
    "check.repaired": "one repair is made (nth: which one); the others are not",
    # locks
    "lock.taking_over": "a training lock was read stale under the takeover guard and is about to be replaced",
    # the database
    "store.lock_wait": "a process (or a session of this one) found the workspace database held by another and waits",
}


@dataclass(frozen=True)
class Armed:
    name: str
    nth: int = 1
    action: str = "kill"  # kill | pause | mark
    path: str = ""


def parse(text: str) -> dict[str, Armed]:
    """`name[:nth][:pause=PATH|:mark=PATH]`, comma-separated; ValueError naming what is wrong."""
    armed: dict[str, Armed] = {}
    for spec in filter(None, (s.strip() for s in text.split(","))):
        name, *rest = spec.split(":", 2)
        if name not in POINTS:
            raise ValueError(f"{ENV}: unknown failpoint {name!r} (python -m core check --failpoints lists them)")
        nth = int(rest[0]) if rest and rest[0] else 1
        action, path = "kill", ""
        if len(rest) > 1:
            action, _, path = rest[1].partition("=")
            if action not in ("pause", "mark") or not path:
                raise ValueError(f"{ENV}: {spec!r}: the third part is pause=PATH or mark=PATH")
        armed[name] = Armed(name, nth, action, path)
    return armed


_ARMED: dict[str, Armed] = parse(os.environ.get(ENV, ""))
_HITS: dict[str, int] = {}


def hit(name: str) -> None:
    """A named point is reached: nothing happens unless a test armed it."""
    if _ARMED:
        _trip(name)


def _trip(name: str) -> None:
    armed = _ARMED.get(name)
    if armed is None:
        return
    _HITS[name] = _HITS.get(name, 0) + 1
    if _HITS[name] != armed.nth:
        return
    if armed.action == "mark":
        Path(armed.path).touch()
    elif armed.action == "pause":
        Path(armed.path + ".reached").touch()
        while not Path(armed.path).exists():
            time.sleep(0.01)
    else:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def listing() -> list[dict[str, str]]:
    return [{"failpoint": name, "state": what} for name, what in POINTS.items()]
