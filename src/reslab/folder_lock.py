"""A folder held by one live process at a time, on one host or across a cluster's nodes.

The holder's record is FOLDER/.reslab.lock (reslab.job.LOCK_FILE), JSON: a token of its own,
pid, host, boot id, the process's start time, SLURM_JOB_ID and SLURM_RESTART_COUNT when set, and
a lease (`lease_until`, seconds since the epoch) that a thread of the holder renews every third
of the lease (RESLAB_LOCK_LEASE_S, default 120 s).

- Taken atomically: the whole record is written to a temp file beside the lock, fsynced and
  hard-linked as the lock, an exclusive create that never shows a half-written record.
- Taken over, with a note, when its holder is gone: its lease ran out (a node that died, a host
  that cannot be asked); or it is on this host, since this boot, and no process with its pid and
  start time exists (a restarted container's new pid 1 is not the old one); or it belongs to the
  same SLURM job, requeued (a higher restart count, or another node).
- A live holder is refused with one line naming it and how to take over by hand.
- Whatever replaces an existing lock (a takeover, a renewal, a release) first holds a kernel lock
  on FOLDER/.reslab.lock.guard and checks the lock is still the one it judged (or its own): two
  processes taking over one stale lock cannot both win. The kernel lock is held for a moment
  only; what a holder that dies leaves is the lease, which runs out on any filesystem.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reslab.atomic_files import atomic_writer, create_new
from reslab.errors import ConfigError
from reslab.job import LOCK_FILE

log = logging.getLogger("reslab")

LEASE_ENV = "RESLAB_LOCK_LEASE_S"
DEFAULT_LEASE_S = 120.0
GUARD_SUFFIX = ".guard"
# How long a takeover, renewal or release waits for another one in the same folder.
GUARD_WAIT_S = 30.0
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")


class FolderBusy(ConfigError):
    """Another live process holds the folder."""


# ----------------------------------------------------------------------------- holding


class FolderHold:
    """This process's hold of a folder; `release()` lets it go."""

    def __init__(self, folder: Path, token: str, lease_s: float) -> None:
        self.folder = folder
        self.path = folder / LOCK_FILE
        self.token = token
        self.lease_s = lease_s
        self.pid = os.getpid()
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name=f"reslab lease {folder}", daemon=True)
        self._renewer.start()

    def release(self) -> None:
        if os.getpid() != self.pid:
            return  # a forked child: the hold is its parent's
        with _registry_lock:
            if _held.pop(_key(self.folder), None) is not self:
                return  # let go already
        self._stop.set()
        if not self.folder.is_dir():
            return  # removed with its lock
        try:
            with _guard(self.path):
                if _token_of(_read(self.path)) == self.token:
                    self.path.unlink()
        except OSError as error:
            log.warning("%s could not be let go (%s); delete %s", self.folder, _os_error(error), self.path)

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                with _guard(self.path):
                    if self._stop.is_set():
                        return
                    record = _parse(_read(self.path))
                    if _token_of(record) != self.token:
                        log.error("%s was taken over by %s; this process no longer holds it", self.folder, _who(record))
                        return
                    record["lease_until"] = time.time() + self.lease_s
                    with atomic_writer(self.path) as handle:
                        handle.write(json.dumps(record).encode())
            except OSError as error:
                log.warning("%s: its lease could not be renewed (%s); trying again", self.folder, _os_error(error))


_held: dict[Path, FolderHold] = {}
_registry_lock = threading.RLock()


def hold(folder: str | os.PathLike) -> FolderHold:
    """Hold `folder` (created if missing) for this process until `release()` or the process's
    end. A live holder: FolderBusy; the lock cannot be written: ConfigError. Both one line."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"output folder {folder} cannot be created ({_os_error(error)}); choose another one"
        ) from None
    with _registry_lock:
        lease_s = lease_seconds()
        token = uuid.uuid4().hex
        try:
            _take(folder, token, lease_s)
        except OSError as error:
            raise ConfigError(
                f"{folder} cannot be held: its lock {LOCK_FILE} cannot be written ({_os_error(error)})"
            ) from None
        held = _held[_key(folder)] = FolderHold(folder, token, lease_s)
        return held


def release(folder: str | os.PathLike) -> None:
    """Let go of `folder` if this process holds it (one `hold` of it)."""
    with _registry_lock:
        held = _held.get(_key(Path(folder)))
    if held is not None:
        held.release()


def live_holder(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The record of another live process that holds `folder`; None when it is free, held by
    this process, or its lock would be taken over."""
    folder = Path(folder)
    with _registry_lock:
        held = _held.get(_key(folder))
        if held is not None and held.pid == os.getpid():
            return None
    raw = _read(folder / LOCK_FILE)
    if raw is None or _stale_reason(_parse(raw), folder / LOCK_FILE) is not None:
        return None
    return _parse(raw)


def busy_message(folder: str | os.PathLike, holder: dict[str, Any]) -> str:
    """One line: who holds the folder and how to take it over by hand."""
    path = (Path(folder) / LOCK_FILE).absolute()
    until = holder.get("lease_until")
    lease = f", lease until {_when(until)}" if isinstance(until, (int, float)) else ""
    return (
        f"{folder} is in use by {_who(holder)} since {holder.get('since') or holder.get('started') or 'an unknown time'}{lease}; "
        f"if that process is gone, delete {path} (or choose another folder: hydra.run.dir / hydra.sweep.dir)"
    )


def lease_seconds() -> float:
    text = os.environ.get(LEASE_ENV)
    if not text:
        return DEFAULT_LEASE_S
    try:
        lease = float(text)
    except ValueError:
        lease = -1.0
    if not lease > 0:
        raise ConfigError(f"{LEASE_ENV}={text} must be a number of seconds > 0 (default {DEFAULT_LEASE_S:g})")
    return lease


@atexit.register
def _release_all() -> None:
    for held in list(_held.values()):
        if held.pid == os.getpid():
            held.release()


# ----------------------------------------------------------------------------- taking


def _take(folder: Path, token: str, lease_s: float) -> None:
    path = folder / LOCK_FILE
    for _ in range(100):
        try:
            create_new(path, _encode(_own_record(token, lease_s)))
            return _check_ours(folder, token)
        except FileExistsError:
            pass
        seen = _read(path)
        if seen is None:
            continue  # let go between our try and our look
        holder = _parse(seen)
        why = _stale_reason(holder, path)
        if why is None:
            raise FolderBusy(busy_message(folder, holder))
        with _guard(path):
            if _read(path) != seen:
                continue  # renewed, let go or taken over meanwhile: judged again
            with atomic_writer(path) as handle:
                handle.write(_encode(_own_record(token, lease_s)))
        log.warning("taking over %s: %s (%s)", path, why, _who(holder))
        return _check_ours(folder, token)
    raise FolderBusy(f"{folder} is being taken by other processes at this moment; try again")


def _check_ours(folder: Path, token: str) -> None:
    record = _parse(_read(folder / LOCK_FILE))
    if _token_of(record) != token:
        raise FolderBusy(busy_message(folder, record))


def _stale_reason(holder: dict[str, Any], path: Path) -> str | None:
    """Why the lock's holder is gone (its lock may be taken over); None while it may live."""
    me = _own_record("", 0.0)
    until = holder.get("lease_until")
    if isinstance(until, (int, float)):
        if until < time.time():
            return f"its lease ran out at {_when(until)}"
    else:  # not written by a holder that renews (unreadable, or of an earlier version): its age
        with contextlib.suppress(OSError):
            if path.stat().st_mtime + DEFAULT_LEASE_S < time.time():
                return f"it is older than {DEFAULT_LEASE_S:g} s and renewed by nobody"
    job_id = holder.get("slurm_job_id")
    if job_id and job_id == me["slurm_job_id"]:
        if _int(me["slurm_restart_count"]) > _int(holder.get("slurm_restart_count")):
            return f"SLURM job {job_id} was requeued (restart {me['slurm_restart_count']})"
        if holder.get("host") != me["host"]:
            return f"SLURM job {job_id} runs again, on {me['host']}"
    # A record without a boot id is of an earlier version (or a host without /proc): by pid alone.
    if holder.get("host") == me["host"] and holder.get("boot_id") in (me["boot_id"], None):
        if not _process_exists(holder.get("pid"), holder.get("start_time")):
            return f"no process {holder.get('pid')} started then runs here"
    return None


def _process_exists(pid: Any, start_time: Any) -> bool:
    """Whether process `pid` runs and, when the record says when it started, started then."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return True  # cannot be told
    if not Path("/proc/self/stat").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return True
    now = _start_time(pid)
    return now is not None and (start_time is None or str(start_time) == now)


def _own_record(token: str, lease_s: float) -> dict[str, Any]:
    now = time.time()
    return {
        "token": token,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "boot_id": _boot_id(),
        "start_time": _start_time(os.getpid()),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_restart_count": os.environ.get("SLURM_RESTART_COUNT"),
        "since": _when(now),
        "lease_s": lease_s,
        "lease_until": now + lease_s,
    }


# ----------------------------------------------------------------------------- small helpers


@contextlib.contextmanager
def _guard(path: Path) -> Iterator[None]:
    """A kernel lock on the lock's guard file, for a moment (see the module's docstring). A
    filesystem without such locks (an NFS mount without its lock service) goes unguarded."""
    with _registry_lock:  # threads of one process: flock alone would not keep them apart on NFS
        fd = os.open(path.with_name(path.name + GUARD_SUFFIX), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + GUARD_WAIT_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{path.name}{GUARD_SUFFIX} stayed locked for {GUARD_WAIT_S:g} s") from None
                    time.sleep(0.01)
                except OSError:
                    break  # no kernel locks here
            yield
        finally:
            os.close(fd)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _parse(raw: bytes | None) -> dict[str, Any]:
    try:
        record = json.loads(raw or b"")
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode()


def _token_of(record: bytes | dict[str, Any] | None) -> str | None:
    if not isinstance(record, dict):
        record = _parse(record)
    return record.get("token")


def _who(holder: dict[str, Any]) -> str:
    if not holder:
        return "an unknown process (its lock cannot be read)"
    who = f"pid {holder.get('pid')} on {holder.get('host')}"
    if holder.get("slurm_job_id"):
        who += f" (SLURM job {holder['slurm_job_id']})"
    return who


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22, counted after the command's name, which may hold spaces and parentheses.
    return stat.rsplit(")", 1)[1].split()[19]


def _boot_id() -> str | None:
    try:
        return BOOT_ID_FILE.read_text().strip()
    except OSError:
        return None


def _key(folder: Path) -> Path:
    return Path(os.path.realpath(folder))


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(seconds))


def _os_error(error: OSError) -> str:
    return error.strerror or str(error)
