"""logger=tensorboard: Lightning's TensorBoardLogger beside the CSV logger."""

from __future__ import annotations

from medft_testing import TINY, cache, cli  # noqa: F401 - fixtures


def test_tensorboard_logger_writes_scalars(cli):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    status, out, err, run = cli("+tune=layernorm", "logger=tensorboard", "trainer.max_epochs=1", "trainer.log_every_n_steps=1", *TINY)
    assert status == 0, err
    events = list((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert events, sorted(p.name for p in run.iterdir())
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "val/acc", "params/trainable"} <= tags, tags
    assert (run / "csv" / "metrics.csv").exists()  # the CSV logger stays on
