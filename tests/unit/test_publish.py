"""Publishing never replaces a trigger that is already there, however late it appeared."""

from __future__ import annotations

from pathlib import Path

import pytest

from spoolq import api
from spoolq.errors import UsageError


def test_a_trigger_of_the_same_name_is_never_replaced(tmp_path: Path) -> None:
    first = api.submit(tmp_path, argv=["echo", "first"], id="same")
    theirs = first.read_text()
    with pytest.raises(UsageError, match="already exists"):
        api.publish(tmp_path, {"argv": ["echo", "second"]}, name=first.name)
    assert first.read_text() == theirs
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name], "temp file left behind"


def test_a_trigger_that_appears_during_the_publish_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another producer's file lands after our temp file is written, just before our
    rename: theirs stays, ours is refused."""
    real = api.rename_noreplace

    def racing(src: Path, dst: Path) -> None:
        dst.write_text("theirs\n")
        real(src, dst)

    monkeypatch.setattr(api, "rename_noreplace", racing)
    with pytest.raises(UsageError, match="already exists"):
        api.publish(tmp_path, {"argv": ["true"]}, name="x.trigger")
    assert (tmp_path / "x.trigger").read_text() == "theirs\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.trigger"]


@pytest.mark.parametrize("kernel_call", [True, False], ids=["renameat2", "link-unlink"])
def test_rename_noreplace_moves_or_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel_call: bool
) -> None:
    if not kernel_call:
        monkeypatch.setattr(api, "_libc", lambda: None)
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    with pytest.raises(FileExistsError):
        api.rename_noreplace(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_text() == "b" and (tmp_path / "a").exists()
    api.rename_noreplace(tmp_path / "a", tmp_path / "c")
    assert (tmp_path / "c").read_text() == "a" and not (tmp_path / "a").exists()
