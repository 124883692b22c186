"""The embedded pretrained Med-VLMs (``pretrained: embedded``): medft's own recipes run once per pretraining
seed (``model.pretrain_seed``) on first use (:func:`ensure_embedded`). A recipe is a config of ``medft pretrain``
named by the model config's ``recipe`` (default ``pretrain``: configs/pretrain.yaml, the VQA model ``blip_med``;
``pretrain_report``: the report writer ``blip_med_report``); its draws live in
``$MEDFT_CACHE_DIR/pretrained/<model>-v<recipe_version>`` (seed 0, the draw ``medft train`` uses) or
``<model>-v<recipe_version>-seed<N>``, ``<model>`` being the model the recipe trains; a change of a recipe's
``recipe_version`` builds new ones. The studies give each of their seeds its own draw (experiment=study).

This module keeps the cache (where a draw lives, whether it is finished, which weights it holds, one
build at a time); the recipe that builds a draw is handed in by the run pipeline
(:func:`medft.training.pipeline.run_recipe`), which is what needs the model.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from medft.config.search import CONFIG_DIR
from medft.util.errors import MedftError
from medft.util.files import write_json_atomic

INFO_FILE = "pretrain.json"
DEFAULT_RECIPE = "pretrain"  # configs/pretrain.yaml: blip_med

# recipe(out, run_dir, seed, cache_dir, config=NAME): run the recipe configs/NAME.yaml with that seed into out
# (a checkpoint dir with INFO_FILE)
Recipe = Callable[..., object]


def recipe_config(config: str = DEFAULT_RECIPE) -> dict:
    """The recipe's config file (``configs/<config>.yaml``), as plain YAML (no composition)."""
    path = CONFIG_DIR / f"{config}.yaml"
    if not path.is_file():
        raise MedftError(f"model.recipe={config}: no such recipe ({path} is missing); use {DEFAULT_RECIPE} or pretrain_report")
    return yaml.safe_load(path.read_text())


def recipe_version(config: str = DEFAULT_RECIPE) -> int:
    """The embedded recipe's version (``recipe_version`` in configs/<config>.yaml)."""
    return int(recipe_config(config)["recipe_version"])


def recipe_model(config: str = DEFAULT_RECIPE) -> str:
    """The model the recipe trains (its ``defaults:`` entry ``model: NAME``, or ``override model: NAME`` in a recipe
    that extends another): the name of its draws."""
    entries = [entry for entry in recipe_config(config)["defaults"] if isinstance(entry, dict)]
    models = [name for entry in entries for key, name in entry.items() if key.removeprefix("override ").strip("/ ") == "model"]
    return str(models[-1])


def embedded_dir(cache_dir: str | Path, seed: int = 0, config: str = DEFAULT_RECIPE) -> Path:
    """Where the draw of pretraining ``seed`` of recipe ``config`` lives: seed 0 keeps the name it had before
    seeds had a choice (``blip_med-v<version>``)."""
    name = f"{recipe_model(config)}-v{recipe_version(config)}{f'-seed{seed}' if seed else ''}"
    return Path(cache_dir).expanduser() / "pretrained" / name


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


def ensure_embedded(cache_dir: str | Path, seed: int, recipe: Recipe, config: str = DEFAULT_RECIPE) -> Path:
    """The embedded pretrained checkpoint directory of pretraining ``seed`` of recipe ``config`` (configs/<config>.yaml),
    built on first use by running that recipe (``recipe``: :func:`medft.training.pipeline.run_recipe`, a library
    call in this process).

    Built into a temporary folder that is renamed into place when complete: an interrupted build leaves
    nothing half-written behind (a killed builder's folder is removed by the next). One build at a time:
    the parallel jobs of a sweep on a fresh cache wait for the first one's model.
    """
    seed = int(seed)
    version = recipe_version(config)
    target = embedded_dir(cache_dir, seed, config)
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
        return build_embedded(target, version, cache_dir, seed, recipe, config)


def remove_dead_builds(target: Path) -> list[Path]:
    """Delete the temp dirs (``<target>.tmp-<pid>``) that builders killed mid-build left behind; call
    with the build lock held (a live builder holds it while its temp dir exists)."""
    dead = sorted(p for p in target.parent.glob(f"{target.name}.tmp-*") if p.is_dir())
    for path in dead:
        print(f"medft: removing {path}, left by a build that was killed", flush=True)
        shutil.rmtree(path, ignore_errors=True)
    return dead


def build_embedded(target: Path, version: int, cache_dir: str | Path, seed: int, recipe: Recipe,
                   config: str = DEFAULT_RECIPE) -> Path:
    """Run the embedded recipe ``config`` (``medft pretrain``, on the CPU) in this process; move its result to ``target``."""
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"medft: building the embedded pretrained model {recipe_model(config)} (first use, recipe {config} v{version}, "
        f"seed {seed}): pretraining it on the demo source domain into {target}; a few minutes on a CPU core, once",
        flush=True,
    )
    started = time.perf_counter()
    try:
        recipe(tmp / "model", tmp / "run", seed, cache_dir, config=config)
    except Exception as err:  # noqa: BLE001 - any failure of the build is one line for the run that needed it
        shutil.rmtree(tmp, ignore_errors=True)
        raise MedftError(
            f"building the embedded pretrained model failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
            f"run `medft pretrain --config-name {config} seed={seed}` to see why, or set model.pretrained to a checkpoint directory"
        ) from err
    except BaseException:  # interrupted (Ctrl-C, a pre-emption's exit): nothing half-built stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not is_built(tmp / "model", version, seed):
        shutil.rmtree(tmp, ignore_errors=True)
        raise MedftError(f"building the embedded pretrained model wrote no finished checkpoint (recipe v{version}, seed {seed}); "
                         f"run `medft pretrain --config-name {config}` to see why, or set model.pretrained to a checkpoint directory")
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
