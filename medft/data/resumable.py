"""A shuffled training loader that can resume in the middle of an epoch.

Lightning saves and restores the position of any DataLoader that has ``state_dict`` /
``load_state_dict`` (it calls them when it writes a checkpoint and when it resumes a run that
stopped mid-epoch). With a plain shuffled DataLoader it would instead restart the epoch with a
fresh shuffle and train on some samples twice and others never.

Here the order of epoch ``e`` is a seeded permutation of ``(seed, e)`` (Lightning calls
``set_epoch``), and the loader's state is that epoch plus how many samples were served. Resuming
replays the same permutation from that point. The loader also owns its ``generator``, so
iterating it never draws from torch's global RNG (which dropout uses).
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class ResumableSampler(Sampler[int]):
    """A seeded random permutation per epoch that can start part-way through (``start``)."""

    def __init__(self, num_samples: int, seed: int) -> None:
        self.num_samples = num_samples
        self.seed = int(seed)
        self.epoch = 0
        self.start = 0  # samples of the current epoch already served (set when resuming)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.start = 0
        self.epoch = epoch

    def order(self) -> list[int]:
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        return iter(self.order()[start:])

    def __len__(self) -> int:
        return self.num_samples


class ResumableLoader(DataLoader):
    """A DataLoader over a :class:`ResumableSampler` whose position Lightning saves and restores."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, **kwargs: Any) -> None:
        kwargs.pop("shuffle", None)
        kwargs.setdefault("sampler", ResumableSampler(len(dataset), seed))
        kwargs.setdefault("generator", torch.Generator().manual_seed(int(seed)))
        super().__init__(dataset, batch_size=batch_size, **kwargs)
        self._served = 0  # samples of the current epoch served so far

    def __iter__(self) -> Iterator[Any]:
        return self._counting(super().__iter__)

    def _counting(self, make_iter) -> Iterator[Any]:
        sampler = self.sampler
        if isinstance(sampler, ResumableSampler):
            self._served = sampler.start  # read just before the sampler consumes it
            self.generator.manual_seed(_epoch_seed(sampler.seed, sampler.epoch))  # worker seeds per epoch
        for batch in make_iter():
            self._served += self.batch_size or 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        sampler = self.sampler
        if not isinstance(sampler, ResumableSampler):  # replaced (e.g. a DistributedSampler): nothing to add
            return {}
        return {"seed": sampler.seed, "epoch": sampler.epoch, "served": min(self._served, len(sampler))}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        sampler = self.sampler
        if not state_dict or not isinstance(sampler, ResumableSampler):
            return
        sampler.seed, sampler.epoch = int(state_dict["seed"]), int(state_dict["epoch"])
        sampler.start = int(state_dict["served"])
