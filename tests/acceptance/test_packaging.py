"""What a user installs: the wheel holds the package (and what `demo` needs) and nothing
else; `python -m spoolq` and the console script both work."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from spoolq import __version__
from tests.conftest import SPOOLQ

ROOT = Path(__file__).resolve().parents[2]


def test_python_dash_m_and_the_console_script_agree() -> None:
    for cmd in ([sys.executable, "-m", "spoolq", "--version"], [SPOOLQ, "--version"]):
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        assert out.strip() == f"spoolq, version {__version__}"


UV = os.environ.get("UV") or shutil.which("uv")  # `uv run` exports UV=<itself>


@pytest.mark.skipif(
    UV is None, reason="building the wheel uses uv: run `make test`, or put uv on PATH"
)
def test_the_wheel_holds_only_the_package(tmp_path: Path) -> None:
    assert UV is not None
    subprocess.run(
        [UV, "build", "--wheel", "--out-dir", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("spoolq-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert all(n.startswith(("spoolq/", "spoolq-")) for n in names), names
    assert "spoolq/store/sql/sqlite/001_initial.sql" in names  # migrations ship
    assert "spoolq/store/sql/sqlite/002_settled_index.sql" in names
    assert "spoolq/examples/duckdb_load.py" in names  # the demo's loader ships
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "spoolq = spoolq.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
