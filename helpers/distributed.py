"""Data-parallel training on an existing engine: Lightning Fabric.

The SAE and bilinear trainers (:func:`helpers.sae.train_sae`,
:func:`helpers.bilinear.train_bilinear`) take ``fabric=``: a launched
``lightning.fabric.Fabric``. Every process then draws the same global batches from the
same seeded generator, keeps its share of each (:func:`shard`), averages gradients
through DDP and, for the SAE, sums the dead-latent counters across processes, so the
model trained by ``n`` processes equals the one-process model up to floating-point
summation order (and, for the SAE's auxiliary loss, a ratio taken per process).

From the command line (one machine; ``--devices 2`` starts a second process the way
``torchrun`` would)::

    python -m helpers.distributed sae Z.npy --c 64 --k 4 --epochs 20 \\
        --devices 2 --out sae.pt
    python -m helpers.distributed bilinear X.npy Y.npy --hidden 32 --epochs 10 \\
        --devices 2 --accelerator cpu --out bilinear.pt

On a GPU node, ``--accelerator cuda --devices 4``; on several nodes add ``--num-nodes``
and launch with the cluster's launcher (Lightning reads SLURM/torchrun environments).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def make_fabric(
    devices: int = 2,
    *,
    accelerator: str = "cpu",
    strategy: str = "ddp",
    num_nodes: int = 1,
    launch: bool = True,
):
    """A ``Fabric`` for data-parallel training, launched unless ``launch=False``.

    With ``strategy="ddp"`` the launch re-runs the current command once per extra
    process (run it from a script or ``python -m``, not from a notebook; in a
    notebook use one process or ``strategy="ddp_notebook"``).
    """
    from lightning.fabric import Fabric

    if devices < 1:
        raise ValueError(f"devices={devices}; pass at least 1.")
    fabric = Fabric(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy if devices > 1 or num_nodes > 1 else "auto",
        num_nodes=num_nodes,
        precision="32-true",
    )
    if launch:
        fabric.launch()
    return fabric


def shard(idx: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This process's share of a global batch: every ``world``-th row from ``rank``."""
    if not 0 <= rank < world:
        raise ValueError(f"rank={rank} is outside 0..{world - 1}.")
    return idx[rank::world]


def ddp_hooks(fabric) -> dict:
    """The ``shard`` and ``reduce`` callables the trainers use under ``fabric``."""
    rank, world = fabric.global_rank, fabric.world_size

    def reduce(t: torch.Tensor) -> torch.Tensor:
        return fabric.all_reduce(t, reduce_op="sum") if world > 1 else t

    return dict(shard=lambda idx: shard(idx, rank, world), reduce=reduce)


def _main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="model", required=True)
    p_sae = sub.add_parser("sae", help="train a Top-K SAE on an embedding (.npy)")
    p_sae.add_argument("embedding", type=Path)
    p_sae.add_argument("--c", type=int, required=True)
    p_sae.add_argument("--k", type=int, required=True)
    p_sae.add_argument(
        "--dead-after",
        type=int,
        default=None,
        help="samples without firing before a latent counts as dead",
    )
    p_bil = sub.add_parser("bilinear", help="train a bilinear classifier (.npy X, y)")
    p_bil.add_argument("features", type=Path)
    p_bil.add_argument("targets", type=Path)
    p_bil.add_argument("--hidden", type=int, default=32)
    for p in (p_sae, p_bil):
        p.add_argument("--epochs", type=int, default=10)
        p.add_argument("--batch-size", type=int, default=256)
        p.add_argument("--lr", type=float, default=1e-3)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--devices", type=int, default=2)
        p.add_argument("--num-nodes", type=int, default=1)
        p.add_argument("--accelerator", default="cpu")
        p.add_argument("--strategy", default="ddp")
        p.add_argument("--out", type=Path, required=True, help="state dict (.pt)")
    args = ap.parse_args(argv)
    fabric = make_fabric(
        args.devices,
        accelerator=args.accelerator,
        strategy=args.strategy,
        num_nodes=args.num_nodes,
    )
    common = dict(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed
    )
    if args.model == "sae":
        from .sae import SAETrainSettings, train_sae

        settings = SAETrainSettings(
            progress=False, dead_after=args.dead_after, **common
        )
        model, _ = train_sae(
            np.load(args.embedding), args.c, args.k, settings, fabric=fabric
        )
    else:
        from .bilinear import BilinearMLP, train_bilinear
        from .preprocess import split_indices

        X = np.load(args.features).astype(np.float32)
        y = np.load(args.targets)
        split = split_indices(y, seed=args.seed)
        model = BilinearMLP(X.shape[1], args.hidden, int(y.max()) + 1, seed=args.seed)
        model, _ = train_bilinear(
            model, X, y, split, progress=False, fabric=fabric, **common
        )
    if fabric.global_rank == 0:
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, args.out)
        print(f"{args.model}: {fabric.world_size} process(es) → {args.out}")


if __name__ == "__main__":
    _main()
