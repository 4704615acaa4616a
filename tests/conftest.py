"""Fixtures: a throwaway data root, workspaces, and images made with PIL (never downloaded)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from core.workspace import workspaces
from core.workspace.paths import Workspace
from tests.helpers import png_bytes


@pytest.fixture(autouse=True)
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own data root through the one environment variable."""
    root = tmp_path / "dataroot"
    monkeypatch.setenv(workspaces.DATA_ROOT_ENV, str(root))
    return root


@pytest.fixture
def ws() -> Workspace:
    return workspaces.create_workspace("test")


@pytest.fixture
def make_folder(tmp_path: Path) -> Callable[[dict[str, int]], Path]:
    """A <label>/<image> folder with the given number of distinct PNGs per label."""

    def make(counts: dict[str, int], name: str = "src") -> Path:
        root = tmp_path / name
        seed = 0
        for label, n in counts.items():
            (root / label).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                seed += 1
                (root / label / f"img{i}.png").write_bytes(png_bytes(seed * 101 + sum(map(ord, name))))
        return root

    return make


@pytest.fixture(scope="session")
def trained_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny trained, promoted three-colour workspace per test session; tests get copies (see `prod`)."""
    from dataclasses import replace

    from core.model import registry, runs
    from core.production import audit
    from core.workspace import split_ops, store
    from core.workspace.splits import SplitPlan
    from tests.helpers import TINY, fill

    root = tmp_path_factory.mktemp("template") / "prod"
    ws = workspaces.resolve(str(root), create=True)
    fill(ws, {"red": 14, "blue": 14, "green": 14})
    split_ops.resplit(ws, SplitPlan(seed=42, valid=0.2, test=0.3))  # enough test images to replay as clean traffic
    summary = runs.train_workspace(ws, replace(TINY, freeze_epochs=3, epochs=0, lr=1e-2))  # a head that gets colours right
    registry.promote(ws, summary["version"])
    # The audit draws a random 2% of requests into the review queue: tests that count the queue or the kept images
    # would count chance. Tests of the audit set their own share (tests/test_audit.py).
    store.set_setting(ws, audit.AUDIT_SHARE, 0.0)
    return root


@pytest.fixture
def prod(trained_template: Path, data_root: Path) -> Workspace:
    """A copy of the trained template, named "prod" under this test's data root."""
    import shutil

    shutil.copytree(trained_template, data_root / "workspaces" / "prod")
    return workspaces.resolve("prod")


HANG_GUARD_S = 600  # pyproject's timeout: a guard against a hung test, never a speed limit


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    """The hang guard grows with how busy the machine is when each test starts (the run queue per core): a fault
    test that takes 600 s on a quiet machine has hung; beside three times the work it has not. Set before
    pytest-timeout reads it; a test with its own timeout marker keeps it."""
    if item.get_closest_marker("timeout") is None:
        slowness = max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
        item.add_marker(pytest.mark.timeout(HANG_GUARD_S * slowness))
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    """A failed browser test leaves a screenshot of the page it failed on (failed-<test>.png beside the others), and
    the report carries the page's text: CI keeps the report, not the picture."""
    outcome = yield
    report = outcome.get_result()
    page = getattr(item, "funcargs", {}).get("page")
    if report.when == "call" and report.failed and page is not None:
        from tests.test_browser import SHOTS

        SHOTS.mkdir(parents=True, exist_ok=True)
        try:
            page.screenshot(path=str(SHOTS / f"failed-{item.name}.png"), full_page=True)
        except Exception:  # noqa: BLE001 - the failure being reported matters more than its picture
            pass
        try:
            text = page.locator("[data-testid='stMain']").inner_text(timeout=5_000)
        except Exception as exc:  # noqa: BLE001 - as above
            text = f"(page text unavailable: {exc})"
        report.sections.append(("page text at the failure", text[-4000:]))
    root = getattr(item, "funcargs", {}).get("data_root")
    if report.when == "call" and report.failed and page is not None and isinstance(root, Path):
        for log in sorted(root.parent.glob("*.log")):  # each server's output (tests/test_browser.py: output)
            report.sections.append((f"end of {log.name}", log.read_text(errors="replace")[-3000:]))


_FAULT_FILES = {p.name for p in (Path(__file__).parent / "faults").glob("test_*.py")}
_RAN: set[str] = set()  # fault test files with a test in this session
_LEFT_OUT: set[str] = set()  # ... and with a test deselected (-k, -m)


def _fault_file(item: pytest.Item) -> str | None:
    path = Path(str(item.fspath))
    return path.name if path.parent.name == "faults" and path.name in _FAULT_FILES else None


def pytest_deselected(items: list[pytest.Item]) -> None:
    _LEFT_OUT.update(filter(None, map(_fault_file, items)))


def pytest_collection_finish(session: pytest.Session) -> None:
    _RAN.update(filter(None, map(_fault_file, session.items)))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    """The failpoints this session armed, out of those that exist, with how often each was crashed at, held
    (pause) or passed (mark). When the whole fault suite ran, a point never armed fails the session."""
    from core.workspace import failpoints
    from tests.helpers import ARMED

    if not ARMED:
        return
    whole = _RAN == _FAULT_FILES and not _LEFT_OUT
    never = [p for p in failpoints.POINTS if p not in ARMED]
    write = terminalreporter.write_line
    write(f"FAILPOINTS armed {len(failpoints.POINTS) - len(never)} of {len(failpoints.POINTS)}"
          + ("" if whole else " (part of the fault suite ran)"))  # fmt: skip
    for point in failpoints.POINTS:
        kills, pauses, marks = (ARMED.get(point, {}).get(k, 0) for k in ("kill", "pause", "mark"))
        write(f"  {point:<22} crashed {kills:>2}  held {pauses:>2}  passed {marks:>2}")
    if whole and never:
        write(f"FAILPOINTS never armed: {', '.join(never)}", red=True)
        terminalreporter._session.exitstatus = pytest.ExitCode.TESTS_FAILED
