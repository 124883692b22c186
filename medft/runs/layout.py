"""A run directory's layout: the one place that spells its files, folders and status words.

    run = RunDir(cfg.paths.output_dir)
    run.metrics          # RUN/metrics.json
    run.last_ckpt        # RUN/checkpoints/last.ckpt
    run.is_run()         # holds .hydra/config.yaml
    RELATIVE.last_ckpt   # checkpoints/last.ckpt, for messages
    PLACEHOLDER.last_ckpt  # RUN_DIR/checkpoints/last.ckpt, for hints

What each file holds is described in docs/runs.md. :class:`Status` is the one vocabulary of a run's
state: what ``status.json`` holds and what :func:`medft.runs.trust.run_state` and ``medft report`` say.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import ClassVar, Iterator


class Status(StrEnum):
    """A run's state. ``status.json`` holds one of the first four; ``incomplete`` is a run dir that
    says nothing (from before status.json, or cut short before writing it). These are the words of
    :func:`medft.runs.trust.run_state` and of ``medft report``'s status column."""

    RUNNING = "running"  # started, not ended (or killed without a word)
    PREEMPTED = "preempted"  # a signal stopped it after saving last.ckpt
    FAILED = "failed"  # its last attempt raised: error.txt holds why
    OK = "ok"  # finished: metrics.json is written
    INCOMPLETE = "incomplete"
    UNREADABLE = "unreadable"  # medft report only: the run dir's files cannot be read

    @classmethod
    def read(cls, value: object) -> Status | None:
        """The state a ``status.json`` value names, including the words of earlier medft versions."""
        value = FORMER_STATUS.get(value, value) if isinstance(value, str) else None
        return cls(value) if value in WRITTEN else None


WRITTEN = (Status.RUNNING, Status.PREEMPTED, Status.FAILED, Status.OK)  # the states status.json holds
# status.json words of earlier versions: a run dir written then still reports right
FORMER_STATUS = {"finished": Status.OK}


@dataclass(frozen=True)
class RunDir:
    """A run directory: the path of every file and folder medft writes or reads in one."""

    path: Path

    HYDRA: ClassVar[str] = ".hydra"  # Hydra's record of the composed run
    CONFIG: ClassVar[str] = "config.yaml"
    OVERRIDES: ClassVar[str] = "overrides.yaml"
    HYDRA_CONFIG: ClassVar[str] = "hydra.yaml"
    METRICS: ClassVar[str] = "metrics.json"
    PREDICTIONS: ClassVar[str] = "predictions.jsonl"  # the test split's
    PREDICTIONS_OF: ClassVar[str] = "predictions_{name}.jsonl"  # also_test: the same weights on another test set
    CANDIDATES: ClassVar[str] = "candidates.json"
    TRAINED: ClassVar[str] = "trained.safetensors"
    CHECKPOINTS: ClassVar[str] = "checkpoints"
    LAST: ClassVar[str] = "last.ckpt"
    BEST: ClassVar[str] = "best.ckpt"
    HPC_CKPT: ClassVar[str] = "hpc_ckpt_*.ckpt"  # Lightning's SLURM requeue checkpoints (medft.runs.preempt deletes them)
    ERROR: ClassVar[str] = "error.txt"
    ERRORS: ClassVar[str] = "errors"
    STATUS: ClassVar[str] = "status.json"
    LOCK: ClassVar[str] = ".medft.lock"
    CONFIG_DIRS: ClassVar[str] = "config_dirs.json"
    EXPORT: ClassVar[str] = "export_{fmt}"

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    # -- .hydra/: the composed config and the command line
    @property
    def hydra_dir(self) -> Path:
        return self.path / self.HYDRA

    @property
    def config(self) -> Path:
        return self.hydra_dir / self.CONFIG

    @property
    def overrides(self) -> Path:
        return self.hydra_dir / self.OVERRIDES

    @property
    def hydra_config(self) -> Path:
        return self.hydra_dir / self.HYDRA_CONFIG

    # -- results
    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def predictions(self) -> Path:
        return self.predictions_of(None)

    def predictions_of(self, name: str | None) -> Path:
        """``predictions.jsonl`` (the test split), or ``predictions_<name>.jsonl`` (an also_test set)."""
        return self.path / (self.PREDICTIONS if name is None else self.PREDICTIONS_OF.format(name=name))

    @property
    def candidates(self) -> Path:
        return self.path / self.CANDIDATES

    @property
    def trained(self) -> Path:
        return self.path / self.TRAINED

    def export_dir(self, fmt: str) -> Path:
        """Where ``medft export`` writes by default."""
        return self.path / self.EXPORT.format(fmt=fmt)

    # -- checkpoints/
    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def last_ckpt(self) -> Path:
        return self.checkpoints / self.LAST

    @property
    def best_ckpt(self) -> Path:
        return self.checkpoints / self.BEST

    # -- state: status.json, error.txt, errors/, the lock
    @property
    def status(self) -> Path:
        return self.path / self.STATUS

    @property
    def error(self) -> Path:
        return self.path / self.ERROR

    @property
    def errors_dir(self) -> Path:
        return self.path / self.ERRORS

    @property
    def lock(self) -> Path:
        return self.path / self.LOCK

    @property
    def config_dirs(self) -> Path:
        return self.path / self.CONFIG_DIRS

    # -- questions asked in more than one place
    def is_run(self) -> bool:
        """Whether this is a run dir: it holds ``.hydra/config.yaml``."""
        return self.config.is_file()

    def has_metrics(self) -> bool:
        """Whether the run finished (at least once): ``metrics.json`` is written."""
        return self.metrics.is_file()

    def has_error(self) -> bool:
        """Whether the run's last attempt failed: ``error.txt`` is there."""
        return self.error.is_file()

    def has_last_ckpt(self) -> bool:
        """Whether there is a ``checkpoints/last.ckpt`` to resume from."""
        return self.last_ckpt.is_file()

    @classmethod
    def of_checkpoint(cls, ckpt: Path) -> RunDir:
        """The run dir a checkpoint file lies in (``RUN/checkpoints/x.ckpt`` or ``RUN/trained.safetensors``)."""
        ckpt = Path(ckpt)
        return cls(ckpt.parent.parent if ckpt.parent.name == cls.CHECKPOINTS else ckpt.parent)

    @classmethod
    def find(cls, root: Path) -> Iterator[RunDir]:
        """Every run dir under ``root`` (``root`` itself included), in no particular order."""
        for config in Path(root).rglob(f"{cls.HYDRA}/{cls.CONFIG}"):
            yield cls(config.parent.parent)


RELATIVE = RunDir(Path())  # names inside a run dir, as messages print them: RELATIVE.last_ckpt
PLACEHOLDER = RunDir(Path("RUN_DIR"))  # as hints spell them: ckpt_path=RUN_DIR/checkpoints/last.ckpt
