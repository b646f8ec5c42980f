#!/usr/bin/env bash
# A real SLURM cluster of N nodes on this one host for the `slurm` tests: munge, slurmctld and
# one slurmd per node (`slurmd -N n1`, `slurmd -N n2`, ...), each with its own port, spool
# folder, pid file and log, the node names resolving to 127.0.0.1 through /etc/hosts.
#
#   sudo .ci/slurm/setup.sh          # 2 nodes: install (first time only), configure, start, check
#   sudo .ci/slurm/setup.sh 3        # 3 nodes (n1..n3)
#   .ci/slurm/stop.sh                # stop the daemons again
#
# Written for Debian 12 containers without systemd (slurm-wlm 22.05), run as root. Idempotent:
# a second run installs nothing, keeps running daemons when the configuration is unchanged,
# restarts them when it changed (another node count, other hardware), and always ends with
# the same health check (every node idle, `srun -N<nodes> hostname` runs on all of them).
# Every node claims the host's CPUs and memory, so a job on all nodes is real multi-node work
# for SLURM and Lightning (ranks, node list, master address) on shared hardware.
# Daemon logs: /var/log/slurm/slurmctld.log, /var/log/slurm/slurmd-<node>.log and
# /var/log/munge/munged.log.
set -euo pipefail

readonly NODES=${1:-${SLURM_TEST_NODES:-2}}
readonly SLURM_CONF=/etc/slurm/slurm.conf
readonly MUNGE_KEY=/etc/munge/munge.key
readonly CTLD_PID=/run/slurmctld.pid
readonly SLURMD_PID_PATTERN=/run/slurmd-%n.pid  # slurmd puts its node name for %n
readonly SLURMD_PORT_BASE=17000                 # node n<i> listens on SLURMD_PORT_BASE + i
readonly HOSTS_MARK="# reslab SLURM test nodes (.ci/slurm/setup.sh)"
readonly WAIT_S=${SLURM_SETUP_WAIT_S:-60}
CTLD_HOST=$(hostname -s)
readonly CTLD_HOST

log() { echo "[slurm-setup] $*"; }
fail() {
    echo "[slurm-setup] ERROR: $*" >&2
    echo "[slurm-setup] see /var/log/slurm/*.log and /var/log/munge/munged.log" >&2
    exit 1
}

[[ $NODES =~ ^[1-9][0-9]*$ ]] || fail "the node count must be a whole number >= 1, got '$NODES'"

node_names() { seq -f 'n%g' 1 "$NODES"; }
slurmd_pidfile() { echo "${SLURMD_PID_PATTERN/\%n/$1}"; }

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

# The node names resolve to this host: slurmctld reaches each slurmd there, and a job's first
# node (SLURM_NODELIST) is the address its ranks meet at (Lightning's MASTER_ADDR).
# /etc/hosts is rewritten in place, not replaced: in containers it is often a bind mount.
write_hosts() {
    local line current
    line="127.0.0.1 $(node_names | tr '\n' ' ')$HOSTS_MARK"
    current=$(grep -F -- "$HOSTS_MARK" /etc/hosts || true)
    [[ $current == "$line" ]] && return 0
    { grep -vF -- "$HOSTS_MARK" /etc/hosts || true; echo "$line"; } >/etc/hosts.reslab-new
    cat /etc/hosts.reslab-new >/etc/hosts || fail "cannot write /etc/hosts; the node names must resolve: $line"
    rm -f /etc/hosts.reslab-new
    log "/etc/hosts: $line"
}

# The hardware of every node is what slurmd sees on this host, so the config never claims more
# CPUs or memory than exist (slurmd would drain the node for that).
hardware() {
    slurmd -C | sed -n 's/^NodeName=[^ ]* \(.*\)$/\1/p' | sed -e 's/ *$//' \
        -e 's/ *UpTime=[^ ]*//'
}

write_slurm_conf() {
    local real_mem cpus def_mem hw node i=0 node_lines=""
    hw=$(hardware)
    [[ -n $hw ]] || fail "'slurmd -C' printed no NodeName line"
    real_mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
    cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
    # Memory is a consumable resource; without a default each job would claim the whole node.
    def_mem=$((real_mem / cpus))
    for node in $(node_names); do
        i=$((i + 1))
        node_lines+="NodeName=$node Port=$((SLURMD_PORT_BASE + i)) $hw State=UNKNOWN"$'\n'
    done
    mkdir -p /etc/slurm
    cat >"$SLURM_CONF.new" <<EOF
# Test cluster of $NODES nodes on one host, written by .ci/slurm/setup.sh; rerun the script
# after editing it.
ClusterName=reslab
SlurmctldHost=$CTLD_HOST
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
# No accounting (no slurmdbd): sacct answers nothing, job states come from squeue/scontrol.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none

SchedulerType=sched/backfill
# Look at the queue every 2 s (default 60 s), so a requeued job starts soon after it may.
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$def_mem

# One slurmd per node on this host: %n is the node name a daemon was started with (-N).
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd/%n
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID_PATTERN
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
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

${node_lines}PartitionName=debug Nodes=n[1-$NODES] Default=YES MaxTime=INFINITE State=UP
EOF
    if [[ -f $SLURM_CONF ]] && cmp -s "$SLURM_CONF" "$SLURM_CONF.new"; then
        rm -f "$SLURM_CONF.new"
        return 1  # unchanged
    fi
    mv "$SLURM_CONF.new" "$SLURM_CONF"
    log "wrote $SLURM_CONF ($NODES nodes)"
    return 0
}

stop_all_slurmd() {
    local pidfile
    # Every node's daemon, also those of a larger cluster before, and the single daemon that
    # earlier versions of this script started (/run/slurmd.pid).
    for pidfile in /run/slurmd-*.pid /run/slurmd.pid; do
        [[ -e $pidfile ]] && stop_from_pidfile "$pidfile"
    done
    return 0
}

start_slurm() {
    local conf_changed=$1 node
    mkdir -p /var/spool/slurmctld /var/log/slurm
    if [[ $conf_changed -eq 1 ]]; then
        stop_all_slurmd
        stop_from_pidfile "$CTLD_PID"
    fi
    if ! pid_alive "$CTLD_PID"; then
        log "starting slurmctld"
        slurmctld || fail "slurmctld did not start"
    fi
    for node in $(node_names); do
        mkdir -p "/var/spool/slurmd/$node"
        if ! pid_alive "$(slurmd_pidfile "$node")"; then
            log "starting slurmd -N $node (port $((SLURMD_PORT_BASE + ${node#n})))"
            slurmd -N "$node" || fail "slurmd -N $node did not start"
        fi
    done
}

usable_nodes() { sinfo -h -N -o '%N %t' 2>/dev/null | awk '$2 ~ /^(idle|mix|alloc)$/ {print $1}' | sort -u | wc -l; }

wait_for_nodes() {
    local deadline=$((SECONDS + WAIT_S)) node
    while ((SECONDS < deadline)); do
        (($(usable_nodes) == NODES)) && return 0
        # e.g. left drained or down by an earlier run; the hardware line is current now.
        for node in $(sinfo -h -N -o '%N %t' 2>/dev/null | awk '$2 ~ /^(drain|drng|down)/ {print $1}'); do
            scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
        done
        sleep 1
    done
    fail "$(usable_nodes) of $NODES nodes usable after ${WAIT_S}s:
$(sinfo -N 2>&1 || echo 'no answer from slurmctld')"
}

# The health check: one task on every node, so a job really spans all of them (`hostname` is
# this host for every task; SLURMD_NODENAME is the node the task runs on).
check_srun() {
    local out err expected
    err=$(mktemp)
    out=$(timeout "$WAIT_S" srun -N"$NODES" --ntasks-per-node=1 -t 1 \
        bash -c 'echo "$SLURMD_NODENAME $(hostname)"' 2>"$err" | sort) \
        || fail "'srun -N$NODES hostname' failed: $(cat "$err")"
    rm -f "$err"
    expected=$(node_names | sort | sed "s/\$/ $(hostname)/")
    [[ $out == "$expected" ]] || fail "'srun -N$NODES hostname' printed '$out', expected '$expected'"
}

main() {
    local start=$SECONDS conf_changed=0
    install_packages
    [[ $(id -u) -eq 0 ]] || fail "run as root: the daemons run as root in this test cluster"
    start_munge
    write_hosts
    write_slurm_conf && conf_changed=1
    start_slurm "$conf_changed"
    wait_for_nodes
    check_srun
    log "cluster up: nodes n[1-$NODES], partition debug ($((SECONDS - start))s)"
    sinfo
}

main "$@"
