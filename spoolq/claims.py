"""The claim protocol: how a trigger file becomes a job and where its file goes after.

A trigger is claimed by renaming it into ``<state>/claimed/`` under a name that carries the
new job id. The rename is the single atomic step that decides ownership: of several daemons
(or duplicate events) only one rename succeeds. Only then is the file opened, checked and
parsed, so the file that is judged is the file that was claimed. The job row is written
after the rename; a crash in between leaves a claimed file with no row, which
``Claimer.orphans`` turns back into a job at the next start (never into two jobs: the id
is in the file name).

Owns the claim and ``judge()``, the one verdict on a trigger file (trust checks, then
parsing) that ``spoolq check`` gives too. Leaves the state directory's layout to
``statedir`` and the job rows to the store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass

from ulid import ULID

from spoolq.config import Config, SpoolConfig
from spoolq.errors import StoreUnavailable, TriggerRejected
from spoolq.faults import crash_point
from spoolq.jobs import Job, JobSpec, JobState, NewJob
from spoolq.statedir import ARCHIVE_DIR, StateDir, reason_path
from spoolq.triggers import parse_trigger
from spoolq.trust import TrustPolicy, open_dir_beneath, read_trigger, text_path

_MAX_BASE = 180  # keeps "<26-char id>.<8-char tag>.<base>" under NAME_MAX


def judge(dir_fd: int, name: str, policy: TrustPolicy, config: Config, spool_dir: str) -> JobSpec:
    """Open ``name`` in ``dir_fd`` as the daemon does (never following a link, never
    blocking), check it against the trust policy and parse it. TriggerRejected with the
    reason; OSError if it cannot be read at all."""
    return judged(dir_fd, name, policy, config, spool_dir)[0]


def judged(
    dir_fd: int, name: str, policy: TrustPolicy, config: Config, spool_dir: str
) -> tuple[JobSpec, str]:
    """``judge()``, and the trigger's text that was judged."""
    tf = read_trigger(dir_fd, name, policy)
    return parse_trigger(tf.text, config, spool_dir=spool_dir), tf.text


def new_job_id() -> str:
    return str(ULID())


def origin_tag(directory: str) -> str:
    return hashlib.sha1(
        directory.encode("utf-8", "surrogateescape"), usedforsecurity=False
    ).hexdigest()[:8]


def claim_name(job_id: str, directory: str, base: str) -> str:
    short = base.encode("utf-8", "surrogateescape")[:_MAX_BASE].decode("utf-8", "ignore")
    return f"{job_id}.{origin_tag(directory)}.{short}"


def split_claim_name(name: str) -> tuple[str, str, str] | None:
    parts = name.split(".", 2)
    if len(parts) != 3 or len(parts[0]) != 26 or len(parts[1]) != 8:
        return None
    return parts[0], parts[1], parts[2]


@dataclass(frozen=True, slots=True)
class Origin:
    spool: SpoolConfig
    directory: str


class Claimer:
    """Turns trigger files into NewJob records and moves finished triggers to their place."""

    def __init__(
        self,
        config: Config,
        state: StateDir,
        policy: TrustPolicy,
        clock: Callable[[], float],
        warn: Callable[..., None],
    ) -> None:
        self.config = config
        self.state = state
        self.policy = policy
        self.clock = clock
        self.warn = warn
        self._claimed_fd = os.open(state.claimed, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._claimed_dir = str(state.claimed)
        self._archive_fds: dict[str, int] = {}  # done/, failed/, cancelled/ held open
        self._origins: dict[str, Origin] = {}
        self.home = state.home
        for spool in config.spool:
            self.remember_dir(spool, str(spool.path))

    def close(self) -> None:
        os.close(self._claimed_fd)
        for fd in self._archive_fds.values():
            os.close(fd)
        self._archive_fds.clear()

    def reopen(self) -> None:
        """claimed/ was deleted and made again: hold the new directory."""
        self.close()
        self._claimed_fd = os.open(self.state.claimed, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def _learn_recursive_dirs(self) -> None:
        """Tag every directory of the recursive spools (an empty subdirectory is not seen by
        scans, but a crash may have left a claim that came from it)."""
        for spool in self.config.spool:
            if not spool.recursive:
                continue
            for root, dirs, _ in os.walk(spool.path):
                dirs[:] = [
                    d for d in dirs
                    if os.path.join(root, d) != str(self.state.root)
                    and not os.path.islink(os.path.join(root, d))
                ]  # fmt: skip
                self.remember_dir(spool, root)

    def remember_dir(self, spool: SpoolConfig, directory: str) -> None:
        self._origins[origin_tag(directory)] = Origin(spool, directory)

    # -- claiming ----------------------------------------------------------------------------
    def claim(self, spool: SpoolConfig, path: str) -> NewJob | None:
        """Claim the file at ``path``; None if it is gone (taken by someone else, deleted)."""
        directory, base = os.path.split(path)
        job_id = new_job_id()
        name = claim_name(job_id, directory, base)
        try:
            # Rename inside the directory reached without following symlinks, so that a
            # subdirectory swapped for a link never lets a file from outside be claimed.
            src_fd = open_dir_beneath(str(spool.path), directory)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except TriggerRejected as exc:
            self.warn("not_followed", path=text_path(path)[0], reason=exc.reason)
            return None
        except PermissionError as exc:
            self.warn("unreadable_dir", path=text_path(directory)[0], error=exc.strerror)
            return None
        try:
            os.rename(base, name, src_dir_fd=src_fd, dst_dir_fd=self._claimed_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            # Read-only, full, remounted or vanished state dir: the trigger stays in the
            # spool, and the daemon backs off as for a store outage. (EXDEV here means a
            # mount appeared between spool and state dir after start; the start-up check
            # refuses different filesystems.)
            raise StoreUnavailable(
                f"cannot claim {text_path(path)[0]} into {self.state.claimed}: {exc.strerror}"
            ) from exc
        finally:
            os.close(src_fd)
        crash_point("claimed")
        return self._record(job_id, name, Origin(spool, directory), base)

    def _record(self, job_id: str, name: str, origin: Origin, base: str) -> NewJob:
        trigger, reason = text_path(os.path.join(origin.directory, base))
        spec, text = None, None
        try:
            if reason is None:
                spec, text = judged(
                    self._claimed_fd, name, self.policy, self.config, origin.directory
                )
        except TriggerRejected as exc:
            reason = exc.reason
        except FileNotFoundError:
            reason = "vanished from claimed/ while being read"
        except OSError as exc:
            reason = f"cannot read: {exc.strerror or exc}"
        d = self.config.defaults
        lane = (spec.lane if spec and spec.lane else None) or origin.spool.lane
        lane_config = self.config.lanes.get(lane)
        # An any-host lane: the content goes into the store, and the job has no home.
        anywhere = spec is not None and lane_config is not None and lane_config.any_host
        return NewJob(
            id=job_id,
            lane=lane,
            trigger=trigger,
            claimed_path=os.path.join(self._claimed_dir, name),
            log=self.state.log_path(job_id),
            spec=spec,
            priority=spec.priority if spec else 0,
            timeout=spec.timeout if spec and spec.timeout is not None else d.timeout,
            retries=spec.retries if spec and spec.retries is not None else d.retries,
            retry_backoff=d.retry_backoff,
            kill_grace=d.kill_grace,
            on_success=d.on_success,
            created_at=self.clock(),
            reason=reason,
            home="" if anywhere else self.home,
            text=text if anywhere else None,
        )

    # -- jobs of other state directories ------------------------------------------------------
    def here(self, job: Job) -> Job:
        """``job`` with its trigger in this directory's claimed/, under the name it was
        claimed with: where a job claimed elsewhere (an any-host lane) runs from, and
        where the claiming directory keeps its own copy."""
        local = os.path.join(self._claimed_dir, os.path.basename(job.claimed_path))
        if local == job.claimed_path:
            return job
        return dataclasses.replace(job, claimed_path=local, log=self.state.log_path(job.id))

    def bring(self, job: Job, text: str | None) -> None:
        """Write the trigger content of a job claimed elsewhere into claimed/ (SPOOLQ_TRIGGER
        names it; its archive is written here when it ends)."""
        if text is None:
            return
        path = os.path.join(self._claimed_dir, os.path.basename(job.claimed_path))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        try:
            os.write(fd, text.encode("utf-8", "surrogateescape"))
        finally:
            os.close(fd)

    # -- after the store has spoken ----------------------------------------------------------
    def place_rejected(self, job: Job) -> bool:
        """Move a rejected trigger to rejected/ with a .reason file beside it."""
        target = job.file_path
        reason_file = reason_path(job.claimed_path)
        text = f"{job.reason}\ntrigger: {job.trigger}\njob: {job.id}\n"
        try:
            reason_file.write_text(text, encoding="utf-8")
            os.rename(job.claimed_path, target)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self.warn("file_move_failed", job=job.id, path=job.claimed_path, error=str(exc))
            return False
        return True

    def archive(self, job: Job) -> bool:
        """Move a finished job's trigger out of claimed/ (or delete it: on_success=delete).
        False if it could not (the next reconcile tries again)."""
        if job.state is JobState.REJECTED:
            return self.place_rejected(job)
        src = job.claimed_path
        directory, name = os.path.split(src)
        try:
            if job.state is JobState.SUCCEEDED and job.on_success == "delete":
                os.unlink(src)
            elif directory == self._claimed_dir and job.state.value in ARCHIVE_DIR:
                # Relative to held directory fds: no walk of two long paths per job.
                os.rename(
                    name, name, src_dir_fd=self._claimed_fd, dst_dir_fd=self._archive_fd(job.state)
                )
            else:
                os.rename(src, str(job.file_path))
        except FileNotFoundError:
            if not os.path.lexists(src):
                return True  # already moved (a retry from failed/, a repeated reconcile)
            # The trigger is here but its archive directory is gone (removed by hand):
            # make the directories again and move it by path.
            return self._archive_again(job)
        except OSError as exc:
            self.warn("file_move_failed", job=job.id, path=src, error=str(exc))
            return False
        return True

    def _archive_again(self, job: Job) -> bool:
        self.refresh(force=True)
        try:
            self.state.ensure()
            os.rename(job.claimed_path, str(job.file_path))
        except OSError as exc:
            self.warn("file_move_failed", job=job.id, path=job.claimed_path, error=str(exc))
            return False
        return True

    def refresh(self, force: bool = False) -> None:
        """Let go of held directories that are no longer the ones by their names (an
        operator removed or rotated ``done/`` or ``claimed/``): archive directories are
        opened again when next needed, ``claimed/`` (made again if gone) at once - claims
        into a removed directory would fail as if another daemon had taken the file."""
        try:
            same = os.path.samestat(os.fstat(self._claimed_fd), os.stat(self._claimed_dir))
        except OSError:
            same = False
        if not same:
            self.warn("claimed_dir_replaced", path=self._claimed_dir, action="opening it again")
            self.state.ensure()
            self.reopen()  # closes the archive fds too
            return
        for sub, fd in list(self._archive_fds.items()):
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.state.root / sub))
            except OSError:
                same = False
            if force or not same:
                os.close(fd)
                del self._archive_fds[sub]

    def _archive_fd(self, state: JobState) -> int:
        sub = ARCHIVE_DIR[state.value]
        fd = self._archive_fds.get(sub)
        if fd is None:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
            fd = self._archive_fds[sub] = os.open(self.state.root / sub, flags)
        return fd

    # -- crash repair ------------------------------------------------------------------------
    def orphans(
        self, known: Callable[[list[str]], dict[str, JobState]], min_age: float
    ) -> tuple[list[NewJob], list[str], int]:
        """Claimed files without a job row (crash between rename and commit) become jobs
        again; ids of claimed files whose job already finished are returned for archiving.
        ``min_age`` skips claims younger than that many seconds (another live daemon on the
        same state directory may be about to commit them): how many, the third value."""
        entries: dict[str, tuple[str, str, str]] = {}
        for name in os.listdir(self.state.claimed):
            parts = split_claim_name(name)
            if parts is None:
                self.warn("stray_file", path=str(self.state.claimed / name))
                continue
            entries[parts[0]] = (name, parts[1], parts[2])
        states = known(list(entries))
        revived: list[NewJob] = []
        finished: list[str] = []
        young = 0
        now_ms = int(self.clock() * 1000)
        for job_id, (name, tag, base) in entries.items():
            state = states.get(job_id)
            if state is None:
                if now_ms - ULID.from_str(job_id).milliseconds < min_age * 1000:
                    young += 1
                    continue
                origin = self._origins.get(tag)
                if origin is None:
                    self._learn_recursive_dirs()
                    origin = self._origins.get(tag)
                if origin is None:
                    first = self.config.spool[0]
                    origin = Origin(first, str(first.path))
                    self.warn("orphan_origin_unknown", job=job_id, assumed=origin.directory)
                revived.append(self._record(job_id, name, origin, base))
            elif state.finished:
                finished.append(job_id)
        return revived, finished, young
