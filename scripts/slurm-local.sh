#!/usr/bin/env bash
# A real, single-node Slurm cluster on this machine, for trying and testing LAUNCH="srun …":
# Debian's slurmctld + slurmd with munge, configured with one node (this machine: its cores from
# nproc, its memory from /proc/meminfo) in one partition, job completion records in a text file.
#
#   scripts/slurm-local.sh start    install what is missing (apt, as root), write the config, start
#                                   munged, slurmctld and slurmd, wait until sinfo shows the node idle
#   scripts/slurm-local.sh stop     cancel jobs still running, stop the three daemons
#   scripts/slurm-local.sh status   what runs, and sinfo
#   scripts/slurm-local.sh env      the line to paste into a shell: export SLURM_CONF=…
#
# start and stop are safe to run twice (start when running checks the node and returns; stop when
# stopped does nothing). Everything lives in one folder, $SLURM_LOCAL_DIR (default
# /var/tmp/clock-pizza-slurm):
#   slurm.conf        the cluster's config (written by start; SLURM_CONF points here)
#   munge/            munged's key, socket, pid, log and seed (a munged of our own: no system munge)
#   spool/ctld, spool/d   slurmctld's state and slurmd's spool
#   log/              slurmctld.log, slurmd.log
#   run/              pid files
#   jobcomp.txt       one line per finished job (JobCompType=jobcomp/filetxt): JobId, Name,
#                     JobState, StartTime, EndTime, ExitCode, … — what `make slurm-test` checks
# If /etc/slurm/slurm.conf does not exist, start links it to ours so that plain `sinfo`/`srun`
# work in any shell; an existing one is never touched (then use `env`).
#
# The daemons run as root with plugins that need neither cgroups nor systemd (a container):
# proctrack/linuxproc, task/none, jobacct_gather/none. CPUs and memory are both consumable
# (select/cons_tres, CR_CPU_Memory) and DefMemPerCPU is the node's memory divided by its CPUs: a
# job that asks for no memory gets its share, not the whole node (Slurm's default with consumable
# memory, which lets only one job run at a time).
set -euo pipefail

DIR="${SLURM_LOCAL_DIR:-/var/tmp/clock-pizza-slurm}"
CONF="$DIR/slurm.conf"
SOCKET="$DIR/munge/munge.socket.2"
export SLURM_CONF="$CONF"

say() { echo "slurm-local: $*" >&2; }
die() { say "error: $*"; exit 1; }

# Whether the pid in file $1 runs (the daemons remove their pid files as they exit).
alive() { local pid; pid="$(cat "$1" 2>/dev/null)" && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

install_missing() {
    local missing=()
    command -v munged >/dev/null || missing+=(munge)
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sinfo >/dev/null || missing+=(slurm-client)
    [ ${#missing[@]} -eq 0 ] && return
    [ "$(id -u)" -eq 0 ] || die "${missing[*]} missing and not root: install them (apt-get install slurm-wlm munge) or run as root"
    command -v apt-get >/dev/null || die "${missing[*]} missing and no apt-get: install Slurm and munge by hand"
    say "installing ${missing[*]} (apt-get, quietly)"
    # No daemon may start from the packages' scripts: we start our own with our own config.
    local policy=/usr/sbin/policy-rc.d made_policy=
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && made_policy=1; fi
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$DIR/apt.log" 2>&1 \
        || { [ -n "$made_policy" ] && rm -f "$policy"; tail -20 "$DIR/apt.log" >&2; die "apt-get failed (log: $DIR/apt.log)"; }
    [ -n "$made_policy" ] && rm -f "$policy"
    return 0
}

write_conf() {
    local host cpus mem_mb per_cpu
    host="$(hostname -s)"
    cpus="$(nproc)"
    mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
    per_cpu=$(( mem_mb / cpus ))
    mkdir -p "$DIR"/{spool/ctld,spool/d,log,run}
    cat > "$CONF.tmp" <<EOF
# Written by scripts/slurm-local.sh start; rewritten on every start.
ClusterName=pizza-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$per_cpu
# Seconds between SIGTERM and SIGKILL when a job is cancelled or reaches its time limit (Slurm's
# default, written out because the stages' graceful stop is sized against it).
KillWait=30
ReturnToService=2
InactiveLimit=0
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
    if [ ! -e /etc/slurm/slurm.conf ] && [ "$(id -u)" -eq 0 ]; then
        mkdir -p /etc/slurm && ln -s "$CONF" /etc/slurm/slurm.conf
    fi
}

start_munge() {
    alive "$DIR/munge/munged.pid" && return
    mkdir -p "$DIR/munge" && chmod 700 "$DIR/munge"
    if [ ! -s "$DIR/munge/munge.key" ]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
        chmod 400 "$DIR/munge/munge.key"
    fi
    munged --force --key-file="$DIR/munge/munge.key" --socket="$SOCKET" \
        --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed" \
        || die "munged did not start (log: $DIR/munge/munged.log)"
}

node_state() { sinfo -h -N -o %T 2>/dev/null | head -1; }

start() {
    mkdir -p "$DIR"
    install_missing
    if alive "$DIR/run/slurmctld.pid" && alive "$DIR/run/slurmd.pid" && alive "$DIR/munge/munged.pid"; then
        say "already running ($(node_state)); SLURM_CONF=$CONF"
        return
    fi
    write_conf
    start_munge
    alive "$DIR/run/slurmctld.pid" || slurmctld || die "slurmctld did not start (log: $DIR/log/slurmctld.log)"
    alive "$DIR/run/slurmd.pid" || slurmd || die "slurmd did not start (log: $DIR/log/slurmd.log)"
    local state='' i
    for i in $(seq 1 60); do
        state="$(node_state)"
        case "$state" in
            idle|mixed|allocated) break ;;
            down*|drain*) scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true ;;
        esac
        sleep 1
    done
    case "$state" in
        idle|mixed|allocated) say "running: node $(hostname -s) $state, $(nproc) CPUs; state in $DIR; SLURM_CONF=$CONF" ;;
        *) tail -5 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true; die "the node is '${state:-not reported}' after 60 s" ;;
    esac
}

stop_one() {
    local name="$1" pidfile="$2" pid i
    alive "$pidfile" || { rm -f "$pidfile"; return 0; }
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then say "$name did not stop in 10 s; killing it"; kill -9 "$pid" || true; fi
    rm -f "$pidfile"
}

stop() {
    if alive "$DIR/run/slurmctld.pid" && [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
        say "cancelling the jobs still running (SIGTERM, then SIGKILL after KillWait)"
        squeue -h -o %i | xargs -r scancel
        local i
        for i in $(seq 1 70); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
    fi
    stop_one slurmd "$DIR/run/slurmd.pid"
    stop_one slurmctld "$DIR/run/slurmctld.pid"
    stop_one munged "$DIR/munge/munged.pid"
    say "stopped"
}

status() {
    local d
    for d in munged:"$DIR/munge/munged.pid" slurmctld:"$DIR/run/slurmctld.pid" slurmd:"$DIR/run/slurmd.pid"; do
        if alive "${d#*:}"; then echo "${d%%:*}: running (pid $(cat "${d#*:}"))"; else echo "${d%%:*}: stopped"; fi
    done
    if alive "$DIR/run/slurmctld.pid"; then sinfo; fi
    echo "state: $DIR (export SLURM_CONF=$CONF)"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
