"""dataset.skip_bad_images: unreadable images stop the run naming the file, or are skipped and counted."""

import pytest

from medft.data.checks import finish_data_stats
from medft.data.datamodule import MedDataModule
from medft.testing.fixtures import write_image
from medft.util.errors import DataError


def make_records(tmp_path, n=6, bad=(1,)):
    recs = []
    for i in range(n):
        path = write_image(tmp_path / f"{i}.png", i)
        if i in bad:
            path.write_bytes(b"\x89PNG\r\n\x1a\n not really")
        recs.append({"id": f"q{i}", "image": str(path), "question": "q?", "answer": "yes", "answer_type": "CLOSED"})
    return recs


def collate(items):
    return {"n": len(items), "meta": [{"id": it["id"]} for it in items]}


def batches(dm, loader):
    return [dm.on_before_batch_transfer(b, 0) for b in loader]


def test_unreadable_image_is_an_error_naming_the_file(tmp_path):
    recs = make_records(tmp_path)
    dm = MedDataModule({"train": recs, "test": recs}, collate, batch_size=3)
    with pytest.raises(DataError, match=rf"cannot read image {tmp_path / '1.png'}: not an image file"):
        batches(dm, dm.test_dataloader())


def test_unreadable_images_are_skipped_and_counted(tmp_path, capsys):
    recs = make_records(tmp_path, bad=(1, 3, 4, 5))
    dm = MedDataModule({"train": recs, "test": recs}, collate, batch_size=3, skip_bad_images=True)
    out = batches(dm, dm.test_dataloader())
    assert [len(b["meta"]) for b in out] == [2, 0]  # the second batch is all bad: empty, and the module skips it
    assert all("bad_images" not in b for b in out)
    batches(dm, dm.train_dataloader())  # a second pass does not count them twice
    assert sorted(dm.bad_images) == ["q1", "q3", "q4", "q5"]
    stats = finish_data_stats({"data/skipped_missing_images": 2}, dm)
    assert stats["data/skipped_unreadable_images"] == 4
    printed = capsys.readouterr().out
    assert "skipped 4 sample(s) whose image is unreadable" in printed
    assert "skipped 6 sample(s) with a missing or unreadable image in all" in printed


def test_empty_split_is_an_error(tmp_path):
    with pytest.raises(DataError, match="the test split is empty"):
        MedDataModule({"train": make_records(tmp_path, bad=()), "test": []}, collate)


def test_module_skips_a_batch_with_no_readable_image():
    from functools import partial

    from torch import nn

    from medft.training.module import MedVLMModule

    class Net(nn.Module):
        task = "report"

        def loss(self, batch):
            raise AssertionError("an empty batch reached the model")

    module = MedVLMModule(Net(), optim=partial(object))
    empty = {"meta": []}
    assert module.training_step(empty, 0) is None
    assert module.validation_step(empty, 0) is None
    module.test_step(empty, 0)
    assert module.predictions == []
