#!/usr/bin/env bash
# A real single-node SLURM cluster for the `slurm` tests: munge + slurmctld + slurmd on this host.
#
#   sudo .ci/slurm/setup.sh          # install (first time only), configure, start, check
#   .ci/slurm/stop.sh                # stop the daemons again
#
# Written for Debian 12 containers without systemd, run as root. Idempotent: a second run
# installs nothing, keeps running daemons when the configuration is unchanged, restarts them
# when it changed, and always ends with the same health check (node idle, `srun hostname` works).
# Daemon logs: /var/log/slurm/{slurmctld,slurmd}.log and /var/log/munge/munged.log.
set -euo pipefail

readonly SLURM_CONF=/etc/slurm/slurm.conf
readonly MUNGE_KEY=/etc/munge/munge.key
readonly CTLD_PID=/run/slurmctld.pid
readonly SLURMD_PID=/run/slurmd.pid
readonly WAIT_S=${SLURM_SETUP_WAIT_S:-60}
NODE=$(hostname -s)
readonly NODE

log() { echo "[slurm-setup] $*"; }
fail() {
    echo "[slurm-setup] ERROR: $*" >&2
    echo "[slurm-setup] see /var/log/slurm/*.log and /var/log/munge/munged.log" >&2
    exit 1
}

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_from_pidfile() {
    local pidfile=$1 i
    pid_alive "$pidfile" || return 0
    kill "$(cat "$pidfile")"
    for i in $(seq 1 50); do
        pid_alive "$pidfile" || return 0
        sleep 0.2
    done
    fail "daemon with pid $(cat "$pidfile") ($pidfile) did not stop"
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null; then
        return 0
    fi
    [[ $(id -u) -eq 0 ]] || fail "run as root: installing packages and starting daemons needs it"
    log "installing slurm-wlm and munge (apt-get, once)"
    export DEBIAN_FRONTEND=noninteractive
    # Without systemd, package scripts must not try to start the daemons with a default config.
    local added_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        added_policy=1
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
    [[ $added_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d
    return 0
}

start_munge() {
    install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
    install -d -o munge -g munge -m 0755 /run/munge
    if [[ ! -s $MUNGE_KEY ]]; then
        log "creating $MUNGE_KEY"
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 0400 "$MUNGE_KEY"
    if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        log "starting munged"
        runuser -u munge -- /usr/sbin/munged --force
        local i
        for i in $(seq 1 50); do
            munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
            sleep 0.2
        done
        fail "munged does not answer (munge -n | unmunge fails)"
    fi
}

# The node line comes from the hardware slurmd sees, so the config never claims more CPUs or
# memory than exist (slurmd would drain the node for that).
node_line() {
    slurmd -C | grep '^NodeName=' | sed -e 's/ *$//'
}

write_slurm_conf() {
    local real_mem cpus def_mem
    local nodeline
    nodeline=$(node_line)
    [[ -n $nodeline ]] || fail "'slurmd -C' printed no NodeName line"
    real_mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$nodeline")
    cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$nodeline")
    # Memory is a consumable resource; without a default each job would claim the whole node.
    def_mem=$((real_mem / cpus))
    mkdir -p /etc/slurm
    cat >"$SLURM_CONF.new" <<EOF
# Single-node test cluster written by .ci/slurm/setup.sh; rerun the script after editing it.
ClusterName=reslab
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job may start again cred_expire seconds after it stopped (default 120).
AuthInfo=cred_expire=10
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true

# No cgroups in the test container: track processes by parent pid, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none

SchedulerType=sched/backfill
# Look at the queue every 2 s (default 60 s), so a requeued job starts soon after it may.
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$def_mem

StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# A node that went down (daemon restart) comes back by itself; jobs are requeueable, finished
# jobs leave the queue quickly and killed jobs get little grace, so tests stay fast.
ReturnToService=2
JobRequeue=1
MinJobAge=10
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
Waittime=0

$nodeline State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    if [[ -f $SLURM_CONF ]] && cmp -s "$SLURM_CONF" "$SLURM_CONF.new"; then
        rm -f "$SLURM_CONF.new"
        return 1  # unchanged
    fi
    mv "$SLURM_CONF.new" "$SLURM_CONF"
    log "wrote $SLURM_CONF"
    return 0
}

start_slurm() {
    local conf_changed=$1
    mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
    if [[ $conf_changed -eq 1 ]]; then
        stop_from_pidfile "$SLURMD_PID"
        stop_from_pidfile "$CTLD_PID"
    fi
    if ! pid_alive "$CTLD_PID"; then
        log "starting slurmctld"
        slurmctld || fail "slurmctld did not start"
    fi
    if ! pid_alive "$SLURMD_PID"; then
        log "starting slurmd (node $NODE)"
        slurmd -N "$NODE" || fail "slurmd did not start"
    fi
}

node_state() { sinfo -h -N -n "$NODE" -o '%t' 2>/dev/null | head -1; }

wait_for_node() {
    local state="" deadline=$((SECONDS + WAIT_S))
    while ((SECONDS < deadline)); do
        state=$(node_state)
        case $state in
            idle | mix | alloc) return 0 ;;
            drain* | drng | down*)
                # e.g. left drained by an earlier run; the hardware line is current now.
                scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 1
    done
    fail "node $NODE not usable after ${WAIT_S}s (state: '${state:-no answer from slurmctld}')"
}

check_srun() {
    local out
    out=$(timeout "$WAIT_S" srun -N1 -n1 hostname 2>&1) || fail "'srun -N1 hostname' failed: $out"
    [[ $out == "$NODE"* ]] || fail "'srun -N1 hostname' printed '$out', expected '$NODE'"
}

main() {
    local start=$SECONDS conf_changed=0
    install_packages
    [[ $(id -u) -eq 0 ]] || fail "run as root: the daemons run as root in this test cluster"
    start_munge
    write_slurm_conf && conf_changed=1
    start_slurm "$conf_changed"
    wait_for_node
    check_srun
    log "cluster up: node $NODE, partition debug ($((SECONDS - start))s)"
    sinfo
}

main "$@"
