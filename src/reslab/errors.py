"""The one error type for bad input.

Raised while a run is being set up (config values, missing files), before any training
starts, so the user sees a single message that says what was wrong and what is allowed.
"""


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
