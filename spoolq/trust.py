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
        """Trusted owners: the daemon's own user and root always (either could run anything
        as the daemon anyway), plus the users named in ``trusted_owners``."""
        uids = {os.geteuid(), 0}
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
        # Nearly always the producer's umask (002 on many desktops), not an attack: say so.
        raise TriggerRejected(
            f"mode {stat.filemode(st.st_mode)} is writable by group or others, likely from"
            " the producer's umask (002 makes new files group-writable): chmod 644 the file"
            " (or publish under umask 022) before the rename"
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


def check_directory(
    path: str, role: str, policy: TrustPolicy, allow_insecure: bool, *, private: bool = False
) -> None:
    """Refuse a spool or state directory that anyone could plant files in or swap out.

    World-writable is fine for a spool with the sticky bit (like /tmp: others cannot rename
    or delete what they do not own); a directory owned by an untrusted user is not, nor one
    whose parent lets anyone replace it. ``private`` (the state directory, which holds the
    claimed triggers and the store) also refuses group or other write access at all.
    """
    st = os.stat(path)
    if allow_insecure:
        return
    hint = "fix it, or set [security] allow_insecure_dirs = true to accept the risk"
    mode = stat.filemode(st.st_mode)
    if private and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"{role} {path} is writable by group or others ({mode}): only the daemon's "
            f"user may write there (chmod go-w {path}); {hint}"
        )
    if _open_to_all(st):
        raise ConfigError(
            f"{role} {path} is world-writable without the sticky bit ({mode}): "
            f"chmod o-w or +t {path}; {hint}"
        )
    if st.st_uid not in policy.trusted_uids:
        raise ConfigError(f"{role} {path} is owned by untrusted {_owner(st.st_uid)}; {hint}")
    real = os.path.realpath(path)
    parent = os.path.dirname(real)
    while parent != real:
        if _open_to_all(os.stat(parent)):
            raise ConfigError(
                f"{role} {path}: its parent {parent} is world-writable without the sticky "
                f"bit, so anyone could replace {path}; {hint}"
            )
        real, parent = parent, os.path.dirname(parent)


def _open_to_all(st: os.stat_result) -> bool:
    return bool(st.st_mode & stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_dir_beneath(top: str, directory: str) -> int:
    """An fd for ``directory``, reached from ``top`` one component at a time without
    following a symlink (``top`` itself is the configured spool and may be one).

    A recursive scan can see a real subdirectory that a producer then swaps for a symlink
    to somewhere else; renaming ``top/sub/x.trigger`` by path would then take a file from
    outside the spool. With this fd the rename happens inside the directory that was
    actually reached. Raises TriggerRejected for a symlinked or escaping component,
    FileNotFoundError/NotADirectoryError when it is gone.
    """
    if directory == top:  # the common case: a trigger in the spool itself
        return os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    rel = os.path.relpath(directory, top)
    parts = [] if rel == "." else rel.split(os.sep)
    if ".." in parts:
        raise TriggerRejected(f"{directory} is not inside {top}")
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and stat.S_ISLNK(
                    os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode
                ):
                    raise TriggerRejected(
                        f"{directory}: {part!r} is a symlink; spoolq never follows one"
                    ) from None
                raise
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def text_path(path: str) -> tuple[str, str | None]:
    """A file name that is not valid UTF-8 (decoded by Python with surrogate escapes)
    cannot be stored or logged as text: return a printable form (\\xNN for each bad byte)
    and the rejection reason, or the path unchanged and None."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return shown, "file name is not valid UTF-8"
    return path, None
