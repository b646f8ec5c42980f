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
# Seconds to wait for the W&B server's answer before a job with credentials goes offline.
_SERVER_PROBE_TIMEOUT_S = 5.0


def start_wandb_run(init_args: dict[str, Any]):
    """wandb.init(**init_args) with `mode` chosen by `choose_wandb_mode`, falling back to
    offline when starting online fails; an offline run logs one line on how to upload it."""
    import wandb

    # WandbLogger always passes `anonymous`, which wandb 0.31 only warns about.
    args = {k: v for k, v in init_args.items() if not (k == "anonymous" and v is None)}
    args["mode"], reason = choose_wandb_mode(args.get("mode"))
    try:
        run = wandb.init(**args)
    except wandb.Error as error:
        if args["mode"] != "online":
            raise
        reason = f"W&B online start failed: {str(error).splitlines()[0]}"
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
    if not _server_answers(base_url, _SERVER_PROBE_TIMEOUT_S):
        return "offline", f"{base_url} is not reachable"
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


def _server_answers(url: str, timeout: float) -> bool:
    """Whether `url` gives any HTTP answer within `timeout` seconds, name lookup included."""
    answered: list[bool] = []

    def ask() -> None:
        try:
            urllib.request.urlopen(url, timeout=timeout).close()
        except urllib.error.HTTPError:
            pass  # an error page is an answer
        except Exception:  # noqa: BLE001 - unreachable, whatever the reason
            return
        answered.append(True)

    # A thread, because a hanging name lookup ignores socket timeouts.
    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answered)
