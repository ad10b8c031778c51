#!/usr/bin/env bash
# Faults and the time to a clean exit, on the CPU backend (docs/RELIABILITY.md).
# Usage: bench/faults.sh [NP] [--json]   (needs bin/launch and bin/worker: make build)
# BACKEND=nccl runs the same on a GPU host (one rank per GPU: NP ≤ GPUs), with a long
# `worker run` of the mixtral layer as the work, and checks that no process is left on
# the GPUs afterwards (nvidia-smi).
# Each case starts a long collectives sweep of NP ranks, injects the fault once the ranks
# are running, and measures from the fault to the moment the launcher has exited and no
# worker of the job is left.
set -euo pipefail
cd "$(dirname "$0")/.."
np=${1:-8}
json=${2:-}
now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
backend=${BACKEND:-tcp}
long=(bin/worker --backend "$backend" collectives -b 16M -e 16M -n 100000 -w 0 --ops all_reduce)
if [ "$backend" = nccl ]; then
  export NCCL_NVLS_ENABLE=0
  long=(bin/worker --backend nccl run --preset mixtral --tokens 1024 --iters 100000 --warmup 0 --graph off)
fi
workers_of() { pgrep -P "$1" || true; }
alive() { [ -e /proc/$1 ] && [ "$(awk '{print $3}' /proc/$1/stat 2>/dev/null)" != Z ]; }
gone() { # gone LAUNCHER WORKER…: wait until none is alive (zombies are not); print the time
  local left=1
  while [ $left = 1 ]; do
    left=0
    for p in "$@"; do alive $p && left=1; done
    [ $left = 1 ] && sleep 0.002
  done
  now
}
start_job() { # start_job ARGS…: the launcher's pid in $L, its workers in $W (once all are up)
  "$@" >/tmp/faults.$$.log 2>&1 &
  L=$!
  for _ in $(seq 500); do W=($(workers_of $L)); [ ${#W[@]} -ge $np ] && break; sleep 0.01; done
  sleep "${SETTLE_S:-1}" # let them join and start the work (GPU: weights and warm-up take longer)
}
rows=()
# gpu_free: on the nccl backend, wait until no process holds the GPUs (nvidia-smi), at most
# 10 s; print the time, or "held" when some still do.
gpu_free() {
  [ "$backend" = nccl ] || return 0
  local deadline=$(( $(now) + 10000000000 ))
  while [ "$(now)" -lt $deadline ]; do
    [ -z "$(nvidia-smi --query-compute-apps=pid --format=csv,noheader)" ] && { now; return; }
    sleep 0.01
  done
  echo held
}
# ms_gpu FROM: the time from FROM until the GPUs were free, as " (GPUs free after N ms)".
ms_gpu() {
  [ "$backend" = nccl ] || return 0
  local f; f=$(gpu_free)
  if [ "$f" = held ]; then echo " (GPUs still held 10 s later)"; else echo " (GPUs free after $(ms $1 $f) ms)"; fi
}
last=$((np - 1)) # the rank every fault hits (pgrep lists the workers in spawn order)
# row FAULT WHAT MS EXIT: one row of the table, printed at once with what the launcher
# said about the fault (its own "launch:" lines, the first six).
row() {
  rows+=("$1|$2|$3|$4"); echo "faults.sh: $1: $3 ms, exit $4" >&2
  grep -E '^launch:' /tmp/faults.$$.log 2>/dev/null | head -6 | sed 's/^/faults.sh:     /' >&2 || true
}

start_job bin/launch -np $np "${long[@]}"
t0=$(now); kill -KILL ${W[$last]}; wait $L && code=0 || code=$?; t1=$(gone $L "${W[@]}")
row "a worker is killed (SIGKILL to the last rank's process)" "launcher reports that rank first, exits $code" "$(ms $t0 $t1)$(ms_gpu $t0)" "$code"

start_job env MOERUN_TEST_EXIT=$last:3:7 bin/launch -np $np "${long[@]}"
wait $L && code=0 || code=$?
gpu_free >/dev/null
row "a worker exits with status 7 (MOERUN_TEST_EXIT=$last:3:7)" "launcher exits $code with rank $last's code" "-" "$code"

start_job bin/launch -np $np --timeout 3s "${long[@]}"
t0=$(now); kill -STOP ${W[$last]}; wait $L && code=0 || code=$?; t1=$(gone $L "${W[@]}")
row "a worker is stopped (SIGSTOP), --timeout 3s" "hang diagnosed (no heartbeat), job stopped, exit $code" "$(ms $t0 $t1)$(ms_gpu $t0)" "$code"

t0=$(now)
start_job env MOERUN_TEST_HANG=$last:4 bin/launch -np $np --timeout 3s "${long[@]}"
wait $L && code=0 || code=$?; t1=$(gone $L "${W[@]}")
row "a worker never enters collective #4, --timeout 3s" "who waits in #4 and who never entered it, exit $code" "$(ms $t0 $t1) (from the launch: start-up + 3 s)$(ms_gpu $t0)" "$code"

start_job bin/launch -np $np "${long[@]}"
t0=$(now); kill -INT $L; wait $L && code=0 || code=$?; t1=$(gone $L "${W[@]}")
row "SIGINT to the launcher" "forwarded as SIGTERM, exit $code" "$(ms $t0 $t1)$(ms_gpu $t0)" "$code"

start_job bin/launch -np $np "${long[@]}"
t0=$(now); kill -KILL $L; wait $L 2>/dev/null || true; t1=$(gone $L "${W[@]}")
row "SIGKILL to the launcher" "workers die with it (parent-death signal)" "$(ms $t0 $t1)$(ms_gpu $t0)" "137"
rm -f /tmp/faults.$$.log
if [ "$backend" = nccl ]; then
  left=$(nvidia-smi --query-compute-apps=pid --format=csv,noheader | wc -l)
  row "after every case: processes on the GPUs (nvidia-smi)" "$left left" "-" "-"
fi

if [ "$json" = --json ]; then
  printf '['; sep=
  for r in "${rows[@]}"; do IFS='|' read -r f w m c <<<"$r"; printf '%s{"np":%d,"fault":"%s","what happens":"%s","ms_to_clean_exit":"%s","exit":%s}' "$sep" $np "$f" "$w" "$m" "$c"; sep=,; done
  echo ']'
else
  echo "| fault (np $np, $backend backend) | what happens | ms to clean exit | exit |"
  echo "|---|---|---:|---:|"
  for r in "${rows[@]}"; do IFS='|' read -r f w m c <<<"$r"; echo "| $f | $w | $m | $c |"; done
fi
