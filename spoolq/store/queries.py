"""Named queries kept in .sql files (``-- name: verb`` blocks), loaded once."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


@cache
def load(filename: str) -> dict[str, str]:
    text = resources.files("spoolq.store").joinpath("sql", filename).read_text("utf-8")
    parts = _NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts), 2)}


@cache
def migrations(dialect: str) -> list[tuple[int, str]]:
    """Numbered schema migrations ``sql/<dialect>/NNN_name.sql`` in order."""
    folder = resources.files("spoolq.store").joinpath("sql", dialect)
    found = []
    for entry in folder.iterdir():
        m = re.match(r"^(\d{3})_\w+\.sql$", entry.name)
        if m:
            found.append((int(m.group(1)), entry.read_text("utf-8")))
    return sorted(found)
