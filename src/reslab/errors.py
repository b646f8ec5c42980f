"""The one error type for bad input.

Raised while a run is being set up (config values, missing files), before any training
starts, so the user sees a single message that says what was wrong and what is allowed.
"""


class ConfigError(ValueError):
    """A configuration value or an input the run needs is wrong; the message says how to fix it."""
