"""Backbones: the official ViT-B/16 checkpoint loader and the in-situ pre-trained digit ViT.

* **Paper backbone**: a frozen timm ViT-B/16 pre-trained on ImageNet
  (``models/mvp.py``: ``vit_base_patch16_224_l2p``, i.e. timm's ``vit_base_patch16_224``
  architecture). :func:`load_vit_checkpoint` builds that timm model (no download) and loads a
  checkpoint in timm's key layout (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``,
  ``blocks.<i>.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*``, ``norm.*``; the
  classifier ``head.*`` is dropped) from ``.safetensors`` or a ``weights_only`` torch file
  (``model.safetensors`` / ``pytorch_model.bin`` of the timm hub releases), unwrapping
  ``{"model": ...}`` / ``{"state_dict": ...}`` and ``module.`` prefixes — or the Google JAX
  ``.npz`` layout (``ViT-B_16.npz``, ``embedding/kernel``, ``Transformer/encoderblock_<i>/...``,
  the file the official code downloads) through timm's own ``.npz`` loader.
* **Examples / tests**: no ViT weights ship in any wheel, so the examples use the core's
  in-situ pre-trained digit ViT (:func:`polyprompt.core.demo.pretrain.pretrain_digit_vit`,
  a real timm ``VisionTransformer``, cached under ``$POLYPROMPT_HOME/demo``), **pre-trained
  supervised on MNIST digits 0-9**. The stream is optdigits: the *same ten classes* from other
  writers and another scanner. As in the paper (ImageNet-pre-trained ViT, CIFAR-100 / Tiny-
  ImageNet / ImageNet-R streams whose classes overlap ImageNet's), the backbone already knows
  the concepts; the continual learner must still build its head and prompts for the new domain
  from a one-pass stream without forgetting.

Example::

    >>> adapter = load_vit_checkpoint("vit_b16.safetensors")     # doctest: +SKIP
    >>> adapter.embed_dim, adapter.num_blocks                     # doctest: +SKIP
    (768, 12)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyprompt.core.checkpoint import check_state_dict
from polyprompt.core.errors import CheckpointError

if TYPE_CHECKING:
    import torch

    from polyprompt.core.backbones.timm_vit import TimmViTAdapter
    from polyprompt.core.demo.pretrain import PretrainedDigitViT

__all__ = ["digit_backbone", "frozen_probe_accuracy", "load_vit_checkpoint", "read_state_dict"]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file (safetensors, or a torch file read with ``weights_only``)."""
    path = Path(path)
    where = f"load_vit_checkpoint({str(path)!r})"
    if not path.is_file():
        raise CheckpointError(f"{where}: no such file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{where}: unreadable safetensors file: {exc}") from None
    else:
        from polyprompt.core.checkpoint import load_torch_state

        state = load_torch_state(path)
    for key in ("model", "state_dict", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{where}: no state dict in the file")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}


def load_vit_checkpoint(
    path: str | Path, arch: str = "vit_base_patch16_224", **timm_kwargs: Any
) -> TimmViTAdapter:
    """A frozen-ready :class:`TimmViTAdapter` over ``timm.create_model(arch)`` with ``path``'s weights.

    Args:
        path: checkpoint in timm key layout (see the module docstring).
        arch: timm architecture name (default: the paper's ViT-B/16).
        timm_kwargs: extra ``timm.create_model`` arguments (``img_size``, ``in_chans`` ...).

    Raises:
        CheckpointError: unreadable file, missing / unexpected keys or wrong shapes (named).
    """
    import timm

    from polyprompt.core.backbones.timm_vit import TimmViTAdapter

    timm_kwargs.setdefault("num_classes", 0)
    if Path(path).suffix == ".npz":
        return _load_npz(Path(path), arch, timm_kwargs)
    state = read_state_dict(path)
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    model = timm.create_model(arch, pretrained=False, **timm_kwargs)
    check_state_dict(state, model.state_dict(), f"load_vit_checkpoint({str(path)!r}) into {arch}")
    model.load_state_dict(state, strict=True)
    return TimmViTAdapter(model.eval())


def _load_npz(path: Path, arch: str, timm_kwargs: dict[str, Any]) -> TimmViTAdapter:
    """The Google JAX ``.npz`` layout (``ViT-B_16.npz``, what ``models/mvp.py`` downloads),
    read by timm's own loader ``timm.models.vision_transformer._load_weights``."""
    import timm
    from timm.models.vision_transformer import _load_weights

    from polyprompt.core.backbones.timm_vit import TimmViTAdapter

    where = f"load_vit_checkpoint({str(path)!r})"
    if not path.is_file():
        raise CheckpointError(f"{where}: no such file")
    model = timm.create_model(arch, pretrained=False, **timm_kwargs)
    try:
        _load_weights(model, str(path))
    except KeyError as exc:
        raise CheckpointError(f"{where}: the .npz lacks key {exc} for {arch}") from None
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{where}: cannot load the .npz into {arch}: {exc}") from None
    return TimmViTAdapter(model.eval())


def digit_backbone(
    *, quick: bool = False, progress: bool = True, verbose: bool = True
) -> PretrainedDigitViT:
    """The core's MNIST-pre-trained digit ViT (trained once, then loaded from the cache)."""
    from polyprompt.core.demo.pretrain import pretrain_digit_vit

    return pretrain_digit_vit(quick=quick, progress=progress, verbose=verbose)


def frozen_probe_accuracy(backbone: TimmViTAdapter, train: Any, test: Any) -> float:
    """Offline ceiling of the frozen-feature methods: a logistic-regression probe
    (standardised, ``max_iter=1000``) on ``backbone``'s CLS features (all blocks + norm, no
    prompt), fitted on all of ``train`` at once and scored on ``test`` (:class:`ImageSet` s)."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def feats(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return backbone.pool(backbone.norm(backbone.forward_blocks(backbone.embed(x)))).numpy()

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    clf.fit(feats(train.images), train.labels.numpy())
    return float(np.mean(clf.predict(feats(test.images)) == test.labels.numpy()))
