"""Records -> batches: a Dataset that opens images lazily and a LightningDataModule over the splits."""

from __future__ import annotations

from typing import Any, Callable

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from medft.data.images import check_batch_pixels, load_views
from medft.data.resumable import ResumableLoader
from medft.util.errors import DataError


class RecordDataset(Dataset):
    """One record per item; the image is opened (and converted to RGB) only when the item is read.
    A record with ``views`` (report studies) gets them side by side as one image.

    With ``skip_bad_images`` an unreadable image does not stop the run: the item comes back as
    ``{"bad_image": (id, path)}`` and :class:`SkippingCollate` leaves it out of the batch.
    """

    def __init__(self, records: list[dict[str, Any]], skip_bad_images: bool = False) -> None:
        self.records = records
        self.skip_bad_images = skip_bad_images

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = dict(self.records[index])
        try:
            record["pil_image"] = load_views(record.get("views") or [record["image"]])
        except DataError:
            if not self.skip_bad_images:
                raise
            return {"bad_image": (record["id"], record["image"])}
        return record


    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """A batch's items (torch's DataLoader fetches a batch through this): its decoded size is bounded
        first, from the image headers (medft.data.images.check_batch_pixels)."""
        check_batch_pixels([self.records[i].get("views") or [self.records[i]["image"]] for i in indices])
        return [self[i] for i in indices]


class SkippingCollate:
    """The model's collate over the readable items; the skipped ones ride along as ``bad_images``.

    A batch whose every image is unreadable comes out as ``{"meta": [], "bad_images": [...]}``.
    """

    def __init__(self, collate: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> None:
        self.collate = collate

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        bad = [it["bad_image"] for it in items if "bad_image" in it]
        good = [it for it in items if "bad_image" not in it]
        batch = self.collate(good) if good else {"meta": []}
        batch["bad_images"] = bad
        return batch


class MedDataModule(L.LightningDataModule):
    """Serves the train / val / test splits of one dataset through the model's collate function."""

    def __init__(
        self,
        splits: dict[str, list[dict[str, Any]]],
        collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        skip_bad_images: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for split in ("train", "test"):
            if not splits.get(split):
                raise DataError(f"the {split} split is empty: check dataset.root and the annotation files")
        self.splits = splits
        self.collate = collate
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.skip_bad_images = skip_bad_images
        self.bad_images: dict[str, str] = {}  # id -> path of every sample skipped for its image
        self.seed = seed  # the train order of each epoch; see medft.data.resumable
        self._train_loader: ResumableLoader | None = None
        self._resume_at: dict[str, Any] = {}  # the train loader's position, from a checkpoint

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = RecordDataset(self.splits[split], self.skip_bad_images)
        kwargs = dict(
            num_workers=self.num_workers, collate_fn=SkippingCollate(self.collate), persistent_workers=self.num_workers > 0
        )
        if shuffle and self._one_process():  # seeded, and resumable mid-epoch
            return ResumableLoader(dataset, self.batch_size, self.seed, **kwargs)
        if shuffle:  # several processes: Lightning puts in a DistributedSampler (shuffled per epoch, seeded)
            return DataLoader(dataset, batch_size=self.batch_size, shuffle=True, **kwargs)
        # its own generator: iterating never draws from the global RNG, so evaluation leaves training's alone
        return DataLoader(dataset, batch_size=self.eval_batch_size, generator=torch.Generator(), **kwargs)

    def _one_process(self) -> bool:
        return self.trainer is None or self.trainer.world_size == 1

    def on_before_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Count skipped samples here, in the main process (collate may run in workers)."""
        self.bad_images.update(batch.pop("bad_images", None) or [])
        return batch

    def train_dataloader(self) -> DataLoader:
        loader = self._loader("train", shuffle=True)
        if isinstance(loader, ResumableLoader):
            self._train_loader = loader
            loader.load_state_dict(self._resume_at)
            self._resume_at = {}
        return loader

    # The train loader's position is saved here as well as by Lightning (which saves any loader with a
    # state_dict): Lightning skips loading it when the loader was made before the checkpoint was read,
    # as it is when configure_optimizers asks for trainer.estimated_stepping_batches.
    def state_dict(self) -> dict[str, Any]:
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume_at = dict(state_dict.get("train_loader") or {})
        if self._train_loader is not None:  # already made (the strategy restores after setup)
            self._train_loader.load_state_dict(self._resume_at)
            self._resume_at = {}

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", shuffle=False) if self.splits.get("val") else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
