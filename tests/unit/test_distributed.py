"""Data-parallel training (Lightning Fabric, DDP on CPU): two processes give the model
one process gives."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import distributed, synthetic
from helpers.chapter import REPO_ROOT


def _train(tmp_path, args, devices):
    out = tmp_path / f"{args[0]}_{devices}.pt"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TQDM_DISABLE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "helpers.distributed",
        *args,
        "--devices",
        str(devices),
        "--accelerator",
        "cpu",
        "--strategy",
        "ddp",
        "--out",
        str(out),
    ]
    done = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{devices} process(es)" in done.stdout
    return torch.load(out)


def _max_gap(a, b):
    return {k: float((a[k].double() - b[k].double()).abs().max()) for k in a}


def test_two_processes_train_the_same_sae_as_one(tmp_path):
    # 8 planted atoms, 48 latents: most latents die, so the auxiliary loss and the
    # dead-latent counters (summed across processes) are exercised
    Z, _ = synthetic.planted_sparse_codes(1200, synthetic.unit_dictionary(8, 12), 2)
    np.save(tmp_path / "z.npy", Z)
    args = [
        "sae",
        "z.npy",
        "--c",
        "48",
        "--k",
        "2",
        "--epochs",
        "4",
        "--batch-size",
        "128",
        "--dead-after",
        "200",
    ]
    one, two = _train(tmp_path, args, 1), _train(tmp_path, args, 2)
    dead = one["samples_since_active"] >= 200
    assert 0 < int(dead.sum()) < 48
    assert torch.equal(one["samples_since_active"], two["samples_since_active"])
    gaps = _max_gap(one, two)
    assert max(gaps.values()) < 1e-5, gaps
    # it trained: the weights moved from the seeded initialisation train_sae starts from
    from helpers.sae import SAETrainSettings, _split, init_sae

    train_idx, _ = _split(len(Z), SAETrainSettings(seed=0))
    gen = torch.Generator().manual_seed(0)
    init = init_sae(Z[train_idx], 48, 2, generator=gen).state_dict()
    assert float((one["encoder.weight"] - init["encoder.weight"]).abs().max()) > 1e-3


def test_two_processes_train_the_same_bilinear_model_as_one(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(900, 12)).astype(np.float32)
    y = (X[:, 0] * X[:, 1] > 0).astype(int)  # a bilinear (XOR-like) rule
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", y)
    args = [
        "bilinear",
        "x.npy",
        "y.npy",
        "--hidden",
        "8",
        "--epochs",
        "3",
        "--batch-size",
        "64",
    ]
    gaps = _max_gap(_train(tmp_path, args, 1), _train(tmp_path, args, 2))
    assert max(gaps.values()) < 1e-5, gaps


def test_shards_partition_every_batch_and_bad_inputs_are_named():
    idx = torch.arange(11)
    parts = [distributed.shard(idx, r, 3) for r in range(3)]
    assert sorted(torch.cat(parts).tolist()) == idx.tolist()
    with pytest.raises(ValueError, match="rank=3 is outside 0..2"):
        distributed.shard(idx, 3, 3)
    with pytest.raises(ValueError, match="devices=0"):
        distributed.make_fabric(0)
