"""``medft report`` on run dirs written here (no training): swept keys, the pivot, the plot."""

from __future__ import annotations

import csv
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


def fake_study_run(root: Path, tune: str, init: str, fraction: float, seed: int, acc: float, pct: float,
                   lr: str | None = None) -> Path:
    """A run of experiment=study (init pretrained) or study_random, as its run dir looks: config, overrides, metrics."""
    name = f"{tune}_{init}_f{fraction}_s{seed}" + (f"_lr{lr}" if lr else "")
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    cfg = {"seed": seed, "model": {"name": "blip_med", "pretrained": "embedded" if init == "pretrained" else None,
                                   "pretrain_seed": "${seed}"},
           "dataset": {"name": "demo_ct", "train_fraction": fraction}, "tune": {"name": tune, "components": None},
           "optim": {"lr": lr or "${medft_lr:${tune},${model}}"}, "also_test": {"source": "demo_source"},
           "paths": {"output_dir": str(run)}}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    experiment = "study" if init == "pretrained" else "study_random"
    overrides = [f"tune={tune}", f"seed={seed}", f"dataset.train_fraction={fraction}", f"experiment={experiment}"]
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides + ([f"optim.lr={lr}"] if lr else [])))
    metrics = {"test/acc": acc, "source/acc": acc / 2, "shift/acc": acc / 3, "params/trainable_pct": pct,
               "params/trainable": int(pct * 1000)}
    if init == "pretrained":
        metrics.update({"pretrained/seed": seed, "pretrained/sha256": f"{seed:012x}"})
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_a_sweep_mixing_the_study_presets_and_an_lr_sweep_averages_nothing(tmp_path):
    """Two fractions x pretrained / random init (the study's presets) and an lr sweep, all at one seed: every
    table row is one run (n = 1), with init, train_fraction and optim.lr as columns."""
    accs = iter(x / 100 for x in range(10, 90))
    for fraction in (0.2, 1.0):
        for tune, pct in (("frozen", 0.0), ("layernorm", 0.7), ("full", 100.0)):
            fake_study_run(tmp_path, tune, "pretrained", fraction, 1, next(accs), pct)
        for tune, pct in (("layernorm", 0.7), ("full", 100.0)):
            fake_study_run(tmp_path, tune, "random", fraction, 1, next(accs), pct)
        for lr in ("0.001", "0.1"):  # experiment=study tune=layernorm optim.lr=...
            fake_study_run(tmp_path, "layernorm", "pretrained", fraction, 1, next(accs), 0.7, lr=lr)
    out = report([tmp_path])
    md = out["markdown"]
    pivot_md = md.split("## Tune modes x datasets")[1].split("## The study")[0]
    study_md = md.split("## The study")[1]
    pivot_rows = [line.split(" | ") for line in pivot_md.splitlines() if line.startswith("| ") and "---" not in line]
    header, body = pivot_rows[0], pivot_rows[1:]
    assert {"init", "train_fraction", "optim.lr"} <= {c.strip("| ") for c in header}
    assert len(body) == 14 and all(row[-1].strip(" |") == "1" for row in body)  # n: one seed each
    study_rows = [line for line in study_md.splitlines() if line.startswith("| ") and "---" not in line]
    header = [c.strip() for c in study_rows[0].strip("|").split("|")]
    assert "optim.lr" in header
    seeds = [line.strip("|").split("|")[header.index("seeds")].strip() for line in study_rows[1:]]
    assert len(seeds) == 14 and set(seeds) == {"1"}
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert {"init", "train_fraction", "optim.lr", "pretrain_seed", "pretrained_sha256"} <= set(rows[0])
    frozen = [r for r in rows if r["tune"] == "frozen"]
    assert {r["pretrain_seed"] for r in frozen} == {"1"} and {r["pretrained_sha256"] for r in frozen} == {"000000000001"}
    # the per-run paired statistics compare a run with full of its own configuration only
    for r in out["rows"]:
        if r.get("reference_run"):
            ref = next(x for x in out["rows"] if x["run"] == r["reference_run"])
            assert (ref["init"], ref["train_fraction"], ref.get("optim.lr")) == (r["init"], r["train_fraction"], r.get("optim.lr"))


def test_study_plots_give_each_configuration_its_colour_and_keep_the_legend_off_the_points(tmp_path):
    from matplotlib.colors import to_hex

    from medft.commands import report as rep

    for seed in (1, 2):
        for fraction in (0.2, 1.0):
            for tune, pct in (("frozen", 0.0), ("layernorm", 0.7), ("attention", 30.0), ("ffn", 40.0), ("lora", 2.0),
                              ("ia3", 0.1), ("bitfit", 0.5), ("dora", 2.2), ("full", 100.0)):
                fake_study_run(tmp_path, tune, "pretrained", fraction, seed, 0.4 + pct / 1000, pct)
            for tune, pct in (("layernorm", 0.7), ("full", 100.0)):
                fake_study_run(tmp_path, tune, "random", fraction, seed, 0.3, pct)
    rows = [rep.read_run(p) for p in sorted(tmp_path.iterdir()) if p.is_dir()]
    captured = {}
    import matplotlib.figure

    original = matplotlib.figure.Figure.savefig

    def keep(fig, path, *args, **kwargs):
        fig.canvas.draw()
        captured[Path(path).name] = fig
        return original(fig, path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:  # keep each figure, drawn, as it is saved
        mp.setattr(matplotlib.figure.Figure, "savefig", keep)
        paths = rep.study_plots(rows, tmp_path, [])
    assert [p.name for p in paths] == ["study_acc_vs_params.png", "study_gain_vs_kept.png"]
    for name, fig in captured.items():
        (legend,) = fig.legends
        labels = [t.get_text() for t in legend.get_texts()]
        assert len(labels) == 11 and "frozen" in labels and "full (random init)" in labels
        colors = [to_hex(h.get_color() if hasattr(h, "get_color") else h[0].get_color()) for h in legend.legend_handles]
        assert len(set(colors)) == 11, (name, dict(zip(labels, colors)))  # frozen and full (random init) differ
        box = legend.get_window_extent()
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent()), name  # beside the panels: over no point
