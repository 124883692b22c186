"""The wrapper every run shares (``medft train``, ``medft eval``): :func:`task_wrapper`.

It takes the run dir's lock, writes ``error.txt`` (and ``errors/<time>.txt``, the history) and
``status.json`` on failure, turns a user's mistake into one line and exit status 2 (a crash: 1; a
pre-empted run: :data:`medft.runs.trust.EXIT_PREEMPTED`), keeps a finished run finished when a later
attempt fails, and lets a multirun survive its failed jobs (:class:`medft.runs.trust.SweepStatus`
counts them afterwards).
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from medft.runs.layout import RELATIVE, RunDir, Status
from medft.runs.trust import run_state
from medft.util.errors import user_error
from medft.util.files import RESTART_ADVICE, RESUME_ADVICE, write_bytes_atomic, write_error, write_text_atomic
from medft.util.redact import redact


def task_wrapper(fn: Callable[[DictConfig], dict[str, Any]]) -> Callable[[DictConfig], dict[str, Any] | None]:
    """Write ``error.txt`` into the run dir on failure. A single run exits non-zero (status 2 and one
    line for a user error); in a multirun the failed job is recorded and the sweep goes on."""

    @functools.wraps(fn)
    def wrapped(cfg: DictConfig) -> dict[str, Any] | None:
        from medft.runs.trust import RunDirError, RunLock

        output_dir = OmegaConf.select(cfg, "paths.output_dir")
        lock = RunLock(output_dir) if output_dir else None
        try:
            if lock:
                lock.acquire()  # one writer per run dir; refused before anything is written
        except RunDirError as err:  # in use by another process, or not writable: nothing is written there
            print(f"medft: error: {err}", file=sys.stderr)
            if _is_multirun():
                return None
            raise SystemExit(2) from None
        try:
            return run(cfg)
        finally:
            if lock:
                lock.release()

    def run(cfg: DictConfig) -> dict[str, Any] | None:
        from medft.runs.trust import EXIT_PREEMPTED, is_rank_zero

        output_dir = OmegaConf.select(cfg, "paths.output_dir")
        run_dir = RunDir(output_dir) if output_dir else None
        finished = bool(output_dir) and run_state(Path(output_dir)) == Status.OK  # before this attempt
        if output_dir and auto_resume(cfg):
            if finished and _is_multirun():  # a requeued sweep: its finished cells are not run again
                print(f"resume=auto: {output_dir} is finished ({RELATIVE.metrics}): not run again")
                return _finished_metrics(Path(output_dir))
            if not finished and run_dir.has_last_ckpt() and not cfg.get("ckpt_path"):
                print(f"resume=auto: continuing the unfinished run in {output_dir} from {run_dir.last_ckpt}")
                cfg.ckpt_path = str(run_dir.last_ckpt)
        status_file = run_dir.status if output_dir else None
        status_before = status_file.read_bytes() if finished and status_file.is_file() else None
        try:
            result = fn(cfg)
        except SystemExit as stop:  # medft.runs.preempt.Preempted: a signal, saved at a step boundary
            if not hasattr(stop, "signame"):
                _restore_signals()
                raise
            sys.modules["medft.runs.preempt"].ignore_signals()  # saved: later signals must not turn exit 3 into a kill
            saved = f"{run_dir.last_ckpt} saved" if stop.saved else "no checkpoint yet"
            print(f"medft: {stop.signame}: run stopped at step {stop.step}, {saved}; run the same command with "
                  f"resume=auto (or resume={output_dir}) to continue (exit status {EXIT_PREEMPTED})",
                  file=sys.stderr, flush=True)
            raise SystemExit(EXIT_PREEMPTED) from None  # a sweep stops too: its job was pre-empted as a whole
        except Exception as err:  # noqa: BLE001 - recorded, then re-raised or survived by the sweep
            where, cause = traceback.format_exc(), user_error(err) or write_error(err)  # a MedftError, maybe wrapped by instantiate; a full disk
            if cause is not None:
                if output_dir and not run_dir.has_last_ckpt():
                    cause = str(cause).replace(RESUME_ADVICE, RESTART_ADVICE)  # resume= would refuse: no last.ckpt
                message, status = f"medft: error: {cause}", 2
            else:
                message, status = f"{type(err).__name__}: {err}", 1
        else:
            _restore_signals()
            if output_dir and is_rank_zero():
                clear_error(Path(output_dir))  # one current state: this attempt finished
            return result
        _restore_signals()
        kept = None
        if output_dir and is_rank_zero():  # the other ranks of a multi-device run leave the run dir to rank zero
            try:
                kept = record_error(Path(output_dir), redact(f"{message}\n\nwhere:\n{where}"), current=not finished)
                if status_before is not None:  # the finished run stays finished
                    write_bytes_atomic(status_file, status_before)
                elif not finished:
                    from medft.runs.trust import write_status

                    write_status(output_dir, Status.FAILED, error=redact(message.splitlines()[0])[:300])  # masked as error.txt is
            except OSError as write_err:  # the disk is full or the run dir read-only: say it, don't hide the error
                print(f"medft: could not record the error in {output_dir}: {write_err}", file=sys.stderr)
        if status == 1:
            message = f"{message}\n\n{where}"
        print(message.splitlines()[0] if status == 2 else message, file=sys.stderr)
        if output_dir and finished and kept:
            print(f"medft: the finished run in {output_dir} is unchanged; this attempt's error is in {kept}", file=sys.stderr)
        if _is_multirun():
            return None
        raise SystemExit(status)

    return wrapped


def auto_resume(cfg: DictConfig) -> bool:
    """``resume=auto``, or no ``resume=`` inside a SLURM job (SLURM_JOB_ID set); ``resume=false`` is off."""
    if "resume" not in cfg:
        return False  # medft eval (same task wrapper): nothing to resume
    value = cfg.get("resume")
    if cfg.get("ckpt_path") and value is None:
        return False  # ckpt_path given (or resume=RUN_DIR): that is what is continued
    return value == "auto" or (value is None and bool(os.environ.get("SLURM_JOB_ID")))


def _finished_metrics(run_dir: Path) -> dict[str, Any]:
    from medft.util.safe_load import load_json

    try:
        metrics = load_json(RunDir(run_dir).metrics)
    except (OSError, ValueError):  # medft.util.safe_load.UnsafeFile is a ValueError
        return {}
    return metrics if isinstance(metrics, dict) else {}


def record_error(run_dir: Path, text: str, current: bool = True) -> Path:
    """Keep ``text`` in ``errors/<UTC time>.txt`` (the history) and, if ``current``, as ``error.txt``
    (the run's state: its last attempt failed). Returns the history file."""
    from datetime import datetime, timezone

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H-%M-%S.%fZ")
    run = RunDir(run_dir)
    kept = write_text_atomic(run.errors_dir / f"{stamp}.txt", text)
    if current:
        write_text_atomic(run.error, text)
    return kept


def clear_error(run_dir: Path) -> None:
    """A finished attempt: the run is no longer failed (its earlier errors stay in errors/)."""
    RunDir(run_dir).error.unlink(missing_ok=True)


def _restore_signals() -> None:
    """The signal handlers of before the run (medft.runs.preempt's stay while a pre-empted process exits)."""
    if "medft.runs.preempt" in sys.modules:  # imported by train(): never imported just for this
        sys.modules["medft.runs.preempt"].restore_active()


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
