"""Checkpoints that survive a kill, load safely and resume exactly.

* :class:`AtomicCheckpointIO` (``trainer.plugins``) writes every checkpoint to a temp file in the
  same folder, fsyncs it and renames it over the target, so a kill during a save leaves the
  previous ``last.ckpt`` intact. Lightning's own save goes through an fsspec transaction whose
  temp file lies in the system temp dir: on another file system the final move is a copy, which
  a kill can truncate. Loading always uses ``torch.load(weights_only=True)``: a checkpoint is
  tensors, numbers and strings only, never pickled objects.
* :class:`RNGState` (a callback) stores the Python, NumPy and torch RNG states in the checkpoint
  and puts them back just before the first training batch after a resume, so dropout draws the
  same masks as in a run that was never interrupted.
* :class:`StepCheckpoint` is Lightning's ModelCheckpoint for ``last.ckpt`` every N steps, except
  on an epoch's last batch: that state is saved by the epoch-end checkpoint, after validation.
  A checkpoint written just before validation would, when resumed, skip that validation.
* :func:`check_compatible` compares a checkpoint's trained parameters with this run's.
"""

from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any, Callable

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from medft.runs.layout import RELATIVE, RunDir
from medft.util.errors import CheckpointError
from medft.util.files import write_atomic

_FIX = f"pass a checkpoint written by `medft train` (run dir/{RELATIVE.last_ckpt} or {RunDir.BEST})"


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temp file beside the target, fsync, os.replace; load weights-only."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)  # remote: fsspec's transaction
        write_atomic(path, lambda fh: torch.save(checkpoint, fh), binary=True)

    def load_checkpoint(
        self, path: Any, map_location: Callable | None = lambda storage, loc: storage, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_checkpoint(path, map_location)


def load_checkpoint(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with one-line errors for missing or damaged files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found: {_FIX}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap or None)
    except pickle.UnpicklingError as err:
        reason = " ".join(str(err).split())[:200]
        raise CheckpointError(
            f"checkpoint {path} holds objects that are not plain weights and was not loaded "
            f"(weights_only=True: {reason}); {_FIX}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise CheckpointError(f"checkpoint {path} is truncated or not a torch checkpoint ({reason}); {_FIX}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"checkpoint {path} has no state_dict: {_FIX}")
    return checkpoint


# -- RNG states ------------------------------------------------------------------------------
def rng_states() -> dict[str, Any]:
    """Python, NumPy and torch (CPU, CUDA) RNG states as tensors, ints and lists only."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    states: dict[str, Any] = {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    py = states["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    npy = states["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["gauss"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RNGState(L.Callback):
    """Save the RNG states with every checkpoint; restore them before the first batch after a resume.

    Restoring lazily (not while the checkpoint is read) skips whatever Lightning draws while it
    sets the loops up again, so the next training step sees exactly the states it saw before.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict.get("rng")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._pending is not None:
            set_rng_states(self._pending)
            self._pending = None


class StepCheckpoint(ModelCheckpoint):
    """ModelCheckpoint(every_n_train_steps=N) that leaves an epoch's last batch to the epoch-end save."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)


class BestCheckpoint(ModelCheckpoint):
    """ModelCheckpoint for ``best.ckpt`` whose best path and score travel with a moved or copied run dir.

    Lightning forgets the best score when the checkpoint's dirpath differs from this run's (a run
    dir resumed after ``mv`` or ``cp -r``) and then writes ``best-v1.ckpt`` beside the stale
    ``best.ckpt``. Here the saved paths are re-rooted into this run's checkpoint folder first.
    """

    @property
    def state_key(self) -> str:  # the same key as ModelCheckpoint: checkpoints written before still resume
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old = state_dict.get("dirpath")
        best = state_dict.get("best_model_path")
        # Moved or copied: the best checkpoint is in this run's folder. A new run started from another
        # run's checkpoint (ckpt_path=) has none here yet: Lightning's own handling then applies.
        if old and self.dirpath and old != self.dirpath and best and (Path(self.dirpath) / Path(best).name).is_file():
            def moved(path: Any) -> Any:
                return str(Path(self.dirpath) / Path(path).name) if path and Path(path).parent == Path(old) else path

            state_dict = {**state_dict, "dirpath": self.dirpath,
                          **{k: moved(state_dict.get(k)) for k in ("best_model_path", "kth_best_model_path", "last_model_path")},
                          "best_k_models": {moved(k): v for k, v in (state_dict.get("best_k_models") or {}).items()}}
        super().load_state_dict(state_dict)


# -- compatibility ---------------------------------------------------------------------------
def check_compatible(
    saved: dict[str, torch.Tensor], expected: dict[str, torch.Size], saved_tune: str, run_tune: str
) -> None:
    """Raise CheckpointError unless ``saved`` has exactly the ``expected`` trained keys and shapes
    (:func:`medft.runs.trained.check_state`, the check ``trained.safetensors`` goes through too)."""
    from medft.runs.trained import check_state

    check_state(
        saved, expected, CheckpointError,
        f"checkpoint does not match this run (checkpoint tune={saved_tune!r}, run tune={run_tune!r})",
        "resume with the same model and tune mode", "checkpoint was not loaded: it holds {problem}; use an earlier checkpoint",
        compare="checkpoint vs run",
    )
