"""The embedded pretrained Med-VLM (``model=blip_med``, ``pretrained: embedded``): medft's own recipe
(``medft pretrain``, configs/pretrain.yaml) run once per pretraining seed (``model.pretrain_seed``) into
``$MEDFT_CACHE_DIR/pretrained/blip_med-v<recipe_version>`` (seed 0, the draw ``medft train`` uses) or
``blip_med-v<recipe_version>-seed<N>`` on first use (:func:`ensure_embedded`); a change of
``recipe_version`` builds new ones. The study gives each of its seeds its own draw (experiment=study).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from medft.config import CONFIG_DIR
from medft.errors import MedftError
from medft.files import write_json_atomic
from medft.runs.layout import RunDir

INFO_FILE = "pretrain.json"
EMBEDDED_NAME = "blip_med"


def recipe_version() -> int:
    """The embedded recipe's version (``recipe_version`` in configs/pretrain.yaml)."""
    return int(yaml.safe_load((CONFIG_DIR / "pretrain.yaml").read_text())["recipe_version"])


def embedded_dir(cache_dir: str | Path, seed: int = 0) -> Path:
    """Where the draw of pretraining ``seed`` lives: seed 0 keeps the name it had before seeds had a choice."""
    return Path(cache_dir).expanduser() / "pretrained" / f"{EMBEDDED_NAME}-v{recipe_version()}{f'-seed{seed}' if seed else ''}"


def is_built(path: Path, version: int | None = None, seed: int | None = None) -> bool:
    """True if ``path`` holds a finished checkpoint (pretrain.json is written last) of ``version`` and ``seed``."""
    try:
        info = json.loads((path / INFO_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (version is None or info.get("recipe_version") == version) and (seed is None or info.get("seed", 0) == seed)


def weights_sha256(path: Path) -> str:
    """The sha256 of a checkpoint dir's weights (``model.safetensors``): which draw a run fine-tuned."""
    digest = hashlib.sha256()
    with open(path / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def identity(path: Path) -> dict[str, object]:
    """``{"pretrained/seed": N, "pretrained/sha256": first 12 hex digits}`` of a built embedded checkpoint."""
    info = json.loads((path / INFO_FILE).read_text())
    sha = info.get("weights_sha256") or weights_sha256(path)  # built before the digest was recorded: compute it
    return {"pretrained/seed": int(info.get("seed", 0)), "pretrained/sha256": sha[:12]}


def ensure_embedded(cache_dir: str | Path, seed: int = 0) -> Path:
    """The embedded pretrained checkpoint directory of pretraining ``seed``, built on first use by ``medft pretrain``'s
    recipe (:func:`run_recipe`: a library call in this process, with a Hydra of its own).

    Built into a temporary folder that is renamed into place when complete: an interrupted build leaves
    nothing half-written behind (a killed builder's folder is removed by the next). One build at a time:
    the parallel jobs of a sweep on a fresh cache wait for the first one's model.
    """
    seed = int(seed)
    version = recipe_version()
    target = embedded_dir(cache_dir, seed)
    if is_built(target, version, seed):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(f"{target.name}.lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"medft: another process is building the embedded model into {target}: waiting for it", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when that process ends, however it ends
        remove_dead_builds(target)  # this process holds the lock: any temp dir is a dead builder's
        if is_built(target, version, seed):
            return target
        return build_embedded(target, version, cache_dir, seed)


def remove_dead_builds(target: Path) -> list[Path]:
    """Delete the temp dirs (``<target>.tmp-<pid>``) that builders killed mid-build left behind; call
    with the build lock held (a live builder holds it while its temp dir exists)."""
    dead = sorted(p for p in target.parent.glob(f"{target.name}.tmp-*") if p.is_dir())
    for path in dead:
        print(f"medft: removing {path}, left by a build that was killed", flush=True)
        shutil.rmtree(path, ignore_errors=True)
    return dead


def build_embedded(target: Path, version: int, cache_dir: str | Path, seed: int = 0) -> Path:
    """Run the embedded recipe (``medft pretrain``, on the CPU) in this process; move its result to ``target``."""
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"medft: building the embedded pretrained model {EMBEDDED_NAME} (first use, recipe v{version}, seed {seed}): "
        f"pretraining it on the demo source domain into {target}; about 2 minutes on a CPU core, once",
        flush=True,
    )
    started = time.perf_counter()
    try:
        run_recipe(tmp / "model", tmp / "run", seed, cache_dir)
    except Exception as err:  # noqa: BLE001 - any failure of the build is one line for the run that needed it
        shutil.rmtree(tmp, ignore_errors=True)
        raise MedftError(
            f"building the embedded pretrained model failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
            f"run `medft pretrain` (seed={seed}) to see why, or set model.pretrained to a checkpoint directory"
        ) from err
    except BaseException:  # interrupted (Ctrl-C, a pre-emption's exit): nothing half-built stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not is_built(tmp / "model", version, seed):
        shutil.rmtree(tmp, ignore_errors=True)
        raise MedftError(f"building the embedded pretrained model wrote no finished checkpoint (recipe v{version}, seed {seed}); "
                         "run `medft pretrain` to see why, or set model.pretrained to a checkpoint directory")
    shutil.move(str(tmp / "run"), str(tmp / "model" / "run"))  # the pretraining run's logs travel with it
    info = json.loads((tmp / "model" / INFO_FILE).read_text())
    write_json_atomic(tmp / "model" / INFO_FILE, {**info, "run_dir": "run"})  # relative: inside the checkpoint
    try:
        os.replace(tmp / "model", target)
    except OSError:  # another process finished first: use its copy
        if not is_built(target, version, seed):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"medft: embedded pretrained model ready in {time.perf_counter() - started:.0f} s: {target}", flush=True)
    return target


def run_recipe(out: Path, run_dir: Path, seed: int, cache_dir: str | Path, overrides: tuple[str, ...] = ()) -> dict[str, object]:
    """``medft pretrain out=OUT seed=SEED [overrides]`` with its run in ``run_dir``, as a library call: medft's own
    configs/pretrain.yaml composed by a Hydra of its own, run by :func:`medft.pipeline.pretrain` while
    :func:`recipe_process` keeps the caller's process state (its Hydra, threads, RNGs, logging, environment)
    out of the build and the build's out of the caller."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf, open_dict

    from medft.config import register_resolvers
    from medft.pipeline import pretrain, train_and_test

    cache = Path(cache_dir).expanduser()
    run_dir.mkdir(parents=True, exist_ok=True)
    with recipe_process(cache, run_dir / "pretrain.log"):
        register_resolvers()
        args = [f"seed={int(seed)}", *overrides]
        caller = GlobalHydra.instance().hydra  # a `medft train` job's: Hydra composes one app at a time
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name="pretrain"):
                cfg = compose("pretrain", args)
        finally:
            GlobalHydra.instance().clear()
            GlobalHydra.instance().hydra = caller
        with open_dict(cfg):
            cfg.out = str(out)
            cfg.paths.output_dir = str(run_dir)  # not ${hydra:runtime.output_dir}: that is the caller's run
            cfg.paths.cache_dir = str(cache)
        record = RunDir(run_dir)
        record.hydra_dir.mkdir(exist_ok=True)  # the run records its config as a `medft pretrain` run does
        OmegaConf.save(cfg, record.config)
        OmegaConf.save(OmegaConf.create(args), record.overrides)
        return pretrain(cfg, lambda c: train_and_test(c, preemption=False))  # the caller's signal handlers stay


@contextmanager
def recipe_process(cache_dir: Path, log_file: Path) -> Iterator[None]:
    """Run the recipe as if in a process of its own: medft's configs only (no user config dirs),
    ``MEDFT_CACHE_DIR``; afterwards the caller's environment variables, Hydra config, torch threads and
    flags, RNG states, warning filters and root log handlers are back as they were (the recipe's log
    lines go to ``log_file``, not the caller's train.log)."""
    import logging
    import random
    import warnings

    import numpy as np
    import torch
    from hydra.core.hydra_config import HydraConfig

    from medft.config import CONFIG_DIRS_ENV

    environ = dict(os.environ)
    hydra_cfg = HydraConfig.instance().cfg
    threads = torch.get_num_threads()
    flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    rng = (random.getstate(), np.random.get_state())
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    os.environ.pop(CONFIG_DIRS_ENV, None)
    os.environ["MEDFT_CACHE_DIR"] = str(cache_dir)
    root.handlers, root.level = [file_handler], logging.INFO
    try:
        with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []), \
                warnings.catch_warnings():
            yield
    finally:
        root.handlers, root.level = handlers, level
        file_handler.close()
        os.environ.clear()
        os.environ.update(environ)
        HydraConfig.instance().cfg = hydra_cfg
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flags[2], flags[3]
        random.setstate(rng[0])
        np.random.set_state(rng[1])
