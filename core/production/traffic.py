"""The traffic simulator: held-back images replayed as production traffic, drifting in the second half.
(The decision simulator, which replays labelled predictions through a policy, is core.drivetrain.decisions.)

Week one looks like the validation set. From the shift day on, a growing share of images is
darker, grayscale, blurred or rotated, and a growing share is out of domain (line drawings made
here). A fraction of predictions gets feedback: the true label, or "none of these" for drawings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from core.data.images import load_rgb
from core.errors import UserError
from core.model import registry
from core.model.rates import Rate
from core.production import prediction, prediction_log, serving
from core.workspace import store
from core.workspace.paths import Workspace

SHIFTS = ("darker", "grayscale", "blurred", "rotated")


@dataclass(frozen=True)
class TrafficConfig:
    days: int = 14
    per_day: int = 60  # mean predictions per day (Poisson)
    shift_day: int = 7  # first drifting day (0-based): week two
    max_shifted: float = 0.7  # share of in-domain images altered on the last day
    max_ood: float = 0.35  # share of line drawings on the last day
    feedback: float = 0.25  # share of predictions a human labels
    seed: int = 0


def check_config(cfg: TrafficConfig) -> None:
    if not 1 <= cfg.days <= 366:
        raise UserError(f"Simulate between 1 and 366 days, not {cfg.days}.")
    if not 1 <= cfg.per_day <= 100_000:
        raise UserError(f"Predictions per day must be 1-100,000, not {cfg.per_day}.")
    for name in ("max_shifted", "max_ood", "feedback"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise UserError(f"{name.replace('_', ' ')} is a share between 0 and 1, not {getattr(cfg, name)}.")


def drift(day: int, cfg: TrafficConfig) -> float:
    """0 before the shift day, then rising linearly to 1 on the last day."""
    if day < cfg.shift_day:
        return 0.0
    span = max(cfg.days - 1 - cfg.shift_day, 0)
    return 1.0 if span == 0 else (day - cfg.shift_day + 1) / (span + 1)


def shift_image(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """One kind of domain shift a camera in the field produces."""
    if kind == "darker":
        return ImageEnhance.Brightness(img).enhance(rng.uniform(0.25, 0.5))
    if kind == "grayscale":
        return img.convert("L").convert("RGB")
    if kind == "blurred":
        return img.filter(ImageFilter.GaussianBlur(radius=max(img.size) * rng.uniform(0.015, 0.03)))
    if kind == "rotated":
        return img.rotate(float(rng.choice([-1, 1]) * rng.uniform(60, 120)), expand=True, fillcolor=(0, 0, 0))
    raise ValueError(kind)


def line_drawing(size: int, rng: np.random.Generator) -> Image.Image:
    """An out-of-domain input: dark strokes on white paper (lines, circles, a polygon)."""
    img = Image.new("RGB", (size, size), (250, 250, 245))
    draw = ImageDraw.Draw(img)
    width = max(1, size // 60)
    for _ in range(rng.integers(4, 10)):
        kind = rng.integers(3)
        x0, y0, x1, y1 = (rng.uniform(0.05, 0.95, 4) * size).tolist()
        box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
        if kind == 0:
            draw.line([x0, y0, x1, y1], fill=(20, 20, 20), width=width)
        elif kind == 1:
            draw.ellipse(box, outline=(20, 20, 20), width=width)
        else:
            pts = [tuple((rng.uniform(0.05, 0.95, 2) * size).tolist()) for _ in range(rng.integers(3, 6))]
            draw.polygon(pts, outline=(20, 20, 20), width=width)
    return img


@dataclass(frozen=True)
class TrafficRequest:
    ts: datetime
    name: str
    data: bytes
    truth: str  # the true class, or NONE_OF_THESE for drawings
    shift: str  # "", one of SHIFTS, or "drawing"
    image_id: str = ""  # the test image it replays ("" for a drawing)


def plan_traffic(
    ws: Workspace, version: str, cfg: TrafficConfig, start: datetime, until: datetime | None = None
) -> list[TrafficRequest]:
    """Every simulated request: when it arrives, its bytes, and the truth behind it. A day that reaches past
    `until` (today, so far) has its requests in the part that has passed: none is logged in the future."""
    meta = registry.read_meta(ws, version)
    catalog = store.images(ws)
    used = set(meta.get("train_ids", [])) | set(meta.get("valid_ids", []))  # the reference is made of valid images
    held = catalog[(catalog["split"] == "test") & ~catalog["id"].isin(used) & catalog["label"].isin(meta["classes"])]
    if held.empty:
        raise UserError(
            f"Model {version} has no test images to replay as clean traffic (validation images are the monitoring "
            "reference, so replaying them would look cleaner than real traffic): draw a test set "
            "(python -m core split --draw-test) and retrain, or add images."
        )
    rng = np.random.default_rng(cfg.seed)
    side = int(np.median(held["width"].fillna(160)))
    # clean traffic comes in the classes' proportions among the images the model learnt from, not in the test
    # split's own proportions (a few images per class differ from those by chance, which is itself a shift)
    seen = catalog[catalog["id"].isin(used)]["label"].value_counts()
    kinds = sorted(set(held["label"]))
    weights = np.array([float(seen.get(c, 0)) or 1.0 for c in kinds])
    members = {c: held[held["label"] == c] for c in kinds}
    events = []
    for day in range(cfg.days):
        k = drift(day, cfg)
        n = int(rng.poisson(cfg.per_day))
        passed = 86_400.0 if until is None else (until - (start + timedelta(days=day))).total_seconds()
        seconds = np.sort(rng.uniform(0, min(86_400.0, max(passed, 0.0)), n))
        for i in range(n):
            ts = start + timedelta(days=day, seconds=float(seconds[i]))
            if rng.random() < cfg.max_ood * k:
                events.append(
                    TrafficRequest(
                        ts,
                        f"day{day:02d}-{i:04d}-drawing.jpg",
                        prediction.encode_jpeg(line_drawing(side, rng)),
                        prediction_log.NONE_OF_THESE,
                        "drawing",
                    )
                )
                continue
            group = members[kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]]
            row = group.iloc[int(rng.integers(len(group)))]
            path, kind = ws.root / row["path"], ""
            data = path.read_bytes()  # clean traffic is the file as it is: re-encoding would itself be a drift
            if rng.random() < cfg.max_shifted * k:
                kind = str(rng.choice(SHIFTS))
                data = prediction.encode_jpeg(shift_image(load_rgb(path), kind, rng))
            suffix = f"-{kind}.jpg" if kind else path.suffix  # unique: feedback finds its event by name
            events.append(
                TrafficRequest(ts, f"day{day:02d}-{i:04d}-{row['id']}{suffix}", data, row["label"], kind, str(row["id"]))
            )
    return events


def replay_traffic(
    ws: Workspace,
    cfg: TrafficConfig = TrafficConfig(),
    end: datetime | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, object]:
    """Score cfg.days of simulated traffic with the production model, log it (source 'simulation') with feedback."""
    check_config(cfg)
    served = serving.snapshot(ws, serving.Models(ws))
    predictor = served.predictor
    until = end or store.now()
    start = until.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=cfg.days - 1)
    events = plan_traffic(ws, predictor.version, cfg, start, until)
    keep = True  # simulated images are always kept, so alerts on simulated traffic can show them
    items = [(e.name, e.data) for e in events]
    scored = served.score(items, 64, on_progress)
    preds, failed = scored.shown, scored.failed
    by_name = {e.name: e for e in events}
    times = [by_name[p.name].ts for p in scored.logged]
    result = prediction_log.log_predictions(ws, scored.logged, "simulation", predictor.version, times, keep)
    rng = np.random.default_rng(cfg.seed + 1)
    labelled = [p for p in preds if rng.random() < cfg.feedback]
    feedback = pd.DataFrame(
        {
            "prediction_id": [p.id for p in labelled],
            "ts": [min(by_name[p.name].ts + timedelta(minutes=float(rng.uniform(5, 600))), until) for p in labelled],
            "label": [by_name[p.name].truth for p in labelled],
            "source": ["simulation"] * len(labelled),
        }
    )
    prediction_log.add_feedback_rows(ws, feedback)
    truth = pd.DataFrame(
        {
            "prediction_id": [p.id for p in scored.logged],
            "label": [by_name[p.name].truth for p in scored.logged],
            "shift": [by_name[p.name].shift for p in scored.logged],
        }
    )
    prediction_log.add_simulation_truth(ws, truth)
    shift_at = start + timedelta(days=cfg.shift_day)
    clean = [e for e in events if e.shift != "drawing"]
    pool = len({e.image_id for e in clean})
    as_is = {by_name[p.name].image_id: bool(p.ood) for p in preds if not by_name[p.name].shift}  # the pool, unshifted
    reference = predictor.reference
    valid_flagged = float(np.mean(reference.valid_scores < reference.ood_threshold)) if len(reference.valid_scores) else None
    first = [p for p in preds if by_name[p.name].ts < shift_at]
    second = [p for p in preds if by_name[p.name].ts >= shift_at]
    return {
        "version": predictor.version,
        "days": cfg.days,
        "start": str(start.date()),
        "end": str((start + timedelta(days=cfg.days - 1)).date()),
        "predictions": len(preds),
        "pool": pool,  # distinct test images the clean traffic replays
        "repeats": len(clean) / max(pool, 1),  # times each is replayed on average
        "real_overlap": _real_between(ws, start, start + timedelta(days=cfg.days)),
        # the clean pool as the model sees it: its images flagged out of domain, against validation's share (about
        # 1 - VALID_PASS by construction). A test split unlike validation makes clean traffic drift from the start.
        "pool_ood": sum(as_is.values()),
        "pool_scored": len(as_is),
        "valid_ood_rate": valid_flagged,
        "logged": result.logged,
        "feedback": len(feedback),
        "drawings": sum(e.shift == "drawing" for e in events),
        "shifted": sum(e.shift in SHIFTS for e in events),
        "ood_rate_before_shift": _rate(first),
        "ood_rate_after_shift": _rate(second),
        "failed": failed,
    }


def pool_note(result: dict[str, object]) -> str:
    """A sentence when the clean pool's out-of-domain share is far from validation's (outside the pool's 95% Wilson
    interval): that difference is in every simulated day, shift or no shift."""
    k, n, valid = result.get("pool_ood"), result.get("pool_scored"), result.get("valid_ood_rate")
    if not n or valid is None:
        return ""
    rate = Rate(int(k), int(n))
    low, high = rate.interval
    if low <= float(valid) <= high:
        return ""
    return (
        f"Note: {k} of the {n} test images replayed as clean traffic ({rate.value:.0%}) look out of domain to the model, "
        f"against {float(valid):.0%} of validation images: the test split differs from validation, so Monitor may see "
        "out-of-domain inputs on every simulated day, shift or no shift. Look at them (Explore, test split) before "
        "trusting the drifting days."
    )


def _real_between(ws: Workspace, start: datetime, end: datetime) -> int:
    """Real (not simulated) predictions logged in the simulated period: the simulation is backdated among them."""
    with store.connect(ws) as con:
        row = con.execute(
            "SELECT count(*) FROM log_predictions WHERE source <> 'simulation' AND ts >= ? AND ts < ?", [start, end]
        ).fetchone()
    return int(row[0]) if row else 0


def _rate(preds: list[prediction.Prediction]) -> float | None:
    return None if not preds else sum(p.ood for p in preds) / len(preds)
