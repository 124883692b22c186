"""``medft train resume=RUN_DIR``: continue a stopped run in its own directory, with its own config.

The run's ``.hydra/overrides.yaml`` is replayed (so the composed config is the one it started
with), ``hydra.run.dir`` points back at RUN_DIR (so metrics.json, predictions.jsonl and the logs
land beside the checkpoints) and ``ckpt_path`` at ``RUN_DIR/checkpoints/last.ckpt``. Overrides
given after ``resume=`` are applied on top (e.g. ``trainer.max_epochs=20`` to train longer).
"""

from __future__ import annotations

from pathlib import Path

from medft.config.overrides import quote_value
from medft.runs.layout import PLACEHOLDER, RELATIVE, RunDir
from medft.util.errors import CheckpointError, ConfigError

RESUME_KEY = "resume"
_REPLACED = {RESUME_KEY, "ckpt_path", "hydra.run.dir"}


def _key(arg: str) -> str | None:
    return arg.split("=", 1)[0].lstrip("+~") if "=" in arg and not arg.startswith("-") else None


def _read_overrides(saved: Path, given: set[str | None]) -> list[str]:
    """The run's own overrides, bounded (medft.util.safe_load) and parsed (medft.runs.trust.parse_run_overrides),
    or one line. Those the command line gives again (``given`` keys) are the user's own and replace them."""
    from medft.runs.trust import RunDirError, parse_run_overrides
    from medft.util.safe_load import UnsafeFile, load_yaml

    try:
        original = load_yaml(saved)
    except (OSError, UnsafeFile) as err:
        reason = " ".join(str(getattr(err, "strerror", None) or err).split())[:200]
        raise RunDirError(
            f"{saved} cannot be read ({reason}): restore it, or start a new run with ckpt_path={PLACEHOLDER.last_ckpt}"
        ) from None
    if isinstance(original, list):
        original = [o for o in original if not (isinstance(o, str) and _key(o) in given)]
    return parse_run_overrides([] if original is None else original, saved)


AUTO = "auto"
_OFF = ("auto", "false", "False", "null", "off")  # kept as config values: medft.runs.runner.auto_resume reads them


def _configured_run_dir(args: list[str]) -> Path | None:
    """The run dir a command line names with ``hydra.run.dir=`` (quotes removed), if any."""
    given = [a.split("=", 1)[1] for a in args if _key(a) == "hydra.run.dir"]
    if not given:
        return None
    value = given[-1]
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return Path(value).expanduser().resolve()


def check_auto_resume(args: list[str]) -> None:
    """``resume=auto`` (or a SLURM job without ``resume=``) on one run whose ``hydra.run.dir`` holds a
    finished run: refused in one line, before Hydra writes anything there. Unfinished or empty dirs
    are the job's business (medft.runs.runner.auto_resume: continue from last.ckpt, or start)."""
    import os

    values = [a.split("=", 1)[1] for a in args if _key(a) == RESUME_KEY]
    auto = values == [AUTO] or (not values and bool(os.environ.get("SLURM_JOB_ID")) and not any(_key(a) == "ckpt_path" for a in args))
    if not auto or any(a in ("-m", "--multirun") for a in args):
        return
    run_dir = _configured_run_dir(args)
    run = RunDir(run_dir) if run_dir is not None else None
    if run is not None and run.overrides.is_file():
        # a crafted run dir is refused before its checkpoint is continued; the entries this command line
        # gives again are the user's own (resume=auto replays nothing: Hydra composes this command line)
        _read_overrides(run.overrides, {_key(a) for a in args})
    if run is None or not run.has_metrics() or run.has_error():
        return
    why = "resume=auto" if values else "resume=auto (on in a SLURM job)"
    raise ConfigError(
        f"{why}: {run_dir} holds a finished run ({RELATIVE.metrics}): nothing to continue; give another "
        f"hydra.run.dir to start a new run (or resume={run_dir} trainer.max_epochs=N to train it longer)"
    )


def resume_overrides(args: list[str]) -> list[str]:
    """Rewrite ``resume=RUN_DIR ...`` into the run's own overrides plus the new ones; else return ``args``."""
    run_dirs = [a.split("=", 1)[1] for a in args if _key(a) == RESUME_KEY and a.split("=", 1)[1] not in _OFF]
    if not run_dirs:
        return args
    if len(run_dirs) > 1 or any(a in ("-m", "--multirun") for a in args):
        raise ConfigError("resume=RUN_DIR continues one run: give it once and without -m")
    run_dir = Path(run_dirs[0]).expanduser().resolve()
    saved = RunDir(run_dir).overrides
    if not saved.is_file():
        raise ConfigError(
            f"resume={run_dirs[0]}: {saved} not found; pass a run directory written by `medft train` "
            f"(it holds {RunDir.HYDRA}/, {RunDir.CHECKPOINTS}/, {RunDir.METRICS})"
        )
    last = RunDir(run_dir).last_ckpt
    if not last.is_file():
        raise CheckpointError(
            f"resume={run_dirs[0]}: no checkpoint {last} (the run stopped before its first save); "
            "start it again without resume="
        )
    extra = [a for a in args if _key(a) not in _REPLACED]
    extra_keys = {_key(a) for a in extra}
    kept = [a for a in _read_overrides(saved, extra_keys) if _key(a) not in _REPLACED and _key(a) not in extra_keys]
    return [*kept, *extra, f"ckpt_path={quote_value(str(last))}", f"hydra.run.dir={quote_value(str(run_dir))}"]



def resumed_run_dir(args: list[str]) -> Path | None:
    """The run dir of ``resume=RUN_DIR`` on a command line, if any."""
    run_dirs = [a.split("=", 1)[1] for a in args if _key(a) == RESUME_KEY and a.split("=", 1)[1] not in _OFF]
    return Path(run_dirs[0]).expanduser().resolve() if len(run_dirs) == 1 else None


def locked_run_dir(args: list[str]) -> Path | None:
    """The one run dir a single-job command line names with ``hydra.run.dir=`` (no interpolation), which
    ``medft train`` locks before Hydra writes there; None for a sweep or a dir Hydra picks."""
    if any(a in ("-m", "--multirun") for a in args):
        return None
    given = [a.split("=", 1)[1] for a in args if _key(a) == "hydra.run.dir"]
    return _configured_run_dir(args) if given and "${" not in given[-1] else None
