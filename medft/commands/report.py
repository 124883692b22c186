"""``medft report DIR... [out=DIR] [reference=MODE]``: the results report, one table of every run under
some run / multirun dirs (not report *generation*, the task: :mod:`medft.metrics.report_gen`).

Writes ``results.csv``, ``results.md`` (all runs, then a pivot like the study's: rows = tune
modes, columns = dataset metrics) and ``accuracy_vs_params.png`` (main metric against trainable %,
log x-axis, one marker per mode, one panel per dataset) into the first DIR or ``out=``; prints
the markdown to the terminal. Failed runs are listed with their error, never dropped. Tables and
plots never average different configurations: every key that varies among the runs (seeds apart)
is a column (:func:`swept_keys`). On a study dir (runs also tested on the source domain) it also
writes the study table, its two plots and ``findings.csv``, and opens ``results.md`` with the findings
in words (:mod:`medft.metrics.findings`); which metrics follow the runs' task (``STUDY_TASKS``: accuracy
for VQA, BLEU-4 / ROUGE-L for report writing). Report-writing runs also get *Sample reports*: a few
fixed test examples' references beside what each configuration wrote.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from medft.metrics.findings import STUDY_TASKS, StudyTask, task_of
from medft.runs.layout import RELATIVE, RunDir, Status
from medft.tuning import MODE_ORDER
from medft.util.errors import MedftError
from medft.util.files import write_text_atomic

# The metric a dataset is judged by in the pivot and the plot: the first one present.
MAIN_METRICS = ["test/acc", "test/bleu_4", "test/cider"]
PIVOT_METRICS = ["test/acc_closed", "test/acc_open", "test/acc", "test/bleu_4", "test/rouge_l", "test/cider"]
BASE_COLUMNS = ["model", "dataset", "tune", "components", "trainable", "trainable_pct", "step_s", "peak_mb",
                "ckpt_bytes", "status", "error", "run"]
# The study in miniature (make study, make study-report): each run also tested on the source domain and another
# target (``also_test``: ``source/*``, ``shift/*``); ``init`` says whether it started from pretrained weights. The
# metrics a study shows and is judged by follow its runs' task: medft.metrics.findings.STUDY_TASKS.
STUDY_COLUMNS = ["init", "seed", "pretrain_seed", "pretrained_sha256", "train_fraction"]
COST_COLUMNS = ["trainable", "trainable_pct", "step_s", "peak_mb"]


def find_runs(dirs: list[Path]) -> list[Path]:
    """Every run dir (a dir holding ``.hydra/config.yaml``) under the given dirs, sorted."""
    runs = set()
    for d in dirs:
        if not d.is_dir():
            raise MedftError(f"no such directory: {d} — give run or multirun dirs, e.g. logs/multiruns/<time>")
        runs.update(r.path for r in RunDir.find(d))
    return sorted(runs)


# Overrides that are columns already (or name the run's place, not its configuration): exact keys, then prefixes
NOT_SWEPT = ("tune", "model", "dataset", "experiment", "tune.components", "ckpt_path", "resume")
NOT_SWEPT_PREFIXES = ("hydra.", "hydra", "paths.", "callbacks.progress_bar")
SEED = "seed"
# Config keys that follow the seed (each seed its own pretrained draw) or name a place, never a configuration
SEED_OR_PLACE = ("seed", "model.seed", "model.pretrain_seed", "model.embedded_dir", "task_name", "ckpt_path", "resume",
                 "out")
# Config keys shown as the report's own columns (their values as people read them)
SHOWN_AS = {"model.pretrained": "init", "dataset.train_fraction": "train_fraction"}


def read_overrides(run: Path) -> dict[str, str]:
    """``{key: value}`` of the run's command-line overrides (``.hydra/overrides.yaml``; Optuna's too),
    parsed as ``medft train resume=`` parses them (medft.runs.trust.parse_run_overrides): a crafted one is
    a ValueError (the run is listed as unreadable)."""
    from medft.runs.trust import read_run_overrides

    if not RunDir(run).overrides.is_file():
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


def _ignored(key: str) -> bool:
    return key in NOT_SWEPT or key in SEED_OR_PLACE or key.startswith(NOT_SWEPT_PREFIXES)


def flatten(cfg: Any, prefix: str = "") -> dict[str, str]:
    """``{"optim.lr": "0.001", ...}``: a composed config's leaves as dotted keys and comparable strings."""
    if isinstance(cfg, dict):
        out: dict[str, str] = {}
        for key, value in cfg.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: "{}"}
    return {prefix[:-1]: json.dumps(cfg) if isinstance(cfg, list) else str(cfg)}


def swept_keys(rows: list[dict[str, Any]]) -> list[str]:
    """Every configuration key that varies among the runs, seed last: command-line overrides (an experiment's
    ``hydra.sweeper.params`` are overrides of each job too) whose value differs between the runs (or that only
    some runs set), and any key of the composed configs that takes two values among runs of one (model,
    dataset, tune, seed): what tells experiments apart (``model.pretrained``: shown as ``init``,
    ``dataset.train_fraction``, an ``optim.lr`` set by one experiment and not another). Keys that only follow
    the tune mode, dataset or model (their own settings) are not: those are columns already."""
    keys = sorted({k for r in rows for k in r["overrides"]})
    swept = {k for k in keys if not _ignored(k) and len({r["overrides"].get(k) for r in rows}) > 1}
    same_choice: dict[tuple, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        if r.get("config"):
            same_choice[(r["model"], r["dataset"], r["tune"], str(r.get("seed")))].append(r["config"])
    for configs in same_choice.values():
        if len(configs) > 1:
            for key in {k for c in configs for k in c}:
                if not _ignored(key) and key not in swept and len({c.get(key) for c in configs}) > 1:
                    swept.add(key)
    seed = [SEED] if len({r["overrides"].get(SEED) for r in rows}) > 1 else []
    return sorted(swept - {SEED}) + seed


def config_value(row: dict[str, Any], key: str) -> Any:
    """A run's value of a configuration key: its override as given, else its composed config's."""
    if key in SHOWN_AS:
        return row.get(SHOWN_AS[key])
    value = row["overrides"].get(key)
    return value if value is not None else (row.get("config") or {}).get(key, "")


def group_keys(swept: list[str]) -> list[str]:
    """The columns that tell configurations apart (seed apart): ``init`` and ``train_fraction`` by those names."""
    return [SHOWN_AS.get(k, k) for k in swept if k != SEED]


def read_run(run: Path) -> dict[str, Any]:
    """One row per run dir; a run whose files cannot be read is listed as ``unreadable``, with why."""
    try:
        return _read_run(run)
    except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError, MedftError) as err:
        where = getattr(err, "filename", None) or getattr(err, "source", None)
        reason = " ".join(str(err).split())[:240] or type(err).__name__
        row = {c: "" for c in BASE_COLUMNS}
        return {**row, "overrides": {}, "config": {}, "status": str(Status.UNREADABLE), "error": f"{Path(where).name + ': ' if where else ''}{reason}", "run": str(run)}


def _load(path: Path, parse: Any) -> Any:
    from medft.util.safe_load import UnsafeFile

    try:
        return parse(path)
    except UnsafeFile as err:
        name = path.relative_to(path.parent.parent) if path.parent.name == RunDir.HYDRA else path.name
        reason = " ".join(str(err).replace(str(path), "").split()).strip(": ")
        raise ValueError(f"{name} is damaged ({reason[:160]})") from None


def _read_run(run: Path) -> dict[str, Any]:
    """One row: the run's choices (from its config), test metrics and costs, and its status."""
    from medft.runs.trust import run_state
    from medft.util.safe_load import load_json, load_yaml, read_text

    run_dir = RunDir(run)
    cfg = _load(run_dir.config, load_yaml) or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"{RELATIVE.config} is not a mapping")
    tune = cfg.get("tune") or {}
    metrics_file, error_file = run_dir.metrics, run_dir.error
    metrics = _load(metrics_file, load_json) if metrics_file.exists() else {}
    if not isinstance(metrics, dict):
        raise ValueError(f"{RELATIVE.metrics} is not a JSON object")
    metrics, odd = _numbers(metrics)
    if run_state(run) == Status.FAILED:
        status, error = Status.FAILED, _first_line(read_text(error_file, 1 << 20))
    elif metrics:
        status, error = Status.OK, ""
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
        error = "; ".join(filter(None, [error, f"{RELATIVE.metrics}: {len(odd)} value(s) not numbers, ignored: {', '.join(odd[:3])}"]))
    row: dict[str, Any] = {
        "model": (cfg.get("model") or {}).get("name", ""),
        "dataset": (cfg.get("dataset") or {}).get("name", ""),
        "task": str((cfg.get("dataset") or {}).get("task") or ""),
        "tune": tune_label(tune),
        "components": ",".join(tune.get("components") or []) or "all",
        "trainable": metrics.get("params/trainable"),
        "trainable_pct": metrics.get("params/trainable_pct"),
        "step_s": metrics.get("time/step_s"),
        "peak_mb": metrics.get("memory/peak_mb"),
        "ckpt_bytes": metrics.get("checkpoint/bytes"),
        "status": str(status),
        "error": error,
        "run": str(run),
        "overrides": overrides,
        "config": flatten(cfg),
    }
    row.update({k: v for k, v in metrics.items() if k.startswith("test/")})
    model = cfg.get("model") or {}
    row["init"] = "pretrained" if model.get("pretrained") else "random"
    row["seed"] = cfg.get("seed")
    row["pretrain_seed"] = metrics.get("pretrained/seed")  # the embedded model's draw, and its identity
    row["pretrained_sha256"] = metrics.get("pretrained/sha256")
    row["train_fraction"] = (cfg.get("dataset") or {}).get("train_fraction")
    for name in cfg.get("also_test") or {}:  # the same weights on other test sets (make study)
        row.update({k: v for k, v in metrics.items() if k.startswith(f"{name}/")})
    return row


def _numbers(metrics: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """metrics.json's numbers (and the provenance strings medft writes: medft eval's ``eval/*``, the
    pretrained draw's ``pretrained/sha256``); the keys of the other values (a string, a list, a mapping
    where medft writes a number), which tables and tests cannot use."""
    from medft.data.drops import ANSWER_TYPES_KEY

    kept, odd = {}, []
    for key, value in metrics.items():
        if key == ANSWER_TYPES_KEY and isinstance(value, str):  # medft's note in words: not a table value
            continue
        number = isinstance(value, (int, float))
        text = isinstance(value, str) and len(value) <= 256 and (str(key).startswith("eval/") or key == "pretrained/sha256")
        if number or value is None or text:
            kept[str(key)] = value
        else:
            odd.append(str(key))
    return kept, odd


def _unfinished(run: Path) -> tuple[str, str]:
    """(status, note) of a run dir without metrics.json or error.txt, from its status.json."""
    from medft.runs.trust import lock_held, read_status

    status = read_status(run)
    state = status.get("state")
    if state == Status.PREEMPTED:
        where = f"at step {status.get('step')}" + (f" ({status['signal']})" if status.get("signal") else "")
        return Status.PREEMPTED, f"stopped {where}, {RunDir.LAST} saved: continue with resume=auto or resume={run}"
    if state == Status.RUNNING and lock_held(run):
        return Status.RUNNING, f"since {status.get('time', '?')} on {status.get('host', '?')} (pid {status.get('pid', '?')})"
    if state == Status.RUNNING:  # no lock, or the lock of a dead process: gone without saying why
        return Status.INCOMPLETE, (f"killed while running ({RELATIVE.status} says {Status.RUNNING}, no live process "
                                   "holds the run dir)")
    return Status.INCOMPLETE, f"no {RELATIVE.metrics} (still running, or killed)"


def tune_label(tune: dict[str, Any]) -> str:
    """The mode's name, with the half of the norms it trains when not both (``layernorm:weight``)."""
    half = tune.get("norm_params") or "both"
    return tune.get("name", "") + ("" if half == "both" else f":{half}")


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:200] if lines else "failed"


def columns(rows: list[dict[str, Any]], swept: list[str] | None = None) -> list[str]:
    """Base columns, then one per swept key (after ``components``), the study's init / seed / pretrain_seed /
    pretrained_sha256 / train_fraction (for study runs, or where they differ), then the test and other metrics."""
    metric_cols = sorted({k for r in rows for k in r if k.startswith("test/")})
    other_cols = sorted({k for r in rows for k in r if "/" in k and not k.startswith("test/")})
    study = any(task_of(r).is_study(r) for r in rows)  # a study run (also tested on the source)
    shown = [SHOWN_AS.get(k, k) for k in swept or []]
    extra = [c for c in STUDY_COLUMNS if c in shown or study or len({str(r.get(c)) for r in rows}) > 1]
    base = BASE_COLUMNS[:-3]
    at = base.index("components") + 1
    return base[:at] + [k for k in shown if k not in STUDY_COLUMNS] + extra + base[at:] + metric_cols + other_cols \
        + BASE_COLUMNS[-3:]


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
    """Rows = one distinct configuration: (model,) tune mode and every configuration key that varies
    (:func:`swept_keys`, seeds apart); columns = trainable %, ``<dataset> <metric>`` (mean over the
    seeds) and ``n`` (the seeds averaged)."""
    ok = [r for r in rows if r["status"] == Status.OK]
    models = sorted({r["model"] for r in ok})
    keys = group_keys(swept or [])
    cells: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    seeds: dict[tuple, set[str]] = defaultdict(set)
    for r in ok:
        key = (r["model"], r["tune"], *(str(r.get(k, "")) for k in keys))
        seeds[key].add(str(r.get(SEED)))
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
        row["n"] = len(seeds[key])
        table.append(row)
    return table, cols


def _num_key(value: str) -> tuple[int, float, str]:
    """Swept values in numeric order where they are numbers (1e-3 before 0.01)."""
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def figure(rows: list[dict[str, Any]], keys: list[str] | None = None) -> Any:
    """Main metric against trainable % (log x), one panel per dataset: a colour per configuration (the tune
    mode, and every other key that varies among the runs: ``keys``), a marker per model; ``frozen`` (0 %
    trained: no place on a log axis) as a dashed horizontal line; the legend beside the panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    ok = [r for r in rows if r["status"] == Status.OK]
    datasets = sorted({r["dataset"] for r in ok})
    if not datasets:
        return None
    keys = list(keys or [])
    models = sorted({r["model"] for r in ok})
    markers = dict(zip(models, "osD^vPX*"))

    def config(r: dict[str, Any]) -> tuple:
        return (r["tune"], *(str(r.get(k, "")) for k in keys))

    configs = sorted({config(r) for r in ok}, key=lambda c: (_mode_key(c[0]), *map(_num_key, c[1:])))
    if keys:  # configurations of one mode apart: a colour each
        colors = dict(zip(configs, _colors(len(configs))))
    else:
        colors = {c: f"C{MODE_ORDER.index(c[0].split(':', 1)[0])}" if c[0].split(":", 1)[0] in MODE_ORDER else "k"
                  for c in configs}
    styles = dict(zip(models, ["--", ":", "-.", (0, (5, 1))]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets) + (2.5 if keys else 1.5), 4.2),
                             squeeze=False, layout="constrained")
    for ax, dataset in zip(axes[0], datasets):
        runs = [r for r in ok if r["dataset"] == dataset]
        metric = next((m for m in MAIN_METRICS if any(r.get(m) is not None for r in runs)), None)
        for model in models:
            for conf in [c for c in configs if any(config(r) == c for r in runs if r["model"] == model)]:
                pts = [(r["trainable_pct"], r[metric]) for r in runs if r["model"] == model and config(r) == conf
                       and metric and r.get(metric) is not None and r["trainable_pct"] is not None]
                label = conf[0] + "".join(f", {k}={v}" for k, v in zip(keys, conf[1:]))
                label = label if len(models) == 1 else f"{label} ({model})"
                color = colors[conf]
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
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the panel: over no point
    return fig


def _pct(value: float) -> str:
    """A percentage as people write it: 0.0001%, 0.5%, 10%, 100%."""
    if value >= 1:
        return f"{value:,.0f}%"
    return (f"{value:.3g}" if value >= 0.001 else f"{value:.8f}".rstrip("0")) + "%"


def plot(rows: list[dict[str, Any]], path: Path, keys: list[str] | None = None) -> Path | None:
    """Write :func:`figure` to ``path`` (PNG)."""
    import matplotlib.pyplot as plt

    fig = figure(rows, keys)
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


STUDY_KEYS = ("train_fraction", "init")  # the study table's own columns (with model, dataset, tune)


def study_runs(rows: list[dict[str, Any]], task: StudyTask) -> list[dict[str, Any]]:
    """The ok study runs of one task (tested on the source too)."""
    return [r for r in rows if r["status"] == Status.OK and task_of(r) is task and task.is_study(r)]


def study_tasks(rows: list[dict[str, Any]]) -> list[StudyTask]:
    """The tasks of the studies among ``rows`` (VQA first)."""
    return [t for t in STUDY_TASKS.values() if study_runs(rows, t)]


def study_table(rows: list[dict[str, Any]], keys: list[str] | None = None,
                task: StudyTask = STUDY_TASKS["vqa"]) -> tuple[list[dict[str, Any]], list[str]]:
    """The study's pivot: one row per (tune, init, train_fraction, any other configuration key that varies),
    mean ± std over seeds of the task's metrics (VQA: target ``test/acc``, source and shift accuracies; report
    writing: BLEU-4 and ROUGE-L on each, METEOR and CIDEr on the target); trainable, %, step s and peak MB as
    means; ``seeds`` counts the seeds (each its own pretrained draw in experiment=study)."""
    ok = study_runs(rows, task)
    other = [k for k in keys or [] if k not in STUDY_KEYS]
    cells: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        cells[(r["model"], r["dataset"], r["train_fraction"], r["tune"], r["init"], *(str(r.get(k, "")) for k in other))].append(r)
    table = []
    for key in sorted(cells, key=lambda k: (k[0], k[1], k[2] or 0, _mode_key(k[3]), k[4] != "pretrained",
                                            *map(_num_key, k[5:]))):
        runs = cells[key]
        row: dict[str, Any] = dict(zip(["model", "dataset", "train_fraction", "tune", "init", *other], key))
        row["seeds"] = len({str(r.get(SEED)) for r in runs})
        for m in task.shown:
            row[m] = _mean_std([float(r[m]) for r in runs if r.get(m) is not None])
        for m in COST_COLUMNS:
            vals = [float(r[m]) for r in runs if r.get(m) is not None]
            row[m] = statistics.mean(vals) if vals else None
        if row["trainable"] is not None:
            row["trainable"] = int(round(row["trainable"]))
        table.append(row)
    cols = ["dataset", "train_fraction", "tune", "init", *other, "seeds", *task.shown, *COST_COLUMNS]
    return table, cols


def _label(mode: str, init: str, values: dict[str, str]) -> str:
    """``full (random init)``, ``lora, optim.lr=0.01``: a study plot's group in words."""
    return mode + (" (random init)" if init == "random" else "") + "".join(f", {k}={v}" for k, v in values.items())


def _colors(n: int) -> list[Any]:
    """``n`` colours, no two alike up to 20 (tab20's dark shades first, then its light ones)."""
    import matplotlib

    tab20 = matplotlib.colormaps["tab20"].colors
    order = list(tab20[0::2]) + list(tab20[1::2])
    return [order[i % len(order)] for i in range(n)]


def study_plots(rows: list[dict[str, Any]], out: Path, keys: list[str] | None = None,
                task: StudyTask = STUDY_TASKS["vqa"]) -> list[Path]:
    """The task's main metric (VQA: accuracy; report writing: BLEU-4) in two figures, named by ``task.plots``:
    ``study_acc_vs_params.png`` (target metric vs trainable %, one panel per data fraction) and
    ``study_gain_vs_kept.png`` (target gain over frozen vs the source's metric kept), means ± std over seeds.
    One colour and legend entry per configuration (tune, init and every other key that varies), the same in
    every panel; the legend sits beside the panels, never over a point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target, source, words = f"test/{task.main}", f"source/{task.main}", task.main_words
    ok = [r for r in study_runs(rows, task) if r.get(target) is not None]
    fractions = sorted({r["train_fraction"] for r in ok}, key=lambda f: f or 0)
    if not ok:
        return []
    other = [k for k in keys or [] if k not in STUDY_KEYS]
    markers = dict(zip(MODE_ORDER, "os^DvPX<>"))

    def group(r: dict[str, Any]) -> tuple:
        return (r["tune"], r["init"], *(str(r.get(k, "")) for k in other))

    order = sorted({group(r) for r in ok}, key=lambda g: (_mode_key(g[0]), g[1] != "pretrained", *map(_num_key, g[2:])))
    colors = dict(zip(order, _colors(len(order))))

    def groups(frac):
        cells: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
        for r in ok:
            if r["train_fraction"] == frac:
                cells[group(r)].append(r)
        return [(g, cells[g]) for g in order if g in cells]

    def stats(runs, key):
        vals = [float(r[key]) for r in runs]
        return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)

    def draw(ax, g, x, y, xerr, yerr):
        mode, init = g[0], g[1]
        ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt=markers.get(mode.split(":", 1)[0], "*"), ms=7, capsize=3,
                    color=colors[g], mfc="none" if init == "random" else colors[g],
                    label=_label(mode, init, dict(zip(other, g[2:]))))

    def finish(fig, axes, path):
        handles, labels = {}, []
        for ax in axes:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in handles:
                    handles[lab] = h
                    labels.append(lab)
        fig.legend([handles[lab] for lab in labels], labels, loc="outside right upper", fontsize=7)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path

    paths = []
    size = (5 * len(fractions) + 2.2, 4.2)
    fig, axes = plt.subplots(1, len(fractions), figsize=size, squeeze=False, layout="constrained")
    for ax, frac in zip(axes[0], fractions):
        for g, runs in groups(frac):
            x = max(statistics.mean(float(r["trainable_pct"] or 0) for r in runs), 1e-4)  # frozen: 0 % on a log axis
            y, err = stats(runs, target)
            draw(ax, g, x, y, None, [err])
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters (%; frozen drawn at 1e-4)")
        ax.set_ylabel(f"target test {words}")
        ax.set_title(f"{ok[0]['dataset']}, train fraction {frac}")
        ax.grid(True, which="both", alpha=0.3)
    paths.append(finish(fig, axes[0], out / task.plots[0]))

    fig, axes = plt.subplots(1, len(fractions), figsize=size, squeeze=False, layout="constrained")
    for ax, frac in zip(axes[0], fractions):
        frozen = [r for r in ok if r["train_fraction"] == frac and r["tune"] == "frozen" and r["init"] == "pretrained"]
        base = statistics.mean(float(r[target]) for r in frozen) if frozen else 0.0
        for g, runs in groups(frac):
            x, xerr = stats(runs, source)
            y, yerr = stats(runs, target)
            draw(ax, g, x, y - base, [xerr], [yerr])
        ax.set_xlabel(f"source test {words} after fine-tuning (kept)")
        ax.set_ylabel(f"target {words} gain over frozen pretrained")
        ax.set_title(f"train fraction {frac}")
        ax.grid(True, alpha=0.3)
    paths.append(finish(fig, axes[0], out / task.plots[1]))
    return paths


SAMPLES = 3          # test examples whose reports results.md shows, per model and dataset
SAMPLE_CHARS = 400   # a longer report is cut there (…)


def sample_ids(ids: set[str], n: int = SAMPLES) -> list[str]:
    """``n`` of the ``ids``, chosen by a hash of each id: the same examples for every mode, seed and machine, and
    spread over the test set rather than its first few."""
    return sorted(ids, key=lambda item: hashlib.sha256(item.encode()).hexdigest())[:n]


def _md_text(text: Any) -> str:
    """One line of plain text safe in Markdown: whitespace collapsed, cut at SAMPLE_CHARS, markup escaped."""
    line = " ".join(str(text).split())
    if not line:
        return "*(nothing)*"
    if len(line) > SAMPLE_CHARS:
        line = line[:SAMPLE_CHARS].rstrip() + "…"
    return "".join("\\" + ch if ch in "\\`*_[]<>#|~" else ch for ch in line)


def _written(run: str) -> dict[str, tuple[str, str]]:
    """``{id: (reference, generated)}`` of a report run's test predictions (the first row of a repeated id)."""
    from medft.metrics.stats import read_rows

    out: dict[str, tuple[str, str]] = {}
    for row in read_rows(Path(run)):
        if isinstance(row, dict) and "generated" in row:
            out.setdefault(str(row.get("id")), (str(row.get("reference", "")), str(row.get("generated", ""))))
    return out


def samples_markdown(rows: list[dict[str, Any]], keys: list[str] | None = None) -> str:
    """``## Sample reports``: what the report-writing runs write for a few fixed test examples (:func:`sample_ids`),
    beside the reference: per model and dataset, one run per configuration (tune, init and every other key that
    varies): the larger train fraction, one seed (the smallest that every configuration has)."""
    ok = [r for r in rows if r["status"] == Status.OK and task_of(r).samples and RunDir(r["run"]).predictions.is_file()]
    other = [k for k in keys or [] if k not in STUDY_KEYS]
    md = ""
    for model, dataset in sorted({(r["model"], r["dataset"]) for r in ok}):
        runs = [r for r in ok if (r["model"], r["dataset"]) == (model, dataset)]
        fraction = max((r["train_fraction"] for r in runs), key=lambda f: (f is not None, f or 0))
        groups: dict[tuple, dict[str, dict[str, Any]]] = defaultdict(dict)
        for r in runs:
            if r["train_fraction"] == fraction:
                groups[(r["tune"], r["init"], *(str(r.get(k, "")) for k in other))].setdefault(str(r.get(SEED)), r)
        common = set.intersection(*(set(by_seed) for by_seed in groups.values()))
        order = sorted(groups, key=lambda g: (_mode_key(g[0]), g[1] != "pretrained", *map(_num_key, g[2:])))
        chosen = {g: groups[g][min(common or groups[g], key=_num_key)] for g in order}
        written = {g: _written(r["run"]) for g, r in chosen.items()}
        ids = sample_ids(set.intersection(*(set(w) for w in written.values())))
        if not ids:
            continue
        seeds = sorted({str(r.get(SEED)) for r in chosen.values()}, key=_num_key)
        where = f"{dataset}" + (f", {model}" if len({r['model'] for r in ok}) > 1 else "") \
            + (f", train fraction {fraction}" if fraction is not None else "") + f", seed {'/'.join(seeds)}"
        md += (f"\n## Sample reports ({where})\n\nWhat each configuration writes for {len(ids)} test examples (picked "
               "by a hash of their ids: the same for every mode), beside the reference; from each run's "
               f"`{RELATIVE.predictions}`, as written (before the scorers' cleaning).\n")
        for item in ids:
            reference = written[order[0]][item][0]
            md += f"\n**{_md_text(item)}**\n\n- *reference*: {_md_text(reference)}\n"
            md += "".join(f"- {_md_text(_label(g[0], g[1], dict(zip(other, g[2:]))))}: {_md_text(written[g][item][1])}\n"
                          for g in order)
    return md


def report(dirs: list[Path], out: Path | None = None, reference: str = "full") -> dict[str, Any]:
    """The results report: the tables and plot of every run under ``dirs``; returns paths and rows. ``reference``:
    the tune mode every other run is compared with (paired tests, :mod:`medft.metrics.stats`)."""
    from medft.metrics import findings as found
    from medft.metrics.stats import add_statistics, is_stat_column, statistics_markdown

    runs = find_runs(dirs)
    if not runs:
        raise MedftError(f"no runs found under {', '.join(map(str, dirs))} (a run dir holds {RELATIVE.config})")
    rows = [read_run(r) for r in runs]
    rows.sort(key=lambda r: (r["model"], r["dataset"], _mode_key(r["tune"]), r["run"]))
    out = out or dirs[0]
    swept = swept_keys(rows)
    for r in rows:
        r.update({SHOWN_AS.get(k, k): config_value(r, k) for k in swept})
    keys = group_keys(swept)
    # <metric>_ci_low/_ci_high, <metric>_delta_vs_ref/_p_vs_ref (against the reference of the same configuration)
    add_statistics(rows, reference, config=lambda r: tuple(str(r.get(k)) for k in keys))
    cols = columns(rows, swept) + (["reference_run"] if any("reference_run" in r for r in rows) else [])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    csv_path = write_text_atomic(out / "results.csv", buf.getvalue())
    table, pcols = pivot(rows, swept)
    md = f"## Runs ({len(rows)}: {sum(r['status'] == Status.OK for r in rows)} ok, {sum(r['status'] != Status.OK for r in rows)} not)\n\n"
    md += markdown(rows, [c for c in cols if c not in ("run", "reference_run") and not is_stat_column(c)])
    stats_md = statistics_markdown(rows, reference)
    md += ("\n" + stats_md) if stats_md else ""
    md += ("\n## Tune modes x datasets (one row per configuration: every key that varies among the runs is a column; "
           "mean over its n seeds)\n\n") + markdown(table, pcols)
    tasks = study_tasks(rows)
    studies = {}
    for task in tasks:
        study, scols = study_table(rows, keys, task)
        studies[task.name] = study
        md += f"\n## The study{task.title}: tune mode x init x train fraction (mean ± std over seeds)\n\n" + markdown(study, scols)
    md += samples_markdown(rows, keys)
    findings, findings_path = found.findings(rows, keys), None
    if findings:  # first in results.md: what the numbers say, with their intervals
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=found.columns(findings, keys), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: (f"{v:.4f}" if k in found.NUMBERS else v) for k, v in r.items()} for r in findings)
        findings_path = write_text_atomic(out / "findings.csv", buf.getvalue())
        md = found.findings_markdown(findings) + "\n" + md
    md_path = write_text_atomic(out / "results.md", md)
    png = plot(rows, out / "accuracy_vs_params.png", keys)
    study_pngs = [path for task in tasks for path in study_plots(rows, out, keys, task)]
    return {"rows": rows, "csv": csv_path, "markdown": md, "md": md_path, "png": png, "study": studies,
            "study_pngs": study_pngs, "findings": findings, "findings_csv": findings_path}


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
          + (f", {result['findings_csv']}" if result["findings_csv"] else "")
          + "".join(f", {p}" for p in result.get("study_pngs") or []))
