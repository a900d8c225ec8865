"""Safe reading of a candidate trigger: the file that is checked is the file that is read.

The checks mirror cron's for crontabs and sshd's StrictModes: a trigger is a request to run
code as the daemon's user, so only a plain file, owned by a trusted user, writable by nobody
else, with one name, is read. Reading never blocks (FIFOs) and never follows links.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
from dataclasses import dataclass

from spoolq.errors import ConfigError, TriggerRejected

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    trusted_uids: frozenset[int]
    max_bytes: int

    @classmethod
    def from_names(cls, names: tuple[str, ...], max_bytes: int) -> TrustPolicy:
        """Trusted owners by user name; empty means the daemon's own user and root."""
        if not names:
            return cls(frozenset({os.geteuid(), 0}), max_bytes)
        uids = set()
        for name in names:
            try:
                uids.add(pwd.getpwnam(name).pw_uid)
            except KeyError:
                raise ConfigError(
                    f"[security] trusted_owners: no user named {name!r} on this host"
                ) from None
        return cls(frozenset(uids), max_bytes)


@dataclass(frozen=True, slots=True)
class TriggerFile:
    text: str
    dev: int
    ino: int
    size: int
    mtime_ns: int


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _owner(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def check_stat(st: os.stat_result, policy: TrustPolicy) -> None:
    """Raise TriggerRejected if the metadata alone disqualifies the file."""
    if not stat.S_ISREG(st.st_mode):
        raise TriggerRejected(f"{_kind(st.st_mode)}, not a regular file")
    if st.st_nlink != 1:
        raise TriggerRejected(f"has {st.st_nlink} hard links; a trigger must have exactly one")
    if st.st_uid not in policy.trusted_uids:
        raise TriggerRejected(
            f"owner {_owner(st.st_uid)} is not trusted (add it to [security] trusted_owners)"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise TriggerRejected(
            f"mode {stat.filemode(st.st_mode)} is writable by group or others (chmod go-w)"
        )
    if st.st_size > policy.max_bytes:
        raise TriggerRejected(
            f"size {st.st_size} bytes is over max_trigger_bytes ({policy.max_bytes})"
        )


def read_trigger(dir_fd: int, name: str, policy: TrustPolicy) -> TriggerFile:
    """Open ``name`` relative to ``dir_fd`` without following links or blocking, check it,
    and return its text. FileNotFoundError means it vanished (not a rejection)."""
    # lstat first so that devices and FIFOs are never opened at all.
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    check_stat(st, policy)
    try:
        fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TriggerRejected("a symlink, not a regular file") from None
        if exc.errno in (errno.ENXIO, errno.ENODEV):
            raise TriggerRejected("not a regular file") from None
        if exc.errno == errno.EACCES:
            raise TriggerRejected(
                "permission denied reading it (the daemon cannot read it)"
            ) from None
        raise
    try:
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            raise TriggerRejected("was replaced while being checked")
        check_stat(fst, policy)  # the file we hold is the one we judge
        chunks = []
        remaining = policy.max_bytes + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > policy.max_bytes:
        raise TriggerRejected(f"grew over max_trigger_bytes ({policy.max_bytes}) while read")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TriggerRejected(f"not valid UTF-8 (byte {exc.start})") from None
    return TriggerFile(text, fst.st_dev, fst.st_ino, len(data), fst.st_mtime_ns)


def check_directory(path: str, role: str, policy: TrustPolicy, allow_insecure: bool) -> None:
    """Refuse a spool or state directory that anyone could plant files in or swap out.

    World-writable is fine with the sticky bit (like /tmp: others cannot rename our
    claimed files away); a directory owned by an untrusted user is not.
    """
    st = os.stat(path)
    if allow_insecure:
        return
    hint = "fix it, or set [security] allow_insecure_dirs = true to accept the risk"
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        raise ConfigError(
            f"{role} {path} is world-writable without the sticky bit "
            f"({stat.filemode(st.st_mode)}): chmod o-w or +t; {hint}"
        )
    if st.st_uid not in policy.trusted_uids:
        raise ConfigError(f"{role} {path} is owned by untrusted {_owner(st.st_uid)}; {hint}")
