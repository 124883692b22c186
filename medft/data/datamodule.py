"""Records -> batches: a Dataset that opens images lazily and a LightningDataModule over the splits."""

from __future__ import annotations

from typing import Any, Callable

import lightning as L
from torch.utils.data import DataLoader, Dataset

from medft.data.images import load_rgb
from medft.errors import DataError


class RecordDataset(Dataset):
    """One record per item; the image is opened (and converted to RGB) only when the item is read."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = dict(self.records[index])
        record["pil_image"] = load_rgb(record["image"])
        return record


class MedDataModule(L.LightningDataModule):
    """Serves the train / val / test splits of one dataset through the model's collate function."""

    def __init__(
        self,
        splits: dict[str, list[dict[str, Any]]],
        collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
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

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            RecordDataset(self.splits[split]),
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=self.collate,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", shuffle=False) if self.splits.get("val") else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
