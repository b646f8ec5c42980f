#!/usr/bin/env bash
# Stop the test cluster that .ci/slurm/setup.sh started: every node's slurmd, slurmctld, munged.
# Running jobs are killed; the configuration, /etc/hosts and the munge key stay for the next
# setup.sh.
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

status=0
# One slurmd per node (/run/slurmd-<node>.pid); /run/slurmd.pid: the single-node cluster of
# earlier versions of setup.sh.
for pidfile in /run/slurmd-*.pid /run/slurmd.pid; do
    [[ -e $pidfile ]] || continue
    node=${pidfile#/run/slurmd}
    node=${node#-}
    stop_pidfile "slurmd ${node%.pid}" "$pidfile" || status=1
done
stop_pidfile slurmctld /run/slurmctld.pid || status=1
stop_pidfile munged /run/munge/munged.pid || status=1
exit $status
