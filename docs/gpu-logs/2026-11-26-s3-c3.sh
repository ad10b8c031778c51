#!/usr/bin/env bash
# Session 3, command C3 (2 GPUs): checks, start-up A/B, faults on NCCL, kernel/bucket A/B at EP 2, calibration.
export NCCL_NVLS_ENABLE=0
o=$OUT/c3; mkdir -p $o
T0=$(date +%s)
st() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
t() { local name=$1; shift; local s=$EPOCHREALTIME; timeout 150 "$@" >$o/$name.log 2>&1; local rc=$?; st "$name rc=$rc $(awk "BEGIN{print $EPOCHREALTIME - $s}")s"; grep -E "check|^--- FAIL|^ok|^PASS|^FAIL|rror" $o/$name.log | tail -3; }
nvidia-smi -L
t gpuops bin/gpuops.test -test.v -test.run 'Expert|Graph|Choose'
t nccl bin/nccl.test -test.v
t chk-ds-dpep bin/launch -np 2 --dp 2 --ep bin/worker run --backend nccl --preset deepseek-v3 --tokens-per-rank 3,300 --check
t chk-ds-graph bin/launch -np 2 --dp 2 --ep bin/worker run --backend nccl --preset deepseek-v3 --tokens 16,128 --check
t chk-mix-tp bin/launch -np 2 --tp 2 bin/worker run --backend nccl --preset mixtral --tokens 5,300 --check
t chk-mix-ep bin/launch -np 2 --dp 2 --ep bin/worker run --backend nccl --preset mixtral --tokens-per-rank 16,40 --check
t chk-qwen bin/launch -np 2 --dp 2 --ep bin/worker run --backend nccl --preset qwen3-30b-a3b --tokens 1,16,128,1024,4096 --check
t chk-v2lite-pcp bin/launch -np 2 --pcp 2 bin/worker run --backend nccl --preset deepseek-v2-lite --tokens 1,9,300 --chunk 256 --check
t chk-tinyds-tp bin/launch -np 2 --tp 2 bin/worker run --backend nccl --preset tiny-deepseek --tokens 1,9 --chunk 1 --check
for rep in 1 2 3; do for mode in default connect0; do
  case $mode in default) e=();; connect0) e=(NCCL_RUNTIME_CONNECT=0);; esac
  s=$(date +%s.%N)
  env "${e[@]}" bin/launch -np 2 bin/worker --backend nccl --log-level info collectives -b 8K -e 8K -f 2 --ops all_reduce -d bf16 -n 1 -w 0 --json $o/su-$mode-$rep.json >$o/su-$mode-$rep.log 2>&1; rc=$?
  e2=$(date +%s.%N); python3 -c "import json;d=json.load(open('$o/su-$mode-$rep.json'));print('startup $mode $rep rc=$rc ready-start=%.3f total=%.3f first_us=%.1f'%(d[0]['ready_unix_s']-$s,$e2-$s,d[0]['results'][0]['time_us']))" | tee -a $o/startup.txt
done; done
st faults; BACKEND=nccl SETTLE_S=12 timeout 220 bench/faults.sh 2 > $o/faults.md 2>$o/faults.err; cat $o/faults.md; tail -3 $o/faults.err
nvidia-smi --query-compute-apps=pid,name --format=csv > $o/after-faults-apps.txt; cat $o/after-faults-apps.txt
r() { local name=$1; shift; local e=(); while [ "$1" != -- ]; do e+=("$1"); shift; done; shift
  env "${e[@]}" timeout 120 bin/launch -np 2 --dp 2 --ep bin/worker run --backend nccl --match-ref --iters 20 --warmup 3 --phases --json $o/$name.json "$@" > $o/$name.log 2>&1
  echo "$(st "$name rc=$?") $(grep -E "^\[0\] +[0-9]+ " $o/$name.log | awk '{printf "%s:%s ", $2, $4}')"; }
r ds-default -- --preset deepseek-v3 --tokens 1,16,128,4096
r ds-gemv MOERUN_EXPERT_GEMM=gemv -- --preset deepseek-v3 --tokens 1,16,128
r ds-cublas MOERUN_EXPERT_GEMM=cublas -- --preset deepseek-v3 --tokens 1,16,128
r ds-nobucket MOERUN_BUCKETS=0 -- --preset deepseek-v3 --tokens 4096
r mx-cublas MOERUN_EXPERT_GEMM=cublas -- --preset mixtral --tokens 1,16,128
r mx-default -- --preset mixtral --tokens 1,16,128
bin/launch --show-topology --json > $o/host-topology.json 2>/dev/null
t calsweep bin/launch -np 2 bin/worker --backend nccl collectives -b 1M -e 1G -f 2 -d bf16 -n 60 -w 5 --json $o/calsweep.json
t calibrate bin/layouts --calibrate $o/calsweep.json --min-bytes 1M
head -3 $o/calibrate.log
t predict-host bin/launch -np 2 --dp 2 --ep bin/worker run --backend nccl --preset deepseek-v3 --tokens 16,128,4096 --topology-file $o/host-topology.json
grep -E "predicted|^\[0\] +[0-9]+ " $o/predict-host.log
st done
cd $OUT && tar czf c3.tgz c3
