"""``medft report`` on run dirs written here (no training): swept keys, the pivot, the plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from medft.commands.report import _fmt, figure, report


def fake_run(root: Path, name: str, tune: str, overrides: list[str], acc: float, pct: float, model: str = "blip_tiny") -> Path:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    cfg = {"model": {"name": model}, "dataset": {"name": "demo"}, "tune": {"name": tune, "components": None}}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"tune={tune}", *overrides]))
    metrics = {"test/acc": acc, "test/acc_closed": acc, "test/acc_open": 1.406e-31, "params/trainable_pct": pct,
               "params/trainable": int(pct * 1000)}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.fixture
def lr_sweep(tmp_path) -> Path:
    """layernorm at two learning rates x two seeds, and frozen once."""
    for lr, accs in (("0.001", (0.2, 0.4)), ("0.01", (0.6, 0.8))):
        for seed, acc in zip((1, 2), accs):
            fake_run(tmp_path, f"layernorm_lr{lr}_s{seed}", "layernorm", [f"optim.lr={lr}", f"seed={seed}"], acc, 0.7)
    fake_run(tmp_path, "frozen", "frozen", ["optim.lr=0.001", "seed=1"], 0.1, 0.0)
    return tmp_path


def test_a_column_per_swept_key_and_a_pivot_row_per_configuration(lr_sweep):
    out = report([lr_sweep])
    md = out["markdown"]
    runs_table, pivot_table = md.split("## Tune modes x datasets")
    assert "| model | dataset | tune | components | optim.lr | seed | trainable |" in runs_table
    rows = [line for line in pivot_table.splitlines() if line.startswith("| ")]
    assert rows[0] == "| tune | optim.lr | trainable % | demo acc | demo acc_closed | demo acc_open | n |"
    assert rows[1:] == [
        "| frozen | 0.001 | 0 | 0.1 | 0.1 | 0 | 1 |",
        "| layernorm | 0.001 | 0.7 | 0.3 | 0.3 | 0 | 2 |",  # seeds 1 and 2 averaged
        "| layernorm | 0.01 | 0.7 | 0.7 | 0.7 | 0 | 2 |",
    ]
    assert "e-31" not in md  # ~0 prints as 0


def test_numbers_print_as_people_read_them():
    assert [_fmt(v) for v in (1.406e-31, 0.26131, 1234567.0, 42.0, 3e-6, 86_000_000)] == \
        ["0", "0.2613", "1,234,567", "42", "3.00e-06", "86,000,000"]


def test_plot_marks_frozen_a_marker_per_model_and_no_overlapping_labels(tmp_path):
    fake_run(tmp_path, "a", "layernorm", [], 0.5, 0.7)
    fake_run(tmp_path, "b", "lora", [], 0.55, 1.5)
    fake_run(tmp_path, "c", "frozen", [], 0.1, 0.0)
    fake_run(tmp_path, "d", "layernorm", [], 0.6, 0.02, model="llava_tiny")
    fake_run(tmp_path, "e", "full", [], 0.62, 100.0, model="llava_tiny")
    out = report([tmp_path])
    assert out["png"].read_bytes()[:4] == b"\x89PNG"
    from medft.commands.report import read_run

    fig = figure([read_run(p) for p in sorted(tmp_path.iterdir()) if p.is_dir()])
    (ax,) = fig.axes
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "frozen (blip_tiny): 0% trained (line)" in legend  # not dropped from the log axis
    (line,) = [ln for ln in ax.get_lines() if "frozen" in ln.get_label()]
    assert line.get_ydata()[0] == pytest.approx(0.1)
    markers = {c.get_label(): c.get_paths()[0].vertices.tobytes() for c in ax.collections}
    assert markers["layernorm (blip_tiny)"] == markers["lora (blip_tiny)"] != markers["layernorm (llava_tiny)"]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = [t for t in ax.get_xticklabels() if t.get_text() and t.get_visible()]
    assert labels and all("e" not in t.get_text() for t in labels), [t.get_text() for t in labels]
    boxes = [t.get_window_extent(renderer) for t in labels] + [ax.xaxis.label.get_window_extent(renderer)]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), "axis labels overlap"
