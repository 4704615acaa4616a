"""`python -m core`: JSON keys of the contract (in-process), and as a process: one-line errors, non-zero exits on bad
input, --help for every command, a closed pipe."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli.main import build_parser, main
from tests.helpers import cli, colour_image
from tests.webserver import serve

ROOT = Path(__file__).resolve().parent.parent


def test_gather_folder_json(make_folder) -> None:
    result = cli("gather", "--workspace", "w", "--folder", str(make_folder({"cat": 3, "dog": 2})), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["images"] == 5 and data["labels"] == {"cat": 3, "dog": 2}
    assert data["quarantined"] == 0 and data["failed"] == []


def test_gather_demo_subset_then_verify_json() -> None:
    assert cli("gather", "--workspace", "d", "--demo", "--classes", "3,8").returncode == 0
    result = cli("verify", "--workspace", "d", "--json")
    data = json.loads(result.stdout)
    assert set(data["labels"]) == {"3", "8"} and data["checked"] == data["images"] > 300
    assert {"quarantined", "failed", "exact_duplicates", "near_duplicates", "warnings"} <= set(data)


def test_gather_urls_reports_each_failure(tmp_path: Path) -> None:
    with serve() as web:
        listing = tmp_path / "urls.txt"
        listing.write_text(f"{web}/img/1.png\n{web}/missing.png\n{web}/page.jpg\n")
        result = cli(
            "gather", "--workspace", "u", "--urls", str(listing), "--label", "cat", "--allow-private", "127.0.0.1/32", "--json"
        )
    data = json.loads(result.stdout)
    assert data["images"] == 1
    assert sorted(f["reason"].split(":")[0] for f in data["failed"]) == ["HTTP 404 Not Found", "not an image"]


BAD = [
    (["gather", "--workspace", "w"], "Choose exactly one source", "no-source"),
    (["gather", "--workspace", "w", "--folder", "/no/such/folder"], "does not exist", "missing-folder"),
    (["gather", "--workspace", "w", "--urls", "x.txt"], "--label is required", "urls-without-label"),
    (["gather", "--workspace", "./a", "--demo"], "not a workspace", "folder-not-a-workspace"),
    (["gather", "--workspace", "w", "--zip", "/no/such.zip", "--label", "x"], "No file at", "missing-zip"),
    (["gather", "--workspace", "w", "--demo", "--classes", "cat"], "digits 0-9", "bad-demo-class"),
    (["verify", "--workspace", "never-made"], "No workspace at", "unknown-workspace"),
]


@pytest.mark.parametrize("args,message", [b[:2] for b in BAD], ids=[b[2] for b in BAD])
def test_bad_input_is_one_line_and_a_nonzero_exit(args: list[str], message: str, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("not a workspace")
    os.chdir(tmp_path)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "core", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    finally:
        os.chdir(ROOT)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def test_every_command_of_the_contract_is_there() -> None:
    contract = {
        "gather",
        "verify",
        "train",
        "evaluate",
        "predict",
        "simulate",
        "monitor",
        "policy",
        "rollout",
        "review",
        "check",
        "serve",
        "log",
    }
    assert contract <= set(commands()) and len(commands()) == 17


@pytest.mark.parametrize("command", commands())
def test_help_for_every_command(command: str) -> None:
    result = cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: python -m core {command}") and "--json" in result.stdout


def test_help_as_a_process_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "core", "train", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stderr == "" and "10% error" in result.stdout


def test_a_closed_pipe_ends_quietly(make_folder) -> None:
    """`python -m core ... | head`: no BrokenPipeError traceback when the reader has gone."""
    assert cli("gather", "--workspace", "w", "--folder", str(make_folder({"cat": 3, "dog": 2}))).returncode == 0
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write
    try:
        result = subprocess.run(
            [sys.executable, "-m", "core", "verify", "--workspace", "w", "--json"],
            cwd=ROOT,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert result.returncode == 1 and result.stderr == "", result.stderr


def test_train_json_has_the_contract_keys(tmp_path: Path) -> None:
    for k, label in enumerate(("red", "blue")):
        (tmp_path / "src" / label).mkdir(parents=True)
        for i in range(6):
            (tmp_path / "src" / label / f"{i}.png").write_bytes(colour_image(k, 10 * k + i))
    assert cli("gather", "--workspace", "t", "--folder", str(tmp_path / "src")).returncode == 0
    result = cli("train", "--workspace", "t", "--size", "32", "--freeze-epochs", "1", "--epochs", "1", "--promote", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {"version", "backbone", "valid_accuracy", "valid_error", "wall_seconds", "epochs"} <= set(data)
    assert data["epochs"] == 2 and data["production"] == "v1"
    assert result.stderr.count("epoch ") == 2
    models = json.loads(cli("models", "--workspace", "t", "--json").stdout)
    assert [v["version"] for v in models["versions"]] == ["v1"]
    evaluated = json.loads(cli("evaluate", "--workspace", "t", "--json").stdout)
    assert {"version", "classes", "accuracy", "confusion_matrix", "per_class"} <= set(evaluated)
    assert evaluated["version"] == "v1" and sum(map(sum, evaluated["confusion_matrix"])) == 2


def test_workspace_commands_create_rename_list_and_delete_to_trash(data_root: Path) -> None:
    created = json.loads(cli("workspace", "create", "a", "--json").stdout)["created"]
    assert Path(created) == data_root / "workspaces" / "a"
    assert cli("workspace", "rename", "a", "b").returncode == 0
    assert json.loads(cli("workspace", "list", "--json").stdout)["workspaces"] == ["b"]
    refused = cli("workspace", "delete", "b", "--confirm", "a")
    assert refused.returncode == 2 and "nothing was deleted" in refused.stderr and (data_root / "workspaces" / "b").is_dir()
    moved = Path(json.loads(cli("workspace", "delete", "b", "--confirm", "b", "--json").stdout)["moved_to_trash"])
    assert moved.parent == data_root / "trash" and (moved / "workspace.duckdb").is_file()
    assert json.loads(cli("workspace", "list", "--json").stdout)["workspaces"] == []


@pytest.mark.parametrize(
    "flags,says",
    [
        (["--workers", "-1"], "--workers takes a whole number at least 1"),
        (["--workers", "many"], "not a number: 'many'"),
        (["--timeout", "0"], "--timeout takes a number above 0"),
        (["--allow-private", "localhost-ish"], "not a network such as 127.0.0.1/32"),
    ],
    ids=["negative-workers", "words-for-workers", "zero-timeout", "bad-network"],
)
def test_bad_download_settings_are_refused_before_anything_runs(flags: list[str], says: str, tmp_path: Path) -> None:
    urls = tmp_path / "urls.txt"
    urls.write_text("http://127.0.0.1:9/a.png\n")
    with pytest.raises(SystemExit) as stop, contextlib.redirect_stderr(io.StringIO()) as err:
        main(["gather", "--workspace", "w", "--urls", str(urls), "--label", "cat", *flags])
    assert stop.value.code == 2 and says in err.getvalue() and "Traceback" not in err.getvalue()


def test_a_binary_file_of_urls_prints_no_control_characters(tmp_path: Path) -> None:
    urls = tmp_path / "urls.bin"
    urls.write_bytes(b"\x1b[2J\x1b]0;owned\x07http://\x00\x01\x02/\n\xff\xfe\x1b[31m")
    done = cli("gather", "--workspace", "w", "--urls", str(urls), "--label", "cat")
    assert done.returncode == 2 and "not a list of image URLs" in done.stderr  # refused as a whole, not line by line
    printed = done.stdout + done.stderr
    assert "\x1b" not in printed and "\x07" not in printed and "\x00" not in printed


def test_an_unwritable_data_root_is_one_line_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("IMAGEDP_DATA_ROOT", str(blocker / "root"))  # a data root under a file cannot be made
    done = cli("gather", "--workspace", "w", "--demo", "--classes", "0")
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.cli import workspace as ws_cli

    def broken(_: object) -> dict:
        raise RuntimeError("something no one planned for")

    monkeypatch.setattr(ws_cli, "cmd_workspace", broken)
    done = cli("workspace", "list")
    assert done.returncode == 1 and "internal error: RuntimeError: something no one planned for" in done.stderr
    assert "Traceback" not in done.stderr
    monkeypatch.setenv("IMAGEDP_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(["workspace", "list"])


def test_a_damaged_database_is_said_to_be_one_not_a_bug(make_folder) -> None:
    assert cli("gather", "--workspace", "w", "--folder", str(make_folder({"cat": 2, "dog": 2}))).returncode == 0
    from core.workspace import workspaces

    db = workspaces.resolve("w").db_path
    with open(db, "r+b") as f:  # a copy cut short
        f.truncate(20_000)
    result = cli("models", "--workspace", "w")
    assert result.returncode == 2 and "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert "workspace 'w''s database failed" in result.stderr and f"put back a copy of {db} from a backup" in result.stderr
    assert "python -m core check --workspace w --repair" in result.stderr
