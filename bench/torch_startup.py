"""torchrun's start-up, for bench/gpu.sh: from the launch (the script records the time before
torchrun starts) to the first all_reduce done. Rank 0 prints "READY <unix time>".

Run: python3 -m torch.distributed.run --nproc-per-node 2 bench/torch_startup.py
"""
import os, time
import torch, torch.distributed as dist

torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
dist.init_process_group("nccl")
x = torch.ones(1, device="cuda")
dist.all_reduce(x)
torch.cuda.synchronize()
if dist.get_rank() == 0:
    print(f"READY {time.time():.6f}", flush=True)
dist.destroy_process_group()
