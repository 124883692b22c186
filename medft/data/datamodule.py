"""Records -> batches: a Dataset that opens images lazily and a LightningDataModule over the splits."""

from __future__ import annotations

from typing import Any, Callable

import lightning as L
from torch.utils.data import DataLoader, Dataset

from medft.data.images import load_views
from medft.errors import DataError


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

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            RecordDataset(self.splits[split], self.skip_bad_images),
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=SkippingCollate(self.collate),
            persistent_workers=self.num_workers > 0,
        )

    def on_before_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Count skipped samples here, in the main process (collate may run in workers)."""
        self.bad_images.update(batch.pop("bad_images", None) or [])
        return batch

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", shuffle=False) if self.splits.get("val") else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
