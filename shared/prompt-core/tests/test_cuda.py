"""The core's CUDA paths for prompt methods, which no CPU test reaches: a VPT prompt trained
on the GPU (bfloat16 AMP) reloading on the CPU to identical outputs, and PromptBank's mixed
batches on the GPU. The Trainer's own CUDA tests (AMP float16 with ``GradScaler`` / bfloat16,
exact resume with the scaler state) are in ``test_trainer.py``, marked ``cuda`` too.

Skipped without a CUDA device (CI has none). On a GPU machine: ``pytest -m cuda``
(README, "GPU checks").
"""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import TensorDataset

from polyprompt.core.backbones.timm_vit import TimmViTAdapter
from polyprompt.core.bank import PromptBank
from polyprompt.core.checkpoint import load_prompt, save_prompt
from polyprompt.core.registry import create
from polyprompt.core.trainer import Trainer, TrainerConfig

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def vit(seed: int = 0) -> TimmViTAdapter:
    torch.manual_seed(seed)
    return TimmViTAdapter(
        VisionTransformer(
            img_size=32, patch_size=8, in_chans=1, embed_dim=64, depth=3, num_heads=4, num_classes=0
        )
    )


def test_vpt_trained_on_cuda_reloads_on_cpu_to_identical_outputs(tmp_path):
    method = create("vpt", vit(), num_classes=3, num_tokens=4, deep=True).to("cuda")
    frozen = {k: v.clone() for k, v in method.backbone.state_dict().items()}
    x = torch.randn(64, 1, 32, 32)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + (x[:, :, :16].mean(dim=(1, 2, 3)) > 0.1).long()
    cfg = TrainerConfig(
        epochs=2, batch_size=16, lr=1e-2, progress=False, seed=3, device="cuda", amp=True,
        amp_dtype="bfloat16",
    )  # fmt: skip
    Trainer(cfg).fit(method, TensorDataset(x, y))

    # gradients of one step reach only the prompts and the head
    method.zero_grad(set_to_none=True)
    method(x[:8].cuda()).logsumexp(-1).sum().backward()
    got_grad = {n for n, p in method.named_parameters() if p.grad is not None}
    assert got_grad and got_grad == {n for n, p in method.named_parameters() if p.requires_grad}
    for k, v in method.backbone.state_dict().items():
        assert torch.equal(v, frozen[k]), k

    save_prompt(method, tmp_path / "prompt")
    cpu_method = create("vpt", vit(), num_classes=3, num_tokens=4, deep=True)
    load_prompt(cpu_method, tmp_path / "prompt")
    for name, value in cpu_method.trainable_state_dict().items():
        assert torch.equal(value, method.trainable_state_dict()[name].cpu()), name
    method_cpu = method.cpu().eval()
    with torch.no_grad():
        assert torch.equal(cpu_method.eval()(x[:8]), method_cpu(x[:8]))


def test_prompt_bank_mixed_batch_on_cuda_matches_each_task_alone():
    bank = PromptBank(vit())
    torch.manual_seed(1)
    for t in range(4):
        method = create("vpt", bank.backbone, num_classes=5, num_tokens=4, deep=t % 2 == 1)
        with torch.no_grad():
            for p in method.parameters():
                if p.requires_grad:
                    p.copy_(torch.randn_like(p) * 0.5)
        bank.add(f"task{t}", method)
    bank.to("cuda").eval()
    x = torch.randn(16, 1, 32, 32, device="cuda")
    names = [f"task{i % 4}" for i in range(16)]
    with torch.no_grad():
        mixed = bank.forward_mixed(x, names)
        grouped = bank.forward_grouped(x, names)
        alone = [bank.methods[n](x[i : i + 1])[0] for i, n in enumerate(names)]
    for i in range(16):
        assert mixed[i].device.type == "cuda"
        # TF32 convolutions may round differently for different batch compositions
        assert torch.allclose(mixed[i], alone[i], atol=1e-3, rtol=1e-3), i
        assert torch.allclose(grouped[i], alone[i], atol=1e-3, rtol=1e-3), i
