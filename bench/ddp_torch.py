"""PyTorch's DistributedDataParallel on the model of `lit-bench ddp`, for the side-by-side timing.

    python bench/ddp_torch.py MODEL STEPS PORT

Two processes on Gloo, one torch thread each, DDP with its defaults (25 MiB buckets, all-reduce
overlapped with backward), Adam(lr=1e-3), a batch of 64 random samples per process and step.
Rank 0 prints the median time of a step (zero_grad, forward, loss, backward, step) in
milliseconds over the steps after the first 5.
"""

import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F


def model(name):
    if name == "mlp":
        return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    if name == "mlp20m":
        return nn.Sequential(nn.Linear(784, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 10))
    raise SystemExit(f"unknown model {name}")


def worker(rank, name, steps, port):
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(rank)
    net = nn.parallel.DistributedDataParallel(model(name))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    batches = [(torch.randn(64, 784), torch.randint(10, (64,))) for _ in range(steps)]
    times = []
    for x, y in batches:
        start = time.perf_counter()
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    if rank == 0:
        print(f"{statistics.median(times[5:]) * 1e3:.3f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    name, steps, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    mp.spawn(worker, args=(name, steps, port), nprocs=2)
