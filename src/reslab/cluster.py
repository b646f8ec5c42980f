"""ResLab on a SLURM cluster (`hydra/launcher=slurm`, Hydra's submitit launcher): what a sweep
asks SLURM for agrees with what each job's Trainer uses, and a cluster without job accounting
is followed through squeue instead of filling the console with sacct errors.

SLURM starts `nodes x tasks_per_node` processes and Lightning's SLURMEnvironment takes them as
the `num_nodes x devices` ranks of one run, so the launcher's numbers follow the trainer's
(conf/hydra/launcher/slurm.yaml): `nodes = trainer.num_nodes`, `tasks_per_node =
trainer.devices`, and one GPU per device unless the trainer runs on CPUs (the resolver below).
`reslab.checks.check_cluster_layout` refuses, before anything is submitted, a launch where they were set
apart; the `SlurmSweep` Hydra callback (conf/hydra/default.yaml) does what only the cluster can
tell: GPUs asked of a cluster that has none, and whether it keeps accounting.
"""

from __future__ import annotations

import logging
import os
import subprocess
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

log = logging.getLogger("reslab")

# The launcher `hydra/launcher=slurm` selects, named by its config's target (compared as text:
# importing the plugin is only needed where it submits).
SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
GPU_ACCELERATORS = ("gpu", "cuda")
SLURM_CALL_TIMEOUT_S = 30


# ----------------------------------------------------------------------------- the layout


def is_slurm_launcher(launcher: DictConfig | None) -> bool:
    return launcher is not None and launcher.get("_target_") == SLURM_LAUNCHER


# ----------------------------------------------------------------------------- what the cluster has


def _slurm_output(*command: str) -> str | None:
    """stdout of a SLURM client command; None when it is missing (OSError) or fails."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=SLURM_CALL_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def cluster_has_gpus(partition: str | None) -> bool | None:
    """Whether any node (of `partition`, else of the cluster) offers GPUs as a generic resource;
    None when sinfo cannot tell."""
    out = _slurm_output("sinfo", "--noheader", "--format=%G", *([f"--partition={partition}"] if partition else []))
    if out is None:
        return None
    return any("gpu" in gres for gres in out.split())


def cluster_keeps_accounting() -> bool:
    """Whether sacct can answer: the controller stores accounting (slurmdbd). Assumed when
    scontrol cannot tell, which leaves submitit as it is."""
    out = _slurm_output("scontrol", "show", "config")
    if out is None:
        return True
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "AccountingStorageType":
            return value.strip() != "accounting_storage/none"
    return True


# ----------------------------------------------------------------------------- job states


class SqueueWatcher(SlurmInfoWatcher):
    """submitit's watcher of SLURM job states, asking squeue instead of sacct. It fills in the
    two hooks submitit's watchers are made of (`_make_command`, `read_info`; submitit 1.5)."""

    # States squeue shows for jobs that are not over, which submitit's list of unfinished
    # states (taken from sacct's) lacks.
    ALIVE = {
        "CONFIGURING": "RUNNING",
        "RESIZING": "RUNNING",
        "SIGNALING": "RUNNING",
        "STAGE_OUT": "RUNNING",
        "SUSPENDED": "RUNNING",
        "STOPPED": "RUNNING",
        "REQUEUE_HOLD": "REQUEUED",
        "REQUEUE_FED": "REQUEUED",
        "SPECIAL_EXIT": "REQUEUED",
        "RESV_DEL_HOLD": "PENDING",
    }
    # A job submitit waits on that squeue no longer lists has ended (MinJobAge ago).
    LEFT_QUEUE = "ENDED"

    def _make_command(self) -> list[str] | None:
        if not self._registered - self._finished:
            return None
        # All of this user's jobs: `--jobs=ID` is an error once a single ID has left the queue.
        return ["squeue", f"--user={os.getuid()}", "--noheader", "--array", "--states=all", "--format=%i|%T|%N"]

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        text = string.decode() if isinstance(string, bytes) else string
        info = super().read_info("JobID|State|NodeList\n" + text)
        for stats in info.values():
            stats["State"] = self.ALIVE.get(stats["State"], stats["State"])
        gone = {job_id for job_id in self._registered - self._finished if job_id not in info}
        info.update({job_id: {"JobID": job_id, "State": self.LEFT_QUEUE} for job_id in gone})
        return info


def follow_job_states_with_squeue() -> None:
    """Make submitit read the states of the SLURM jobs this process waits on from squeue.

    submitit polls sacct for them; without accounting every call fails, prints sacct's error
    and logs "Bypassing sacct error ..., status may be inaccurate" (three console lines a call,
    several calls a job), and a job that ends without writing its result (cancelled, killed for
    memory, a lost node) is never seen to end, so the launching command would wait forever.
    squeue knows every job from its submission until MinJobAge after it ends. submitit has no
    setting for this: its one watcher per process, a class attribute of SlurmJob, is replaced.
    """
    SlurmJob.watcher = SqueueWatcher()
    log.info("this cluster keeps no job accounting (sacct): job states come from squeue")


# ----------------------------------------------------------------------------- the sweep callback


class SlurmSweep(Callback):
    """Hydra callback, before a sweep under `hydra/launcher=slurm` submits anything: GPUs asked
    of a cluster that has none stop it with one line (sbatch would refuse every job with
    "Invalid generic resource"), and on a cluster without accounting job states come from
    squeue, said once."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = OmegaConf.select(config, "hydra.launcher")
        if not is_slurm_launcher(launcher):
            return
        gpus = launcher.get("gpus_per_node")
        if gpus and cluster_has_gpus(launcher.get("partition")) is False:
            where = f"partition {launcher.partition}" if launcher.get("partition") else "this cluster"
            log.error(
                "configuration error: hydra.launcher.gpus_per_node=%s but no node of %s has GPUs; "
                "train on CPUs with trainer.accelerator=cpu (it asks SLURM for no GPUs)",
                gpus,
                where,
            )
            raise SystemExit(2)
        if not cluster_keeps_accounting():
            follow_job_states_with_squeue()


# What slurm.yaml's `gpus_per_node` follows: one GPU per device, none (no GPU request at all) when
# the trainer runs on CPUs. It works wherever this module was imported; the SlurmSweep callback
# imports it before Hydra builds the launcher.
OmegaConf.register_new_resolver(
    "reslab.gpus_per_node", lambda accelerator, devices: None if accelerator == "cpu" else devices, replace=True
)
