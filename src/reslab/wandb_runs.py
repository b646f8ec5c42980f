"""Starting a W&B run the ResLab way: the mode chosen without prompting or waiting on a network,
an offline fallback, and the run id a folder already holds. Used by the job loggers
(reslab.loggers) and by the report's summary run (reslab.report.wandb_summary); knows nothing
of Lightning.
"""

from __future__ import annotations

import logging
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

log = logging.getLogger("reslab")

WANDB_MODES = ("online", "offline", "disabled")
# How long W&B may hold a job up, whatever its server does, so that a job with credentials is
# offline within 10 s when the server does not work: the server's first answer (a plain GET of
# its address; none, or an HTTP 5xx, means offline at once), then wandb.init online (the server
# may answer a GET and hang its API), then the offline start. At the run's end, unsent data
# waits on the server at most FINISH_TIMEOUT_S and stays in the run's folder (`wandb sync`).
# `logger.wandb.settings.init_timeout` / `finish_timeout` override the two W&B settings.
_SERVER_PROBE_TIMEOUT_S = 3.0
INIT_TIMEOUT_S = 5.0
FINISH_TIMEOUT_S = 10.0


def start_wandb_run(init_args: dict[str, Any]):
    """wandb.init(**init_args) with `mode` chosen by `choose_wandb_mode`, falling back to
    offline when starting online fails; an offline run logs one line on how to upload it."""
    # W&B's own error reports go to the run's server from a thread that the process's exit waits
    # for: a server that hangs would hold every job's end. Off unless the environment says.
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
    import wandb

    # WandbLogger always passes `anonymous`, which wandb 0.31 only warns about.
    args = {k: v for k, v in init_args.items() if not (k == "anonymous" and v is None)}
    if args.get("settings") is None or isinstance(args["settings"], dict):
        bounds = {"init_timeout": INIT_TIMEOUT_S, "finish_timeout": FINISH_TIMEOUT_S}
        args["settings"] = {**bounds, **(args.get("settings") or {})}
    args["mode"], reason = choose_wandb_mode(args.get("mode"))
    try:
        run = wandb.init(**args)
    except wandb.Error as error:
        if args["mode"] != "online":
            raise
        reason = f"W&B online start at {_logged_in_server()} failed: {str(error).splitlines()[0]}"
        args["mode"] = "offline"
        run = wandb.init(**args)
    if run.offline:
        sync_dir = Path(run.dir).parent
        log.info("W&B run %s is offline (%s); upload it later with: wandb sync %s", run.id, reason, sync_dir)
    return run


def choose_wandb_mode(mode: str | None) -> tuple[str, str]:
    """(mode, why): an explicit mode as given; null = the WANDB_MODE environment variable if set,
    else online when credentials exist and the server answers, else offline."""
    if mode:
        return mode, f"mode={mode}"
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode:
        mode = {"dryrun": "offline", "run": "online"}.get(env_mode, env_mode)
        return mode, f"WANDB_MODE={env_mode}"
    base_url = _logged_in_server()
    if base_url is None:
        return "offline", "no W&B credentials found"
    problem = _server_problem(base_url, _SERVER_PROBE_TIMEOUT_S)
    if problem:
        return "offline", f"{base_url} {problem}"
    return "online", "credentials found"


def previous_run_id(wandb_dir: Path) -> str | None:
    """Id of the newest W&B run in a job's wandb/ folder (its log is `run-ID.wandb`), if any."""
    logs = list(Path(wandb_dir).glob("*run-*/run-*.wandb"))
    if not logs:
        return None
    return max(logs, key=lambda p: p.stat().st_mtime).stem.removeprefix("run-")


def _logged_in_server() -> str | None:
    """The W&B server's URL when there are credentials for it (an API key or identity token in
    the environment, a W&B settings file, ~/.netrc), else None. Reads files only."""
    try:
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth

        # The settings W&B itself would use (environment, settings files); starts no process.
        settings = wandb_setup.singleton().settings
        found = (
            os.environ.get("WANDB_API_KEY")
            or os.environ.get("WANDB_IDENTITY_TOKEN_FILE")
            or settings.api_key
            or wbauth.read_netrc_auth(host=settings.base_url)
        )
        return settings.base_url if found else None
    except Exception:  # noqa: BLE001 - an unreadable login counts as none
        return None


def _server_problem(url: str, timeout: float) -> str | None:
    """None when `url` gives an HTTP answer other than a server error within `timeout` seconds
    (name lookup included); else what went wrong, e.g. "answered HTTP 500"."""
    outcome: list[str | None] = []

    def ask() -> None:
        try:
            urllib.request.urlopen(url, timeout=timeout).close()
        except urllib.error.HTTPError as error:
            # An error page is an answer (404 on the bare address); a server error is not.
            outcome.append(f"answered HTTP {error.code}" if error.code >= 500 else None)
            return
        except Exception as error:  # noqa: BLE001 - unreachable, whatever the reason
            outcome.append(f"is not reachable ({getattr(error, 'reason', error)})")
            return
        outcome.append(None)

    # A thread, because a hanging name lookup ignores socket timeouts.
    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"did not answer within {timeout:g} s"
