#!/usr/bin/env bash
# The GPU path's correctness on one host in one command: `worker run --check` over every
# layout of NP ranks (uneven tokens per DP rank, chunk sizes 1 and 256, and on GPUs chunks
# of 256 large enough to run overlapped where the layout can) for each preset,
# then naive dispatch + combine time at 128 tokens per rank with EP = DP = NP (in the
# profile pass, in the timed passes, alone), beside the cost model's prediction of that
# forward pass from this host's topology (nccl backend).
#
# Usage: bench/validate.sh [OUTDIR]   (default: $OUT/validate if OUT is set, else ./validate-out)
# Environment: NP (ranks, one a GPU; default: the GPUs nvidia-smi lists, else 2), BACKEND
# (default nccl; tcp runs the same on the CPU), PRESETS (default "mixtral qwen3-30b-a3b
# deepseek-v3"), BUDGET_S (seconds for the whole script, default 560: each run's timeout is
# cut to fit).
# Prints a line per run as it ends (layout, preset, tokens, chunk, result, max abs error,
# seconds) and writes the same to OUTDIR/summary.md and, as JSON, OUTDIR/summary.json; each
# run's output is in OUTDIR/<n>.log. Exits 1 if any run failed.
set -uo pipefail
cd "$(dirname "$0")/.."
me=bench/validate.sh
outdir=${1:-${OUT:+$OUT/validate}}
outdir=${outdir:-./validate-out}
backend=${BACKEND:-nccl}
presets=${PRESETS:-mixtral qwen3-30b-a3b deepseek-v3}
budget=${BUDGET_S:-560}
np=${NP:-$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)}
[[ $np =~ ^[1-9][0-9]*$ ]] || np=2
for b in bin/launch bin/worker; do
  [[ -x $b ]] || { echo "$me: $b missing: run 'make build' on a machine with Go and carry bin/ here" >&2; exit 1; }
done
[[ $backend == nccl ]] && export NCCL_NVLS_ENABLE=0 # the hosts need NVLink SHARP off (GPU.md)
mkdir -p "$outdir"
rm -f "$outdir"/*.log "$outdir"/summary.md "$outdir"/summary.json

# Layouts by world size: "flags|DP ranks" (the issue's list at 4 and 8, every kind at 2).
case $np in
  1) layouts=("|1") ;;
  2) layouts=("--tp 2|1" "--dp 2 --ep|2" "--dp 2|2" "--pcp 2|1") ;;
  4) layouts=("--tp 2 --dp 2 --ep|2" "--dp 4 --ep|4" "--tp 4|1" "--tp 2 --pcp 2|1") ;;
  8) layouts=("--tp 2 --dp 4 --ep|4" "--dp 8 --ep|8" "--tp 8|1" "--tp 2 --pcp 2 --dp 2|2") ;;
  *) layouts=("--dp $np --ep|$np" "--tp $np|1") ;;
esac

# big DP: prefill-sized counts per DP rank, still uneven, whose chunks of 256 dispatch the
# 512 rows or more from which a GPU overlaps them (worker run --overlap's default).
big() {
  local dp=$1 out="" i sizes=(1024 333 700 1024)
  for ((i = 0; i < dp; i++)); do out+="${out:+,}${sizes[i % 4]}"; done
  echo "$out"
}

# uneven DP: one count per DP rank, no two alike, a decode-sized and a prefill-sized rank;
# one DP rank gets the prefill size (chunk 1 runs every token through the decode path).
uneven() {
  local dp=$1 out="" i
  ((dp == 1)) && { echo 300; return; }
  local sizes=(3 300 17 129 1 64 250 9)
  for ((i = 0; i < dp; i++)); do out+="${out:+,}${sizes[i % 8]}"; done
  echo "$out"
}

now_us() { echo "${EPOCHREALTIME//[!0-9]/}"; }
t0=$(now_us)
n=0 failed=0
echo "| layout | preset | tokens per DP rank | chunk | result | max abs err | s |" >"$outdir/summary.md"
echo "|---|---|---|---:|---|---:|---:|" >>"$outdir/summary.md"
json=()
for l in "${layouts[@]}"; do
  flags=${l%|*} dp=${l#*|}
  runs="256 1"
  # Overlapped chunks need a dispatch group (DP or EP), no PCP, and a GPU.
  [[ $backend == nccl && $flags != *--pcp* && ($dp -gt 1 || $flags == *--ep*) ]] && runs+=" 256o"
  for p in $presets; do
    for run in $runs; do
      chunk=${run%o} tokens=$(uneven "$dp") overlap=false
      [[ $run == *o ]] && tokens=$(big "$dp") overlap=true
      n=$((n + 1))
      left=$((budget - ($(now_us) - t0) / 1000000))
      log="$outdir/$n.log"
      start=$(now_us)
      if ((left < 15)); then
        res="SKIPPED (budget spent)" err="" rc=1
      else
        # shellcheck disable=SC2086 # flags is a list of flags
        timeout -k 10 $((left < 300 ? left : 300)) bin/launch -np "$np" $flags bin/worker --backend "$backend" run \
          --preset "$p" --tokens-per-rank "$tokens" --chunk "$chunk" --iters 1 --warmup 0 --check >"$log" 2>&1
        rc=$?
        err=$(grep -o 'max abs err [0-9.e-]*' "$log" | head -1 | awk '{print $4}')
        if ((rc != 0)) || ! grep -q 'check OK' "$log"; then
          res="FAILED (exit $rc, see $n.log)"
        elif $overlap && ! grep -Eq '^\[0\] +[0-9,]+ +[0-9]+\* ' "$log"; then
          res="FAILED (not overlapped, see $n.log)"
        else
          res=OK
        fi
      fi
      secs=$(( ($(now_us) - start) / 100000 ))
      secs="$((secs / 10)).$((secs % 10))"
      [[ $res == OK ]] || failed=$((failed + 1))
      line="| ${flags:-(one rank)} | $p | $tokens | $chunk$($overlap && echo ", overlapped") | $res | ${err:--} | $secs |"
      echo "$line" | tee -a "$outdir/summary.md"
      json+=("{\"run\":$n,\"np\":$np,\"layout\":\"${flags}\",\"preset\":\"$p\",\"tokens_per_rank\":\"$tokens\",\"chunk\":$chunk,\"overlapped\":$overlap,\"ok\":$([[ $res == OK ]] && echo true || echo false),\"max_abs_err\":${err:-null},\"seconds\":$secs}")
    done
  done
done

# Naive dispatch + combine at 128 tokens per rank, EP = DP = NP: rank 0's profile pass
# by collective (its combine also waits for the slowest rank's experts), the collectives'
# time inside the timed passes (median, slowest rank: the number the target is on) and the
# same collectives replayed alone after a barrier; on GPUs also the forward pass measured
# over the cost model's prediction (--topology-file: this host as bin/launch sees it).
# Issue 8's target: deepseek-v3 at EP 8 within 0.100 ms.
echo >>"$outdir/summary.md"
echo "| preset (EP = DP = $np, 128 tokens per rank) | dispatch all-gather-v ms (profile pass) | combine reduce-scatter-v ms (profile pass) | dispatch + combine ms (timed passes) | alone ms | forward measured/predicted | target |" >>"$outdir/summary.md"
echo "|---|---:|---:|---:|---:|---:|---|" >>"$outdir/summary.md"
predict=()
if [[ $backend == nccl ]] && bin/launch --show-topology --json >"$outdir/topology.json" 2>"$outdir/topology.log"; then
  predict=(--topology-file "$outdir/topology.json")
fi
# ms3 V: V with three decimals, or "-" as it is.
ms3() { [[ $1 == - ]] && echo - || awk -v v="$1" 'BEGIN {printf "%.3f", v}'; }
# field NAME FILE: the first number of "NAME" in a JSON file, or "-".
field() { grep -o "\"$1\": *[0-9.eE+-]*" "$2" 2>/dev/null | head -1 | sed 's/.*: *//' | grep . || echo -; }
if ((np > 1)); then
  for p in $presets; do
    log="$outdir/dispatch-$p.log" js="$outdir/dispatch-$p.json"
    rm -f "$js"
    left=$((budget - ($(now_us) - t0) / 1000000))
    ((left >= 15)) || { echo "| $p | skipped: budget spent | | | | | |" | tee -a "$outdir/summary.md"; continue; }
    timeout -k 10 $((left < 120 ? left : 120)) bin/launch -np "$np" --dp "$np" --ep bin/worker --backend "$backend" run \
      --preset "$p" --match-ref --tokens 128 --iters 20 --warmup 3 --phases --json "$js" "${predict[@]}" >"$log" 2>&1
    read -r ag rs < <(grep -m1 'phases, ms:' "$log" | awk '{for (i = 1; i < NF; i++) {if ($i == "all_gather_v") a = $(i + 1); if ($i == "reduce_scatter_v") r = $(i + 1)} print (a == "" ? "-" : a), (r == "" ? "-" : r)}')
    inpass=$(field comm_ms "$js") alone=$(field bound_comm_ms "$js")
    inpass=$(ms3 "$inpass") alone=$(ms3 "$alone")
    ratio=$(grep -m1 -o 'measured/predicted [0-9.]*' "$log" | awk '{print $2}')
    target=—
    if [[ $p == deepseek-v3 ]] && ((np >= 8)); then
      target=$(awk -v t="$inpass" 'BEGIN {if (t == "-") print "not measured"; else if (t <= 0.100) print "met (≤ 0.100 ms)"; else printf "missed by %.0f%% (≤ 0.100 ms)", 100 * (t / 0.100 - 1)}')
    fi
    echo "| $p | $ag | $rs | $inpass | $alone | ${ratio:--} | $target |" | tee -a "$outdir/summary.md"
    json+=("{\"dispatch_combine\":\"$p\",\"np\":$np,\"all_gather_v_ms\":${ag/#-/null},\"reduce_scatter_v_ms\":${rs/#-/null},\"timed_passes_ms\":${inpass/#-/null},\"alone_ms\":${alone/#-/null},\"measured_over_predicted\":${ratio:-null}}")
  done
fi
(IFS=,; echo "[${json[*]}]") >"$outdir/summary.json"
echo "$me: $((n - failed)) of $n --check runs passed on $np ranks ($backend); summary in $outdir/summary.md"
((failed == 0))
