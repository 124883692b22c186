"""Sweeps as a user runs them: a 2 x 2 grid with one failing job, the report, and launchers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import FAST


def sweep_root(logs: Path) -> Path:
    (root,) = (logs / "multiruns").iterdir()
    return root


def test_a_failed_job_is_reported_and_the_sweep_goes_on(run_cli, tmp_path):
    # lora on the vision tower matches nothing (BLIP's LoRA targets are text query/value): that job fails
    out = run_cli("train", "-m", "tune=bitfit,lora", "tune.components=[vision],[text]", *FAST)
    assert out.returncode == 1, out.stderr[-3000:]  # every job ran; the sweep as a whole failed
    root = sweep_root(tmp_path / "logs")
    assert out.stderr.strip().splitlines()[-1] == (
        f"medft: 1 of 4 jobs failed (error.txt in each): lora_demo_blip_tiny_tune.components=[vision] "
        f"— `medft report {root}` lists them")
    failed = root / "lora_demo_blip_tiny_tune.components=[vision]"
    assert "matched no Linear layer" in (failed / "error.txt").read_text()
    assert not (failed / "metrics.json").exists()

    rep = run_cli("report", str(root))
    assert rep.returncode == 0, rep.stderr[-3000:]
    rows = list(csv.DictReader((root / "results.csv").open()))
    assert len(rows) == 4
    status = {(r["tune"], r["components"]): r["status"] for r in rows}
    assert status == {("bitfit", "vision"): "ok", ("bitfit", "text"): "ok",
                      ("lora", "vision"): "failed", ("lora", "text"): "ok"}
    bad = next(r for r in rows if r["status"] == "failed")
    assert "matched no Linear layer" in bad["error"]
    for r in rows:
        if r["status"] == "ok":
            metrics = json.loads((Path(r["run"]) / "metrics.json").read_text())
            assert float(r["test/acc"]) == pytest.approx(metrics["test/acc"])
            assert int(r["trainable"]) == metrics["params/trainable"] > 0
            assert float(r["step_s"]) > 0 and float(r["peak_mb"]) > 0 and int(r["ckpt_bytes"]) > 0
    md = (root / "results.md").read_text()
    assert "| tune | trainable % | demo acc |" in md and "failed" in md
    assert md.splitlines()[0] in rep.stdout  # the table is printed too
    png = root / "accuracy_vs_params.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_report_refuses_a_dir_without_runs(run_cli, tmp_path):
    out = run_cli("report", str(tmp_path))
    assert out.returncode == 2 and "no runs found" in out.stderr


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_launcher_runs_a_two_job_sweep(run_cli, tmp_path, launcher):
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    out = run_cli("train", "-m", f"hydra/launcher={launcher}", *extra, "tune=layernorm,bitfit", *FAST)
    assert out.returncode == 0, out.stderr[-3000:]
    root = sweep_root(tmp_path / "logs")
    runs = sorted(p.parent.name for p in root.rglob("metrics.json"))
    assert runs == ["bitfit_demo_blip_tiny", "layernorm_demo_blip_tiny"]
    assert not [p for p in root.rglob("*") if "%j" in p.name], "a folder named after submitit's %j placeholder"
    assert "Traceback" not in out.stderr


def test_make_paper_with_every_job_failing_writes_the_report_then_fails(tmp_path):
    """No GPU and no local config: every job of the grid fails in one line; make still writes the
    report, then exits non-zero (it exited 0 before)."""
    import os
    import shutil
    import subprocess
    import sys

    import torch

    if torch.cuda.is_available() or shutil.which("make") is None:
        pytest.skip("needs a machine without a GPU (every paper job then fails fast) and make")
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, MEDFT_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run(
        ["make", "-o", "install", "paper", "MODES=layernorm", f"LOGS={tmp_path / 'logs'}", f"BIN={Path(sys.executable).parent}"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "medft: 16 of 16 jobs failed" in proc.stderr, proc.stderr[-3000:]
    (results,) = (tmp_path / "logs" / "paper").glob("*/results.md")
    assert "## Runs (16: 0 ok, 16 not)" in results.read_text()
