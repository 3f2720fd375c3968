#!/usr/bin/env bash
# Multi-node data-parallel vaekit training under SLURM: one torchrun agent per node, one worker
# per GPU, c10d rendezvous on the first node, up to 3 restarts of the whole worker group.
# Submit with:  sbatch examples/slurm_ddp.sh
#SBATCH --job-name=vaekit-ddp
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1          # one torchrun agent per node; it starts the workers
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=16
#SBATCH --time=02:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

GPUS_PER_NODE=4
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
RUN_DIR=${RUN_DIR:-$PWD/runs/mnist-ddp-$SLURM_JOB_ID}   # must be on a filesystem all nodes share

# every restart attempt gets its own rendezvous store (pytorch/pytorch#135712)
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1

# --batch-size is the global batch: 512 = 8 GPUs x 64 per GPU.
# A re-submitted job with the same RUN_DIR continues from its checkpoint automatically.
srun torchrun \
  --nnodes="$SLURM_NNODES" \
  --nproc-per-node="$GPUS_PER_NODE" \
  --rdzv-backend=c10d \
  --rdzv-endpoint="$HEAD_NODE:29500" \
  --rdzv-id="$SLURM_JOB_ID" \
  --max-restarts=3 \
  -m vaekit train \
    --data mnist --data-dir "$HOME/data/mnist" --no-download \
    --epochs 50 --batch-size 512 --lr 1e-3 \
    --device cuda --precision bf16 \
    --out "$RUN_DIR" --no-progress
