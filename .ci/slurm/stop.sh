#!/usr/bin/env bash
# Stop the single-node test cluster that .ci/slurm/setup.sh started (slurmd, slurmctld, munged).
# Running jobs are killed; the configuration and the munge key stay for the next setup.sh.
set -uo pipefail

stop_pidfile() {
    local name=$1 pidfile=$2 pid i
    [[ -f $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    kill -0 "$pid" 2>/dev/null || return 0
    echo "[slurm-stop] stopping $name (pid $pid)"
    kill "$pid"
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    echo "[slurm-stop] $name (pid $pid) still running" >&2
    return 1
}

stop_pidfile slurmd /run/slurmd.pid
stop_pidfile slurmctld /run/slurmctld.pid
stop_pidfile munged /run/munge/munged.pid
