#!/usr/bin/env bash
# The CPU backend beside Open MPI on the same machine: all-gather, reduce-scatter and
# all-reduce of float32 at one size on N local ranks, ROUNDS times each, alternating.
# Needs Debian's openmpi-bin and libopenmpi-dev (apt-get install openmpi-bin libopenmpi-dev).
# Usage: bench/cpu-vs-openmpi.sh [NP=4] [SIZE=64M] [ROUNDS=3]; writes bin/bench-cpu/*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
np=${1:-4} size=${2:-64M} rounds=${3:-3}
bytes=$(python3 -c "import sys;s=sys.argv[1].upper();m={'K':1<<10,'M':1<<20,'G':1<<30};print(int(s[:-1])*m[s[-1]] if s[-1] in m else int(s))" "$size")
command -v mpicc >/dev/null || { echo "bench/cpu-vs-openmpi.sh: mpicc not found (apt-get install openmpi-bin libopenmpi-dev)" >&2; exit 1; }
make -s build
out=bin/bench-cpu
mkdir -p "$out"
mpicc -O2 -o "$out/ompi-collbench" bench/openmpi/collbench.c
echo "# $np ranks, $bytes bytes, float32, $(nproc) cores, $(date -u +%FT%TZ)"
for r in $(seq "$rounds"); do
  echo "## round $r: moerun tcp backend"
  bin/launch -np "$np" bin/worker collectives -b "$size" -e "$size" -n 10 -w 2 \
    --ops all_gather,reduce_scatter,all_reduce --json "$out/moerun-$r.json" | grep -v '^\[0\] #'
  echo "## round $r: Open MPI $(mpirun --version | head -1 | awk '{print $NF}')"
  mpirun --allow-run-as-root --oversubscribe -np "$np" "$out/ompi-collbench" "$bytes" 10 | tee "$out/ompi-$r.txt"
done
