#!/usr/bin/env bash
# Session 4, command A (2 GPUs): faults on NCCL (issue 6), start-up phases, NCCL A/B (issue 5).
export NCCL_NVLS_ENABLE=0
o=$OUT/a; mkdir -p $o
nvidia-smi -L
echo "== faults"
BACKEND=nccl SETTLE_S=12 timeout 240 bench/faults.sh 2 > $o/faults.md 2>$o/faults.err; echo "faults rc=$?"
grep -v "^\[" $o/faults.err | tail -14; cat $o/faults.md
grep -h "hung\|waits\|never entered\|still inside\|first" $o/faults.err | head -12
nvidia-smi --query-compute-apps=pid,name --format=csv
echo "== topology discovery alone"
for i in 1 2 3; do s=$(date +%s%N); bin/launch --show-topology --json > $o/topo.json; e=$(date +%s%N); echo "show-topology $(( (e-s)/1000000 )) ms"; done
ts() { python3 -u -c 'import sys,time
t0=float(sys.argv[1])
for l in sys.stdin: sys.stdout.write("%.3f %s"%(time.time()-t0,l))' "$1"; }
one() { bin/launch -np 2 "$@" bin/worker --backend nccl --log-level info collectives -b 8K -e 8K -f 2 --ops all_reduce -d bf16 -n 1 -w 0; }
one >/dev/null 2>&1
echo "== start-up with NCCL_DEBUG=INFO, lines timed from the launch"
s=$(date +%s.%N); NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=ALL one 2>&1 | ts $s > $o/startup-debug.log
grep -E "store connected|communicator ready|Init COMPLETE|cudaDriverVersion|NCCL version" $o/startup-debug.log | head
echo "== start-up A/B, interleaved (ready = first communicator ready line, from the launch)"
for rep in 1 2 3; do
  for v in default NCCL_IB_DISABLE=1 NCCL_MNNVL_ENABLE=0 NCCL_CUMEM_ENABLE=0 NCCL_NET_PLUGIN=none topofile bindnone; do
    args=(); envs=()
    case $v in topofile) args=(--topology-file $o/topo.json);; bindnone) args=(--bind none);; default) ;; *) envs=($v);; esac
    s=$(date +%s.%N); env "${envs[@]}" bin/launch -np 2 "${args[@]}" bin/worker --backend nccl --log-level info collectives -b 8K -e 8K --ops all_reduce -d bf16 -n 1 -w 0 2>&1 | ts $s > $o/ab-$v-$rep.log
    r=$(grep -m1 "world communicator ready" $o/ab-$v-$rep.log | cut -d' ' -f1); w=$(grep -m1 "store connected" $o/ab-$v-$rep.log | cut -d' ' -f1)
    i=$(grep -m1 "communicator ready" $o/ab-$v-$rep.log | grep -o 'init=[^ ]*')
    echo "ab $v rep $rep: worker up $w s, world ready $r s, $i"
  done
done
echo "== collectives: our sweep with the system NCCL and with torch's, and coll_bench, interleaved"
tlib=$(python3 -c "import os,nvidia.nccl as m;p=os.path.join(list(m.__path__)[0],'lib','libnccl.so.2');print(p)" 2>/dev/null)
echo "torch NCCL: $tlib $(python3 -c 'import torch;print(torch.cuda.nccl.version())')"
ls -la /usr/lib/x86_64-linux-gnu/libnccl.so* 2>/dev/null
for rep in 1 2 3; do
  bin/launch -np 2 bin/worker --backend nccl collectives -b 16M -e 128M -f 8 -d bf16 -n 50 -w 5 --json $o/coll-sys-$rep.json > $o/coll-sys-$rep.txt 2>&1
  [ -n "$tlib" ] && MOERUN_NCCL_LIB=$tlib bin/launch -np 2 bin/worker --backend nccl collectives -b 16M -e 128M -f 8 -d bf16 -n 50 -w 5 --json $o/coll-torch-$rep.json > $o/coll-torch-$rep.txt 2>&1
  timeout 100 python3 -m torch.distributed.run --nproc-per-node 2 .gpu/bench/coll_bench.py > $o/coll_bench-$rep.txt 2>&1
done
head -30 $o/coll-sys-1.txt; grep -h "16777216\|134217728" $o/coll_bench-*.txt
cd $OUT && tar czf a.tgz a
