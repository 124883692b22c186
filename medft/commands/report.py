"""``medft report DIR... [out=DIR] [reference=MODE]``: the results report, one table of every run under
some run / multirun dirs (not report *generation*, the task: :mod:`medft.metrics.report_gen`).

Writes ``results.csv``, ``results.md`` (all runs, then a pivot like the study's: rows = tune
modes, columns = dataset metrics) and ``accuracy_vs_params.png`` (main metric against trainable %,
log x-axis, one marker per mode, one panel per dataset) into the first DIR or ``out=``; prints
the markdown to the terminal. Failed runs are listed with their error, never dropped.
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from medft.errors import MedftError
from medft.files import write_text_atomic
from medft.tuning import MODE_ORDER

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


# Overrides that are columns already (or name the run's place, not its configuration)
NOT_SWEPT = ("tune", "model", "dataset", "experiment", "tune.components", "hydra.", "paths.", "ckpt_path", "resume",
             "callbacks.progress_bar")
SEED = "seed"


def read_overrides(run: Path) -> dict[str, str]:
    """``{key: value}`` of the run's command-line overrides (``.hydra/overrides.yaml``; Optuna's too),
    parsed as ``medft train resume=`` parses them (medft.rundir.parse_run_overrides): a crafted one is
    a ValueError (the run is listed as unreadable)."""
    from medft.rundir import read_run_overrides

    if not (run / ".hydra" / "overrides.yaml").is_file():
        return {}
    try:
        items = read_run_overrides(run)
    except MedftError as err:
        raise ValueError(str(err).replace(f"{run}{os.sep}", "")) from None
    out = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if sep:
            out[key.lstrip("+~")] = value
    return out


def swept_keys(rows: list[dict[str, Any]]) -> list[str]:
    """Override keys whose value differs between the runs (or that only some runs set), seed last."""
    keys = sorted({k for r in rows for k in r["overrides"]})
    swept = [k for k in keys if not k.startswith(NOT_SWEPT) and k not in NOT_SWEPT
             and len({r["overrides"].get(k) for r in rows}) > 1]
    return sorted(swept, key=lambda k: (k == SEED, k))


def read_run(run: Path) -> dict[str, Any]:
    """One row per run dir; a run whose files cannot be read is listed as ``unreadable``, with why."""
    try:
        return _read_run(run)
    except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError, MedftError) as err:
        where = getattr(err, "filename", None) or getattr(err, "source", None)
        reason = " ".join(str(err).split())[:240] or type(err).__name__
        row = {c: "" for c in BASE_COLUMNS}
        return {**row, "overrides": {}, "status": "unreadable", "error": f"{Path(where).name + ': ' if where else ''}{reason}", "run": str(run)}


def _load(path: Path, parse: Any) -> Any:
    from medft.safe_load import UnsafeFile

    try:
        return parse(path)
    except UnsafeFile as err:
        name = path.relative_to(path.parent.parent) if path.parent.name == ".hydra" else path.name
        reason = " ".join(str(err).replace(str(path), "").split()).strip(": ")
        raise ValueError(f"{name} is damaged ({reason[:160]})") from None


def _read_run(run: Path) -> dict[str, Any]:
    """One row: the run's choices (from its config), test metrics and costs, and its status."""
    from medft.rundir import run_state
    from medft.safe_load import load_json, load_yaml, read_text

    cfg = _load(run / ".hydra" / "config.yaml", load_yaml) or {}
    if not isinstance(cfg, dict):
        raise ValueError(".hydra/config.yaml is not a mapping")
    tune = cfg.get("tune") or {}
    metrics_file, error_file = run / "metrics.json", run / "error.txt"
    metrics = _load(metrics_file, load_json) if metrics_file.exists() else {}
    if not isinstance(metrics, dict):
        raise ValueError("metrics.json is not a JSON object")
    metrics, odd = _numbers(metrics)
    if run_state(run) == "failed":
        status, error = "failed", _first_line(read_text(error_file, 1 << 20))
    elif metrics:
        status, error = "ok", ""
    else:
        status, error = _unfinished(run)
    try:
        overrides = read_overrides(run)
    except ValueError as refused:  # never replayed here: the run is listed, its overrides not used, and why
        overrides, odd_overrides = {}, str(refused)
    else:
        odd_overrides = ""
    error = "; ".join(filter(None, [error, odd_overrides]))
    if odd:  # the row stays; what could not be used is said
        error = "; ".join(filter(None, [error, f"metrics.json: {len(odd)} value(s) not numbers, ignored: {', '.join(odd[:3])}"]))
    row: dict[str, Any] = {
        "model": (cfg.get("model") or {}).get("name", ""),
        "dataset": (cfg.get("dataset") or {}).get("name", ""),
        "tune": tune_label(tune),
        "components": ",".join(tune.get("components") or []) or "all",
        "trainable": metrics.get("params/trainable"),
        "trainable_pct": metrics.get("params/trainable_pct"),
        "step_s": metrics.get("time/step_s"),
        "peak_mb": metrics.get("memory/peak_mb"),
        "ckpt_bytes": metrics.get("checkpoint/bytes"),
        "status": status,
        "error": error,
        "run": str(run),
        "overrides": overrides,
    }
    row.update({k: v for k, v in metrics.items() if k.startswith("test/")})
    model = cfg.get("model") or {}
    row["init"] = "pretrained" if model.get("pretrained") else "random"
    row["seed"] = cfg.get("seed")
    row["train_fraction"] = (cfg.get("dataset") or {}).get("train_fraction")
    for name in cfg.get("also_test") or {}:  # the same weights on other test sets (make study)
        row.update({k: v for k, v in metrics.items() if k.startswith(f"{name}/")})
    return row


def _numbers(metrics: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """metrics.json's numbers (and medft eval's ``eval/*`` provenance strings); the keys of the other
    values (a string, a list, a mapping where medft writes a number), which tables and tests cannot use."""
    kept, odd = {}, []
    for key, value in metrics.items():
        number = isinstance(value, (int, float))
        if number or value is None or (isinstance(value, str) and str(key).startswith("eval/")):
            kept[str(key)] = value
        else:
            odd.append(str(key))
    return kept, odd


def _unfinished(run: Path) -> tuple[str, str]:
    """(status, note) of a run dir without metrics.json or error.txt, from its status.json."""
    from medft.rundir import lock_held, read_status

    status = read_status(run)
    state = status.get("state")
    if state == "preempted":
        where = f"at step {status.get('step')}" + (f" ({status['signal']})" if status.get("signal") else "")
        return "preempted", f"stopped {where}, last.ckpt saved: continue with resume=auto or resume={run}"
    if state == "running" and lock_held(run):
        return "running", f"since {status.get('time', '?')} on {status.get('host', '?')} (pid {status.get('pid', '?')})"
    if state == "running":  # no lock, or the lock of a dead process: gone without saying why
        return "incomplete", "killed while running (status.json says running, no live process holds the run dir)"
    return "incomplete", "no metrics.json (still running, or killed)"


def tune_label(tune: dict[str, Any]) -> str:
    """The mode's name, with the half of the norms it trains when not both (``layernorm:weight``)."""
    half = tune.get("norm_params") or "both"
    return tune.get("name", "") + ("" if half == "both" else f":{half}")


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:200] if lines else "failed"


def columns(rows: list[dict[str, Any]], swept: list[str] | None = None) -> list[str]:
    """Base columns, then one per swept key (after ``components``), the study's init / seed /
    train_fraction (for study runs, or where they differ), then the test and other metrics."""
    metric_cols = sorted({k for r in rows for k in r if k.startswith("test/")})
    other_cols = sorted({k for r in rows for k in r if "/" in k and not k.startswith("test/")})
    study = any(r.get("source/acc") is not None for r in rows)  # a study run (also tested on the source)
    swept = [k for k in (swept or []) if not (study and k == "dataset.train_fraction")]  # its train_fraction column
    extra = [c for c in STUDY_COLUMNS if c not in swept and (study or len({str(r.get(c)) for r in rows}) > 1)]
    base = BASE_COLUMNS[:-3]
    at = base.index("components") + 1
    return base[:at] + swept + extra + base[at:] + metric_cols + other_cols + BASE_COLUMNS[-3:]


def _fmt(value: Any) -> str:
    """Numbers as people read them: 0.2613, 1.2e+06 -> 1,200,000, ~0 (1.4e-31) -> 0."""
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        if abs(value) < 1e-9:
            return "0"
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}" if abs(value) >= 10_000 else str(int(value))
        return f"{value:.4g}" if abs(value) >= 1e-4 else f"{value:.2e}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def markdown(rows: list[dict[str, Any]], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c)).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _mode_key(mode: str) -> tuple[int, str]:
    base = mode.split(":", 1)[0]  # layernorm:weight sorts with layernorm
    return (MODE_ORDER.index(base) if base in MODE_ORDER else len(MODE_ORDER), mode)


def pivot(rows: list[dict[str, Any]], swept: list[str] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows = one distinct configuration: (model,) tune mode and the swept keys' values (seeds apart);
    columns = trainable %, ``<dataset> <metric>`` (mean over the seeds) and ``n`` (runs averaged)."""
    ok = [r for r in rows if r["status"] == "ok"]
    models = sorted({r["model"] for r in ok})
    keys = [k for k in (swept or []) if k != SEED]
    cells: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    runs: dict[tuple, set[str]] = defaultdict(set)
    for r in ok:
        key = (r["model"], r["tune"], *(r["overrides"].get(k, "") for k in keys))
        runs[key].add(r["overrides"].get(SEED, "") + "|" + r["run"])
        cells[key]["trainable %"].append(r["trainable_pct"] or 0.0)
        for m in PIVOT_METRICS:
            if r.get(m) is not None:
                cells[key][f"{r['dataset']} {m.removeprefix('test/')}"].append(r[m])
    metric_cols = sorted({c for v in cells.values() for c in v if c != "trainable %"})
    cols = (["model"] if len(models) > 1 else []) + ["tune", *keys, "trainable %"] + metric_cols + ["n"]
    table = []
    for key in sorted(cells, key=lambda k: (k[0], _mode_key(k[1]), *map(_num_key, k[2:]))):
        row: dict[str, Any] = {"model": key[0], "tune": key[1], **dict(zip(keys, key[2:]))}
        row.update({c: statistics.mean(v) for c, v in cells[key].items()})
        row["n"] = max(len(v) for c, v in cells[key].items() if c != "trainable %") if metric_cols else len(runs[key])
        table.append(row)
    return table, cols


def _num_key(value: str) -> tuple[int, float, str]:
    """Swept values in numeric order where they are numbers (1e-3 before 0.01)."""
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def figure(rows: list[dict[str, Any]]) -> Any:
    """Main metric against trainable % (log x), one panel per dataset: a colour per tune mode, a marker
    per model; ``frozen`` (0 % trained: no place on a log axis) as a dashed horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    ok = [r for r in rows if r["status"] == "ok"]
    datasets = sorted({r["dataset"] for r in ok})
    if not datasets:
        return None
    models = sorted({r["model"] for r in ok})
    markers = dict(zip(models, "osD^vPX*"))
    colors = {m: f"C{i}" for i, m in enumerate(MODE_ORDER)}
    styles = dict(zip(models, ["--", ":", "-.", (0, (5, 1))]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4.2), squeeze=False, layout="constrained")
    for ax, dataset in zip(axes[0], datasets):
        runs = [r for r in ok if r["dataset"] == dataset]
        metric = next((m for m in MAIN_METRICS if any(r.get(m) is not None for r in runs)), None)
        for model in models:
            for mode in sorted({r["tune"] for r in runs if r["model"] == model}, key=_mode_key):
                pts = [(r["trainable_pct"], r[metric]) for r in runs if r["model"] == model and r["tune"] == mode
                       and metric and r.get(metric) is not None and r["trainable_pct"] is not None]
                label = mode if len(models) == 1 else f"{mode} ({model})"
                color = colors.get(mode.split(":", 1)[0], "k")
                frozen = [y for x, y in pts if not x]  # nothing trained: no x on a log axis
                if frozen:
                    ax.axhline(statistics.mean(frozen), color=color, linestyle=styles.get(model, "--"), linewidth=1.2,
                               label=f"{label}: 0% trained (line)")
                pts = [(x, y) for x, y in pts if x]
                if pts:
                    xs, ys = zip(*pts)
                    ax.scatter(xs, ys, label=label, marker=markers.get(model, "o"), color=color, s=60)
        ax.set_xscale("log")
        if ax.get_xlim()[1] > 100:
            ax.set_xlim(right=150)  # no tick beyond 100% of the model
        ax.xaxis.set_major_locator(LogLocator(base=10, numticks=6))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _pct(v)))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _fmt(float(v))))
        ax.set_xlabel("trainable parameters (% of the model, log scale)")
        ax.set_ylabel(metric.removeprefix("test/") if metric else "")
        ax.set_title(dataset)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    return fig


def _pct(value: float) -> str:
    """A percentage as people write it: 0.0001%, 0.5%, 10%, 100%."""
    if value >= 1:
        return f"{value:,.0f}%"
    return (f"{value:.3g}" if value >= 0.001 else f"{value:.8f}".rstrip("0")) + "%"


def plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Write :func:`figure` to ``path`` (PNG)."""
    import matplotlib.pyplot as plt

    fig = figure(rows)
    if fig is None:
        return None
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


def report(dirs: list[Path], out: Path | None = None, reference: str = "full") -> dict[str, Any]:
    """The results report: the tables and plot of every run under ``dirs``; returns paths and rows. ``reference``:
    the tune mode every other run is compared with (paired tests, :mod:`medft.metrics.stats`)."""
    from medft.metrics.stats import add_statistics, is_stat_column, statistics_markdown

    runs = find_runs(dirs)
    if not runs:
        raise MedftError(f"no runs found under {', '.join(map(str, dirs))} (a run dir holds .hydra/config.yaml)")
    rows = [read_run(r) for r in runs]
    rows.sort(key=lambda r: (r["model"], r["dataset"], _mode_key(r["tune"]), r["run"]))
    out = out or dirs[0]
    swept = swept_keys(rows)
    for r in rows:
        r.update({k: r["overrides"].get(k, "") for k in swept})
    add_statistics(rows, reference)  # <metric>_ci_low/_ci_high, <metric>_delta_vs_ref/_p_vs_ref
    cols = columns(rows, swept) + (["reference_run"] if any("reference_run" in r for r in rows) else [])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    csv_path = write_text_atomic(out / "results.csv", buf.getvalue())
    table, pcols = pivot(rows, swept)
    md = f"## Runs ({len(rows)}: {sum(r['status'] == 'ok' for r in rows)} ok, {sum(r['status'] != 'ok' for r in rows)} not)\n\n"
    md += markdown(rows, [c for c in cols if c not in ("run", "reference_run") and not is_stat_column(c)])
    stats_md = statistics_markdown(rows, reference)
    md += ("\n" + stats_md) if stats_md else ""
    md += "\n## Tune modes x datasets (one row per configuration; mean over its n runs, e.g. seeds)\n\n" + markdown(table, pcols)
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
    reference = "full"
    dirs = []
    for arg in args:
        if arg.startswith("out="):
            out = Path(arg.split("=", 1)[1])
        elif arg.startswith("reference="):
            reference = arg.split("=", 1)[1]
        elif arg in ("-h", "--help"):
            print(__doc__)
            return
        else:
            dirs.append(Path(arg))
    if not dirs:
        raise MedftError("give one or more run / multirun dirs: medft report logs/multiruns/<time> [out=DIR] [reference=full]")
    result = report(dirs, out, reference)
    print(result["markdown"])
    print(f"wrote {result['csv']}, {result['md']}" + (f", {result['png']}" if result["png"] else "")
          + "".join(f", {p}" for p in result.get("study_pngs") or []))
