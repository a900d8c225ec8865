"""A state directory's identity: written once, the same for every host that shares the
directory, even when two of them make it at the same moment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spoolq.statedir import IDENTITY, StateDir


def test_the_identity_is_made_once_and_read_back(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    assert state.home == state.legacy_home  # not made yet: the old name
    state.ensure()
    home = state.home
    assert home.startswith("home-") and home != state.legacy_home
    state.ensure()
    assert StateDir(tmp_path / "state").home == home
    assert sorted(p.name for p in state.root.iterdir() if p.is_file()) == [IDENTITY]


def test_a_host_that_loses_the_race_takes_the_winners_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = StateDir(tmp_path / "state")
    state.root.mkdir()
    real_link = os.link

    def peer_first(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        Path(dst).write_text("home-PEER\n")  # another host linked its file in just now
        real_link(src, dst)

    monkeypatch.setattr(os, "link", peer_first)
    state.ensure()
    assert state.home == "home-PEER"
    assert [p.name for p in state.root.iterdir() if p.is_file()] == [IDENTITY]  # no temp left
