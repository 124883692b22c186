"""The CLI as a user types it, in a subprocess: both override spellings, a sweep, help, errors."""

from __future__ import annotations

import json
from pathlib import Path


from medft.models.blip import build_blip_vqa
from medft.tuning import MODE_ORDER, norm_kind
from tests.conftest import FAST, model_cfg


def run_dirs(logs: Path) -> list[Path]:
    return sorted(p.parent for p in logs.rglob("metrics.json"))


def norm_parameter_count() -> int:
    model = build_blip_vqa(**model_cfg()).model
    return sum(p.numel() for m in model.modules() if norm_kind(m) for p in m.parameters(recurse=False))


def test_help_lists_subcommands(run_cli):
    out = run_cli("--help")
    assert out.returncode == 0
    assert "train" in out.stdout and "usage: medft <command>" in out.stdout


def test_unknown_command(run_cli):
    out = run_cli("trian")
    assert out.returncode == 2 and "unknown command 'trian'" in out.stderr


def test_no_tune_lists_the_modes(run_cli, tmp_path):
    out = run_cli("train")
    assert out.returncode == 2
    assert "no tune mode given" in out.stderr
    for mode in MODE_ORDER:
        assert mode in out.stderr
    assert not (tmp_path / "logs").exists()  # refused before any run dir was made


def test_plus_tune_spelling_trains_and_names_the_run_dir(run_cli, tmp_path):
    out = run_cli("train", "+tune=layernorm", *FAST)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "trainable params: " in out.stdout and "|| trainable%:" in out.stdout
    assert "test accuracy: closed" in out.stdout
    (run,) = run_dirs(tmp_path / "logs")
    assert run.parent.name == "layernorm_demo_blip_tiny"
    assert (run / ".hydra" / "config.yaml").exists() and (run / "predictions.jsonl").exists()


def test_plain_tune_spelling_and_bad_value(run_cli, tmp_path):
    out = run_cli("train", "tune=ffn", *FAST)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [p.parent.name for p in run_dirs(tmp_path / "logs")] == ["ffn_demo_blip_tiny"]
    bad = run_cli("train", "+tune=layernorm", "optim.lr=-1")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == "medft: error: optim.lr=-1 is out of range: it must be a number > 0"


def test_unknown_tune_mode_shows_hydras_list(run_cli):
    out = run_cli("train", "+tune=layernorn")
    assert out.returncode != 0
    assert "layernorn" in out.stderr and "layernorm" in out.stderr  # Hydra lists the available options


def test_two_mode_sweep(run_cli, tmp_path):
    out = run_cli("train", "-m", "tune=layernorm,full", *FAST)
    assert out.returncode == 0, out.stderr[-2000:]
    runs = {p.name: json.loads((p / "metrics.json").read_text()) for p in run_dirs(tmp_path / "logs")}
    assert set(runs) == {"layernorm_demo_blip_tiny", "full_demo_blip_tiny"}
    assert runs["layernorm_demo_blip_tiny"]["params/trainable"] == norm_parameter_count()
    assert runs["full_demo_blip_tiny"]["params/trainable"] == runs["full_demo_blip_tiny"]["params/total"]
    assert runs["layernorm_demo_blip_tiny"]["params/total"] == runs["full_demo_blip_tiny"]["params/total"]


def test_sweeping_another_key_names_it_in_the_run_dir(run_cli, tmp_path):
    out = run_cli("train", "-m", "+tune=bitfit", "optim.lr=0.01,0.02", *FAST)
    assert out.returncode == 0, out.stderr[-2000:]
    names = sorted(p.name for p in run_dirs(tmp_path / "logs"))
    assert names == ["bitfit_demo_blip_tiny_optim.lr=0.01", "bitfit_demo_blip_tiny_optim.lr=0.02"]


def test_wandb_logger_runs_offline_without_an_account(run_cli, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    out = run_cli("train", "+tune=layernorm", "logger=wandb", *FAST)
    assert out.returncode == 0, out.stderr[-2000:]
    (run,) = run_dirs(tmp_path / "logs")
    assert list((run / "wandb").glob("offline-run-*")), "no offline W&B run recorded"
    assert (run / "csv" / "metrics.csv").exists()  # the CSV logger stays on
