"""`python -m core predict | simulate | monitor`: batch scoring, simulated traffic, the monitoring report."""

from __future__ import annotations

import argparse
import csv
import importlib
import socket
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from core import bounds
from core.cli.data import read_file
from core.cli.progress import printer
from core.errors import UserError
from core.workspace import workspaces


def write_csv(path: Path, classes: tuple[str, ...], rows: list[Any], failed: list[dict[str, str]]) -> None:
    """One line per input: the prediction and every class probability, or the reason it failed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["path", "label", "confidence", "ood", "action", *[f"p_{c}" for c in classes], "error"])
            for p in rows:
                writer.writerow([p.name, p.label, f"{p.confidence:.6f}", p.ood, p.action, *[f"{x:.6f}" for x in p.probs], ""])
            for f in failed:
                writer.writerow([f["source"], "", "", "", "", *[""] * len(classes), f["reason"]])
    except OSError as exc:
        raise UserError(f"Cannot write results to {path}: {exc.strerror or exc}.") from None


def cmd_predict(args: argparse.Namespace) -> dict[str, Any]:
    from core.production import prediction, prediction_log, serving

    ws = workspaces.resolve(args.workspace, serving=True)  # serving opens no database: another process may hold it
    served = serving.snapshot(ws, serving.Models(ws), args.model)  # a candidate runs beside production only
    predictor, active = served.predictor, served.active
    if served.candidate_problem:
        print(f"warning: {served.candidate_problem}", file=sys.stderr)
    files, failed = prediction.list_files([Path(p) for p in args.paths])
    preds: list[prediction.Prediction] = []
    logged = 0
    show = printer(not args.json, "scored")
    keep = prediction_log.keeps_images(ws)
    for start in range(0, len(files), args.batch_size * 8):  # read and log as we go: a crash loses no scored batch
        chunk, unread = prediction.read_files(files[start : start + args.batch_size * 8])
        failed += unread
        scored = served.score(chunk, args.batch_size)
        result = prediction_log.log_predictions(ws, scored.logged, "batch", predictor.version, keep_images=keep)
        logged += result.logged
        preds += [replace(p, data=b"") for p in scored.shown]  # logged: the bytes are not needed to report
        failed += scored.failed
        if show:
            show(min(start + args.batch_size * 8, len(files)), len(files), "")
    if args.out:
        write_csv(Path(args.out), predictor.classes, preds, failed)
    return {
        "version": predictor.version,
        "classes": list(predictor.classes),
        "rollout": {"candidate": active.candidate, "stage": active.stage} if active else None,
        "predictions": [
            {
                "id": p.id,  # the prediction's id in the log: feedback names it
                "path": p.name,
                "label": p.label,
                "confidence": p.confidence,
                "ood": p.ood,
                "action": p.action,
                "notes": p.notes,
                "version": p.version,
                "stage": p.stage,
                "review": p.needs_review,
            }
            for p in preds
        ],
        "failed": failed,
        "logged": logged,
        "out": args.out,
    }


def print_predict(data: dict[str, Any]) -> None:
    for p in data["predictions"]:
        flag = "  OUT OF DOMAIN?" if p["ood"] else ""
        note = f"  (converted: {p['notes']})" if p["notes"] else ""
        print(f"{p['label']:<16} {p['confidence']:.3f}  {p['path']}{flag}{note}")
    for f in data["failed"]:
        print(f"failed  {f['source']}: {f['reason']}")
    if data["rollout"]:
        r = data["rollout"]
        acted = sum(p["version"] == r["candidate"] for p in data["predictions"])
        print(f"candidate {r['candidate']} in {r['stage']}: scored every image too; answered {acted}")
    print(
        f"{len(data['predictions'])} scored with model {data['version']}, {len(data['failed'])} failed; logged {data['logged']}"
    )
    if data["out"]:
        print(f"results: {data['out']}")


def cmd_simulate(args: argparse.Namespace) -> dict[str, Any]:
    from core.production import traffic
    from core.workspace import store

    ws = workspaces.resolve(args.workspace)
    store.init_db(ws)
    cfg = traffic.TrafficConfig(days=args.days, per_day=args.per_day, seed=args.seed, shift_day=args.shift_day or args.days // 2)
    return traffic.replay_traffic(ws, cfg, on_progress=printer(not args.json, "scored"))


def print_simulate(data: dict[str, Any]) -> None:
    before, after = data["ood_rate_before_shift"], data["ood_rate_after_shift"]
    print(
        f"{data['predictions']} simulated predictions over {data['days']} days ({data['start']} to {data['end']}) with model "
        f"{data['version']}: {data['shifted']} shifted images, {data['drawings']} drawings, {data['feedback']} with feedback"
    )
    print(
        f"clean traffic replays {data['pool']} test image(s) (each about {data['repeats']:.1f} times over the period)"
        + (
            f"; {data['real_overlap']} real prediction(s) fall in the same days: Monitor leaves simulated traffic out while "
            "real predictions exist (--source simulation shows it)"
            if data["real_overlap"]
            else ""
        )
    )
    if before is not None and after is not None:
        print(f"OOD rate before the shift {before:.1%}, after {after:.1%}")
    from core.production import traffic

    if note := traffic.pool_note(data):  # why traffic with no shift may still alert
        print(note)


def cmd_monitor(args: argparse.Namespace) -> dict[str, Any]:
    # scipy.stats (the drift tests, the exact interval) takes most of a second to import: imported beside the
    # database's work, which leaves the interpreter free, rather than before it
    threading.Thread(target=importlib.import_module, args=("scipy.stats",), daemon=True).start()
    from core.production.monitoring import queries, report
    from core.workspace import store

    ws = workspaces.resolve(args.workspace)
    store.init_db(ws)
    sources = tuple(args.source) if args.source else queries.default_sources(ws)
    if not 10 <= args.size <= 1_000_000:
        raise UserError("--size takes 10 to 1,000,000 predictions per window.")
    data = report.summary(ws, queries.LogFilter(args.window, sources, args.model, args.size))
    if not data["predictions"]:
        raise UserError("The prediction log is empty for these filters: score images (predict) or simulate traffic first.")
    return data


def print_monitor(data: dict[str, Any]) -> None:
    print(f"verdict: {data['verdict']}" + "".join(f"\n  {r}" for r in data["reasons"]))
    if "simulation" not in data["sources"]:
        print("(simulated traffic left out: real predictions exist; --source simulation shows it)")
    print(f"{'window':<20} {'n':>6} {'conf p50':>9} {'OOD rate':>9} {'feedback':>9} {'accuracy':>9}")
    for w in data["windows"]:
        acc = w["feedback_accuracy"]
        print(
            f"{w['window'][:19]:<20} {w['predictions']:>6} {w['confidence_p50']:>9.3f} {w['ood_rate']:>9.1%} "
            f"{w['feedback']:>9} {'' if acc is None else f'{acc:.1%}':>9}"
        )
    for w in data["windows"]:
        if not w["judged"]:
            print(f"{w['window'][:19]}: too few distinct images to judge ({w['images']} in {w['predictions']} predictions)")
    for w in data["windows"]:
        if w["repeats"]:
            print(f"{w['window'][:19]}: {w['predictions']} predictions of only {w['images']} distinct images (each tested once)")
    for c in data["causes"]:
        print(
            f"cause {c['window'][:19]}: {c['title'].lower()}: {c['words']} "
            f"({len(c['metrics'])} test(s): {', '.join(c['metrics'])})"
        )
        print(f"  lever: {c['lever']}")
    for a in data["alerts"]:
        print(f"  alert {a['window'][:19]} {a['metric']}: {a['words']} (n={a['n']}, adjusted p={a['adjusted_p']:.1g})")
        shown = [e["image_path"] or e["name"] for e in a["examples"]]
        print(f"    examples: {', '.join(shown)}{'' if a['images_kept'] else ' (images not kept: names only)'}")
    print(f"accuracy of all traffic in view: {data['accuracy']['advice']}")
    if data["excluded"]:
        print(f"{data['excluded']} prediction(s) by other model versions are not judged against {data['reference_version']}")


def cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    from core.production import demo

    return demo.prepare_demo(args.workspace or "demo", args.days, say=lambda m: print(m, file=sys.stderr, flush=True))


def print_demo(data: dict[str, Any]) -> None:
    print(f"workspace {data['workspace']}: production model {data['production']}, {data['predictions']} logged predictions")


def cmd_rollout(args: argparse.Namespace) -> dict[str, Any]:
    from core.production import rollout
    from core.workspace import store

    ws = workspaces.resolve(args.workspace)
    store.init_db(ws)
    note = args.note or ""
    if args.shadow:
        rollout.start(ws, args.shadow, "shadow", note=note)
    elif args.limited:
        if args.share is None:
            raise UserError("--limited needs --share S: the share of requests the candidate answers (0 to 1).")
        scope = rollout.Scope(args.share, args.min_confidence or 0.0, args.in_domain_only)
        rollout.start(ws, args.limited, "limited", scope, _decision_figures(ws, args.limited), note)
    elif args.expand:
        active = rollout.current(ws)
        rollout.expand(ws, _decision_figures(ws, active.candidate) if active else None, note)
    elif args.rollback:
        rollout.rollback(ws, note)
    elif args.backtest:
        from core.production import backtest

        found = backtest.run(ws, args.backtest, args.days, printer(not args.json, "replayed"))
        return {**_rollout_status(ws, args.window), "backtest": backtest.summary(found)}
    return _rollout_status(ws, args.window)


def _decision_figures(ws: Any, candidate: str) -> dict[str, Any]:
    from core.production import gate

    comparison = gate.compare(ws, candidate)
    return gate.figures(comparison, gate.gate(comparison))


def _rollout_status(ws: Any, window: str) -> dict[str, Any]:
    from core.model import registry
    from core.production import gate, rollout

    active = rollout.current(ws)
    out: dict[str, Any] = {
        "production": registry.production_version(ws),
        "candidate": active.candidate if active else None,
        "stage": active.stage if active else None,
        "scope": active.scope.words() if active and active.stage == "limited" else None,
        "history": rollout.history(ws)[:10],
    }
    if active:
        comparison = gate.compare(ws, active.candidate, window=window)
        out["comparison"] = gate.figures(comparison, gate.gate(comparison))
        out["windows"] = comparison.windows.drop(columns=["production_interval", "candidate_interval"]).to_dict("records")
    return out


def print_rollout(data: dict[str, Any]) -> None:
    print(f"production: {data['production'] or 'none yet'}")
    if not data["candidate"]:
        print("no candidate beside production (start one: rollout --shadow VERSION)")
    else:
        scope = f", acting on {data['scope']}" if data["scope"] else " (scores every request; never shown or acted on)"
        print(f"candidate: {data['candidate']} in {data['stage']}{scope}")
        c = data["comparison"]
        agreement = "n/a" if c["agreement"] is None else f"{c['agreement']:.1%}"
        print(f"scored by both: {c['paired']} requests, agreement {agreement}, answered by the candidate: {c['acted']}")
        print("promotion gate: " + ("met" if c["gate_passed"] else "not met"))
        for check in c["checks"]:
            print(f"  [{'x' if check['met'] else ' '}] {check['criterion']}: {check['value']}")
    for step in data["history"][:5]:
        print(f"  {step['ts']:%Y-%m-%d %H:%M}  {step['action']:<12} {step['candidate'] or ''}  {step['note'] or ''}")
    if "backtest" in data:
        print_backtest(data["backtest"])


def print_backtest(b: dict[str, Any]) -> None:
    share = lambda v: "n/a" if v is None else f"{v:.1%}"  # noqa: E731
    print(
        f"backtest of {b['version']} over the last {b['days']} day(s): {b['replayed']} of {b['served']} served "
        f"predictions replayed; {b['not_replayed_image_not_kept']} could not be (their image was not kept)"
    )
    print(f"  same class as production: {share(b['agreement'])}; same action: {share(b['same_action'])}")
    for line in b["words"]:
        print(f"  {line}")
    u = b["utility_per_labelled"]
    if b["utility_n"]:
        print(f"  utility per labelled request ({b['utility_n']}): production {u['production']}, candidate {u['candidate']}")
    print(f"  actions that would have changed: {b['actions_changed']}")
    for c in b["changed"][:10]:
        print(f"    {c['name']}: {c['production']} -> {c['candidate']}  ({c['image_path']})")


def cmd_review(args: argparse.Namespace) -> dict[str, Any]:
    from core.production import review
    from core.workspace import store

    ws = workspaces.resolve(args.workspace)
    store.init_db(ws)
    done: dict[str, Any] = {}
    if args.audit_share is not None:
        from core.production import audit

        done["audit_share"] = audit.set_share(ws, args.audit_share)
    if args.label:
        prediction_id, answer = args.label
        done["labelled" if review.label(ws, prediction_id, answer, args.reviewer) else "already_labelled"] = prediction_id
        done["why"] = review.why(ws, prediction_id)  # told once labelled, never before
    if args.undo:
        undone = review.undo_last(ws, args.reviewer)
        done["undone"] = {"prediction_id": undone.prediction_id, "name": undone.name, "label": undone.label}
    if args.import_csv:
        imported = review.import_labels(ws, read_file(Path(args.import_csv)), args.reviewer)
        done["imported"] = {"labelled": imported.labelled, "unchanged": imported.unchanged, "failed": imported.failed}
    if args.add_to_data:
        added = review.add_to_data(ws, args.ids, model_labels=args.model_labels)
        done["added"] = {"images": added.added, "skipped": added.skipped, "model_labelled": added.model_labelled}
    return {**review.summary(ws, args.limit, args.order), "done": done}


def print_review(data: dict[str, Any]) -> None:
    done = data["done"]
    if "audit_share" in done:
        print(f"audit share set to {done['audit_share']:.1%} of served predictions")
    if "labelled" in done:
        print(f"labelled {done['labelled']} (it waited because: {done['why']})")
    if "already_labelled" in done:
        print(f"{done['already_labelled']} already had this label from you: nothing recorded twice")
    if "undone" in done:
        print(f"took back the label {done['undone']['label']!r} on {done['undone']['name']}: it waits in the queue again")
    if "imported" in done:
        i = done["imported"]
        print(
            f"imported {i['labelled']} label(s); {i['unchanged']} already there (imported before); "
            f"{len(i['failed'])} row(s) refused"
        )
        for f in done["imported"]["failed"]:
            print(f"  row {f['row']}: {f['reason']}")
    if "added" in done:
        a = done["added"]
        extra = f" ({a['model_labelled']} labelled only by the model)" if a["model_labelled"] else ""
        print(f"added {len(a['images'])} production image(s) to the data{extra}; skipped {len(a['skipped'])}")
        for s in a["skipped"]:
            print(f"  skipped {s['source']}: {s['reason']}")
    reasons = ", ".join(f"{k} {v}" for k, v in data["by_reason"].items())
    oldest = f", oldest {data['oldest']}" if data["oldest"] else ""
    print(
        f"review queue: {data['pending']} waiting ({reasons}; with them, unmarked, a random {data['audit_share']:.1%} of "
        f"served predictions: the audit sample){oldest}; {data['reviewed']} reviewed so far; {data['order']} first"
    )
    for i in data["items"]:
        top = ", ".join(f"{c} {p:.0%}" for c, p in i["top"])
        print(f"  {i['id']}  {i['ts'][:16]}  {i['name']}: {top}")
    held = "; ".join(f"{n} {why}" for why, n in data["held_back"].items())
    print(
        f"reviewed images ready to join the data: {data['addable']} (review --add-to-data)"
        + (f"; not joining: {held}" if held else "")
    )
    if data["model_labelled"]:
        print(f"warning: {data['model_labelled']} image(s) in the data carry labels only the model gave")


def cmd_check(args: argparse.Namespace) -> dict[str, Any]:
    from core.production import check
    from core.workspace import failpoints

    if args.failpoints:
        return {"failpoints": failpoints.listing()}
    if not args.workspace:
        raise UserError("check needs --workspace NAME (or --failpoints, to list the fault suite's crash points).")
    report = check.check(ws=workspaces.resolve(args.workspace), repair=args.repair)
    args.status = 0 if not report.remaining else 1  # a script (cron, CI) learns that something needs a person
    return report.as_dict()


def print_check(data: dict[str, Any]) -> None:
    if "failpoints" in data:
        for point in data["failpoints"]:
            print(f"{point['failpoint']:<24} {point['state']}")
        return
    if not data["problems"]:
        print("no problems: every row has its file, every file its row, every model is intact, nothing is stale")
        return
    print(f"{len(data['problems'])} problem(s):")
    for p in data["problems"]:
        print(f"  [{p['kind']}] {p['subject']}: {p['detail']}\n      repair: {p['repair']}")
    for line in data["repaired"]:
        print(f"repaired: {line}")
    if data["remaining"]:
        print(
            f"{len(data['remaining'])} problem(s) "
            + ("remain (no repair for them)" if data["repaired"] else "found; --repair fixes the repairable ones")
        )


def cmd_serve(args: argparse.Namespace) -> dict[str, Any]:
    """Serve the prediction API until interrupted (Ctrl-C); returns what it served."""
    import uvicorn

    from core.production import api
    from core.workspace import workspaces

    ws = workspaces.resolve(args.workspace, serving=True)  # a replica opens no database: another process may hold it
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: give a port between 1 and 65535.")
    with socket.socket() as probe:  # say it plainly here: uvicorn would log it and exit mid-start
        try:
            probe.bind((args.host, args.port))
        except OSError as exc:
            raise UserError(
                f"Cannot listen on {args.host}:{args.port} ({exc.strerror}): choose another --port or --host."
            ) from None
    from core.production.batching import BatchLimits

    batching = BatchLimits(args.max_batch, args.max_wait_ms, args.max_queue, decoders=args.decoders)
    app = api.create_app(ws, args.replica, batching=batching)
    print(f"serving {ws.name} on http://{args.host}:{args.port} (replica {args.replica}; docs at /docs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return {"workspace": ws.name, "replica": args.replica, "served": app.state.service.log.submitted}


def add_commands(command: Any) -> None:
    sv = command(
        "serve",
        "the prediction API over HTTP (POST /v1/predict, /v1/feedback; GET /v1/health, /v1/model, /docs)",
        cmd_serve,
        lambda d: print(f"stopped: {d['served']} prediction(s) handed to the log"),
    )
    sv.add_argument("--host", default="127.0.0.1", help="default: this machine only")
    sv.add_argument("--port", type=bounds.arg("port", "--port"), default=8000)
    sv.add_argument("--replica", default="api", help="this process's name, when several serve one workspace")
    sv.add_argument(
        "--max-batch",
        type=bounds.arg("max_batch", "--max-batch"),
        default=16,
        help="images per forward pass at most (BatchLimits)",
    )
    sv.add_argument(
        "--max-wait-ms",
        type=bounds.arg("max_wait_ms", "--max-wait-ms"),
        default=5.0,
        help="how long a batch waits for more requests",
    )
    sv.add_argument(
        "--max-queue", type=bounds.arg("max_queue", "--max-queue"), default=256, help="images waiting; beyond, requests get 429"
    )
    sv.add_argument(
        "--decoders",
        type=bounds.arg("decoders", "--decoders"),
        default=0,
        help="requests decoding at once (default 0: one per core)",
    )

    d = command("demo", "make the ready demo: digits, a trained production model, simulated traffic", cmd_demo, print_demo)
    d.add_argument("--days", type=bounds.arg("days", "--days"), default=14, help="days of simulated traffic")

    p = command(
        "predict", "score image files and folders with the production model, logging every prediction", cmd_predict, print_predict
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    p.add_argument("--out", help="write one CSV line per input here")
    p.add_argument("--model", metavar="VERSION", help="default: the production model")
    p.add_argument("--batch-size", type=bounds.arg("predict_batch_size", "--batch-size"), default=32)

    s = command(
        "simulate", "replay held-back images as production traffic that drifts in its second half", cmd_simulate, print_simulate
    )
    s.add_argument("--days", type=bounds.arg("days", "--days"), default=14)
    s.add_argument("--per-day", type=bounds.arg("per_day", "--per-day"), default=60, help="mean predictions per day")
    s.add_argument("--shift-day", type=bounds.arg("day", "--shift-day"), help="first drifting day, 0-based (default: half way)")
    s.add_argument("--seed", type=bounds.arg("seed", "--seed"), default=0)

    m = command(
        "monitor",
        "drift per window of the prediction log against the production model's reference: every test, "
        "estimates without labels, alerts with example images",
        cmd_monitor,
        print_monitor,
    )
    m.add_argument("--window", choices=["hour", "day", "week", "predictions"], default="day")
    m.add_argument(
        "--size",
        type=bounds.arg("window_size", "--size"),
        default=200,
        help="with --window predictions: predictions per window (default 200)",
    )
    m.add_argument(
        "--source",
        action="append",
        choices=["app", "batch", "simulation", "api"],
        help="repeatable; default: all, simulation left out once real predictions exist",
    )
    m.add_argument("--model", metavar="VERSION", help="only this model version's predictions")

    r = command(
        "rollout",
        "run a candidate version beside production: shadow, limited, expand, rollback; its comparison and gate",
        cmd_rollout,
        print_rollout,
    )
    stage = r.add_mutually_exclusive_group()
    stage.add_argument("--shadow", metavar="VERSION", help="score every request with VERSION too; never shown or acted on")
    stage.add_argument("--limited", metavar="VERSION", help="VERSION answers a share of requests (with --share)")
    stage.add_argument("--expand", action="store_true", help="the candidate becomes production (rollback returns)")
    stage.add_argument("--rollback", action="store_true", help="stop the candidate; without one, production's previous version")
    stage.add_argument("--status", action="store_true", help="the stage, the comparison and the gate (the default)")
    stage.add_argument(
        "--backtest",
        metavar="VERSION",
        help="replay the kept production images of the last --days through VERSION and compare (never served)",
    )
    r.add_argument("--days", type=bounds.arg("days", "--days"), default=7, help="with --backtest: the period replayed")
    r.add_argument(
        "--share", type=bounds.arg("rollout_share", "--share"), help="with --limited: share of requests, by image hash (0 to 1)"
    )
    r.add_argument(
        "--min-confidence",
        type=bounds.arg("confidence", "--min-confidence"),
        help="with --limited: the candidate acts only at this confidence or above",
    )
    r.add_argument("--in-domain-only", action="store_true", help="with --limited: never on inputs it flags out of domain")
    r.add_argument("--note", help="why: recorded with the decision")
    r.add_argument("--window", choices=["hour", "day", "week"], default="day")

    v = command(
        "review",
        "the review queue (referred, out-of-domain and disputed predictions, and a random audit sample): list, label, "
        "import labels, add reviewed images to the data",
        cmd_review,
        print_review,
    )
    v.add_argument("--limit", type=bounds.arg("limit", "--limit"), default=20, help="queue items to list")
    v.add_argument(
        "--order",
        choices=["oldest", "newest", "valuable"],
        default="oldest",
        help="oldest first, newest first, or the most valuable label first (the utility the decision is expected to "
        "have lost); the audit sample keeps its share of every page",
    )
    v.add_argument(
        "--audit-share",
        type=bounds.arg("audit_share", "--audit-share"),
        help="set the share of served predictions drawn at random into the queue (default 0.02; 0 stops the audit)",
    )
    v.add_argument(
        "--label", nargs=2, metavar=("PREDICTION_ID", "LABEL"), help="label one prediction (a class or 'none of these')"
    )
    v.add_argument("--reviewer", help="who labels: recorded with each label (required with --label and --undo)")
    v.add_argument("--undo", action="store_true", help="take back this reviewer's latest label (kept in the audit log)")
    v.add_argument("--import", dest="import_csv", metavar="CSV", help="labels from elsewhere: prediction_id (or sha256), label")
    v.add_argument("--add-to-data", action="store_true", help="add reviewed production images to the catalog")
    v.add_argument("--ids", nargs="+", metavar="PREDICTION_ID", help="with --add-to-data: only these")
    v.add_argument(
        "--model-labels",
        action="store_true",
        help="with --add-to-data: also unreviewed in-domain predictions, labelled by the model (training refuses "
        "them unless --allow-model-labels)",
    )

    c = command(
        "check",
        "workspace integrity: rows and files, models, pointers, runs, the log's tables; --repair fixes what it can, "
        "never deleting",
        cmd_check,
        print_check,
    )
    c.add_argument("--repair", action="store_true", help="move orphans to quarantine, mark missing rows, end stale runs, ...")
    c.add_argument("--failpoints", action="store_true", help="list the named crash points the fault suite arms (no workspace)")
    c.epilog = "Exit status: 0 when nothing is left to fix, 1 when problems remain, 2 on bad input."
