"""Shared fixtures: a composed, shrunken CPU training config and the demo data in a session cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# `make test` runs pytest-xdist workers side by side (Makefile TEST_JOBS): one torch thread each, or the
# workers oversubscribe the cores (medft/util/threads.py). Set before torch loads; subprocesses inherit it, and a
# test that needs another setting sets its own.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("MEDFT_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import yaml  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402

from medft.config.resolvers import register_resolvers
from medft.config.search import CONFIG_DIR  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# A few batches per stage: every training test stays in seconds on 2 CPU cores.
FAST = [
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "+trainer.limit_train_batches=3",
    "+trainer.limit_val_batches=1",
    "+trainer.limit_test_batches=1",
    "data.batch_size=8",
    "data.eval_batch_size=16",
    "callbacks.progress_bar.refresh_rate=0",
]


@pytest.fixture(autouse=True)
def no_user_config_dirs(monkeypatch):
    """Each test starts from medft's own configs: a --config-dir given in-process does not outlive its test."""
    from medft.config.search import CONFIG_DIRS_ENV

    monkeypatch.setenv(CONFIG_DIRS_ENV, "")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One demo dataset for the whole session (generated on first use)."""
    return tmp_path_factory.mktemp("medft_cache")


@pytest.fixture
def make_cfg(tmp_path, cache_dir):
    """Compose ``configs/train.yaml`` with overrides, outputs in tmp_path, the shared cache."""
    register_resolvers()

    def _make(*overrides: str, fast: bool = True) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[*(FAST if fast else []), *overrides])
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.paths.cache_dir = str(cache_dir)
        return cfg

    return _make


def model_cfg(name: str = "blip_tiny", **overrides) -> dict:
    """A model config as its builder's kwargs (composed and resolved as in a run, seed 0)."""
    from medft.models import NOT_BUILDER_ARGS

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}", "seed=0"])
    node = OmegaConf.to_container(cfg.model, resolve=True)
    for key in ("_target_", *NOT_BUILDER_ARGS):
        node.pop(key, None)
    node.update(overrides)
    return node


def tune_cfg(mode: str, **overrides) -> dict:
    cfg = yaml.safe_load((CONFIG_DIR / "tune" / f"{mode}.yaml").read_text())
    cfg.update(overrides)
    return cfg


@pytest.fixture
def run_cli(tmp_path, cache_dir):
    """Run ``medft <args>`` in a subprocess (as a user would), logs and cache in temp dirs."""

    def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        env = dict(os.environ, MEDFT_LOG_DIR=str(tmp_path / "logs"), MEDFT_CACHE_DIR=str(cache_dir))
        return subprocess.run(
            [sys.executable, "-m", "medft.cli", *args],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
        )

    return _run
