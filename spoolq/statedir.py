"""The state directory: where it is, what is inside it, and moving files within it.

Owns the layout (``claimed/``, the archive directory of each finished state, ``logs/``, the
log pool, the store's file and wake-up FIFOs), the rule that finds the directory from a
flag, the environment or the config, and placing or removing a job's files after a state
change. Leaves the claim itself (the rename that decides ownership) to ``claims``, and
what goes into the store to the store.

Functions here take plain paths and state names, not jobs, so that the job's own
vocabulary (``jobs``) can say where a trigger lives without importing its daemon.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from ulid import ULID

from spoolq.config import Config
from spoolq.errors import ConfigError
from spoolq.trust import TrustPolicy, check_directory

# Where the trigger file of a finished job lives, by state, relative to the state directory.
ARCHIVE_DIR = {
    "succeeded": "done",
    "failed": "failed",
    "cancelled": "cancelled",
    "rejected": "rejected",
}
CLAIMED = "claimed"
LOGS = "logs"
PROGRESS = "progress"  # one file per running job: $SPOOLQ_PROGRESS
SUBDIRS = (CLAIMED, "done", "failed", "cancelled", "rejected", LOGS, PROGRESS)
LOG_POOL = ".logpool"  # spare log files made ahead of time (see logfiles.LogPool)
DB = "spoolq.db"  # the embedded store
IDENTITY = "home.id"  # this directory's identity: the "home" of the jobs claimed into it
WAKE = "wake"  # FIFOs through which control commands wake daemons (SQLite store)


def new_identity() -> str:
    """A fresh state-directory identity: random, sortable by creation time."""
    return f"home-{ULID()}"


def archive_path(claimed_path: str, state: str) -> Path:
    """Where a job's trigger file is in ``state``: claimed/ while live, an archive
    directory once finished."""
    claimed = Path(claimed_path)
    sub = ARCHIVE_DIR.get(state)
    return claimed.parent.parent / sub / claimed.name if sub else claimed


def reason_path(claimed_path: str) -> Path:
    """The ``.reason`` file beside a rejected trigger."""
    rejected = archive_path(claimed_path, "rejected")
    return rejected.with_name(rejected.name + ".reason")


@dataclass(frozen=True, slots=True)
class StateDir:
    root: Path

    @classmethod
    def resolve(cls, flag: Path | None, config: Config) -> StateDir:
        """--state-dir (or $SPOOLQ_STATE_DIR, through the flag), else the config's
        state_dir, else its first spool's .spoolq/, else ./.spoolq: the same rule for the
        daemon and every other command, so that they find each other's jobs."""
        if flag is not None:
            return cls(flag.resolve())
        if config.state_dir is not None:
            return cls(config.state_dir.resolve())
        if config.spool:
            return cls(config.spool[0].path.resolve() / ".spoolq")
        return cls(Path(".spoolq").resolve())

    def prepare(self, config: Config, policy: TrustPolicy) -> None:
        """Check the spools and this directory before a daemon starts: they exist, are
        trusted, and share a filesystem (a claim is a rename(2)); make this directory."""
        if not config.spool:
            raise ConfigError("no spool directory: pass one (spoolq run DIR) or add [[spool]]")
        allow = config.security.allow_insecure_dirs
        devices = []
        for spool in config.spool:  # spools first: the state dir is often inside one
            try:
                st = os.stat(spool.path)
            except FileNotFoundError:
                raise ConfigError(
                    f"spool directory {spool.path} does not exist (create it or fix [[spool]] path)"
                ) from None
            if not stat.S_ISDIR(st.st_mode):
                raise ConfigError(f"spool {spool.path} is not a directory")
            check_directory(str(spool.path), "spool directory", policy, allow)
            devices.append((spool, st.st_dev))
        self.root.mkdir(parents=True, exist_ok=True, mode=0o750)
        st = os.stat(self.root)
        if st.st_uid == os.geteuid() and st.st_mode & 0o007:
            # Made open to every local user by an older spoolq or a wide umask: the store
            # and the logs inside are the operators' (group) business only.
            os.chmod(self.root, stat.S_IMODE(st.st_mode) & ~0o007)
        check_directory(str(self.root), "state directory", policy, allow, private=True)
        state_dev = os.stat(self.root).st_dev
        for spool, dev in devices:
            if dev != state_dev:
                raise ConfigError(
                    f"state_dir {self.root} and spool {spool.path} are on different "
                    "filesystems; claiming needs rename(2): put state_dir beside the spool"
                )
        self.ensure()

    def ensure(self) -> None:
        for sub in SUBDIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o750)
        self._make_identity()

    def _make_identity(self) -> None:
        """Write the identity file once, when the directory is made. Two hosts that share
        the directory may race here: the file appears by link(2), which never replaces
        one that exists (and is atomic on NFS too), so both end up reading the same id."""
        path = self.root / IDENTITY
        if path.exists():
            return
        tmp = self.root / f".{IDENTITY}.{os.getpid()}.{socket.gethostname()}"
        tmp.write_text(f"{new_identity()}\n", encoding="ascii")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()

    @property
    def claimed(self) -> Path:
        return self.root / CLAIMED

    @property
    def home(self) -> str:
        """This directory's identity, the home of the jobs claimed into it: their trigger
        and log live here, so any daemon serving this directory may run them, on any host
        that mounts it. A directory made by an older spoolq (no identity file yet, no
        daemon started since) is still known by its old name, ``legacy_home``."""
        try:
            text = (self.root / IDENTITY).read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return self.legacy_home
        return text or self.legacy_home

    @property
    def legacy_home(self) -> str:
        """host:state_dir - what a home was before directories had an identity."""
        return f"{socket.gethostname()}:{self.root}"

    @property
    def progress(self) -> Path:
        return self.root / PROGRESS

    @property
    def log_pool(self) -> Path:
        return self.root / LOG_POOL

    @property
    def db(self) -> Path:
        return self.root / DB

    @property
    def wake(self) -> Path:
        return self.root / WAKE

    def archive(self, state: str) -> Path:
        return self.root / ARCHIVE_DIR[state]

    def log_path(self, job_id: str) -> str:
        return f"{self.root}{os.sep}{LOGS}{os.sep}{job_id}.log"  # str(root / "logs" / ...)

    # -- files after a state change, from outside the daemon --------------------------------
    def place(self, claimed_path: str, state: str) -> None:
        """After a control command changed a job's state, put its trigger where the new
        state says. Not found anywhere: it is on another host, or already in place."""
        name = Path(claimed_path).name
        target = archive_path(claimed_path, state)
        for sub in (CLAIMED, *ARCHIVE_DIR.values()):
            src = self.root / sub / name
            if src != target and src.exists():
                with contextlib.suppress(OSError):
                    os.rename(src, target)
                return

    @staticmethod
    def remove(claimed_path: str, state: str, log: str) -> None:
        """Delete a pruned job's files: its archived trigger (and a rejection's reason),
        whatever is left in claimed/, and its log."""
        for path in (
            archive_path(claimed_path, state),
            reason_path(claimed_path),
            Path(claimed_path),
            Path(log),
        ):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
