"""Prompt-only checkpoints, and the file helpers the Trainer's resumable checkpoints use.

A prompt checkpoint is a directory with two files:

* ``prompt.safetensors`` — ``method.trainable_state_dict()`` (prompts, head, ...; never
  the frozen backbone), contiguous CPU tensors;
* ``prompt_config.json`` — format version, method name / class / version, polyprompt
  version, the method's config, the backbone identity (class, sizes, weight
  fingerprint), every tensor's shape and dtype, the SHA-256 of the weights file, and
  user ``extra`` data.

Both are written atomically (temp file + ``os.replace``), weights first and config last;
the config records the SHA-256 of the weights, so a save interrupted between the two
files is detected on load instead of silently pairing new weights with an old config.
Nothing here unpickles: weights are safetensors, and the optimizer state the Trainer keeps
is read with ``torch.load(weights_only=True)``.

Example::

    >>> import tempfile
    >>> from torch import nn
    >>> from polyprompt.core.config import PromptConfig
    >>> from polyprompt.core.methods.base import PromptMethod
    >>> class Tiny(PromptMethod):
    ...     method_name = "tiny"
    ...     def __init__(self, backbone, config):
    ...         super().__init__(backbone.requires_grad_(False), config)
    ...         self.head = nn.Linear(4, 2)
    >>> model = Tiny(nn.Linear(4, 4), PromptConfig())
    >>> d = save_prompt(model, tempfile.mkdtemp())
    >>> sorted(p.name for p in d.iterdir())
    ['prompt.safetensors', 'prompt_config.json']
    >>> _ = load_prompt(Tiny(model.backbone, PromptConfig()), d)
    >>> read_prompt_config(d)["tensors"]["head.weight"]
    {'dtype': 'float32', 'shape': [2, 4]}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyprompt.core.errors import BackboneMismatchError, CheckpointError, InputError
from polyprompt.core.io import atomic_write, atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "PROMPT_CONFIG_FILE",
    "PROMPT_FORMAT",
    "PROMPT_WEIGHTS_FILE",
    "check_state_dict",
    "load_prompt",
    "load_state",
    "load_torch_state",
    "read_prompt_config",
    "save_prompt",
    "save_state",
    "save_torch_state",
    "sha256_file",
]

PROMPT_WEIGHTS_FILE = "prompt.safetensors"
PROMPT_CONFIG_FILE = "prompt_config.json"
PROMPT_FORMAT = 1
_META_KEY = "polyprompt_meta"


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------
def check_state_dict(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    where: str,
    *,
    may_miss: Callable[[str], bool] | None = None,
) -> None:
    """Check that a checkpoint's ``state`` fits a model's ``expected`` state dict before
    ``load_state_dict``: same keys and same shapes.

    ``may_miss(key)`` marks expected keys the checkpoint may lack (a head that is
    initialised or tied afterwards). Raises :class:`CheckpointError` naming the first wrong
    shapes, missing keys and unexpected keys, all at once, prefixed with ``where``.
    """
    wrong = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    missing = sorted(k for k in set(expected) - set(state) if may_miss is None or not may_miss(k))
    unexpected = sorted(set(state) - set(expected))
    problems = [
        f"{label} {items[:limit]}"
        for label, items, limit in (
            ("wrong shapes", wrong, 4),
            ("missing keys", missing, 8),
            ("unexpected keys", unexpected, 8),
        )
        if items
    ]
    if problems:
        raise CheckpointError(f"{where}: " + "; ".join(problems))


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _method_class(method: Any) -> str:
    cls = type(method)
    return f"{cls.__module__}:{cls.__qualname__}"


def _method_name(method: Any) -> str:
    return getattr(method, "method_name", "") or type(method).__name__


def _check_method(method: Any, where: str) -> None:
    from polyprompt.core.methods.base import PromptMethod

    if not isinstance(method, PromptMethod):
        raise InputError(f"{where}: expected a PromptMethod, got {type(method).__name__}")


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{what}: missing file {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{what}: {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{what}: {path} must hold a JSON object")
    return data


def _load_safetensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"{what}: missing file {path}")
    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = dict(fh.metadata() or {})
            for key in fh.keys():  # noqa: SIM118 - safe_open is not a Mapping
                tensors[key] = fh.get_tensor(key)
    except Exception as exc:  # safetensors raises its own SafetensorError / OSError
        raise CheckpointError(
            f"{what}: {path} is not a readable safetensors file ({exc})"
        ) from None
    return tensors, metadata


# ---------------------------------------------------------------------------
# prompt-only checkpoints
# ---------------------------------------------------------------------------
def save_prompt(
    method: nn.Module, directory: str | Path, *, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write ``method``'s trainable state and its description to ``directory``.

    Args:
        method: a :class:`~polyprompt.core.methods.base.PromptMethod`.
        directory: created if missing; existing checkpoint files are replaced atomically.
        extra: JSON-serialisable user data stored under ``"extra"`` (e.g. metrics).

    Returns:
        ``directory`` as a :class:`~pathlib.Path`.
    """
    _check_method(method, "save_prompt")
    import polyprompt.core
    from polyprompt.core.freezing import safetensors_bytes, trainable_state

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"save_prompt: {directory} exists and is not a directory")
    tensors = trainable_state(method)
    if extra is not None:
        try:
            json.dumps(dict(extra))
        except TypeError as exc:
            raise InputError(f"save_prompt: `extra` must be JSON-serialisable ({exc})") from None
    data = safetensors_bytes(tensors)
    config = {
        "format": PROMPT_FORMAT,
        "method": _method_name(method),
        "method_class": _method_class(method),
        "method_version": str(getattr(method, "version", "")),
        "polyprompt_version": polyprompt.core.__version__,
        "config": method.config.to_dict(),
        "backbone": method.backbone_identity(),
        "tensors": {
            name: {"shape": list(t.shape), "dtype": _dtype_name(t)} for name, t in tensors.items()
        },
        "weights_sha256": hashlib.sha256(data).hexdigest(),
        "extra": dict(extra) if extra is not None else None,
    }
    text = json.dumps(config, indent=2, sort_keys=True, default=str)
    atomic_write_bytes(directory / PROMPT_WEIGHTS_FILE, data)
    atomic_write_text(directory / PROMPT_CONFIG_FILE, text)
    return directory


def read_prompt_config(directory: str | Path) -> dict[str, Any]:
    """The parsed ``prompt_config.json`` of a prompt checkpoint directory.

    Raises:
        CheckpointError: the directory or file is missing, or the JSON is invalid.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"read_prompt_config: no checkpoint directory {directory}")
    config = _read_json(directory / PROMPT_CONFIG_FILE, "read_prompt_config")
    fmt = config.get("format")
    if fmt != PROMPT_FORMAT:
        raise CheckpointError(
            f"read_prompt_config: {directory / PROMPT_CONFIG_FILE} has format {fmt!r}; "
            f"this polyprompt reads format {PROMPT_FORMAT}"
        )
    return config


def _backbone_differences(
    saved: Mapping[str, Any], current: Mapping[str, Any], strict: bool
) -> list[str]:
    diffs = []
    for key in sorted(set(saved) | set(current)):
        if "fingerprint" in key and not strict:
            continue
        if key not in saved or key not in current:
            if strict:
                a = saved.get(key, "<absent>")
                b = current.get(key, "<absent>")
                diffs.append(f"{key}: saved {a!r}, current {b!r}")
            continue
        if saved[key] != current[key]:
            diffs.append(f"{key}: saved {saved[key]!r}, current {current[key]!r}")
    return diffs


def load_prompt(method: nn.Module, directory: str | Path, *, strict_backbone: bool = True):
    """Load a prompt checkpoint into ``method`` in place and return ``method``.

    Checks, in order: the directory and both files exist and parse; the checkpoint was
    saved by the same method (name); the backbone identity matches (every field;
    ``fingerprint`` — the weights — only when ``strict_backbone``); the weights file is
    the one the config describes (SHA-256); the tensor names and shapes match
    ``method.trainable_state_dict()``.

    Raises:
        CheckpointError: missing/corrupt files, other method, tensor name or shape mismatch.
        BackboneMismatchError: the backbone differs (message lists each differing field
            with its saved and current value).
    """
    _check_method(method, "load_prompt")
    import torch

    directory = Path(directory)
    where = f"load_prompt({directory})"
    if not directory.is_dir():
        raise CheckpointError(f"load_prompt: no checkpoint directory {directory}")
    weights_path = directory / PROMPT_WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointError(f"load_prompt: missing file {weights_path}")
    config = read_prompt_config(directory)

    saved_name = config.get("method")
    name = _method_name(method)
    if saved_name != name:
        raise CheckpointError(
            f"{where}: checkpoint was saved by method {saved_name!r} "
            f"({config.get('method_class')}), cannot load it into {name!r} ({_method_class(method)})"
        )

    current_identity = json.loads(json.dumps(method.backbone_identity(), default=str))
    diffs = _backbone_differences(config.get("backbone") or {}, current_identity, strict_backbone)
    if diffs:
        hint = (
            ""
            if not strict_backbone
            else " (pass strict_backbone=False to ignore weight differences)"
        )
        raise BackboneMismatchError(
            f"{where}: checkpoint was saved for a different backbone; " + "; ".join(diffs) + hint
        )

    expected_sha = config.get("weights_sha256")
    if expected_sha is not None and sha256_file(weights_path) != expected_sha:
        raise CheckpointError(
            f"{where}: {weights_path} does not match {directory / PROMPT_CONFIG_FILE} "
            "(SHA-256 differs: the file is corrupt or a save was interrupted)"
        )
    loaded, _ = _load_safetensors(weights_path, where)

    current = method.trainable_state_dict()
    missing = sorted(set(current) - set(loaded))
    unexpected = sorted(set(loaded) - set(current))
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: tensor names differ from the model's trainable parameters; "
            f"missing in checkpoint: {missing}; unexpected in checkpoint: {unexpected}"
        )
    for key, value in loaded.items():
        if tuple(value.shape) != tuple(current[key].shape):
            raise CheckpointError(
                f"{where}: tensor {key!r} has shape {tuple(value.shape)} in the checkpoint "
                f"but {tuple(current[key].shape)} in the model"
            )
    targets = dict(method.named_parameters())
    targets.update(dict(method.named_buffers()))
    with torch.no_grad():
        for key, value in loaded.items():
            dest = targets.get(key, current[key])
            dest.copy_(value.to(device=dest.device, dtype=dest.dtype))
    return method


# ---------------------------------------------------------------------------
# generic training-state files (used by the Trainer)
# ---------------------------------------------------------------------------
def save_state(
    path: str | Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any] | None = None
) -> Path:
    """Atomically write ``tensors`` as safetensors with ``meta`` (JSON) in its header.

    Example::

        >>> import tempfile, torch
        >>> p = save_state(tempfile.mkdtemp() + "/s.safetensors", {"w": torch.ones(2)}, {"epoch": 3})
        >>> tensors, meta = load_state(p)
        >>> tensors["w"].tolist(), meta
        ([1.0, 1.0], {'epoch': 3})
    """
    from polyprompt.core.freezing import safetensors_bytes

    try:
        meta_text = json.dumps(dict(meta or {}), sort_keys=True)
    except TypeError as exc:
        raise InputError(f"save_state: `meta` must be JSON-serialisable ({exc})") from None
    data = safetensors_bytes(dict(tensors), metadata={_META_KEY: meta_text})
    return atomic_write_bytes(Path(path), data)


def load_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by :func:`save_state`: ``(tensors, meta)``.

    Raises:
        CheckpointError: missing or corrupt file (the message names it).
    """
    path = Path(path)
    tensors, metadata = _load_safetensors(path, "load_state")
    try:
        meta = json.loads(metadata.get(_META_KEY, "{}"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"load_state: {path} has an invalid metadata header ({exc})"
        ) from None
    return tensors, meta


def save_torch_state(path: str | Path, state: Any) -> Path:
    """Atomically ``torch.save`` a state dict (optimizer, scheduler, grad scaler).

    Only plain containers of tensors / numbers / strings belong here: it is read back
    with ``torch.load(weights_only=True)``.
    """
    import torch

    return atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


def load_torch_state(path: str | Path, map_location: Any = "cpu") -> Any:
    """Read a :func:`save_torch_state` file with ``torch.load(weights_only=True)`` (no pickle).

    Raises:
        CheckpointError: missing or corrupt file, or it holds objects other than tensors
            and plain containers.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"load_torch_state: missing file {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"load_torch_state: cannot read {path} with torch.load(weights_only=True) ({exc})"
        ) from None
