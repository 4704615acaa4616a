"""A real browser (Debian's chromium, headless, driven by Playwright) walks the running app.

Screenshots of every page land in a temporary folder (printed at the end), or in SCREENSHOT_DIR when set:
`make screenshots` refreshes docs/screenshots/ that way, so `make test` leaves the working tree clean.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port, ready, until

ROOT = Path(__file__).resolve().parent.parent
# How much slower than a quiet machine this one is now: the run-queue length per core, measured when the tests
# start (beside `make test`'s other half it is 1-2; beside two CPU-bound processes 3-5). The limits below are hang
# guards scaled by it; training is waited on while it makes progress (`trained`), with no limit on its length.
SLOWNESS = max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
HEAVY_MS = int(600_000 * SLOWNESS)  # scoring a workspace, simulating two weeks: minutes on a busy machine
STALL_MS = int(600_000 * SLOWNESS)  # a training whose progress line has not changed this long has hung
ANSWER = re.compile(r"^This (looks like|doesn't look like)")  # the Predict page's headline for one image
SHOTS = Path(os.environ.get("SCREENSHOT_DIR") or Path(tempfile.gettempdir()) / "imagedp-screenshots")
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = pytest.mark.browser

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Debian's chromium for the browser tests: apt-get install chromium")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium); browser walk skipped", allow_module_level=True)


DIGITS = ("1", "3", "7", "8")  # the walk's demo workspace: often confused pairs, so the matrices say something


def demo_images() -> int:
    from sklearn.datasets import load_digits

    return int(sum((load_digits().target == int(d)).sum() for d in DIGITS))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser-data")


@pytest.fixture(scope="module")
def server(data_root: Path) -> Iterator[str]:
    yield from serve(data_root)


def output(root: Path, name: str) -> object:
    """A server's output file (kept beside the data root, for reading after a failure)."""
    return open(root.parent / f"{name}-{time.monotonic_ns()}.log", "w+b")  # noqa: SIM115 - the process keeps it open


def trained(page: object, done: str) -> None:
    """Wait for a training to end with `done` on the page, for as long as its progress line keeps changing (a busy
    machine trains the walk's model in 2 to 25 minutes); fail when it has not changed for STALL_MS."""
    progress = page.get_by_text(re.compile(r"^(Step \d of \d: |.*: epoch \d+ of \d+, batch )"))
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    last, since = None, time.monotonic()
    while True:
        try:
            page.get_by_text(done).wait_for(timeout=30_000)
            return
        except PlaywrightTimeout:
            pass
        now = " | ".join(progress.all_inner_texts())
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > STALL_MS / 1000:
            pytest.fail(f"training made no progress for {STALL_MS // 60_000} minutes; the page said: {now or 'nothing'}")


def serve(root: Path, **extra_env: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "IMAGEDP_DATA_ROOT": str(root), **extra_env}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "streamlit_app.py",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--server.fileWatcherType",
            "none",
        ],
        cwd=ROOT,
        env=env,
        stdout=output(root, "streamlit"),  # a file, never a pipe nobody reads: a full pipe would block the server
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    ready(f"{url}/_stcore/health", proc, proc.stdout, "streamlit did not start", 90 * SLOWNESS)
    try:
        yield url
    finally:
        proc.terminate()  # it writes what its log still holds before it exits (at most EXIT_WAIT_S), however slowly
        try:
            proc.wait(timeout=600)  # a hang guard, never a speed limit
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


@pytest.fixture(scope="module")
def page(server: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        tab.set_default_timeout(int(90_000 * SLOWNESS))
        tab.goto(f"{server}/explore")  # a deep link as the server's first request must still use the router
        yield tab
        browser.close()


def shot(page: object, name: str) -> Path:
    """Save the whole page: Streamlit scrolls inside its main block, so grow the viewport to fit."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.mouse.move(5, page.viewport_size["height"] - 10)  # no tooltip over the content
    drawn(page)
    height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    width = page.viewport_size["width"]  # the walk's 1400 px, or a phone's
    page.set_viewport_size({"width": width, "height": min(max(int(height), 1000 if width > 800 else 844), 5000)})
    drawn(page)
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": width, "height": 1000 if width > 800 else 844})
    return path


DRAWN = """() => [...document.images].every(i => i.complete)
    && document.querySelectorAll('[data-testid="stSkeleton"], [data-testid="stSpinner"]').length === 0
    && [...document.querySelectorAll('.js-plotly-plot')].every(p => p.querySelector('.main-svg'))"""
FRAMES = "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"


def drawn(page: object) -> None:
    """Wait until the run is over, images have loaded, charts have drawn, and two frames have painted."""
    idle(page)
    page.wait_for_function(DRAWN, timeout=60_000)
    page.evaluate(FRAMES)


def idle(page: object) -> None:
    """Wait until the app has finished its current run: the "Running..." status is gone and no element is left over
    from the run before (Streamlit fades those, data-stale, until the run replaces or removes them)."""
    page.wait_for_timeout(300)  # a rerun shows the status widget within this; then wait for it to go
    page.locator("[data-testid='stStatusWidget']").wait_for(state="hidden", timeout=HEAVY_MS)
    page.wait_for_function("() => !document.querySelector('[data-stale=\"true\"]')", timeout=HEAVY_MS)


def simulated(page: object) -> None:
    """Wait for the Monitor's simulation to end: its summary, or (failing at once, with the page's words) an error."""
    ended = page.get_by_text(re.compile(r"^Simulated \d+ predictions")).or_(page.locator("[data-testid='stAlertContentError']"))
    ended.first.wait_for(timeout=HEAVY_MS)
    failed = page.locator("[data-testid='stAlertContentError']")
    assert failed.count() == 0, f"the simulation failed: {failed.first.inner_text()}"


def no_exception(page: object) -> None:
    assert page.locator("[data-testid='stException']").count() == 0


def edit_matrix_cell(page: object, row: int, column: int, value: str, wait: bool = True) -> None:
    """Type a value into the Levers page's utility matrix (a canvas grid: clicked and typed into like a user);
    `wait=False` goes on while the app is still applying the edit, as a quick user does."""
    grid = page.locator("[data-testid='stDataFrame']").nth(1)  # the utility matrix (the actions table is first)
    grid.scroll_into_view_if_needed()
    page.evaluate(FRAMES)
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 20, box["y"] + 35 + 17 + 35 * row)  # the row's label cell (read-only)
    page.wait_for_function(  # the grid took the click: its accessible cell for that row has the focus
        f"() => (document.activeElement?.getAttribute('data-testid') || '').match(/^glide-cell-\\d+-{row}$/)"
    )
    for _ in range(column + 1):
        page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")  # open the cell's editor
    editor = page.locator("input.gdg-input")
    editor.wait_for()  # typed only once it is there: keys sent before it opens are lost on a busy machine
    editor.fill(value)
    page.keyboard.press("Enter")
    if wait:
        idle(page)


def matrix_cell(page: object, row: int, column: int) -> str:
    """One payoff as the page shows it (from the grid's accessible table; its column 0 is the row's label)."""
    cell = page.locator("[data-testid='stDataFrame']").nth(1).get_by_test_id(f"glide-cell-{column + 1}-{row}")
    return cell.inner_text()


@pytest.mark.timeout(0)  # each wait below is guarded: training by its progress, the rest scaled by SLOWNESS
def test_walk_the_app(page: object, tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page.get_by_text("No workspace is open").wait_for()
    assert page.get_by_role("link", name="streamlit app").count() == 0
    page.get_by_role("link", name="Workspaces", exact=True).click()
    page.get_by_text("A workspace is one classification problem").wait_for()
    page.get_by_role("combobox", name="Digits (all when empty)").click()
    for digit in DIGITS:  # four of the ten digits: the whole walk, in a third of the time
        page.get_by_role("option", name=digit, exact=True).click()
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Create demo workspace").click()
    page.get_by_text(f"Created 'demo' with {demo_images()} images").wait_for()
    no_exception(page)
    assert shot(page, "01-workspaces").stat().st_size > 10_000

    page.get_by_role("link", name="Gather", exact=True).click()
    page.get_by_text("Gather images").first.wait_for()
    page.get_by_role("tab", name="Folder").click()
    folder = tmp_path / "more"
    make_images(folder)
    page.get_by_role("textbox", name="Folder", exact=True).fill(str(folder))
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Import folder").click()
    page.get_by_text("Added 4 image(s)").wait_for()
    no_exception(page)
    shot(page, "02-gather")

    page.get_by_role("link", name="Verify and explore", exact=True).click()
    page.get_by_role("button", name="Verify all images").click()
    page.get_by_text(f"Checked {demo_images() + 4} images").wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    no_exception(page)
    shot(page, "03-explore-charts")
    page.get_by_role("tab", name="Samples").click()
    page.locator("[data-testid='stImage']").first.wait_for()
    shot(page, "04-explore-samples")
    page.get_by_role("tab", name="Duplicates").click()
    shot(page, "05-explore-duplicates")
    page.get_by_role("tab", name="Quarantine").click()
    shot(page, "06-explore-quarantine")
    no_exception(page)

    page.get_by_role("link", name="Train", exact=True).click()
    page.get_by_text("Horizontal flips").wait_for()
    field = page.get_by_role("spinbutton", name="Frozen epochs", exact=True)
    field.fill("1")
    field.press("Enter")
    idle(page)
    page.get_by_role("combobox", name="Unfrozen epochs").click()
    page.get_by_role("option", name="1", exact=True).click()
    idle(page)
    page.get_by_text("Preview: one image augmented eight times").click()
    page.get_by_role("button", name="Show preview").click()
    page.locator("[data-testid='stImage']").first.wait_for()
    shot(page, "07-train-settings")
    page.get_by_role("button", name="Start training").click()
    page.get_by_role("button", name="Cancel training").wait_for()
    page.locator(".js-plotly-plot").first.wait_for(timeout=HEAVY_MS)
    no_exception(page)
    shot(page, "08-train-live")
    trained(page, "Trained v1")
    page.get_by_role("button", name="Make v1 production").click()  # the next step, at the top of the results
    page.get_by_text("v1 is the production model.").wait_for()
    page.get_by_role("link", name="Next: choose a decision policy").wait_for()
    idle(page)
    no_exception(page)
    shot(page, "09-train-versions")

    page.get_by_role("button", name="Start training").click()  # a second run, cancelled from the page
    page.get_by_role("button", name="Cancel training").click()
    page.get_by_text("Training was cancelled; no model version was written.").wait_for(timeout=HEAVY_MS)
    no_exception(page)

    page.get_by_role("link", name="Evaluate", exact=True).click()
    page.get_by_text("Test accuracy", exact=True).wait_for()  # the caption under it says "test accuracy" too
    page.get_by_text("validation accuracy is optimistic", exact=False).wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    no_exception(page)
    shot(page, "10-evaluate-confusion")
    page.get_by_role("tab", name="Top losses").click()
    page.locator("[data-testid='stImage']").first.wait_for()
    shot(page, "11-evaluate-top-losses")
    page.get_by_role("tab", name="Calibration").click()
    page.get_by_text("Expected calibration error").first.wait_for()
    shot(page, "12-evaluate-calibration")
    no_exception(page)

    page.get_by_role("link", name="Clean", exact=True).click()
    page.get_by_text("Pending: 0 deletion(s)").wait_for(timeout=HEAVY_MS)
    page.locator("[data-testid='stImage']").first.wait_for()
    page.get_by_role("combobox", name="Action").first.click()
    page.get_by_role("option").filter(has_text="→").first.click()
    page.get_by_text("1 relabel(s)").wait_for()
    no_exception(page)
    shot(page, "13-clean-pending")
    page.get_by_role("button", name="Apply").click()
    page.get_by_text("Applied").wait_for()
    page.get_by_text("Pending: 0 deletion(s), 0 relabel(s)").wait_for()
    idle(page)
    page.get_by_role("button", name="Undo last batch").click()
    page.get_by_text("Undid 1 change(s)").wait_for()
    idle(page)
    page.locator("[data-testid='stSpinner']").wait_for(state="detached", timeout=HEAVY_MS)
    page.get_by_text("Pending: 0 deletion(s), 0 relabel(s)").wait_for()
    no_exception(page)
    shot(page, "14-clean-undone")

    page.get_by_role("link", name="Objective", exact=True).click()
    page.get_by_role("textbox", name="Outcome wanted").fill("Read handwritten digits on forms; never misfile a 7 as a 1.")
    page.get_by_role("textbox", name="Decision the model serves").fill("File each scan, or send it to a clerk.")
    page.get_by_role("textbox", name="Who is affected").fill("Applicants and the clerks who check scans.")
    page.get_by_role("textbox", name="Success measure").fill("Misfiled forms per 1,000; clerk minutes per day.")
    page.get_by_role("button", name="Save objective").click()
    page.get_by_text("Saved. Next").wait_for()
    no_exception(page)
    shot(page, "15-objective")

    page.get_by_role("link", name="Levers", exact=True).click()
    page.get_by_text("Utility matrix", exact=True).wait_for()
    idle(page)  # the page has loaded; then the edits come as fast as keys can go
    quick = {(0, 0): "250", (1, 1): "20", (2, 2): "30", (3, 3): "40", (1, 4): "-50"}  # five edits, one after another
    for (row, column), value in quick.items():
        edit_matrix_cell(page, row, column, value, wait=False)
    from core.drivetrain import accepted, levers
    from core.model import registry
    from core.workspace import store, workspaces

    monkeypatch.setenv("IMAGEDP_DATA_ROOT", str(data_root))

    def saved_cells() -> dict[tuple[int, int], float]:
        saved, _ = levers.load_utility(workspaces.resolve("demo"), [*DIGITS, "cat", "dog"])
        return {cell: saved.payoff[cell[0]][cell[1]] for cell in quick}

    until(lambda: saved_cells() == {c: float(v) for c, v in quick.items()}, f"the quick edits were not all saved: {quick}")
    idle(page)
    page.get_by_text("Saved. See what this matrix means").wait_for()
    assert [matrix_cell(page, row, column) for row, column in quick] == list(quick.values())  # the page shows them
    no_exception(page)
    shot(page, "16-levers")

    page.get_by_role("link", name="Policy", exact=True).click()
    page.get_by_text("Simulator:").wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    page.get_by_role("button", name="Optimize the policy").click()
    page.get_by_text("held-out images").first.wait_for()
    idle(page)
    no_exception(page)
    shot(page, "17-policy-simulator")
    if page.get_by_role("button", name="Accept this policy").count():  # it beats its baseline by more than the noise
        page.get_by_role("button", name="Accept this policy").click()
    else:  # the baseline is recommended: accepting the optimized policy takes a deliberate second step
        page.get_by_text("I have read the above").click()
        page.get_by_role("button", name="Accept the optimized policy").click()
    page.get_by_text(re.compile(r"^Accepted for model v1:")).wait_for()  # not the "No policy accepted for model" note
    no_exception(page)

    page.get_by_role("link", name="Summary", exact=True).click()
    page.get_by_role("button", name="Download as HTML").wait_for()
    page.get_by_text("Decision pending").wait_for()
    no_exception(page)
    shot(page, "18-summary")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download as HTML").click()
    report = tmp_path / "report.html"
    download.value.save_as(str(report))
    printed = page.context.browser.new_page()  # its own context: the app page keeps its session
    printed.goto(report.as_uri())
    printed.get_by_text("Decision pending").wait_for()
    SHOTS.mkdir(parents=True, exist_ok=True)
    printed.pdf(path=str(SHOTS / "18b-summary-print.pdf"), format="A4")  # chromium's print to PDF
    printed.emulate_media(media="print")
    printed.screenshot(path=str(SHOTS / "18b-summary-print.png"), full_page=True)  # what the PDF holds, to look at
    printed.close()
    assert (SHOTS / "18b-summary-print.pdf").read_bytes().startswith(b"%PDF")

    page.get_by_role("link", name="Predict", exact=True).click()
    page.get_by_text("Production model").wait_for()
    digit = sorted((data_root / "workspaces" / "demo" / "images" / "3").iterdir())[0]
    page.locator("input[type='file']").first.set_input_files(str(digit))
    page.get_by_text(ANSWER).first.wait_for()  # whatever the walk's one-epoch model answers
    page.get_by_text(re.compile("^[█▏▎▍▌▋▊▉]+$")).first.wait_for()  # the top classes, drawn in text
    page.get_by_role("combobox", name="What is it really?").click()
    page.get_by_role("option", name="3", exact=True).click()
    page.get_by_role("button", name="Send feedback").click()
    page.get_by_text("Thanks: recorded").wait_for()
    assert page.get_by_text("(the accepted decision policy)").count() == 1
    no_exception(page)
    shot(page, "19-predict")

    page.get_by_role("link", name="Monitor", exact=True).click()
    page.get_by_text("Out of domain, last").wait_for()
    idle(page)
    page.get_by_text("Simulate more traffic").click()
    page.get_by_role("button", name="Simulate", exact=True).click()
    simulated(page)
    page.locator(".js-plotly-plot").first.wait_for()  # the overview: the rest waits in expanders
    idle(page)  # the rerun that shows the simulated days has finished (no faded, stale page in the picture)
    no_exception(page)
    shot(page, "20-monitor")
    page.get_by_text(re.compile(r"^Causes")).wait_for()
    page.get_by_text("What to do:").first.scroll_into_view_if_needed()  # the latest cause, with its example images
    alert = page.locator("[data-testid='stVerticalBlock']").filter(has_text="What to do:").last  # innermost: a cause
    alert.locator("[data-testid='stImage']").first.wait_for()
    no_exception(page)
    shot(page, "20b-monitor-alert")
    page.get_by_text("Accuracy without labels").click()
    page.locator(".js-plotly-plot").last.wait_for()
    shot(page, "20c-monitor-estimates")

    # the human loop: review three queued images, add them to the data, retrain, shadow, expand
    page.get_by_role("link", name="Review", exact=True).click()
    page.get_by_text("Oldest waiting").wait_for()
    page.get_by_role("textbox", name="Your name (required: recorded with each label)").fill("walker")
    page.keyboard.press("Enter")
    idle(page)
    first_item = "[class*='st-key-label_']"
    changed = "k => document.querySelector(`[class*='st-key-label_']`).className.split(' ')[2] !== k"

    def first_key() -> str:
        return page.locator(first_item).first.get_attribute("class").split(" ")[2]  # st-key-label_<id>_<class>

    before = first_key()
    page.get_by_text("Newest first", exact=True).click()  # the drifting days: new images, not replays of the data
    page.wait_for_function(changed, arg=before)  # the new order is drawn (a click on the old one would be lost)
    idle(page)
    demo_ws = workspaces.resolve("demo")
    for k in range(3):
        before = first_key()
        page.locator(f"{first_item} button").first.click()
        page.wait_for_function(changed, arg=before)  # the labelled item left the queue
        idle(page)
        page.get_by_text(re.compile(r"^Recorded .+ as ")).wait_for()
        with store.connect(demo_ws) as con:
            assert con.execute("SELECT count(*) FROM log_feedback WHERE reviewer = 'walker'").fetchone()[0] == k + 1
    page.get_by_role("button", name="Undo my last label").click()
    page.get_by_text(re.compile(r"^Took back .+ it waits in the queue again")).wait_for()
    idle(page)
    with store.connect(demo_ws) as con:
        assert con.execute("SELECT count(*) FROM log_feedback WHERE reviewer = 'walker'").fetchone()[0] == 2
    before = first_key()
    page.locator(f"{first_item} button").first.click()  # label it again
    page.wait_for_function(changed, arg=before)
    idle(page)
    page.get_by_text(re.compile(r"^Recorded .+ as ")).wait_for()
    no_exception(page)
    shot(page, "21-review")
    page.get_by_role("button", name=re.compile(r"^Add [1-9]\d* image\(s\) to the data$")).click()
    page.get_by_text(re.compile(r"^Added [1-9]\d* image\(s\) to the data")).wait_for()
    no_exception(page)
    with store.connect(workspaces.resolve("demo")) as con:
        assert con.execute("SELECT count(*) FROM log_feedback WHERE source = 'review' AND reviewer = 'walker'").fetchone()[0] == 3
    catalog = store.images(workspaces.resolve("demo"))
    joined = catalog[catalog["source_kind"] == "production"]
    assert 1 <= len(joined) <= 3 and set(joined["labelled_by"]) == {"walker"} and set(joined["label_source"]) == {"review"}

    page.get_by_role("link", name="Train", exact=True).click()
    page.get_by_role("button", name="Start training").click()
    trained(page, "Trained v2")
    idle(page)
    page.get_by_role("button", name="Run v2 beside production (v1) in shadow first").click()  # the next step
    page.get_by_text("v2 is in shadow beside production").wait_for()
    no_exception(page)
    assert set(joined["id"]) <= set(registry.read_meta(workspaces.resolve("demo"), "v2")["train_ids"]) | set(
        registry.read_meta(workspaces.resolve("demo"), "v2")["valid_ids"]
    ) | set(catalog[catalog["split"] == "test"]["id"])  # each reviewed image went where its split says

    page.get_by_role("link", name="Monitor", exact=True).click()
    page.get_by_text("Simulate more traffic").wait_for()
    idle(page)  # as a user does: the page has finished loading (a click in its last moments went unheard under load once)
    page.get_by_text("Simulate more traffic").click()
    page.get_by_role("button", name="Simulate", exact=True).click()
    simulated(page)
    page.get_by_role("link", name="Rollout", exact=True).click()
    page.get_by_text("Candidate v2 in shadow beside production v1").wait_for()
    page.get_by_role("button", name="Accept the optimizer's policy for v2 (the current utility matrix)").click()
    page.get_by_text("Accepted a policy for v2").wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    page.get_by_text("Promotion gate").wait_for()
    no_exception(page)
    shot(page, "22-rollout-shadow")
    # the candidate replayed over the week's kept production images: what would have changed had it answered
    page.get_by_text("Backtest before shadow: replay the kept production images through a version").click()
    page.get_by_role("button", name="Backtest v2").click()
    page.get_by_text(re.compile(r"served predictions of the last 7 day\(s\) replayed")).wait_for(timeout=HEAVY_MS)
    page.get_by_text("On the audit sample (random: the one to believe)").wait_for()
    no_exception(page)
    with store.connect(workspaces.resolve("demo")) as con:
        replayed = con.execute("SELECT count(*), count_if(served) FROM log_predictions WHERE stage = 'backtest'").fetchone()
    assert replayed[0] > 0 and replayed[1] == 0
    shot(page, "22b-rollout-backtest")
    if page.get_by_text("Promotion gate: not met yet").count():
        page.get_by_text("Expand although the gate is not met").click()
        idle(page)
    page.get_by_role("button", name="Make v2 production", disabled=False).click()  # not a stale disabled one mid-rerun
    page.get_by_text("v2 is production; rollback returns v1").wait_for()
    no_exception(page)
    assert registry.production_version(workspaces.resolve("demo")) == "v2"
    assert accepted.active(workspaces.resolve("demo"), "v2") is not None  # it decides as the analyst accepted
    shot(page, "23-rollout-expanded")

    page.get_by_role("link", name="Overview", exact=True).click()
    page.get_by_text("1. Objective").wait_for()
    page.get_by_text(re.compile(r"predictions logged\.")).wait_for(timeout=HEAVY_MS)  # production's card, judged
    idle(page)
    no_exception(page)
    shot(page, "24-overview")


def logged_rows(data_root: Path) -> dict[str, int]:
    """Prediction rows by source in the demo workspace."""
    from core.workspace import store, workspaces

    ws = workspaces.resolve(str(data_root / "workspaces" / "demo"))
    with store.connect(ws) as con:
        rows = dict(con.execute("SELECT source, count(*) FROM log_predictions GROUP BY source").fetchall())
    return rows


def api_server(root: Path) -> Iterator[str]:
    """`python -m core serve` on the demo workspace, as its own process; stopped with SIGINT (its log flushed)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "core", "serve", "--workspace", "demo", "--port", str(port), "--replica", "browser-test"],
        cwd=ROOT,
        env={**os.environ, "IMAGEDP_DATA_ROOT": str(root)},
        stdout=subprocess.DEVNULL,
        stderr=output(root, "api"),
    )
    url = f"http://127.0.0.1:{port}"
    ready(f"{url}/v1/health", proc, proc.stderr, "the API did not become ready", 300 * SLOWNESS)  # the model loads in seconds
    try:
        yield url
    finally:
        proc.send_signal(2)
        proc.wait(120)


def test_end_user_mode(page: object, data_root: Path) -> None:
    """The deployable app: only the prediction page for one workspace (after the walk promoted v1), while the
    prediction API serves the same workspace from another process."""
    import httpx

    server = serve(data_root, IMAGEDP_END_USER="1", IMAGEDP_WORKSPACE="demo")
    url = next(server)
    api = api_server(data_root)
    api_url = next(api)
    context = page.context.browser.new_context(viewport={"width": 1400, "height": 1000})  # the walk's browser
    tab = context.new_page()
    try:
        tab.set_default_timeout(int(90_000 * SLOWNESS))
        tab.goto(url)
        tab.get_by_text("What is in this picture?").wait_for()
        assert tab.get_by_text("Deployment settings").count() == 0 and tab.get_by_role("link", name="Train").count() == 0
        digit = sorted((data_root / "workspaces" / "demo" / "images" / "7").iterdir())[0]
        before = logged_rows(data_root)
        answers: list[int] = []

        def post_to_the_api() -> None:
            with httpx.Client(base_url=api_url, timeout=300) as client:
                for _ in range(5):
                    answers.append(client.post("/v1/predict", files=[("files", ("7.png", digit.read_bytes()))]).status_code)

        posting = threading.Thread(target=post_to_the_api)
        posting.start()  # the API answers while the page scores its upload
        tab.locator("input[type='file']").first.set_input_files(str(digit))
        tab.get_by_text(ANSWER).first.wait_for()
        posting.join(300)
        assert answers == [200] * 5
        next(api, None)  # the API stops; its log is flushed
        deadline = time.monotonic() + 300  # a hang guard: the app's writer takes the database when the API lets go
        while True:
            after = logged_rows(data_root)
            grew = {k: after.get(k, 0) - before.get(k, 0) for k in after.keys() | before.keys()}
            if sum(grew.values()) >= 6 or time.monotonic() > deadline:  # rows in the log
                break
            time.sleep(0.5)
        assert sum(grew.values()) == 6, grew  # five API answers and one upload, each once
        no_exception(tab)
        shot(tab, "25-end-user-app")
        analyst = ("monitor", "train", "workspaces", "rollout", "review", "evaluate", "clean", "gather", "policy")
        for path in (*analyst, "?page=monitor", "predict?embed=true&page=train", "overview#review", "nothing-here"):
            tab.goto(f"{url}/{path}")  # every analyst page by name, a query string, a fragment, an unknown path
            tab.get_by_text("What is in this picture?").wait_for()
            idle(tab)
            no_exception(tab)
            assert tab.get_by_text("Deployment settings").count() == 0, path
            assert tab.get_by_role("link").filter(has_text=re.compile("Train|Monitor|Rollout|Review|Workspaces")).count() == 0, (
                path
            )
            assert tab.get_by_text("Drift: every test").count() == 0 and tab.get_by_text("Model versions").count() == 0, path
        phone = page.context.browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2)
        try:  # the public often comes with a phone
            small = phone.new_page()
            small.set_default_timeout(int(90_000 * SLOWNESS))
            small.goto(url)
            small.get_by_text("What is in this picture?").wait_for()
            small.locator("input[type='file']").first.set_input_files(str(digit))
            small.get_by_text(ANSWER).first.wait_for()
            small.get_by_text("Wrong answer?").first.wait_for()
            idle(small)
            no_exception(small)
            width = small.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the page scrolls sideways on a phone ({width} px wide)"
            shot(small, "25b-end-user-phone")
        finally:
            phone.close()
    finally:
        context.close()
        server.close()
        api.close()


def make_images(folder: Path) -> None:
    from tests.helpers import png_bytes

    for label in ("cat", "dog"):
        (folder / label).mkdir(parents=True)
        for i in range(2):
            (folder / label / f"{i}.png").write_bytes(png_bytes(500 + i + (10 if label == "dog" else 0), (96, 96)))


def test_two_analysts_clean_and_edit_the_matrix_at_once(
    page: object, server: str, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two browser contexts (two analysts) on the walk's workspace: each picks a cleaning choice for a different
    image and both press Apply together; then each edits a different cell of the utility matrix at once (each
    change is saved as it arrives). No change is lost or doubled, and after a refresh each sees the other's."""
    from core.drivetrain import levers
    from core.workspace import store, workspaces

    monkeypatch.setenv("IMAGEDP_DATA_ROOT", str(data_root))  # this process reads the database the server writes
    ws = workspaces.resolve("demo")
    mark = int(store.audit_log(ws, limit=1)["seq"].iloc[0])
    browser = page.context.browser
    contexts = [browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in range(2)]
    first, second = tabs = [c.new_page() for c in contexts]
    try:
        for tab in tabs:
            tab.set_default_timeout(int(90_000 * SLOWNESS))
            tab.goto(f"{server}/clean")
            tab.get_by_text("Pending: 0 deletion(s)").wait_for(timeout=HEAVY_MS)
            tab.locator("[data-testid='stImage']").first.wait_for()
        first.get_by_role("combobox", name="Action").nth(0).click()
        first.get_by_role("option").filter(has_text="→").first.click()
        first.get_by_text("1 relabel(s)").wait_for()
        second.get_by_role("combobox", name="Action").nth(1).click()
        second.get_by_role("option", name="delete", exact=True).click()
        second.get_by_text("1 deletion(s)").wait_for()
        idle(first), idle(second)
        first.get_by_role("button", name="Apply").click(no_wait_after=True)
        second.get_by_role("button", name="Apply").click(no_wait_after=True)
        for tab in tabs:
            tab.get_by_text("Applied 1 change(s)").wait_for()
        log = store.audit_log(ws, limit=1000).query(f"seq > {mark}")
        changes = log[log["action"].isin(["clean_relabel", "clean_delete"])]
        assert sorted(changes["action"]) == ["clean_delete", "clean_relabel"] and changes["image_id"].nunique() == 2
        assert (log["action"] == "clean_batch").sum() == 2  # one batch per analyst, none doubled, none lost
        catalog = store.images(ws, status=None).set_index("id")
        deleted = changes.loc[changes["action"] == "clean_delete", "image_id"].iloc[0]
        relabelled = changes.loc[changes["action"] == "clean_relabel", "image_id"].iloc[0]
        assert catalog.loc[deleted, "status"] == "quarantined" and catalog.loc[relabelled, "status"] == "ok"
        assert (
            catalog.loc[relabelled, "label"]
            == json.loads(changes.loc[changes["action"] == "clean_relabel", "after"].iloc[0])["label"]
        )
        for tab in tabs:
            tab.reload()
            tab.get_by_text("Pending: 0 deletion(s)").wait_for()
            tab.locator("[data-testid='stImage']").first.wait_for()
            no_exception(tab)

        classes = [*DIGITS, "cat", "dog"]
        start, _ = levers.load_utility(ws, classes)
        for tab in tabs:
            tab.goto(f"{server}/levers")
            tab.get_by_text("Utility matrix", exact=True).wait_for()
        for tab in tabs:
            idle(tab)
        edit_matrix_cell(first, 1, 1, "111", wait=False)  # truth 3, act on 3
        edit_matrix_cell(second, 2, 3, "-222", wait=False)  # truth 7, act on 8: both saved as they arrive
        until(lambda: (lambda u: (u.payoff[1][1], u.payoff[2][3]))(levers.load_utility(ws, classes)[0]) == (111.0, -222.0),
              "the two analysts' edits were not both saved")  # fmt: skip
        for tab in tabs:
            idle(tab)
            tab.get_by_text("Saved. See what this matrix means").wait_for()
        saved, _ = levers.load_utility(ws, classes)
        assert saved.payoff[1][1] == 111.0 and saved.payoff[2][3] == -222.0 and saved.payoff[0][0] == start.payoff[0][0]
        for tab in tabs:  # after a refresh each sees both changes
            tab.reload()
            tab.get_by_text("Utility matrix", exact=True).wait_for()
            idle(tab)
            assert (matrix_cell(tab, 1, 1), matrix_cell(tab, 2, 3)) == ("111", "-222")
            no_exception(tab)
        shot(second, "26-two-analysts-levers")
        saves = store.audit_log(ws, limit=1000).query(f"seq > {mark} and action == 'utility_saved'")
        assert len(saves) == 2  # one per analyst
    finally:
        for c in contexts:
            c.close()


ANSWERS = (  # the answers on a page: one headline per image ("This looks like ...", or "This doesn't look like ...")
    "() => [...document.querySelectorAll('h3')].filter(h => /^This (looks|doesn't look) like/.test(h.textContent)).length"
)


def test_eight_end_users_upload_at_once(page: object, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight people on the deployed app each drop twenty photos at the same moment: every one gets twenty
    answers, and the log holds each of the 160 predictions exactly once (bench/concurrency_bench.py times it)."""
    from PIL import Image

    from core.workspace import store, workspaces

    monkeypatch.setenv("IMAGEDP_DATA_ROOT", str(data_root))
    ws = workspaces.resolve("demo")
    digits = sorted((ws.images_dir / "7").iterdir())[:20]
    folders = []
    for user in range(8):  # distinct bytes per user: each a slightly brighter copy of the same scans
        folder = tmp_path / f"user{user}"
        folder.mkdir()
        for i, path in enumerate(digits):
            Image.open(path).convert("L").point(lambda v, u=user: min(255, v + u)).save(folder / f"{i}.png")
        folders.append(sorted(folder.iterdir()))
    with store.connect(ws) as con:  # the walk's simulated traffic is dated ahead: tell new rows by id, not time
        since = [r[0] for r in con.execute("SELECT id FROM log_predictions").fetchall()]
    new_rows = "FROM log_predictions WHERE source = 'app' AND NOT list_contains(?, id)"
    server = serve(data_root, IMAGEDP_END_USER="1", IMAGEDP_WORKSPACE="demo")
    url = next(server)
    contexts = [page.context.browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in range(8)]
    tabs = [c.new_page() for c in contexts]
    try:
        for tab in tabs:
            tab.set_default_timeout(int(180_000 * SLOWNESS))
            tab.goto(url)
            tab.get_by_text("What is in this picture?").wait_for()
        for tab, files in zip(tabs, folders, strict=True):  # one after another, without waiting for answers
            tab.locator("input[type='file']").first.set_input_files([str(f) for f in files])
        for k, tab in enumerate(tabs):
            try:
                tab.wait_for_function(f"({ANSWERS})() === 20", timeout=HEAVY_MS)
            except Exception:
                shot(tab, f"failed-end-user-{k}")
                raise
            no_exception(tab)
        shot(tabs[-1], "27-eight-end-users")
        next(server, None)  # the app stops, writing what its log writer still holds: after it nothing more can arrive
        with store.connect(ws) as con:
            rows, ids, requests = con.execute(
                f"SELECT count(*), count(DISTINCT id), count(DISTINCT request_id) {new_rows}", [since]
            ).fetchone()
        # the walk expanded v2: no candidate runs beside it, so one prediction per request
        assert rows == 160 and ids == rows and requests == rows
    finally:
        for c in contexts:
            c.close()
        server.close()


@pytest.mark.timeout(0)  # each wait below is guarded: training by its progress, the rest scaled by SLOWNESS
def test_a_new_user_follows_the_next_steps(page: object, tmp_path: Path) -> None:
    """From an empty data root to a production model and the Policy page, moving on only by the pages' next-step
    buttons and links (the settings a run needs are set, as a user would): each step screenshotted."""
    from tests.helpers import colour_image

    photos = tmp_path / "photos"
    for k, label in enumerate(("red", "blue", "green")):
        (photos / label).mkdir(parents=True)
        for i in range(10):
            (photos / label / f"{i}.png").write_bytes(colour_image(k, 700 + 10 * k + i))
    root = tmp_path / "fresh-root"
    root.mkdir()
    server = serve(root)
    url = next(server)
    context = page.context.browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    try:
        tab.set_default_timeout(int(90_000 * SLOWNESS))
        tab.goto(url)
        tab.get_by_role("link", name="Go to Workspaces").click()  # nothing is open: the page says where to go
        tab.get_by_role("tab", name="New workspace").click()
        tab.get_by_role("textbox", name="Name").last.fill("colours")
        tab.get_by_role("button", name="Create empty workspace").click()
        tab.get_by_text("Created 'colours'").wait_for()
        shot(tab, "30-path-workspace-created")
        tab.get_by_role("link", name="Next: gather images").click()

        tab.get_by_role("tab", name="Folder").click()
        tab.get_by_role("textbox", name="Folder", exact=True).fill(str(photos))
        tab.keyboard.press("Enter")
        tab.get_by_role("button", name="Import folder").click()
        tab.get_by_text("Added 30 image(s)").wait_for()
        shot(tab, "31-path-imported")
        tab.get_by_role("button", name="Next: verify the images").click()
        tab.get_by_text("Verified 30 images: 0 quarantined").wait_for()
        shot(tab, "32-path-verified")
        tab.get_by_role("link", name="Next: train a model").click()

        tab.get_by_text("Horizontal flips").wait_for()
        tab.get_by_role("combobox", name="Unfrozen epochs").click()  # the run's length: a setting, not navigation
        tab.get_by_role("option", name="0", exact=True).click()
        idle(tab)
        tab.get_by_role("button", name="Start training").click()
        tab.get_by_text(re.compile(r"^Step \d of \d: ")).wait_for(timeout=HEAVY_MS)  # one bar for the whole run
        shot(tab, "33-path-training")
        trained(tab, "Trained v1")
        tab.get_by_text("scaled from v1 here").wait_for()  # the next run's time, from this one (automatic size too)
        shot(tab, "34-path-trained")
        tab.get_by_role("button", name="Make v1 production").click()
        tab.get_by_role("link", name="Next: choose a decision policy").click()
        tab.get_by_text("Simulator:").wait_for()
        tab.locator(".js-plotly-plot").first.wait_for()
        idle(tab)
        no_exception(tab)
        shot(tab, "35-path-policy")
    finally:
        context.close()
        server.close()
