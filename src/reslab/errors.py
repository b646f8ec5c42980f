"""The one error type for bad input, and the other ways a job ends that are told in one line.

ConfigError is raised while a run is being set up (config values, missing files), before any
training starts, so the user sees a single message that says what was wrong and what is allowed.
JobInterrupted and FolderUnwritable end a job that has started: a signal, a folder that takes no
more writes.
"""

import errno
import os
from pathlib import Path


class ConfigError(ValueError):
    """A configuration value or an input the run needs is wrong; the message says how to fix it."""


class JobInterrupted(BaseException):
    """SIGINT or SIGTERM stopped a job (after its checkpoint was saved); the process exits with
    128 + the signal's number, as a shell reports a process a signal ended (130, 143).

    A BaseException, like KeyboardInterrupt: code that catches Exception lets it through."""

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = int(signum)
        super().__init__(f"stopped by {signal.Signals(self.signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class FolderUnwritable(Exception):
    """The job's folder takes no more writes (a full disk, a read-only mount, a quota): the job
    ends with one line naming the folder and the OS error (`unwritable`), and exit code 1."""


# The OS errors that say a folder takes no more writes, wherever in it the write went.
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def disk_error(error: BaseException | None, folder: str | os.PathLike) -> OSError | None:
    """The OSError behind `error` (itself, or what it was raised from) when it says that `folder`
    takes no more writes: a full disk, a quota, a read-only mount, or any OSError of a file in it."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, OSError) and (error.errno in _DISK_ERRNOS or _inside(error.filename, folder)):
            return error
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


def unwritable(folder: str | os.PathLike, error: OSError) -> str:
    """One line: the folder and the OS error (`[Errno 28] No space left on device: PATH`)."""
    return f"cannot write to {folder}: {error}"


def _inside(filename: object, folder: str | os.PathLike) -> bool:
    if not isinstance(filename, (str, os.PathLike)):
        return False
    return Path(os.path.abspath(filename)).is_relative_to(os.path.abspath(folder))
