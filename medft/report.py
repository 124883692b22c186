"""``medft report DIR... [out=DIR]``: one table of every run under some run / multirun dirs.

Writes ``results.csv``, ``results.md`` (all runs, then a pivot like the study's: rows = tune
modes, columns = dataset metrics) and ``accuracy_vs_params.png`` (main metric against trainable %,
log x-axis, one marker per mode, one panel per dataset) into the first DIR or ``out=``; prints
the markdown to the terminal. Failed runs are listed with their error, never dropped.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from medft.errors import MedftError
from medft.files import write_text_atomic

MODE_ORDER = ["frozen", "layernorm", "bitfit", "lora", "attention", "ffn", "full"]
# The metric a dataset is judged by in the pivot and the plot: the first one present.
MAIN_METRICS = ["test/acc", "test/bleu_4", "test/cider"]
PIVOT_METRICS = ["test/acc_closed", "test/acc_open", "test/acc", "test/bleu_4", "test/rouge_l", "test/cider"]
BASE_COLUMNS = ["model", "dataset", "tune", "components", "trainable", "trainable_pct", "step_s", "peak_mb",
                "ckpt_bytes", "status", "error", "run"]
# The study in miniature (make study): each run also tested on the source domain and another target
# (``also_test``: ``source/*``, ``shift/*``); ``init`` says whether it started from pretrained weights.
STUDY_COLUMNS = ["init", "seed", "train_fraction"]
STUDY_METRICS = ["test/acc", "source/acc", "shift/acc", "trainable", "trainable_pct", "step_s", "peak_mb"]


def find_runs(dirs: list[Path]) -> list[Path]:
    """Every run dir (a dir holding ``.hydra/config.yaml``) under the given dirs, sorted."""
    runs = set()
    for d in dirs:
        if not d.is_dir():
            raise MedftError(f"no such directory: {d} — give run or multirun dirs, e.g. logs/multiruns/<time>")
        runs.update(p.parent.parent for p in d.rglob(".hydra/config.yaml"))
    return sorted(runs)


def read_run(run: Path) -> dict[str, Any]:
    """One row: the run's choices (from its config), test metrics and costs, and its status."""
    cfg = yaml.safe_load((run / ".hydra" / "config.yaml").read_text()) or {}
    tune = cfg.get("tune") or {}
    metrics_file, error_file = run / "metrics.json", run / "error.txt"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    if error_file.exists():
        status, error = "failed", _first_line(error_file.read_text())
    elif metrics:
        status, error = "ok", ""
    else:
        status, error = "incomplete", "no metrics.json (still running, or killed)"
    row: dict[str, Any] = {
        "model": (cfg.get("model") or {}).get("name", ""),
        "dataset": (cfg.get("dataset") or {}).get("name", ""),
        "tune": tune.get("name", ""),
        "components": ",".join(tune.get("components") or []) or "all",
        "trainable": metrics.get("params/trainable"),
        "trainable_pct": metrics.get("params/trainable_pct"),
        "step_s": metrics.get("time/step_s"),
        "peak_mb": metrics.get("memory/peak_mb"),
        "ckpt_bytes": metrics.get("checkpoint/bytes"),
        "status": status,
        "error": error,
        "run": str(run),
    }
    row.update({k: v for k, v in metrics.items() if k.startswith("test/")})
    model = cfg.get("model") or {}
    row["init"] = "pretrained" if model.get("pretrained") else "random"
    row["seed"] = cfg.get("seed")
    row["train_fraction"] = (cfg.get("dataset") or {}).get("train_fraction")
    for name in cfg.get("also_test") or {}:  # the same weights on other test sets (make study)
        row.update({k: v for k, v in metrics.items() if k.startswith(f"{name}/")})
    return row


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:200] if lines else "failed"


def columns(rows: list[dict[str, Any]]) -> list[str]:
    metric_cols = sorted({k for r in rows for k in r if k.startswith("test/")})
    other_cols = sorted({k for r in rows for k in r if "/" in k and not k.startswith("test/")})
    return BASE_COLUMNS[:3] + STUDY_COLUMNS + BASE_COLUMNS[3:-3] + metric_cols + other_cols + BASE_COLUMNS[-3:]


def _fmt(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown(rows: list[dict[str, Any]], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c)).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _mode_key(mode: str) -> tuple[int, str]:
    return (MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER), mode)


def pivot(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows = (model,) tune mode; columns = trainable % and ``<dataset> <metric>`` (mean over runs)."""
    ok = [r for r in rows if r["status"] == "ok"]
    models = sorted({r["model"] for r in ok})
    cells: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in ok:
        key = (r["model"], r["tune"])
        cells[key]["trainable %"].append(r["trainable_pct"] or 0.0)
        for m in PIVOT_METRICS:
            if r.get(m) is not None:
                cells[key][f"{r['dataset']} {m.removeprefix('test/')}"].append(r[m])
    metric_cols = sorted({c for v in cells.values() for c in v if c != "trainable %"})
    cols = (["model"] if len(models) > 1 else []) + ["tune", "trainable %"] + metric_cols
    table = []
    for model, mode in sorted(cells, key=lambda k: (k[0], _mode_key(k[1]))):
        row: dict[str, Any] = {"model": model, "tune": mode}
        row.update({c: statistics.mean(v) for c, v in cells[(model, mode)].items()})
        table.append(row)
    return table, cols


def plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Main metric against trainable % (log x), one panel per dataset, one marker per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok" and r.get("trainable_pct")]
    datasets = sorted({r["dataset"] for r in ok})
    if not datasets:
        return None
    markers = dict(zip(MODE_ORDER, "os^DvPX"))
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        runs = [r for r in ok if r["dataset"] == dataset]
        metric = next((m for m in MAIN_METRICS if any(r.get(m) is not None for r in runs)), None)
        for mode in sorted({r["tune"] for r in runs}, key=_mode_key):
            pts = [(r["trainable_pct"], r[metric]) for r in runs if r["tune"] == mode and metric and r.get(metric) is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.scatter(xs, ys, label=mode, marker=markers.get(mode, "*"), s=60)
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters (%)")
        ax.set_ylabel(metric.removeprefix("test/") if metric else "")
        ax.set_title(dataset)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _mean_std(values: list[float]) -> str:
    if not values:
        return ""
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {std:.3f}"


def study_table(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The study's pivot: one row per (tune, init, train_fraction), mean ± std over seeds of the
    target (``test/acc``), source and shift accuracies; trainable, %, step s and peak MB as means."""
    ok = [r for r in rows if r["status"] == "ok" and r.get("source/acc") is not None]
    cells: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        cells[(r["model"], r["dataset"], r["train_fraction"], r["tune"], r["init"])].append(r)
    table = []
    for key in sorted(cells, key=lambda k: (k[0], k[1], k[2] or 0, _mode_key(k[3]), k[4] != "pretrained")):
        runs = cells[key]
        row: dict[str, Any] = dict(zip(["model", "dataset", "train_fraction", "tune", "init"], key))
        row["seeds"] = len(runs)
        for m in ("test/acc", "source/acc", "shift/acc"):
            row[m] = _mean_std([float(r[m]) for r in runs if r.get(m) is not None])
        for m in ("trainable", "trainable_pct", "step_s", "peak_mb"):
            vals = [float(r[m]) for r in runs if r.get(m) is not None]
            row[m] = statistics.mean(vals) if vals else None
        if row["trainable"] is not None:
            row["trainable"] = int(round(row["trainable"]))
        table.append(row)
    cols = ["dataset", "train_fraction", "tune", "init", "seeds", "test/acc", "source/acc", "shift/acc",
            "trainable", "trainable_pct", "step_s", "peak_mb"]
    return table, cols


def study_plots(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """``study_acc_vs_params.png`` (target accuracy vs trainable %, one panel per data fraction) and
    ``study_gain_vs_kept.png`` (target gain over frozen vs source accuracy kept), means ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok" and r.get("source/acc") is not None and r.get("test/acc") is not None]
    fractions = sorted({r["train_fraction"] for r in ok}, key=lambda f: f or 0)
    if not ok:
        return []
    markers = dict(zip(MODE_ORDER, "os^DvPX"))

    def groups(frac):
        cells: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for r in ok:
            if r["train_fraction"] == frac:
                cells[(r["tune"], r["init"])].append(r)
        return sorted(cells.items(), key=lambda kv: (_mode_key(kv[0][0]), kv[0][1] != "pretrained"))

    def stats(runs, key):
        vals = [float(r[key]) for r in runs]
        return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)

    paths = []
    fig, axes = plt.subplots(1, len(fractions), figsize=(5 * len(fractions), 4), squeeze=False)
    for ax, frac in zip(axes[0], fractions):
        for (mode, init), runs in groups(frac):
            x = max(statistics.mean(float(r["trainable_pct"] or 0) for r in runs), 1e-4)  # frozen: 0 % on a log axis
            y, err = stats(runs, "test/acc")
            ax.errorbar([x], [y], yerr=[err], fmt=markers.get(mode, "*"), ms=7, capsize=3,
                        mfc="none" if init == "random" else None, label=f"{mode}" + (" (random init)" if init == "random" else ""))
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters (%; frozen drawn at 1e-4)")
        ax.set_ylabel("target test accuracy")
        ax.set_title(f"{ok[0]['dataset']}, train fraction {frac}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "study_acc_vs_params.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(fractions), figsize=(5 * len(fractions), 4), squeeze=False)
    for ax, frac in zip(axes[0], fractions):
        frozen = [r for r in ok if r["train_fraction"] == frac and r["tune"] == "frozen" and r["init"] == "pretrained"]
        base = statistics.mean(float(r["test/acc"]) for r in frozen) if frozen else 0.0
        for (mode, init), runs in groups(frac):
            x, xerr = stats(runs, "source/acc")
            y, yerr = stats(runs, "test/acc")
            ax.errorbar([x], [y - base], xerr=[xerr], yerr=[yerr], fmt=markers.get(mode, "*"), ms=7, capsize=3,
                        mfc="none" if init == "random" else None, label=f"{mode}" + (" (random init)" if init == "random" else ""))
        ax.set_xlabel("source test accuracy after fine-tuning (kept)")
        ax.set_ylabel("target accuracy gain over frozen pretrained")
        ax.set_title(f"train fraction {frac}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "study_gain_vs_kept.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def report(dirs: list[Path], out: Path | None = None) -> dict[str, Any]:
    """Build the tables and plot for every run under ``dirs``; returns paths and rows."""
    runs = find_runs(dirs)
    if not runs:
        raise MedftError(f"no runs found under {', '.join(map(str, dirs))} (a run dir holds .hydra/config.yaml)")
    rows = [read_run(r) for r in runs]
    rows.sort(key=lambda r: (r["model"], r["dataset"], _mode_key(r["tune"]), r["run"]))
    out = out or dirs[0]
    cols = columns(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    csv_path = write_text_atomic(out / "results.csv", buf.getvalue())
    table, pcols = pivot(rows)
    md = f"## Runs ({len(rows)}: {sum(r['status'] == 'ok' for r in rows)} ok, {sum(r['status'] != 'ok' for r in rows)} not)\n\n"
    md += markdown(rows, [c for c in cols if c != "run"])
    md += "\n## Tune modes x datasets (mean over runs)\n\n" + markdown(table, pcols)
    study, scols = study_table(rows)
    if study:
        md += "\n## The study: tune mode x init x train fraction (mean ± std over seeds)\n\n" + markdown(study, scols)
    md_path = write_text_atomic(out / "results.md", md)
    png = plot(rows, out / "accuracy_vs_params.png")
    study_pngs = study_plots(rows, out) if study else []
    return {"rows": rows, "csv": csv_path, "markdown": md, "md": md_path, "png": png, "study": study, "study_pngs": study_pngs}


def main(args: list[str] | None = None) -> None:
    args = sys.argv[1:] if args is None else list(args)
    out = None
    dirs = []
    for arg in args:
        if arg.startswith("out="):
            out = Path(arg.split("=", 1)[1])
        elif arg in ("-h", "--help"):
            print(__doc__)
            return
        else:
            dirs.append(Path(arg))
    if not dirs:
        raise MedftError("give one or more run / multirun dirs: medft report logs/multiruns/<time> [out=DIR]")
    result = report(dirs, out)
    print(result["markdown"])
    print(f"wrote {result['csv']}, {result['md']}" + (f", {result['png']}" if result["png"] else "")
          + "".join(f", {p}" for p in result.get("study_pngs") or []))
