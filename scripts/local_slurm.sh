#!/usr/bin/env bash
# A single-node Slurm (with accounting) on this Debian machine, for the tests
# and for trying `python train.py --submit` without a cluster.
#
#   scripts/local_slurm.sh start    # install if needed, configure, start (as root)
#   scripts/local_slurm.sh stop     # stop the daemons that `start` started
#   scripts/local_slurm.sh status   # sinfo + the daemons `start` started
#
# No systemd: the daemons are started directly. Works in containers, where the
# cgroup plugins fail (no freezer controller): proctrack/linuxproc, task/none,
# jobacct_gather/none. Accounting (slurmdbd + MariaDB) is there because
# submitit reads job states through sacct. Packages (Debian 12, slurm 22.05):
# munge slurmctld slurmd slurm-client slurmdbd mariadb-server.
#
# `start` is a no-op when `sinfo` already reaches a controller. `stop` only
# stops what `start` recorded in $STATE/started (pid files), so it never
# touches a Slurm that was there before.
set -euo pipefail

STATE=${VIT16_SLURM_STATE:-/run/vit16-local-slurm}
CONF=/etc/slurm
PARTITION=debug
FAKE_GPUS=8
DB_PASS=vit16-local-slurm
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)

log() { echo "local_slurm: $*" >&2; }
die() { log "error: $*"; exit 1; }

slurm_up() {  # a controller answers (fast "no" when there is no config or our own is down)
    command -v sinfo >/dev/null && [[ -f $CONF/slurm.conf ]] || return 1
    if grep -q "written by vit16 scripts/local_slurm.sh" "$CONF/slurm.conf"; then
        local pid; pid=$(cat /run/slurm/slurmctld.pid 2>/dev/null) || return 1
        kill -0 "$pid" 2>/dev/null || return 1
    fi
    timeout 10 sinfo -h -o %T >/dev/null 2>&1
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2; shift 2
    local t0=$SECONDS
    until "$@" >/dev/null 2>&1; do
        (( SECONDS - t0 >= limit )) && die "$what did not come up within ${limit}s (logs: /var/log/slurm, $STATE)"
        sleep 0.2
    done
}

record() { echo "$1 $2" >>"$STATE/started"; }  # record NAME PIDFILE

install_packages() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    (( ${#missing[@]} == 0 )) && return 0
    command -v apt-get >/dev/null || die "apt-get not found; install ${missing[*]} by hand"
    log "installing ${missing[*]}"
    # keep the packages' postinst scripts from starting services (no systemd here)
    local policy=/usr/sbin/policy-rc.d backup=""
    if [[ -e $policy ]]; then backup=$(mktemp); cp -p "$policy" "$backup"; fi
    printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"
    local ok=1
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"$STATE/apt.log" 2>&1; then
        apt-get update -q >>"$STATE/apt.log" 2>&1 || true
        apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$STATE/apt.log" 2>&1 || ok=0
    fi
    if [[ -n $backup ]]; then mv -f "$backup" "$policy"; else rm -f "$policy"; fi
    (( ok )) || die "apt-get install ${missing[*]} failed; see $STATE/apt.log"
}

start_munge() {
    if [[ ! -s /etc/munge/munge.key ]]; then
        if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key --force
        else dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; fi
    fi
    chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge; chmod 0755 /run/munge
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi  # already running
    runuser -u munge -- /usr/sbin/munged
    record munged /run/munge/munged.pid
    wait_for 10 munged sh -c 'munge -n | unmunge'
}

start_mariadb() {
    mkdir -p /run/mysqld; chown mysql:mysql /run/mysqld
    if [[ ! -d /var/lib/mysql/mysql ]]; then
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$STATE/mariadb-install.log" 2>&1 \
            || die "mariadb-install-db failed; see $STATE/mariadb-install.log"
    fi
    if ! mariadb-admin ping >/dev/null 2>&1; then
        setsid /usr/sbin/mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid \
            --socket=/run/mysqld/mysqld.sock --skip-networking=0 --bind-address=127.0.0.1 \
            </dev/null >"$STATE/mariadb.log" 2>&1 &
        record mariadbd /run/mysqld/mysqld.pid
        wait_for 60 mariadbd mariadb-admin ping
    fi
    mariadb -u root <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL
}

write_config() {
    local host cpus_line mem_mb free_mb
    host=$(hostname -s)
    # the node as slurmd sees it, with RealMemory below what is free now
    cpus_line=$(slurmd -C | head -1 | sed -E 's/ RealMemory=[0-9]+//; s/^NodeName=[^ ]+ //')
    free_mb=$(awk '/MemAvailable/ {print int($2 / 1024)}' /proc/meminfo)
    mem_mb=$(( free_mb * 8 / 10 ))
    mkdir -p "$CONF" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
    cat >"$CONF/slurm.conf" <<CONFEOF
# written by vit16 scripts/local_slurm.sh: a single-node cluster for tests
ClusterName=vit16local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=sched_interval=1
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
JobRequeue=1
KillWait=5
MinJobAge=300
InactiveLimit=0
Waittime=0
GresTypes=gpu
NodeName=$host $cpus_line RealMemory=$mem_mb Gres=gpu:$FAKE_GPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONFEOF
    # count-only GPUs (no devices behind them): jobs that ask for GPUs, like the
    # multi-node tables, are accepted and scheduled by shape; none runs CUDA here
    # slurmd wants character devices: each fake GPU is a node with /dev/null's numbers
    mkdir -p "$STATE/gpus"; rm -f "$STATE"/gpus/gpu*
    for ((i = 0; i < FAKE_GPUS; i++)); do mknod "$STATE/gpus/gpu$i" c 1 3; done
    echo "NodeName=$host Name=gpu File=$STATE/gpus/gpu[0-$((FAKE_GPUS - 1))]" >"$CONF/gres.conf"
    cat >"$CONF/slurmdbd.conf" <<CONFEOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
CONFEOF
    chmod 0600 "$CONF/slurmdbd.conf"
}

start() {
    if slurm_up; then log "a Slurm controller is already reachable (sinfo works); nothing to do"; exit 0; fi
    [[ $(id -u) == 0 ]] || die "must run as root (it installs packages and starts daemons)"
    local t0=$SECONDS
    mkdir -p "$STATE"; : >"$STATE/started"
    install_packages
    local t_install=$((SECONDS - t0))
    start_munge
    start_mariadb
    write_config
    slurmdbd; record slurmdbd /run/slurm/slurmdbd.pid
    wait_for 30 slurmdbd sacctmgr -n list cluster
    sacctmgr -i add cluster vit16local >/dev/null 2>&1 || true
    slurmctld; record slurmctld /run/slurm/slurmctld.pid
    wait_for 30 slurmctld sinfo
    slurmd; record slurmd /run/slurm/slurmd.pid
    sleep 1  # a drain saved by an earlier, broken configuration would keep the node out
    scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
    wait_for 30 "node $(hostname -s)" sh -c "sinfo -h -N -o %T | grep -Eq '^(idle|mixed|allocated)'"
    log "up in $((SECONDS - t0))s (install ${t_install}s): partition $PARTITION, $(sinfo -h -o '%D node(s), %c CPUs, %m MB')"
}

stop() {
    [[ -f $STATE/started ]] || { log "nothing to stop (no $STATE/started)"; return 0; }
    local lines name pidfile pid
    mapfile -t lines < <(tac "$STATE/started")  # reverse start order
    for line in "${lines[@]}"; do
        read -r name pidfile <<<"$line"
        pid=$(cat "$pidfile" 2>/dev/null || true)
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
            log "stopped $name ($pid)"
        fi
    done
    rm -f "$STATE/started"
}

status() {
    sinfo 2>&1 || true
    [[ -f $STATE/started ]] && cat "$STATE/started"
    return 0
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
