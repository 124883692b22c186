"""`make paper-tiny MODES=layernorm` end to end, as a user runs it: fixtures generated, every cell of
the paper grid trained on its tiny model, then `medft report` over the sweep (about 45 s on 2 cores)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medft.config.search import CONFIG_DIR

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def cells() -> dict[str, tuple[str, str]]:
    """configs/experiment/paper_tiny/<cell>.yaml -> (model, dataset) that its defaults list picks."""
    out = {}
    for path in sorted((CONFIG_DIR / "experiment" / "paper_tiny").glob("*.yaml")):
        picks = {}
        for item in yaml.safe_load(path.read_text())["defaults"]:
            (key, value), = item.items()
            picks[key.removeprefix("override ").strip("/")] = value
        out[path.stem] = (picks["model"], picks["dataset"])
    return out


def test_make_paper_tiny_trains_and_reports_every_cell(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("needs make")
    grid = cells()
    makefile = (REPO / "Makefile").read_text()
    assert set(re.search(r"^PAPER_CELLS := (.*)$", makefile, re.M).group(1).split()) == set(grid)  # no cell left out
    env = dict(os.environ, MEDFT_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run(
        ["make", "-o", "install", "paper-tiny", "MODES=layernorm", f"LOGS={tmp_path / 'logs'}", f"BIN={Path(sys.executable).parent}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    (sweep,) = (tmp_path / "logs" / "paper-tiny").iterdir()
    assert f"## Runs ({len(grid)}: {len(grid)} ok, 0 not)" in (sweep / "results.md").read_text()
    with open(sweep / "results.csv", newline="") as f:
        rows = {(r["model"], r["dataset"], r["tune"]): r for r in csv.DictReader(f)}
    assert set(rows) == {(model, dataset, "layernorm") for model, dataset in grid.values()}
    for model, dataset in grid.values():
        row = rows[(model, dataset, "layernorm")]
        task = yaml.safe_load((CONFIG_DIR / "dataset" / f"{dataset}.yaml").read_text())["task"]
        metric = {"vqa": "test/acc", "report": "test/bleu_4"}[task]
        assert row["status"] == "ok" and row[metric] != "", (model, dataset, row)
        run_dir = sweep / f"layernorm_{dataset}_{model}"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert float(row[metric]) == pytest.approx(metrics[metric])  # the report shows the run's own figure
