#!/usr/bin/env bash
# Stop the daemons started by slurm_up.sh, by the PIDs in their pid files (never by name),
# then remove the state directory and the /etc/slurm symlink.
BASE=${BASE:?set BASE to the directory given to slurm_up.sh}
stop_pid() {  # $1 = name, $2 = pidfile
  local pf=$2 pid
  [ -f "$pf" ] || return 0
  pid=$(cat "$pf")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  t_start=$(( $(date +%s%N)/1000000 )); kill -TERM "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || { echo "stopped $1 ($pid) after $(( $(date +%s%N)/1000000 - t_start ))ms"; return 0; }; sleep 0.1; done
  echo "$1 ($pid) did not stop in 10s, sending KILL"; kill -KILL "$pid" 2>/dev/null
}
# cancel any leftover jobs first so slurmd has no job processes
if [ -f "$BASE/etc/slurm.conf" ] && [ -f "$BASE/run/slurmctld.pid" ]; then
  export SLURM_CONF="$BASE/etc/slurm.conf"
  timeout 10 scancel --user=root 2>/dev/null || true
  for _ in $(seq 1 100); do   # wait (<=10 s) until no job is left running
    [ -z "$(timeout 5 squeue -h -t R,CG,PD -o %i 2>/dev/null)" ] && break; sleep 0.1
  done
fi
stop_pid slurmd    "$BASE/run/slurmd.pid"
stop_pid slurmctld "$BASE/run/slurmctld.pid"
stop_pid munged    "$BASE/run/munged.pid"
# remove the default-path symlink only if it is ours
if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$BASE/etc/slurm.conf" ]; then
  rm -f /etc/slurm/slurm.conf
fi
[ "${KEEP_STATE:-0}" = 1 ] || rm -rf "$BASE"
