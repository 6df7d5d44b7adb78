#!/usr/bin/env bash
# The GPU check: builds lit, runs the CUDA tests (which fail, rather than skip, without a CUDA
# device here; DDP through NCCL among them), then times the mlp task at 32-true, bf16-mixed and
# 16-mixed, lit against a hand-written tch loop, prints the table, and times the DDP bench. Meant to finish within 8 minutes on a CUDA machine.
#
#   bench/gpu.sh            # from the repository root
set -euo pipefail
cd "$(dirname "$0")/.."

start=$(date +%s)
echo "== build (release)"
scripts/with-torch cargo build --release -p lit-bench -p lit-tests --tests --bins 2>&1 | tail -n 3
scripts/with-torch python -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'

echo "== CUDA tests"
LIT_TEST_CUDA=1 scripts/with-torch cargo test --release -p lit-tests --test it -- precision:: export:: ddp:: 2>&1 | grep -E "^test |test result" 

echo "== mlp task at each precision (lit-bench precision --device cuda)"
scripts/with-torch target/release/lit-bench precision --device cuda --epochs "${EPOCHS:-3}"
echo "== DDP step against PyTorch's DistributedDataParallel (lit-bench ddp 1, Gloo on the CPU)"
scripts/with-torch target/release/lit-bench ddp 1
echo "== done in $(( $(date +%s) - start )) s"
