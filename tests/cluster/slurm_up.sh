#!/usr/bin/env bash
# Bring up a single-node SLURM cluster on loopback for the cluster tests; all state under $BASE.
#   BASE=$(mktemp -d) bash slurm_up.sh          (then: BASE=... bash slurm_down.sh)
# Needs (Debian 12): apt-get install -y slurm-wlm munge. No slurmdbd: run Snakemake with
# --slurm-status-command squeue (its default, sacct, needs accounting and hangs without it).
# Writes one thing outside $BASE: the symlink /etc/slurm/slurm.conf -> $BASE/etc/slurm.conf
# (needed because snakemake-executor-plugin-slurm-jobstep strips SLURM_CONF
#  from the environment of the inner `srun`). slurm_down.sh removes it.
set -euo pipefail
BASE=${BASE:?set BASE to an empty temporary directory}
PORT_BASE=${PORT_BASE:-16810}       # slurmctld = +7, slurmd = +8
CTLD_PORT=$((PORT_BASE+7)); SLURMD_PORT=$((PORT_BASE+8))
mkdir -p "$BASE"/{etc,run,log,spool/ctld,spool/d,munge}
chmod 700 "$BASE/munge"
t0=$(date +%s%N)
ts() { local ms=$(( ($(date +%s%N) - t0) / 1000000 )); printf '[%4d ms] %s\n' "$ms" "$*"; }

# ---------------------------------------------------------------- munge
if [ ! -f "$BASE/munge/munge.key" ]; then
  dd if=/dev/urandom of="$BASE/munge/munge.key" bs=1 count=1024 status=none
  chmod 400 "$BASE/munge/munge.key"
fi
munged --force --key-file="$BASE/munge/munge.key" --socket="$BASE/run/munge.socket" \
  --pid-file="$BASE/run/munged.pid" --log-file="$BASE/log/munged.log" \
  --seed-file="$BASE/munge/munged.seed"
ts "munged up (pid $(cat "$BASE/run/munged.pid"))"

# ---------------------------------------------------------------- slurm.conf
MEM_MB=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 - 1024 ))   # a bit below total
CPUS=$(nproc)
cat > "$BASE/etc/slurm.conf" <<EOF
ClusterName=citest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$BASE/run/munge.socket
StateSaveLocation=$BASE/spool/ctld
SlurmdSpoolDir=$BASE/spool/d
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# finished jobs stay visible to squeue for 5 min (plugin's squeue mode needs >= 3x init interval)
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
Waittime=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
if [ "${NO_ETC_LINK:-0}" = 1 ]; then
  # alternative: leave /etc alone; an `srun` shim first on PATH re-adds SLURM_CONF
  mkdir -p "$BASE/bin"
  printf '#!/bin/sh\nexport SLURM_CONF=%s\nexec /usr/bin/srun "$@"\n' "$BASE/etc/slurm.conf" > "$BASE/bin/srun"
  chmod +x "$BASE/bin/srun"
  echo "NOTE: export PATH=$BASE/bin:\$PATH SLURM_CONF=$BASE/etc/slurm.conf"
else
  mkdir -p /etc/slurm
  if [ -e /etc/slurm/slurm.conf ] && [ ! -L /etc/slurm/slurm.conf ]; then
    echo "refusing: a real /etc/slurm/slurm.conf exists" >&2; exit 1
  fi
  ln -sfn "$BASE/etc/slurm.conf" /etc/slurm/slurm.conf
fi
export SLURM_CONF="$BASE/etc/slurm.conf"

slurmctld -i     # daemonises; -i: ignore missing state files
slurmd -N localhost
deadline=$((SECONDS+30))
until [ "$(timeout 5 sinfo -h -n localhost -o %t 2>/dev/null)" = idle ]; do
  [ $SECONDS -lt $deadline ] || { echo "node not idle after 30s" >&2; exit 1; }; sleep 0.1
done
ts "slurmctld (pid $(cat "$BASE/run/slurmctld.pid")) + slurmd (pid $(cat "$BASE/run/slurmd.pid")) up; node $(sinfo -h -n localhost -o %t)"
# smoke test: a real job step through slurmd
timeout 30 srun -N1 -n1 -t 1 true || { echo "srun smoke test failed" >&2; exit 1; }
ts "srun smoke test ok"
