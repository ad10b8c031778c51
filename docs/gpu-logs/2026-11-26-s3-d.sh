#!/usr/bin/env bash
# Session 3, command D (2 GPUs): start-up with the context warmed early, then the faults on NCCL.
export NCCL_NVLS_ENABLE=0
o=$OUT/d; mkdir -p $o
nvidia-smi -L
for rep in 1 2 3 4 5; do
  s=$(date +%s.%N)
  bin/launch -np 2 bin/worker --backend nccl --log-level info collectives -b 8K -e 8K -f 2 --ops all_reduce -d bf16 -n 1 -w 0 --json $o/su-$rep.json >$o/su-$rep.log 2>&1; rc=$?
  e2=$(date +%s.%N); python3 -c "import json;d=json.load(open('$o/su-$rep.json'));print('startup $rep rc=$rc ready-start=%.3f total=%.3f first_us=%.1f'%(d[0]['ready_unix_s']-$s,$e2-$s,d[0]['results'][0]['time_us']))" | tee -a $o/startup.txt
done
sed 's/time=[^ ]* //' $o/su-5.log | grep -E "store connected|communicator ready|group" | head -8
BACKEND=nccl SETTLE_S=12 timeout 300 bench/faults.sh 2 > $o/faults.md 2>$o/faults.err; echo "faults rc=$?"
cat $o/faults.err | grep -v "^\[" | tail -12; cat $o/faults.md
nvidia-smi --query-compute-apps=pid,name --format=csv
cd $OUT && tar czf d.tgz d
