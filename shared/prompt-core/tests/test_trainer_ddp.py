"""Trainer under DDP: 2 gloo processes on CPU launched with torchrun.

The two ranks (per-process batch 8) must end with identical weights and match a
single-process run with the same global batch (16) to 1e-5: the Trainer shards a Dataset
with ``DistributedSampler(seed=config.seed)`` in both cases, so each global step sees the
same samples, and DDP averages the two ranks' gradients. (Not bit-exact: the gradient
all-reduce sums in another order.) The DDP run is also interrupted after epoch 2 and
resumed from rank 0's checkpoint, so the resumed result checks DDP checkpointing too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from polyprompt.core.checkpoint import load_state

BUILD = textwrap.dedent(
    """
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    def build():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 6, generator=g)
        y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 0.8).long()
        torch.manual_seed(0)
        backbone = nn.Sequential(nn.Linear(6, 16), nn.Tanh()).requires_grad_(False)
        model = nn.Sequential(backbone, nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
        return model, TensorDataset(x, y), TensorDataset(x[:32], y[:32])

    def config(**kw):
        from polyprompt.core.trainer import TrainerConfig
        base = dict(epochs=3, lr=0.05, progress=False, seed=1, scheduler="cosine")
        base.update(kw)
        return TrainerConfig(**base)
    """
)

SCRIPT = BUILD + textwrap.dedent(
    """
    import json, sys
    import torch.distributed as dist
    from polyprompt.core.checkpoint import save_state
    from polyprompt.core.trainer import Callback, Trainer

    class Interrupt(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            if epoch == 2:
                raise KeyboardInterrupt

    out = sys.argv[1]
    ckpt = out + "/ckpt"
    model, train, val = build()
    try:
        Trainer(config(batch_size=8, checkpoint_dir=ckpt), callbacks=[Interrupt()]).fit(model, train, val)
    except KeyboardInterrupt:
        pass
    assert dist.is_initialized() and dist.get_world_size() == 2
    rank = dist.get_rank()
    model, train, val = build()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5) if p.requires_grad else None
    result = Trainer(config(batch_size=8, checkpoint_dir=ckpt)).fit(model, train, val)
    weights = {n: p.detach() for n, p in model.named_parameters()}
    save_state(f"{out}/rank{rank}.safetensors", weights, {"result": result.to_dict()})
    dist.barrier()
    dist.destroy_process_group()
    """
)


def single_process_run():
    ns: dict = {}
    exec(BUILD, ns)
    from polyprompt.core.trainer import Trainer

    model, train, val = ns["build"]()
    result = Trainer(ns["config"](batch_size=16)).fit(model, train, val)
    return model, result


def test_ddp_two_gloo_ranks_match_single_process(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONWARNINGS": "ignore",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    w0, meta0 = load_state(tmp_path / "rank0.safetensors")
    w1, meta1 = load_state(tmp_path / "rank1.safetensors")
    for name in w0:  # both ranks hold the same weights
        assert torch.equal(w0[name], w1[name]), name
    for r in (meta0["result"], meta1["result"]):
        for h in r["history"]:
            h.pop("seconds")  # wall time differs per rank
    assert meta0["result"] == meta1["result"]  # losses/metrics reduced over ranks
    result = meta0["result"]
    assert result["epochs_run"] == 3
    ckpt = json.loads((tmp_path / "ckpt" / "trainer_state.json").read_text())
    assert ckpt["epoch"] == 3

    model, single = single_process_run()
    for name, p in model.named_parameters():
        assert torch.allclose(w0[name], p.detach(), atol=1e-5, rtol=0), name
    for key in ("train_loss", "val_loss", "val_metric"):
        got = [h[key] for h in result["history"]]
        want = [h[key] for h in single.history]
        assert got == pytest.approx(want, abs=1e-5), key
    assert single.history[-1]["train_loss"] < single.history[0]["train_loss"]
