"""The layout is the architecture: stage packages import only leftward, no import cycles, no streamlit in
core, and commands that need no model import no torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests import layers

ROOT = Path(__file__).resolve().parents[1]


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """A package folder named `core` under root with the given modules (empty __init__ files added)."""
    pkg = root / "core"
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in [path.parent, *path.parent.parents]:
            if parent == root:
                break
            (parent / "__init__.py").touch()
        path.write_text(textwrap.dedent(text))
    return pkg


def test_core_follows_the_layer_rule() -> None:
    assert layers.check(ROOT / "core") == []


def test_every_core_module_is_in_a_stage_package() -> None:
    names = [layers.module_name(p, ROOT / "core") for p in (ROOT / "core").rglob("*.py")]
    assert {n.split(".")[1] for n in names if "." in n} <= set(layers.ORDER) | set(layers.BASE) | {"__main__"}


def test_an_upward_import_is_named_with_file_and_line(tmp_path: Path) -> None:
    pkg = write_tree(
        tmp_path,
        {
            "errors.py": "",
            "model/train.py": "X = 1\n",
            "workspace/store.py": "import json\n\n\ndef f():\n    from core.model import train\n    return train.X\n",
        },
    )
    problems = layers.check(pkg)
    assert len(problems) == 1
    assert f"{pkg / 'workspace/store.py'}:5:" in problems[0]
    assert "core.workspace.store imports core.model.train, a later stage" in problems[0]


@pytest.mark.parametrize(
    "statement",
    [
        "from core.production import log",
        "import core.production.log",
        "from core.production.log import Row",
        "from ..production import log",
    ],
    ids=["from-package", "import-dotted", "from-module", "relative"],
)
def test_every_import_form_is_read(tmp_path: Path, statement: str) -> None:
    pkg = write_tree(tmp_path, {"production/log.py": "Row = 1\n", "data/gather.py": statement + "\n"})
    problems = layers.check(pkg)
    assert len(problems) == 1 and "core.data.gather imports core.production.log" in problems[0]


def test_a_cycle_inside_a_stage_is_named(tmp_path: Path) -> None:
    pkg = write_tree(
        tmp_path,
        {
            "data/a.py": "from core.data import b\n",
            "data/b.py": "def g():\n    from core.data import c\n",
            "data/c.py": "from core.data.a import thing\n",
        },
    )
    problems = layers.check(pkg)
    assert len(problems) == 1
    assert problems[0].startswith("import cycle between core.data.a, core.data.b, core.data.c")
    assert f"{pkg / 'data/b.py'}:2 core.data.b -> core.data.c" in problems[0]


def test_leftward_imports_pass(tmp_path: Path) -> None:
    pkg = write_tree(
        tmp_path,
        {
            "errors.py": "",
            "workspace/store.py": "from core.errors import E\n",
            "model/runs.py": "from core.workspace import store\nfrom core.errors import E\n",
            "cli/main.py": "from core.model import runs\nfrom core.workspace.store import x\n",
            "__main__.py": "from core.cli.main import main\n",
        },
    )
    assert layers.check(pkg) == []


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_no_core_module_imports_streamlit() -> None:
    """Every core module, imported in one fresh interpreter; the first that pulls streamlit in is named."""
    names = sorted(layers.module_name(p, ROOT / "core") for p in (ROOT / "core").rglob("*.py") if p.name != "__main__.py")
    code = textwrap.dedent(
        f"""
        import importlib, sys
        for name in {names!r}:
            importlib.import_module(name)
            if "streamlit" in sys.modules:
                sys.exit("streamlit imported by " + name)
        print(len({names!r}))
        """
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(names) > 30


def test_commands_that_need_no_model_import_no_torch(data_root: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        from core.cli.main import main
        for argv in (["workspace", "list"], ["gather", "--workspace", "w", "--demo", "--classes", "0,1", "--json"],
                     ["verify", "--workspace", "w", "--json"], ["models", "--workspace", "w", "--json"],
                     ["monitor", "--workspace", "w"], ["train", "--help"]):
            try:
                code = main(argv)
            except SystemExit as exc:  # --help
                code = exc.code
            print(argv[0], code, file=sys.stderr)
        heavy = sorted(m for m in ("torch", "torchvision", "timm", "streamlit") if m in sys.modules)
        print(",".join(heavy) or "none")
        """
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "none"
    codes = dict(
        line.split()
        for line in result.stderr.splitlines()
        if line.split()[0] in ("workspace", "gather", "verify", "models", "monitor", "train")
    )
    assert codes == {"workspace": "0", "gather": "0", "verify": "0", "models": "0", "monitor": "2", "train": "0"}
