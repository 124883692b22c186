"""Runs that survive a cluster: a signal saves the run and stops it; status.json says where it stands.

* :class:`Preemption` (a callback every ``medft train`` adds) catches SIGTERM (what SLURM, Kubernetes
  and most schedulers send before a kill), SIGUSR1 (SLURM's early warning, ``#SBATCH --signal=USR1@120``)
  and SIGINT (Ctrl-C). The step in progress finishes, ``checkpoints/last.ckpt`` is written (atomically,
  with everything an exact resume needs: the same state the every-N-steps checkpoint holds),
  ``status.json`` says ``preempted`` and the process exits with :data:`EXIT_PREEMPTED`. A signal during
  an epoch's last step or its validation lets the epoch finish (its checkpoint is the resume point).
  Further signals while saving are only acknowledged: the save is never cut short by them (and a
  kill leaves the previous last.ckpt whole: medft.runs.checkpoint.AtomicCheckpointIO).
  Under SLURM with Lightning's auto-requeue (its SLURMEnvironment, on by default) the requeue signal
  also requeues the job, through Lightning's own handler, once last.ckpt is on disk.
* ``status.json`` (:func:`medft.runs.trust.write_status`) says ``preempted``, with the step, the signal and the checkpoint.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from medft.runs.layout import RELATIVE, RunDir, Status
from medft.runs.trust import EXIT_PREEMPTED, write_status

SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")
ACTIVE: "Preemption | None" = None  # the run whose handlers are installed (medft.runs.runner restores them)


def ignore_signals() -> None:
    """A pre-empted process on its way out: further signals are ignored (Python would otherwise reset
    its handlers to the defaults while it shuts down, and a late signal would kill it)."""
    if threading.current_thread() is threading.main_thread():
        for name in SIGNALS:
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), signal.SIG_IGN)


def restore_active() -> None:
    """Put back the signal handlers of before the current run, if one installed them."""
    if ACTIVE is not None:
        ACTIVE.restore()


class Preempted(SIGTERMException):
    """Raised at a step boundary after a signal; ``medft.runs.runner.task_wrapper`` turns it into :data:`EXIT_PREEMPTED`."""

    def __init__(self, signame: str, step: int, saved: bool) -> None:
        super().__init__(EXIT_PREEMPTED)
        self.signame, self.step, self.saved = signame, step, saved


# -- signals ---------------------------------------------------------------------------------
class Preemption(L.Callback):
    """Save and stop at the next step boundary after SIGTERM, SIGUSR1 or SIGINT (see the module doc)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.received: str | None = None  # the first signal's name
        self._previous: dict[int, Any] = {}
        self._trainer: L.Trainer | None = None

    # the handler runs between two bytecodes of the main thread: it only records, never saves
    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.received is None:
            self.received = name
            _say(f"medft: {name} received: finishing this step, then saving {RunDir(self.run_dir).last_ckpt} and exiting "
                 f"(exit status {EXIT_PREEMPTED})")
            launcher = getattr(self._trainer.strategy, "launcher", None) if self._trainer else None
            if launcher is not None and hasattr(launcher, "kill"):  # Lightning's DDP children get it too
                launcher.kill(signum)
        else:
            _say(f"medft: {name} again: still saving or exiting; the run stops as soon as {RunDir.LAST} is written")

    def install(self) -> "Preemption":
        """Catch the signals from now on (medft.training.pipeline.train_and_test: before the model loads). Lightning's own SIGTERM
        handler, set when fit or test starts, keeps ours as the one it restores on teardown."""
        global ACTIVE
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in SIGNALS:
            signum = getattr(signal, name, None)
            if signum is None:  # Windows has no SIGUSR1
                continue
            previous = signal.signal(signum, self._handle)
            if previous != self._handle:
                self._previous.setdefault(signum, previous)
        ACTIVE = self
        return self

    def restore(self) -> None:
        """The handlers from before :meth:`install` (a run that ended; a preempted process keeps ours
        until it exits, so a signal during its shutdown is only acknowledged)."""
        global ACTIVE
        if threading.current_thread() is threading.main_thread():
            for signum, previous in self._previous.items():
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}
        if ACTIVE is self:
            ACTIVE = None

    # Lightning composes its own SIGTERM handler (which stops the loops without saving) when fit or
    # test starts: ours replace it from the first step on
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_over(trainer)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_over(trainer)

    def _take_over(self, trainer: L.Trainer) -> None:
        self._trainer = trainer
        self.install()
        if self.received:  # a signal while Lightning's handler was in place: ours saves, Lightning's must not stop
            trainer._signal_connector.received_sigterm = False

    def _stop_requested(self, trainer: L.Trainer) -> bool:
        """Whether any rank received a signal (all ranks decide together)."""
        if trainer.world_size > 1:
            return bool(trainer.strategy.reduce_boolean_decision(self.received is not None, all=False))
        return self.received is not None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # the epoch's validation and its checkpoint come next: stop after them
        if self._stop_requested(trainer):  # the state StepCheckpoint would save here: resumes exactly
            trainer.save_checkpoint(RunDir(self.run_dir).last_ckpt)
            self._stop(trainer, saved=True)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._stop_requested(trainer):  # before a new epoch's first step: the last epoch's checkpoint
            self._stop(trainer, saved=RunDir(self.run_dir).has_last_ckpt())

    def on_test_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._stop_requested(trainer):  # training is done; the test reruns on resume
            self._stop(trainer, saved=RunDir(self.run_dir).has_last_ckpt())

    def _stop(self, trainer: L.Trainer, saved: bool) -> None:
        name = self.received or "a signal on another rank"
        step = int(trainer.global_step)
        write_status(self.run_dir, Status.PREEMPTED, step=step, epoch=int(trainer.current_epoch), signal=name,
                     checkpoint=str(RELATIVE.last_ckpt) if saved else None)
        self._requeue(trainer)
        raise Preempted(name, step, saved)

    def _requeue(self, trainer: L.Trainer) -> None:
        """SLURM's requeue signal with Lightning's auto-requeue on: Lightning requeues the job."""
        from lightning.fabric.plugins.environments import SLURMEnvironment

        env = trainer._accelerator_connector.cluster_environment
        if not (isinstance(env, SLURMEnvironment) and env.auto_requeue and self.received):
            return
        if signal.Signals[self.received] != env.requeue_signal:
            return
        before = set(Path(trainer.default_root_dir).glob(RunDir.HPC_CKPT))
        trainer._signal_connector._slurm_sigusr_handler_fn(env.requeue_signal, None)  # saves hpc_ckpt, requeues
        for path in set(Path(trainer.default_root_dir).glob(RunDir.HPC_CKPT)) - before:
            path.unlink(missing_ok=True)  # the same state as last.ckpt, which resume=auto reads


def _say(line: str) -> None:
    """A line on stderr from a signal handler (which may interrupt another write to stderr)."""
    try:
        print(line, file=sys.stderr, flush=True)
    except RuntimeError:  # reentrant call inside the stream's buffer: the line is lost, not the run
        pass
