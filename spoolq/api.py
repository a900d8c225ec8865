"""The producer side: publish a trigger atomically, from Python or ``spoolq submit``, and
wait for the job it becomes (``spoolq.wait``)."""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ulid import ULID

from spoolq.config import parse_duration
from spoolq.errors import UsageError
from spoolq.jobs import Job

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def build_trigger(
    *,
    argv: Sequence[str] | None = None,
    command: str | None = None,
    job: str | None = None,
    params: Mapping[str, str | int] | None = None,
    lane: str | None = None,
    id: str | None = None,
    priority: int = 0,
    timeout: float | str | None = None,
    retries: int | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> dict[str, Any]:
    """The JSON document for a trigger; raises UsageError if the arguments contradict."""
    given = [k for k, v in (("argv", argv), ("command", command), ("job", job)) if v]
    if len(given) != 1:
        raise UsageError(
            "give exactly one of argv (a list), command (a shell string) or job (a template)"
            + (f"; got {', '.join(given)}" if given else "")
        )
    doc: dict[str, Any] = {}
    if argv:
        if isinstance(argv, str):
            raise UsageError("argv must be a list of strings, e.g. ['echo', 'hi']")
        doc["argv"] = [str(a) for a in argv]
    elif command:
        doc["command"] = command
    else:
        doc["job"] = job
        doc["params"] = dict(params or {})
    if params and not job:
        raise UsageError("params only go with job=")
    if lane:
        doc["lane"] = lane
    if id:
        doc["id"] = id
    if priority:
        doc["priority"] = int(priority)
    if timeout is not None:
        try:
            doc["timeout"] = parse_duration(timeout)
        except ValueError as exc:
            raise UsageError(f"timeout: {exc}") from None
    if retries is not None:
        doc["retries"] = int(retries)
    if env:
        doc["env"] = {str(k): str(v) for k, v in env.items()}
    if cwd:
        doc["cwd"] = cwd
    return doc


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` unless ``dst`` exists (FileExistsError), in one step: a
    trigger published by someone else between a check and the rename is never replaced.
    renameat2(RENAME_NOREPLACE) where the kernel and filesystem have it; elsewhere link()
    (which fails if ``dst`` exists) and unlink()."""
    fn = getattr(_libc(), "renameat2", None)
    if fn is not None:
        rc = fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):  # EINVAL: the filesystem cannot
            raise OSError(err, os.strerror(err), str(dst))
    os.link(src, dst)
    os.unlink(src)


@functools.cache
def _libc() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - no C library to ask
        return None


def publish(
    spool_dir: str | os.PathLike[str], doc: Mapping[str, Any], name: str | None = None
) -> Path:
    """Write ``doc`` as a trigger: hidden temp file, fsync, rename, fsync of the directory.

    The daemon never sees a half-written trigger, and after return the trigger survives a
    power cut. The file is made 0644 whatever the umask (spoolq rejects triggers that group
    or others can write).
    """
    directory = Path(spool_dir)
    if not directory.is_dir():
        raise UsageError(f"spool directory {directory} does not exist (check -d/spool_dir)")
    base = _SAFE.sub("_", name) if name else str(ULID())
    if not base.endswith(".trigger"):
        base += ".trigger"
    final = directory / base
    tmp = directory / f".{base}.{os.getpid()}.part"
    data = (json.dumps(doc, ensure_ascii=False, indent=1) + "\n").encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.fchmod(fd, 0o644)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        rename_noreplace(tmp, final)
    except FileExistsError:
        raise UsageError(f"{final} already exists; choose another name") from None
    finally:
        tmp.unlink(missing_ok=True)  # gone already when the rename went through
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return final.resolve()


def submit(
    spool_dir: str | os.PathLike[str],
    argv: Sequence[str] | None = None,
    command: str | None = None,
    job: str | None = None,
    params: Mapping[str, str | int] | None = None,
    lane: str | None = None,
    id: str | None = None,
    priority: int = 0,
    timeout: float | str | None = None,
    retries: int | None = None,
    env: Mapping[str, str] | None = None,
) -> Path:
    """Publish one trigger into ``spool_dir`` and return its path.

    >>> spoolq.submit("/var/spool/etl", job="load", params={"table": "sales", "path": p})
    """
    doc = build_trigger(
        argv=argv, command=command, job=job, params=params, lane=lane, id=id,
        priority=priority, timeout=timeout, retries=retries, env=env,
    )  # fmt: skip
    return publish(spool_dir, doc)


def wait(
    job_id_or_trigger_path: str | os.PathLike[str],
    timeout: float | None = None,
    *,
    state_dir: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | None = None,
) -> Job:
    """Block until a job has ended and return it (``job.state``, ``job.reason``,
    ``job.exit_code``). Name the job by its id, or by the path :func:`submit` returned:
    a trigger not yet claimed is waited for too. Raises ``spoolq.WaitTimeout`` after
    ``timeout`` seconds.

    The store is found as the ``spoolq`` command finds it: ``state_dir`` (else
    ``$SPOOLQ_STATE_DIR``), ``config`` (else ``$SPOOLQ_CONFIG`` or ``./spoolq.toml``), else
    the trigger's spool's ``.spoolq``.

    >>> job = spoolq.wait(spoolq.submit("/var/spool/etl", argv=["make", "load"]))
    """
    from spoolq.settings import Settings, default_config
    from spoolq.waitcli import near, open_near
    from spoolq.waiting import is_trigger_ref, wait_for

    flag = state_dir if state_dir is not None else os.environ.get("SPOOLQ_STATE_DIR") or None
    settings = Settings(
        Path(config) if config is not None else default_config(),
        Path(flag) if flag is not None else None,
    )
    conf = settings.load()
    ref = job_id_or_trigger_path
    state = near(settings, conf, Path(ref).parent if is_trigger_ref(ref) else None)
    with open_near(conf, state) as store:
        (job,) = wait_for(store, [ref], timeout, claimed_dir=state.claimed)
    return job
