#!/usr/bin/env bash
# moerun beside PyTorch on one GPU host: start-up, collectives and the MoE layer over NP
# ranks (one a GPU, EP = DP = NP), then bin/benchreport's comparison (comparison.md,
# comparison.json, PNG plots).
#
# Runs on the GPU host, from any folder, with bin/ (make build on a machine with Go) and
# .gpu/bench (mkdir -p .gpu && cp -r ../shared/bench .gpu/) carried along; needs no Go.
# Usage: bench/gpu.sh [OUTDIR]   (default: $OUT if set, else ./bench-out)
# Environment: NP (ranks, default 2: at most the host's GPUs), PRESETS (default "mixtral
# qwen3-30b-a3b deepseek-v3"), TOKENS (default
# 1,16,128,1024,4096), COLL_FLAGS (our collectives sweep, default: torch's sizes and type),
# BUDGET_S (seconds for the whole script, default 570: every step's timeout is cut to fit),
# RUN_FLAGS (more flags for our MoE runs, e.g. "--graph off").
# Every step prints one line with the elapsed seconds and logs to OUTDIR/STEP.log; a failed
# step prints its log's tail and the script goes on, then exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

me=bench/gpu.sh
outdir=${1:-${OUT:-./bench-out}}
np=${NP:-2}
if ! [[ $np =~ ^[1-9][0-9]*$ ]]; then
  echo "$me: NP=$np: expected a number of ranks (one a GPU)" >&2
  exit 1
fi
presets=${PRESETS:-mixtral qwen3-30b-a3b deepseek-v3}
tokens=${TOKENS:-1,16,128,1024,4096}
# coll_bench.py's sizes (8 KiB … 1 GiB) are all powers of two: -f 2 from 8K to 1G has each.
coll_flags=${COLL_FLAGS:--b 8K -e 1G -f 2 -d bf16 -n 50 -w 5}
budget=${BUDGET_S:-570}

missing=()
for b in bin/launch bin/worker bin/benchreport; do
  [[ -x $b ]] || missing+=("$b")
done
if ((${#missing[@]})); then
  echo "$me: ${missing[*]} missing: run 'make build' on a machine with Go and carry bin/ to this host" >&2
  exit 1
fi
if [[ ! -f .gpu/bench/moe_ref.py || ! -f .gpu/bench/coll_bench.py ]]; then
  echo "$me: .gpu/bench/moe_ref.py missing: run 'mkdir -p .gpu && cp -r ../shared/bench .gpu/' before carrying the tree here" >&2
  exit 1
fi
# The hosts need NVLink SHARP off for every worker (docs: GPU.md); never unset it.
if [[ -z ${NCCL_NVLS_ENABLE+x} ]]; then
  export NCCL_NVLS_ENABLE=0
elif [[ $NCCL_NVLS_ENABLE != 0 ]]; then
  echo "$me: NCCL_NVLS_ENABLE=$NCCL_NVLS_ENABLE: expected 0 on these hosts" >&2
  exit 1
fi
mkdir -p "$outdir"
# A file left by an earlier run would stand in for one this run fails to write.
rm -f "$outdir"/{host.txt,startup-*,collectives.json,coll_bench.txt,moe-*.json,moe_ref.txt,comparison.*,*.png,*.log}

# now_us: the time in microseconds (bash 5; the decimal mark may be a comma).
now_us() { echo "${EPOCHREALTIME//[!0-9]/}"; }
t0=$(now_us)
failed=()

# secs FROM_US: seconds since FROM_US with one decimal.
secs() {
  local d=$(( $(now_us) - $1 ))
  printf '%d.%d' $((d / 1000000)) $((d % 1000000 / 100000))
}

# step NAME LIMIT_S STDOUT_FILE CMD...: run CMD under timeout (LIMIT_S, cut to what is left
# of the budget but for the last 20 s, which are benchreport's), stdout to STDOUT_FILE (or,
# when it is "", with stderr to NAME.log). A failure is recorded, never fatal.
step() {
  local name=$1 limit=$2 stdout=$3
  shift 3
  local log=$outdir/$name.log start
  start=$(now_us)
  local left=$(( budget - (start - t0) / 1000000 - 20 ))
  if [[ $name != benchreport ]]; then
    if ((left < 10)); then
      printf '[%7ss] %-22s SKIPPED: the %ss budget is spent\n' "$(secs "$t0")" "$name" "$budget"
      failed+=("$name")
      return 0
    fi
    ((limit <= left)) || limit=$left
  fi
  local rc=0
  if [[ -n $stdout ]]; then
    timeout -k 10 "$limit" "$@" >"$stdout" 2>"$log" || rc=$?
  else
    timeout -k 10 "$limit" "$@" >"$log" 2>&1 || rc=$?
  fi
  if ((rc == 0)); then
    printf '[%7ss] %-22s ok (%ss)\n' "$(secs "$t0")" "$name" "$(secs "$start")"
    return 0
  fi
  local why="exit status $rc"
  ((rc == 124 || rc == 137)) && why="timed out after ${limit}s"
  printf '[%7ss] %-22s FAILED (%s, %ss); last lines of %s:\n' "$(secs "$t0")" "$name" "$why" "$(secs "$start")" "$log"
  tail -n 15 "$log" | sed 's/^/    /'
  failed+=("$name")
}

# 1. The host.
step host 30 "$outdir/host.txt" bash -c 'nvidia-smi -L && echo && nvidia-smi topo -m && echo && echo "NCCL_NVLS_ENABLE=$NCCL_NVLS_ENABLE"'

# 2. Start-up: from the launch to ready communicators (ours: comms_ready_unix_s and
# ready_unix_s of a one-row sweep; torchrun: READY after its first all_reduce).
# benchreport does the arithmetic; startup-moerun.log keeps each rank's steps (info level:
# CUDA context, NCCL init, splits, first collective).
# Each launcher runs once untimed first: the first GPU job on a fresh machine reads its
# libraries from a cold file cache (ours measured 1.49 s there, 1.09-1.16 s after).
step startup-warmup 120 "" bash -c 'bin/launch -np "$1" bin/worker --backend nccl collectives -b 8K -e 8K --ops all_reduce -n 1 -w 0 >/dev/null &&
  python3 -m torch.distributed.run --nproc-per-node "$1" bench/torch_startup.py >/dev/null' _ "$np"
date +%s.%N >"$outdir/startup-moerun-start.txt"
step startup-moerun 60 "" bin/launch -np $np bin/worker --backend nccl --log-level info collectives \
  -b 8K -e 8K -f 2 --ops all_reduce -d bf16 -n 1 -w 0 --json "$outdir/startup-moerun.json"
date +%s.%N >"$outdir/startup-moerun-end.txt"
date +%s.%N >"$outdir/startup-torch-start.txt"
step startup-torch 90 "$outdir/startup-torch.txt" python3 -m torch.distributed.run --nproc-per-node $np bench/torch_startup.py

# 3, 4. Collectives: ours, then torch.distributed's.
# shellcheck disable=SC2086 # coll_flags is a list of flags
step collectives 150 "" bin/launch -np $np bin/worker --backend nccl collectives $coll_flags --json "$outdir/collectives.json"
step coll_bench 150 "$outdir/coll_bench.txt" python3 -m torch.distributed.run --nproc-per-node $np .gpu/bench/coll_bench.py

# 5. Our MoE layer, laid out as moe_ref.py's (EP = DP = 2), and one chunked row per preset.
# The chunked row is compared with the unchunked one at 4096 tokens per rank.
for p in $presets; do
  step "moe-$p" 150 "" bin/launch -np $np --dp $np --ep bin/worker --backend nccl run --preset "$p" --match-ref \
    --tokens "$tokens" --iters 20 --warmup 3 ${RUN_FLAGS:-} --json "$outdir/moe-$p.json"
  if [[ ,$tokens, == *,4096,* ]]; then
    step "moe-$p-chunk256" 90 "" bin/launch -np $np --dp $np --ep bin/worker --backend nccl run --preset "$p" --match-ref \
      --chunk 256 --tokens 4096 --iters 20 --warmup 3 ${RUN_FLAGS:-} --json "$outdir/moe-$p-chunk256.json"
  fi
done

# 6. PyTorch's MoE layer on the same presets and token counts.
step moe_ref 240 "$outdir/moe_ref.txt" python3 -m torch.distributed.run --nproc-per-node $np .gpu/bench/moe_ref.py \
  --configs "$(echo $presets | tr ' ' ',')" --tokens "$tokens"

# 7. The comparison (also printed).
step benchreport 60 "" bin/benchreport --results "$outdir"
[[ " ${failed[*]} " == *" benchreport "* ]] || cat "$outdir/benchreport.log"

if ((${#failed[@]})); then
  echo "$me: ${#failed[@]} step(s) failed: ${failed[*]} (logs in $outdir)" >&2
  exit 1
fi
echo "$me: done in $(secs "$t0")s; results in $outdir"
