"""Reading a candidate trigger safely: only a plain, trusted, private, single-named file."""

from __future__ import annotations

import os
import pwd
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from spoolq.errors import ConfigError, TriggerRejected
from spoolq.trust import TrustPolicy, check_directory, read_trigger
from tests.conftest import needs_root

POLICY = TrustPolicy.from_names((), 1 << 20)


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    d = tmp_path / "spool"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    return d


@pytest.fixture
def dir_fd(spool: Path) -> Iterator[int]:
    fd = os.open(spool, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


def make(spool: Path, name: str, data: bytes | str = "echo hi\n", mode: int = 0o644) -> Path:
    path = spool / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)
    return path


def reason(dir_fd: int, name: str, policy: TrustPolicy = POLICY) -> str:
    with pytest.raises(TriggerRejected) as exc:
        read_trigger(dir_fd, name, policy)
    return exc.value.reason


def nobody() -> int:
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        pytest.skip("no 'nobody' user on this host: useradd --system --no-create-home nobody")


def test_a_regular_private_file_is_read(spool: Path, dir_fd: int) -> None:
    path = make(spool, "a.trigger", "echo héllo\n")
    tf = read_trigger(dir_fd, "a.trigger", POLICY)
    st = path.stat()
    assert tf.text == "echo héllo\n"
    assert (tf.dev, tf.ino, tf.size, tf.mtime_ns) == (
        st.st_dev, st.st_ino, len("echo héllo\n".encode()), st.st_mtime_ns
    )  # fmt: skip


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o644, 0o755])
def test_modes_nobody_else_can_write_are_fine(spool: Path, dir_fd: int, mode: int) -> None:
    make(spool, "a.trigger", mode=mode)
    assert read_trigger(dir_fd, "a.trigger", POLICY).text == "echo hi\n"


@pytest.mark.timeout(10)
def test_a_fifo_is_rejected_without_blocking(spool: Path, dir_fd: int) -> None:
    os.mkfifo(spool / "f.trigger", 0o644)
    assert "FIFO" in reason(dir_fd, "f.trigger")  # no writer: a blocking open would hang


def test_a_symlink_is_rejected_not_followed(spool: Path, dir_fd: int, tmp_path: Path) -> None:
    target = make(tmp_path, "elsewhere.txt", "cat /etc/shadow\n")
    (spool / "l.trigger").symlink_to(target)
    assert "symlink" in reason(dir_fd, "l.trigger")
    (spool / "dangling.trigger").symlink_to(tmp_path / "nothing")
    assert "symlink" in reason(dir_fd, "dangling.trigger")


def test_a_hard_linked_file_is_rejected(spool: Path, dir_fd: int, tmp_path: Path) -> None:
    other = make(tmp_path, "other.txt")
    os.link(other, spool / "h.trigger")
    assert "2 hard links" in reason(dir_fd, "h.trigger")


def test_a_directory_and_a_socket_are_rejected(spool: Path, dir_fd: int) -> None:
    (spool / "d.trigger").mkdir()
    assert "directory" in reason(dir_fd, "d.trigger")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(spool / "s.trigger"))
        assert "socket" in reason(dir_fd, "s.trigger")
    finally:
        sock.close()


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666, 0o620, 0o602])
def test_group_or_other_writable_is_rejected(spool: Path, dir_fd: int, mode: int) -> None:
    make(spool, "w.trigger", mode=mode)
    assert "writable by group or others" in reason(dir_fd, "w.trigger")


@needs_root
def test_a_file_owned_by_another_user_is_rejected(spool: Path, dir_fd: int) -> None:
    uid = nobody()
    os.chown(make(spool, "o.trigger"), uid, -1)
    why = reason(dir_fd, "o.trigger")
    assert f"uid {uid}" in why
    assert "trusted_owners" in why


@needs_root
def test_trusted_owners_admits_that_user(spool: Path, dir_fd: int) -> None:
    os.chown(make(spool, "o.trigger"), nobody(), -1)
    policy = TrustPolicy.from_names(("nobody",), 1 << 20)
    assert read_trigger(dir_fd, "o.trigger", policy).text == "echo hi\n"


def test_an_unknown_trusted_owner_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="trusted_owners: no user named 'no-such-user-x'"):
        TrustPolicy.from_names(("no-such-user-x",), 100)


def test_the_size_limit_is_inclusive(spool: Path, dir_fd: int) -> None:
    policy = TrustPolicy.from_names((), 10)
    make(spool, "ten.trigger", "123456789\n")
    assert read_trigger(dir_fd, "ten.trigger", policy).size == 10
    make(spool, "eleven.trigger", "1234567890\n")
    assert "over max_trigger_bytes (10)" in reason(dir_fd, "eleven.trigger", policy)


@pytest.mark.parametrize("data", [b"echo \xff\n", b"\xc3\x28", b"echo \xe2\x82\n"])
def test_non_utf8_is_rejected(spool: Path, dir_fd: int, data: bytes) -> None:
    make(spool, "b.trigger", data)
    assert "not valid UTF-8" in reason(dir_fd, "b.trigger")


def test_a_vanished_file_is_not_a_rejection(dir_fd: int) -> None:
    with pytest.raises(FileNotFoundError):
        read_trigger(dir_fd, "gone.trigger", POLICY)


# -- directories -----------------------------------------------------------------------------
def check(path: Path, *, allow_insecure: bool = False, private: bool = False) -> None:
    check_directory(str(path), "spool directory", POLICY, allow_insecure, private=private)


def test_a_world_writable_directory_without_sticky_bit_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "open"
    d.mkdir()
    d.chmod(0o777)
    with pytest.raises(ConfigError) as exc:
        check(d)
    assert str(d) in str(exc.value)
    assert "world-writable without the sticky bit" in str(exc.value)
    assert "allow_insecure_dirs" in str(exc.value)
    check(d, allow_insecure=True)


def test_a_world_writable_directory_with_sticky_bit_is_fine_for_a_spool(tmp_path: Path) -> None:
    d = tmp_path / "sticky"
    d.mkdir()
    d.chmod(0o1777)
    assert os.stat(d).st_mode & stat.S_ISVTX
    check(d)


def test_a_private_directory_must_not_be_group_or_other_writable(tmp_path: Path) -> None:
    d = tmp_path / "state"
    d.mkdir()
    d.chmod(0o770)
    check(d)  # fine for a spool
    with pytest.raises(ConfigError, match="writable by group or others"):
        check(d, private=True)


def test_a_directory_under_a_world_writable_parent_is_refused(tmp_path: Path) -> None:
    parent = tmp_path / "open"
    parent.mkdir()
    child = parent / "spool"
    child.mkdir()
    parent.chmod(0o777)
    with pytest.raises(ConfigError, match=r"its parent .* is world-writable"):
        check(child)


@needs_root
def test_a_directory_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "theirs"
    d.mkdir()
    os.chown(d, nobody(), -1)
    with pytest.raises(ConfigError, match="owned by untrusted"):
        check(d)
