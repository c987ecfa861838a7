"""Base class every prompt method derives from.

A method owns a (frozen) backbone, its trainable prompt parts and its head. The
base class provides what the trainer, checkpoints and the PromptBank need: the
config, the trainable state, and the backbone identity.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from polyprompt.core.config import PromptConfig


class PromptMethod(nn.Module):
    """A frozen backbone plus trainable prompt modules and a head.

    Subclasses set ``config_class`` and are registered with
    :func:`polyprompt.core.register_method`. ``backbone`` is an adapter that
    follows :class:`polyprompt.core.backbones.PromptableBackbone` (or, for text
    methods, a Hugging Face adapter).
    """

    config_class: ClassVar[type[PromptConfig]] = PromptConfig
    method_name: ClassVar[str] = ""
    version: ClassVar[str] = "1"

    def __init__(self, backbone: nn.Module, config: PromptConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} expects a {self.config_class.__name__}, "
                f"got {type(config).__name__}"
            )
        self.backbone = backbone
        self.config = config

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What a prompt-only checkpoint stores, detached: every parameter that trains, plus
        the persistent buffers of the method's own (non-backbone) modules, such as a
        :class:`~polyprompt.core.PromptPool`'s usage frequency."""
        state = {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}
        persistent = self.state_dict(keep_vars=True)
        for name, buf in self.named_buffers():
            if not name.startswith("backbone.") and name in persistent:
                state[name] = buf.detach()
        return state

    def backbone_identity(self) -> dict[str, Any]:
        ident = getattr(self.backbone, "identity", None)
        if callable(ident):
            return ident()
        from polyprompt.core.freezing import module_identity

        return module_identity(self.backbone)
