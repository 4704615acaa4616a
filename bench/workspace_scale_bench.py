"""Large workspaces: each step a user takes, timed with its peak memory, at 2,500, 5,000, 10,000 and 20,000 images.

    .venv/bin/python bench/workspace_scale_bench.py [--sizes 2500,5000,10000,20000] [--folder ../shared/data/bears_small]
                                                    [--steps gather,verify,train,explore,clean,evaluate] [--keep]

The images are made from the folder's photos (<label>/<file>): each a random crop (55-100% of each side), mirrored
half the time, its brightness, contrast and saturation changed by up to 25%, saved as JPEG at quality 80-95, so
every file's bytes are distinct and it keeps its photo's label. They are made once for the largest size; each size
takes the first N of one fixed shuffle (a smaller set is part of every larger one).

Each step runs in its own process, timed from its start to its end (the interpreter, imports and the model's load
included), its peak resident memory read by the parent when it ends:
- gather: `python -m core gather --folder` (decode, hashes, the catalog's rows)
- verify: `python -m core verify` (every image decoded again, duplicates)
- train: `python -m core train` with the workspace's default recipe (the split is made by the first run)
- Explore, Clean, Evaluate: the page opened as a user opens it, through Streamlit's AppTest, on a fresh process
  (nothing cached): Explore's catalog, figures and sample; Clean's out-of-fold scoring of every image (its slowest
  part, which the page shows a progress bar for); Evaluate's confusion matrix, per-class table and top losses.
  The time is the page's run alone (the router's first run on Overview is left out).
Printed per step and size: seconds, milliseconds per image, peak MiB, and the ratio to the size before (2.0 per
doubling is linear); under train, the epochs it ran per stage with their seconds (the default recipe chooses its
unfrozen epochs from the frozen error). Asserts nothing.

What it leaves out: the browser (drawing, transferring figures and thumbnails); photos larger than the folder's
(bears_small holds thumbnails: a camera's photos cost more to decode, the first time); a cold disk cache (the images
were just written); training on a GPU.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PEAK = (  # runs a command, then prints its exit code and peak RSS (KiB) on the last line
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)
PAGE = """
import sys, time
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=36000)
at.session_state["workspace_name"] = sys.argv[2]
at.run()
at.switch_page(sys.argv[3])
t0 = time.perf_counter()
at.run()
took = time.perf_counter() - t0
problems = [e.value for e in at.error] + [str(e.value) for e in at.exception]
print("PAGE", took, len(problems), (problems or [""])[0][:300].replace(chr(10), " "))
"""
STEPS = ("gather", "verify", "train", "explore", "clean", "evaluate")
PAGES = {"explore": "app_pages/explore.py", "clean": "app_pages/clean.py", "evaluate": "app_pages/evaluate.py"}


def make_images(folder: Path, out: Path, n: int, seed: int = 0) -> list[Path]:
    """n distinct JPEGs under out/<label>/, made from the folder's photos; returns them in one fixed shuffle."""
    from PIL import Image, ImageEnhance, ImageOps

    sources = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"})
    rng = random.Random(seed)
    rng.shuffle(sources)  # every label from the first images on
    made = []
    for i in range(n):
        src = sources[i % len(sources)]
        img = Image.open(src).convert("RGB")
        w, h = img.size
        cw, ch = int(w * rng.uniform(0.55, 1.0)), int(h * rng.uniform(0.55, 1.0))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        img = img.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            img = ImageOps.mirror(img)
        for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            img = enhance(img).enhance(rng.uniform(0.75, 1.25))
        target = out / src.parent.name / f"{i:05d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        img.save(target, "JPEG", quality=rng.randint(80, 95))
        made.append(target)
    rng.shuffle(made)
    return made


def subset(made: list[Path], n: int, out: Path) -> Path:
    """A folder of the first n images, by label (hard links: no copy)."""
    for path in made[:n]:
        link = out / path.parent.name / path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, link)  # the same bytes under a second name (a link to a file, not a symlink)
    return out


def measured(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    """(seconds, peak MiB, exit code, the command's output) of one command in its own process."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK, *cmd], env=env, cwd=ROOT, capture_output=True, text=True)
    took = time.perf_counter() - t0
    code, peak = done.stdout.strip().splitlines()[-1].split()
    return took, int(peak) / 1024, int(code), done.stdout + done.stderr


def step(name: str, ws: str, images: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """(seconds, peak MiB, what went wrong or '') of one step."""
    core = [sys.executable, "-m", "core"]
    if name in PAGES:
        took, peak, code, out = measured([sys.executable, "-c", PAGE, str(ROOT / "streamlit_app.py"), ws, PAGES[name]], env)
        line = next((x for x in out.splitlines() if x.startswith("PAGE ")), None)
        if code or line is None:
            return took, peak, f"exit {code}: {out[-300:]}"
        _, seconds, problems, first = line.split(" ", 3)
        return float(seconds), peak, (f"{problems} problem(s) on the page: {first}" if int(problems) else "")
    args = {"gather": ["gather", "--folder", str(images)], "verify": ["verify"], "train": ["train"]}[name]
    took, peak, code, out = measured([*core, *args, "--workspace", ws], env)
    if code == 0 and name == "train":
        print(f"{'':>18}{epochs(out)}", flush=True)
    return took, peak, "" if code == 0 else f"exit {code}: {out[-300:]}"


def epochs(out: str) -> str:
    """The epochs a training ran, per stage, with their seconds (from the lines `train` prints per epoch): the
    default recipe chooses its unfrozen epochs from the frozen error, so two sizes may run a different number."""
    found: dict[str, list[float]] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[0] == "epoch" and parts[-1].endswith("s"):
            found.setdefault(parts[2], []).append(float(parts[-1][:-1]))
    rest = ", ".join(f"{stage} {len(t)} ({' + '.join(f'{x:.0f}' for x in t)} s)" for stage, t in found.items())
    return f"epochs: {rest or 'none printed'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2500,5000,10000,20000")
    parser.add_argument("--folder", type=Path, default=ROOT.parent / "shared" / "data" / "bears_small")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, in order, of {', '.join(STEPS)}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print where it is")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    steps = [s for s in STEPS if s in args.steps.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="ws-scale-"))
    try:
        t0 = time.perf_counter()
        made = make_images(args.folder, tmp / "made", sizes[-1])
        print(f"{len(made):,} images made from {args.folder} in {time.perf_counter() - t0:.0f} s "
              f"({sum(p.stat().st_size for p in made) / 2**20:.0f} MiB)", flush=True)  # fmt: skip
        env = {**os.environ, "IMAGEDP_DATA_ROOT": str(tmp / "root"), "PYTHONPATH": str(ROOT)}
        before: dict[str, float] = {}
        print(f"{'images':>7} {'step':>9} {'seconds':>9} {'ms/image':>9} {'peak MiB':>9} {'x previous':>10}  problems")
        for n in sizes:
            images = subset(made, n, tmp / f"set-{n}")
            ws = f"scale-{n}"
            for name in steps:
                took, peak, wrong = step(name, ws, images, env)
                ratio = f"{took / before[name]:.2f}" if name in before else ""
                before[name] = took
                print(f"{n:>7,} {name:>9} {took:>9.1f} {took / n * 1e3:>9.2f} {peak:>9.0f} {ratio:>10}  {wrong}", flush=True)
                if wrong and name in ("gather", "train"):
                    break  # the steps after need what this one makes
            shutil.rmtree(tmp / "root" / "workspaces" / ws, ignore_errors=True)
    finally:
        if args.keep:
            print(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
