#!/usr/bin/env bash
# Session 3, command A: validate untested code, issue 6 GPU faults, issue 7 topology + calibration, start-up A/B.
export NCCL_NVLS_ENABLE=0
o=$OUT/a; mkdir -p $o
T0=$(date +%s)
st() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
t() { local name=$1; shift; local s=$EPOCHREALTIME; timeout 150 "$@" >$o/$name.log 2>&1; local rc=$?; st "$name rc=$rc $(awk "BEGIN{print $EPOCHREALTIME - $s}")s"; grep -E "check|FAIL|PASS|ok |error|Error" $o/$name.log | grep -v "^=== RUN" | tail -4; }
nvidia-smi -L; nvidia-smi topo -m > $o/topo-m.txt; cat $o/topo-m.txt
t gpuops bin/gpuops.test -test.v
t nccl bin/nccl.test -test.v
t cuda bin/cuda.test -test.v
t chk-ds-dpep bin/launch -np 2 --dp 2 --ep bin/worker run --backend nccl --preset deepseek-v3 --tokens-per-rank 3,300 --check
t chk-ds-graph bin/launch -np 2 --dp 2 --ep bin/worker run --backend nccl --preset deepseek-v3 --tokens 16 --check
t chk-mix-tp bin/launch -np 2 --tp 2 bin/worker run --backend nccl --preset mixtral --tokens-per-rank 5,300 --check
t chk-qwen bin/launch -np 2 --dp 2 --ep bin/worker run --backend nccl --preset qwen3-30b-a3b --tokens 1,16,128,1024,4096 --check
t chk-qwen-novec env MOERUN_VEC=0 bin/launch -np 2 --dp 2 --ep bin/worker run --backend nccl --preset qwen3-30b-a3b --tokens 4096 --check
t chk-blocking env MOERUN_NCCL_WORLD=blocking bin/launch -np 2 --dp 2 --ep bin/worker run --backend nccl --preset tiny-deepseek --tokens 1,9 --check
t showtopo bin/launch --show-topology
bin/launch --show-topology --json > $o/host-topology.json 2>$o/showtopo-json.err; st "topo json rc=$?"
cat $o/showtopo.log
t bindings bin/launch -np 2 --report-bindings bin/worker run --backend nccl --preset tiny --tokens 1
head -5 $o/bindings.log
for rep in 1 2 3; do for mode in default blocking rtconnect; do
  case $mode in default) e=();; blocking) e=(MOERUN_NCCL_WORLD=blocking);; rtconnect) e=(NCCL_RUNTIME_CONNECT=1);; esac
  s=$(date +%s.%N)
  env "${e[@]}" bin/launch -np 2 bin/worker --backend nccl --log-level info collectives -b 8K -e 8K -f 2 --ops all_reduce -d bf16 -n 1 -w 0 --json $o/su-$mode-$rep.json >$o/su-$mode-$rep.log 2>&1; rc=$?
  e2=$(date +%s.%N); echo "startup $mode $rep start=$s end=$e2 rc=$rc ready=$(grep -o '"ready_unix_s":[0-9.]*' $o/su-$mode-$rep.json | head -1)" | tee -a $o/startup.txt
done; done
st faults; BACKEND=nccl SETTLE_S=12 timeout 200 bench/faults.sh 2 > $o/faults.md 2>$o/faults.err; cat $o/faults.md; tail -3 $o/faults.err
nvidia-smi --query-compute-apps=pid,name --format=csv > $o/after-faults-apps.txt
t calsweep bin/launch -np 2 bin/worker --backend nccl collectives -b 64K -e 1G -f 4 -d bf16 -n 20 -w 3 --json $o/calsweep.json
t calibrate bin/layouts --calibrate $o/calsweep.json --min-bytes 1M
cat $o/calibrate.log
t predict-host bin/launch -np 2 --dp 2 --ep bin/worker run --backend nccl --preset deepseek-v3 --tokens 16,128 --topology-file $o/host-topology.json
tail -30 $o/predict-host.log
t layouts-host bin/layouts --preset deepseek-v3 --tokens 128
st done
cd $OUT && tar czf a.tgz a && ls -la $OUT
