"""User-facing text speaks to users: README, docs/ and every --help name no issue numbers,
development rounds, verdicts, the internal product contract or earlier behaviour."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from spoolq.cli import cli

ROOT = Path(__file__).resolve().parents[2]
USER_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Words a user cannot act on. ("round trip" is a network's, and allowed.)
INTERNAL = re.compile(
    r"\bissue #?\d+|\b(this|last|previous|next|earlier) round\b|\brounds\b|NOT MET|SPEC\.md"
    r"|\bthe seed\b|\bseed's\b|\bseed-compatible\b",
    re.IGNORECASE,
)


@pytest.mark.parametrize("doc", [*USER_DOCS, ROOT / "CHANGELOG.md"], ids=lambda p: p.name)
def test_user_docs_have_no_internal_notes(doc: Path) -> None:
    found = [
        f"{doc.name}:{n}: {line.strip()}"
        for n, line in enumerate(doc.read_text().splitlines(), 1)
        if INTERNAL.search(line)
    ]
    assert not found, "\n".join(found)


def test_performance_page_stays_short() -> None:
    lines = (ROOT / "docs" / "performance.md").read_text().splitlines()
    assert len(lines) <= 180, "history and experiments belong in bench/NOTES.md"


def _commands(group: click.Group) -> list[list[str]]:
    return [[], *([name] for name in group.commands)]


@pytest.mark.parametrize("args", _commands(cli), ids=lambda a: " ".join(a) or "spoolq")
def test_help_texts_have_no_internal_notes(args: list[str]) -> None:
    res = CliRunner().invoke(cli, [*args, "--help"])
    assert res.exit_code == 0, res.output
    assert not INTERNAL.search(res.output), res.output
