"""What a user installs: the wheel holds the package (and what `demo` needs) and nothing
else; `python -m spoolq` and the console script both work."""

from __future__ import annotations

import os
import re
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
    # Everything of the package ships: every module, every numbered migration of every
    # dialect, the named queries, the demo's loader, ... (a new one is checked as it lands).
    source = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "spoolq").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    migrations = {n for n in source if re.fullmatch(r"spoolq/store/sql/\w+/\d{3}_\w+\.sql", n)}
    assert migrations, "no migrations found under spoolq/store/sql/<dialect>/"
    assert source - set(names) == set(), "files of the package missing from the wheel"
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "spoolq = spoolq.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
