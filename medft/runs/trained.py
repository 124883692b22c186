"""``trained.safetensors``: only what was trained, plus what it must be applied onto.

The file holds the trainable parameters of the tuned model (names as in ``net.model``, so peft's
LoRA names for ``lora``) and, in its safetensors metadata, ``medft`` = JSON with the base model
(``model``: name, ``pretrained``: hub id or path, or null for random weights built from a config)
and the tune config. Applying it: build the base model, ``apply_tuning`` with the same tune config,
then :func:`load_trained_file` (its keys must be exactly the trainable ones).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medft.runs.layout import RunDir
from medft.tuning import trainable_parameters
from medft.util.errors import ConfigError
from medft.util.files import write_named_atomic

if TYPE_CHECKING:  # torch only where tensors are handled: `medft eval` resolves paths first
    import torch
    from torch import nn

    from medft.models.base import MedVLM

FILENAME = RunDir.TRAINED


def trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters of ``model`` (tied weights once), detached and contiguous."""
    return {n: p.detach().contiguous() for n, p in trainable_parameters(model).items()}


def trained_bytes(model: nn.Module) -> int:
    """Bytes of tensor data :func:`save_trained` writes for ``model`` (works on the meta device)."""
    return sum(p.numel() * p.element_size() for p in trainable_parameters(model).values())


def save_trained(path: str | Path, net: MedVLM, tune: dict[str, Any], **extra: Any) -> Path:
    """Write ``net.model``'s trainable parameters and the provenance metadata to ``path`` (atomically)."""
    from safetensors.torch import save_file

    meta = {"model": net.name, "pretrained": net.pretrained, "tune": tune, **extra}
    state = trained_state(net.model)
    return write_named_atomic(
        path, lambda tmp: save_file(state, tmp, metadata={"format": "pt", "medft": json.dumps(meta, sort_keys=True)})
    )


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``medft`` metadata of a ``trained.safetensors`` file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as err:  # noqa: BLE001 - safetensors raises several types for a bad file
        raise ConfigError(f"cannot read {path}: {str(err).splitlines()[0]}") from None
    from medft.util.safe_load import loads_json

    try:
        out = loads_json(meta.get("medft", "{}"), f"{path}: its medft metadata")  # nesting bounded
    except ValueError as err:  # medft.util.safe_load.UnsafeFile
        raise ConfigError(f"{err}: the file is damaged") from None
    if not isinstance(out, dict):
        raise ConfigError(f"{path}: its medft metadata is not a JSON object: the file is damaged")
    return out


def weights_problem(state: dict[str, Any], shapes: dict[str, Any]) -> str | None:
    """Why ``state`` cannot be loaded into parameters of ``shapes`` (same keys assumed), or None.

    Shapes must match exactly (a (1,) tensor would broadcast into a (64,) parameter), dtypes be
    floating point, values finite.
    """
    import torch

    reshaped = sorted(f"{k} {tuple(v.shape)} vs {tuple(shapes[k])}" for k, v in state.items()
                      if k in shapes and tuple(v.shape) != tuple(shapes[k]))
    if reshaped:
        return f"{len(reshaped)} tensor(s) of another shape (file vs model), e.g. {reshaped[:3]} — a file of another model size?"
    not_float = sorted(f"{k} ({str(v.dtype).removeprefix('torch.')})" for k, v in state.items()
                       if isinstance(v, torch.Tensor) and not v.is_floating_point())
    if not_float:
        return f"{len(not_float)} tensor(s) that are not floating point, e.g. {not_float[:3]}"
    bad = sorted(k for k, v in state.items() if isinstance(v, torch.Tensor) and not bool(torch.isfinite(v).all()))
    if bad:
        return f"{len(bad)} tensor(s) with NaN or infinite values, e.g. {bad[:3]} — trained weights that diverged"
    return None


def check_state(
    state: dict[str, Any], expected: dict[str, Any], error: type[Exception], mismatch: str, fix: str, refused: str,
    compare: str | None = None,
) -> None:
    """The one check of trained tensors against the parameters they go into (``expected``: name -> shape):
    exactly the expected keys, then shapes, dtypes and finite values (:func:`weights_problem`).

    ``error(f"{mismatch}: <missing / unexpected keys> — {fix}")`` when the keys differ (with ``compare``,
    e.g. ``"checkpoint vs run"``, the keys of another shape are listed there too), else ``error(refused)``
    with ``{problem}`` in it replaced by what makes the tensors unusable.
    """
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    reshaped = (sorted(f"{k} {tuple(state[k].shape)} vs {tuple(expected[k])}" for k in set(state) & set(expected)
                       if tuple(state[k].shape) != tuple(expected[k])) if compare else [])
    parts = [
        f"{len(items)} {label}, e.g. {items[:3]}"
        for label, items in (("trained key(s) missing", missing), ("unexpected key(s)", unexpected),
                             (f"key(s) with another shape ({compare})", reshaped))
        if items
    ]
    if parts:
        raise error(f"{mismatch}: " + "; ".join(parts) + f" — {fix}")
    problem = weights_problem(state, expected)
    if problem:
        raise error(refused.replace("{problem}", problem))


def load_trained_file(net: nn.Module, path: str | Path) -> dict[str, Any]:
    """Put the file's parameters into ``net.model`` (already tuned like the run); return its metadata.

    Its keys must be exactly ``net.model``'s trainable parameters (:func:`check_state`): a file from another
    model or tune mode is a ConfigError naming the missing and unexpected keys.
    """
    import torch
    from safetensors.torch import load_file

    meta = read_metadata(path)
    state = load_file(str(path))
    params = trainable_parameters(net.model)
    tune = (meta.get("tune") or {}).get("name", "?")
    check_state(state, {n: p.shape for n, p in params.items()}, ConfigError, f"{path} does not match this model (file tune={tune!r})",
                "use the same model and tune mode", f"{path} was not loaded: {{problem}}")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor.to(params[name].dtype))
    return meta
