"""Is a workspace consistent? Every catalog row has its file and every image file its row; every registered
model is intact; the production pointer, accepted policies and the rollout name versions that exist; no run
says `running` without a live training; the files the log's tables name are whole and the log's; an earlier
layout's log files are folded into them.

`check(ws, repair=True)` fixes what can be fixed without losing anything, each fix an audit row: orphan files
and leftover model folders move to quarantine/, rows whose file is gone are marked missing, stale runs become
interrupted (and a dead process's lock goes), missing checksums are recorded, an earlier layout's log files are
folded into the tables, a rollout whose candidate is gone ends, a log file unreadable or not the log's moves to
quarantine/log/ (the table's removal of it committed). It never deletes a user's file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.data import gather
from core.model import integrity, registry, runs
from core.production import rollout
from core.workspace import failpoints, locks, log_ingest, log_migration, log_table, published, store
from core.workspace.paths import Workspace, free_name

ORPHANS = "orphans"  # quarantine/orphans/: image files no catalog row named
LEFTOVERS = "models"  # quarantine/models/: model folders no registry row names
SPOOL = "spool"  # quarantine/spool/: spool files a crash cut short
LOG = "log"  # quarantine/log/: log files cut short, unreadable or with other columns, and abandoned compaction journals


@dataclass(frozen=True)
class Problem:
    kind: str  # missing_file / moved / unfinished / orphan_file / model / checksum / leftover / pointer / ...
    subject: str  # the image id, path, version or run it is about
    detail: str  # what is wrong, in words
    repair: str  # what --repair does about it, in words
    repairable: bool


@dataclass(frozen=True)
class CheckReport:
    problems: tuple[Problem, ...]  # as found (before any repair)
    repaired: tuple[str, ...]  # what --repair did, in words

    @property
    def remaining(self) -> tuple[Problem, ...]:
        """Problems no repair handles (all of them when nothing was repaired)."""
        return tuple(p for p in self.problems if not (self.repaired and p.repairable))

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.remaining,
            "problems": [asdict(p) for p in self.problems],
            "repaired": list(self.repaired),
            "remaining": [asdict(p) for p in self.remaining],
        }


def _move(ws: Workspace, src: Path, folder: str) -> str:
    """Move a file or folder under quarantine/<folder>/ with a name no one holds yet; returns where it went."""
    dst_dir = ws.quarantine_dir / folder
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = free_name(dst_dir, src.name)
    shutil.move(str(src), str(dst))
    return str(dst.relative_to(ws.root))


def _catalog(ws: Workspace) -> list[Problem]:
    catalog = store.images(ws, status=None)
    tracked = set(catalog["path"])
    untracked = _untracked(ws, tracked)
    found, moved = [], set()
    for row in catalog[catalog["status"].isin(["ok", "quarantined"])].itertuples():
        elsewhere = None if (ws.root / row.path).is_file() else _moved(ws, untracked, row.path, row.sha256)
        if elsewhere is not None:
            moved.add(elsewhere)
            found.append(
                Problem("moved", row.id, f"{row.path} is at {elsewhere.relative_to(ws.root)}: a quarantine, relabel or "
                        "restore stopped between moving the file and updating its row",
                        "move it back where its row says (the interrupted command, run again, does it once)", True)
            )  # fmt: skip
        elif not (ws.root / row.path).is_file() and gather.part_path(ws.root / row.path).is_file():
            found.append(
                Problem("unfinished", row.id, f"{row.path} is still staged: an import stopped between cataloging and "
                        "naming its file", "finish the import: the staged file takes its name", True)
            )  # fmt: skip
        elif not (ws.root / row.path).is_file():
            found.append(
                Problem("missing_file", row.id, f"{row.path} is gone ({row.status}, label {row.label})",
                        "mark the row missing (audited): training and pages leave it out", True)
            )  # fmt: skip
    if ws.images_dir.is_dir():
        for part in sorted(ws.images_dir.rglob(".*.part")):
            final = str(part.with_name(part.name[1:].removesuffix(".part")).relative_to(ws.root))
            if final not in tracked or (ws.root / final).is_file():  # never cataloged, or a second staged copy
                found.append(
                    Problem("orphan_file", str(part.relative_to(ws.root)), "a file an interrupted import staged but never "
                            "cataloged", f"move it to quarantine/{ORPHANS}/ (audited); gather again to add it once", True)
                )  # fmt: skip
        for path in sorted(p for paths in untracked.values() for p in paths if p not in moved):
            rel = str(path.relative_to(ws.root))
            found.append(
                Problem("orphan_file", rel, "an image file no catalog row names (left by an interrupted import; "
                        "files placed by hand are adopted by `verify` instead)",
                        f"move it to quarantine/{ORPHANS}/ (audited); gather it again to add it once", True)
            )  # fmt: skip
    return found


def _untracked(ws: Workspace, tracked: set[str]) -> dict[str, list[Path]]:
    """Image files under images/ that no catalog row names, by file name (staged files left out)."""
    found: dict[str, list[Path]] = {}
    if ws.images_dir.is_dir():
        for path in sorted(p for p in ws.images_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
            if str(path.relative_to(ws.root)) not in tracked:
                found.setdefault(path.name, []).append(path)
    return found


def _moved(ws: Workspace, untracked: dict[str, list[Path]], rel: str, sha: str) -> Path | None:
    """Where a row's file went when a move stopped halfway: an untracked file of the same name and bytes, under
    images/ (a relabel, a restore) or at the top of quarantine/ (a quarantine)."""
    name = Path(rel).name
    candidates = [*untracked.get(name, []), ws.quarantine_dir / name]
    return next((p for p in candidates if str(p.relative_to(ws.root)) != rel and p.is_file() and _sha(p) == sha), None)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _models(ws: Workspace) -> list[Problem]:
    versions = registry.list_versions(ws)["version"].tolist()
    found = []
    for version in versions:
        problems = registry.problems(ws, version)
        if problems:
            found.append(Problem("model", version, "; ".join(problems), "nothing: a damaged model is refused everywhere; "
                                 "train a new version (its folder stays for inspection)", False))  # fmt: skip
        elif registry.registered(ws, version)[0] is None:
            if unlike := _unlike_registry(ws, version):
                found.append(Problem("model", version, f"no checksum recorded, and {unlike}", "nothing: a model unlike its "
                                     "registration is refused everywhere; train a new version", False))  # fmt: skip
                continue
            found.append(Problem("checksum", version, "no checksum recorded (registered before checksums existed); its "
                                 "files match the registration (classes, head outputs, backbone)",
                                 "record its files' checksums now (a swap for same-shaped weights cannot be told apart)",
                                 True))  # fmt: skip
    if ws.models_dir.is_dir():
        for folder in sorted(p for p in ws.models_dir.iterdir() if p.is_dir() and p.name not in versions):
            found.append(
                Problem("leftover", folder.name, "a model folder no registry row names (an interrupted training or registration)",
                        f"move it to quarantine/{LEFTOVERS}/ (audited)", True)
            )  # fmt: skip
    production = registry.production_version(ws)
    if production is not None and production not in versions:
        found.append(Problem("pointer", production, "production names a version that is not registered",
                             "nothing: promote an intact version", False))  # fmt: skip
    with store.connect(ws) as con:
        named = [r[0] for r in con.execute("SELECT DISTINCT model_version FROM policies").fetchall()]
    for version in sorted(set(named) - set(versions)):
        found.append(Problem("policy", version, "an accepted policy names a version that is not registered",
                             "nothing: it is never used (policies apply to their own version)", False))  # fmt: skip
    active = rollout.current(ws)
    if active is not None and active.candidate not in versions:
        found.append(Problem("rollout", active.candidate, f"the {active.stage} candidate is not registered",
                             "end the rollout (audited): production answers alone", True))  # fmt: skip
    elif active is not None and registry.problems(ws, active.candidate):
        found.append(Problem("rollout", active.candidate, f"the {active.stage} candidate's files are damaged: production "
                             "answers alone meanwhile", "end the rollout (audited; `rollout --rollback` does the same)",
                             True))  # fmt: skip
    return found


def _unlike_registry(ws: Workspace, version: str) -> str | None:
    """What in a version's metadata differs from its registry row (its classes are checked with its files)."""
    meta = registry.read_meta(ws, version)
    with store.connect(ws) as con:
        row = con.execute("SELECT backbone FROM models WHERE version = ?", [version]).fetchone()
    if row and row[0] and meta.get("backbone") != row[0]:
        return f"its metadata names backbone {meta.get('backbone')!r}, registered as {row[0]!r}"
    return None


def _runs(ws: Workspace) -> list[Problem]:
    alive = locks.training_alive(ws)
    found = []
    with store.connect(ws) as con:
        stale = [] if alive else con.execute("SELECT run_id, started_at FROM runs WHERE status = 'running'").fetchall()
    for run_id, started in stale:
        found.append(Problem("run", run_id, f"says running since {started:%Y-%m-%d %H:%M}, but no training process is alive",
                             "mark it interrupted", True))  # fmt: skip
    held = locks.holder(ws)
    if held is not None and not alive:
        found.append(Problem("lock", runs.LOCK, f"a training lock left by process {held.get('pid', '?')}, which is gone",
                             "remove the stale lock (it is not data)", True))  # fmt: skip
    return found


_LOG_REPAIRS = {
    "log_missing": "commit its removal from the log's table (readers stop looking for it)",
    "log_unreadable": f"move it to quarantine/{LOG}/ and commit its removal from the log's table",
    "log_schema": f"move it to quarantine/{LOG}/ and commit its removal from the log's table",
    "log_legacy": "fold it into the log's table (each file once; audited)",
    "log_ingest": "read the whole table into the database again",
}


def _log(ws: Workspace) -> list[Problem]:
    folder = ws.root / "logs" / "spool"  # an earlier version's: its whole files are folded into the table (log_legacy)
    partial = sorted(folder.glob("*.tmp")) if folder.is_dir() else []
    why = "a spool file cut short while it was written (its rows were never acknowledged: the process stopped first)"
    cut = [Problem("spool_partial", str(p.relative_to(ws.root)), why, f"move it to quarantine/{SPOOL}/", True) for p in partial]
    table = [Problem(f.kind, f.file.shown, f.detail, _LOG_REPAIRS[f.kind], True) for f in log_table.problems(ws)]
    legacy = [Problem("log_legacy", str(f.path.relative_to(ws.root)), f.detail, _LOG_REPAIRS["log_legacy"], True)
              for f in log_migration.problems(ws)]  # fmt: skip
    return cut + table + legacy + ([] if table else _ingested(ws))


def _ingested(ws: Workspace) -> list[Problem]:
    """The database's copy of each table (log_ingest), brought up to date, against the rows the table's commits count
    (a file problem above explains a difference by itself)."""
    found = []
    with store.connect(ws) as con:
        for kind in log_table.COLUMNS:
            held, counted = log_ingest.counted(con, kind), log_table.rows(ws, kind)
            if held != counted:
                why = f"the database holds {held:,} rows of the log's {kind} where the table's commits count {counted:,}"
                found.append(Problem("log_ingest", f"logs/{kind}", why, _LOG_REPAIRS["log_ingest"], True))
    return found


def _serving(ws: Workspace) -> list[Problem]:
    """The deployment snapshot replicas serve from, against the database it is published from (a change another
    tool made in the database, without publishing, is not served until it is published)."""
    with store.connect(ws, read_only=True) as con:
        stale = published.differs(ws, con)
    why = f"{published.FILE} (what every replica serves) differs from the database: a change made without publishing it"
    return [Problem("serving_stale", published.FILE, why, "publish it again from the database", True)] if stale else []


def check(ws: Workspace, repair: bool = False) -> CheckReport:
    """Every problem found, and with repair, what was done about each repairable one. A workspace from a newer
    version of the tool is refused before anything is read (store.init_db says so)."""
    store.init_db(ws)
    problems = [*_catalog(ws), *_models(ws), *_runs(ws), *_log(ws), *_serving(ws)]
    done: list[str] = []
    if repair:
        for p in problems:
            if p.repairable:
                done.append(_repair(ws, p))
                failpoints.hit("check.repaired")
        if done:
            store.audit(ws, "workspace_repaired", detail={"repaired": done})
    return CheckReport(tuple(problems), tuple(done))


def _repair(ws: Workspace, p: Problem) -> str:
    if p.kind == "missing_file":
        store.update_image(ws, p.subject, {"status": "missing", "reason": "file missing on disk (check --repair)"},
                           "image_marked_missing", before={"problem": p.detail}, after={"status": "missing"})  # fmt: skip
        return f"marked image {p.subject} missing"
    if p.kind == "moved":
        row = store.images(ws, status=None).set_index("id").loc[p.subject]
        tracked = set(store.images(ws, status=None)["path"])
        src = _moved(ws, _untracked(ws, tracked), row["path"], row["sha256"])
        if src is None or (ws.root / row["path"]).exists():
            return f"left image {p.subject} as it was (its file moved again meanwhile)"
        (ws.root / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), str(ws.root / row["path"]))
        where = str(src.relative_to(ws.root))
        store.audit(ws, "file_moved_back", image_id=p.subject, before={"path": where}, after={"path": row["path"]})
        return f"moved {where} back to {row['path']}"
    if p.kind == "unfinished":
        row = store.images(ws, status=None).set_index("id").loc[p.subject]
        gather.finish_staged(ws, row["path"])
        store.audit(ws, "import_finished", image_id=p.subject, detail={"path": row["path"]})
        return f"finished the import of {row['path']}"
    if p.kind == "orphan_file":
        where = _move(ws, ws.root / p.subject, ORPHANS)
        store.audit(ws, "orphan_file_moved", before={"path": p.subject}, after={"path": where}, detail={"reason": p.detail})
        return f"moved {p.subject} to {where}"
    if p.kind == "leftover":
        where = _move(ws, ws.models_dir / p.subject, LEFTOVERS)
        store.audit(ws, "model_folder_moved", before={"path": f"models/{p.subject}"}, after={"path": where})
        return f"moved models/{p.subject} to {where}"
    if p.kind == "checksum":
        if found := registry.problems(ws, p.subject) or _unlike_registry(ws, p.subject):  # changed since the check
            return f"left {p.subject} without checksums: {found}"
        sums = integrity.checksums(ws.models_dir / p.subject)
        with store.connect(ws) as con:
            con.execute("UPDATE models SET checksums = ? WHERE version = ?", [json.dumps(sums), p.subject])
        store.audit(ws, "model_checksums_recorded", detail={"version": p.subject, "checksums": sums})
        store.publish_serving(ws)  # replicas check a model's files against the published checksums
        return f"recorded the checksums of {p.subject}"
    if p.kind == "rollout":
        rollout.rollback(ws, note=f"check --repair: {p.detail}")
        return f"ended the rollout of {p.subject}"
    if p.kind == "run":
        with store.connect(ws) as con:
            con.execute(
                "UPDATE runs SET status = 'interrupted', finished_at = ?, message = 'the process stopped (check --repair)' "
                "WHERE run_id = ? AND status = 'running'",
                [store.now(), p.subject],
            )
        store.audit(ws, "run_interrupted", detail={"run_id": p.subject})
        return f"marked run {p.subject} interrupted"
    if p.kind == "lock":
        runs.release_lock(ws)
        store.audit(ws, "stale_lock_removed", detail={"lock": p.subject})
        return "removed the stale training lock"
    if p.kind == "spool_partial":
        where = _move(ws, ws.root / p.subject, SPOOL)
        store.audit(ws, "spool_file_moved", before={"path": p.subject}, after={"path": where}, detail={"reason": p.detail})
        return f"moved {p.subject} to {where}"
    if p.kind in ("log_unreadable", "log_schema", "log_missing"):
        kind, rel = log_table.parse_shown(ws, p.subject) or ("", "")  # logs/<kind>/date=.../part-*.parquet, or a URI
        said = f"{p.subject} was gone"
        dst_dir = ws.quarantine_dir / LOG
        dst_dir.mkdir(parents=True, exist_ok=True)
        dst = free_name(dst_dir, Path(rel).name)
        if kind and log_table.take(ws, kind, rel, dst):
            where = str(dst.relative_to(ws.root))
            store.audit(ws, "log_file_moved", before={"path": p.subject}, after={"path": where}, detail={"reason": p.detail})
            said = f"moved {p.subject} to {where}"
        removed = log_table.forget_missing(ws, kind)
        store.audit(ws, "log_files_forgotten", detail={"kind": kind, "files": removed, "reason": p.detail})
        return f"{said}; the log's table no longer names {len(removed)} missing file(s)"
    if p.kind == "serving_stale":
        store.publish_serving(ws)
        store.audit(ws, "serving_published", detail={"reason": p.detail})
        return f"published {published.FILE} again from the database"
    if p.kind == "log_ingest":
        kind = Path(p.subject).name
        with store.connect(ws) as con:
            log_ingest.forget(con, kind)
        with store.connect(ws) as con:  # this connection reads it whole
            held = log_ingest.counted(con, kind)
        store.audit(ws, "log_ingested_again", detail={"kind": kind, "rows": held, "reason": p.detail})
        return f"read the log's {kind} into the database again ({held:,} rows)"
    if p.kind == "log_legacy":
        done = store.migrate_log(ws)
        return f"folded {done.files} file(s) of the earlier layout ({done.rows:,} rows) into the log's tables"
    raise ValueError(f"no repair for {p.kind}")  # a programming error: every repairable kind is handled above
