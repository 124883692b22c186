"""The study's findings, computed: each pretrained tune mode against ``frozen`` and against ``full``.

``medft report`` on a study dir (runs tested on the source domain too) writes ``findings.csv``, one
row per (metric, dataset, train fraction, any other configuration key that varies, tune mode, versus):

* ``delta``: the mean over seeds of the paired difference in accuracy (mode - versus), each seed's two
  runs compared question by question (paired by question id from ``predictions.jsonl``; ``source/acc``
  from ``predictions_source.jsonl``). In experiment=study each seed fine-tunes its own pretrained draw,
  so the seeds carry the pretraining's variation as well as the fine-tuning's.
* ``ci_low``, ``ci_high``: a 95% hierarchical bootstrap interval, 2,000 resamples
  (:func:`medft.metrics.stats.hierarchical_bootstrap`):
  resample the seeds, then each drawn seed's test questions.
* ``verdict``: ``ahead`` (the interval lies above 0), ``behind`` (below 0) or ``unresolved``.

:func:`findings_markdown` says the same in words for ``results.md``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medft.metrics.stats import hierarchical_bootstrap, read_rows, vqa_scores
from medft.runs.layout import RELATIVE, Status

VERSUS = ("frozen", "full")
RESAMPLES = 2000  # a verdict sits on the interval's ends: twice the per-run intervals' resamples
# metric -> the predictions file its per-question scores come from
SOURCES = {"test/acc": str(RELATIVE.predictions), "source/acc": str(RELATIVE.predictions_of("source"))}
COLUMNS = ["metric", "dataset", "train_fraction", "tune", "versus", "delta", "ci_low", "ci_high", "verdict", "seeds"]
NUMBERS = ("delta", "ci_low", "ci_high")
WHAT = {"test/acc": "target accuracy", "source/acc": "source accuracy (what each keeps)"}


def verdict(low: float, high: float) -> str:
    if low > 0:
        return "ahead"
    if high < 0:
        return "behind"
    return "unresolved"


def correct_by_id(run: str, filename: str, cache: dict[tuple[str, str], dict[str, float] | None]) -> dict[str, float] | None:
    """``{question id: 1.0 / 0.0}`` (exact match) of one run's predictions file, or None when it has none."""
    if (run, filename) not in cache:
        path = Path(run) / filename
        if not path.is_file():
            cache[(run, filename)] = None
        else:
            scores = vqa_scores(read_rows(Path(run), filename))
            cache[(run, filename)] = dict(zip(scores.ids, scores.means["test/acc"].tolist()))
    return cache[(run, filename)]


def paired_differences(mine: dict[str, float], theirs: dict[str, float]) -> np.ndarray:
    """Per-question differences on the questions both runs answered (paired by id)."""
    shared = sorted(set(mine) & set(theirs))
    return np.array([mine[q] - theirs[q] for q in shared], dtype=float)


def compare(mine: dict[str, dict[str, Any]], theirs: dict[str, dict[str, Any]], filename: str,
            cache: dict[tuple[str, str], dict[str, float] | None], resamples: int) -> tuple[float, float, float, int] | None:
    """(delta, ci_low, ci_high, seeds) of two modes' runs by seed (``{seed: row}``), or None when no seed pairs."""
    diffs = []
    for seed in sorted(set(mine) & set(theirs)):  # the same seed: the same pretrained draw, the same test questions
        a = correct_by_id(mine[seed]["run"], filename, cache)
        b = correct_by_id(theirs[seed]["run"], filename, cache)
        if a is not None and b is not None and len(diff := paired_differences(a, b)):
            diffs.append(diff)
    if not diffs:
        return None
    low, high = hierarchical_bootstrap(diffs, resamples)
    return float(np.mean([d.mean() for d in diffs])), low, high, len(diffs)


def findings(rows: list[dict[str, Any]], keys: Sequence[str] = (), resamples: int = RESAMPLES) -> list[dict[str, Any]]:
    """The findings rows of the study runs among ``rows`` (report rows: ``status``, ``init``, ``tune``, ``seed``,
    ``train_fraction``, ``run``, ``source/acc`` ...); ``keys``: other configuration keys that vary (columns)."""
    study = [r for r in rows if r.get("status") == Status.OK and r.get("init") == "pretrained" and r.get("source/acc") is not None]
    other = [k for k in keys if k not in ("train_fraction", "init")]
    cells: dict[tuple, dict[str, dict[str, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    for r in study:
        where = (r["model"], r["dataset"], r["train_fraction"], *(str(r.get(k, "")) for k in other))
        cells[where][r["tune"]][str(r.get("seed"))] = r
    cache: dict[tuple[str, str], dict[str, float] | None] = {}
    out = []
    for metric, filename in SOURCES.items():  # the target first, then what each keeps of the source
        for where in sorted(cells, key=lambda w: tuple(map(str, w))):
            modes = cells[where]
            for versus in [v for v in VERSUS if v in modes]:
                for tune in [t for t in modes if t != versus]:
                    found = compare(modes[tune], modes[versus], filename, cache, resamples)
                    if found is None:
                        continue
                    delta, low, high, seeds = found
                    out.append({"metric": metric, "model": where[0], "dataset": where[1], "train_fraction": where[2],
                                **dict(zip(other, where[3:])), "tune": tune, "versus": versus, "delta": delta,
                                "ci_low": low, "ci_high": high, "verdict": verdict(low, high), "seeds": seeds})
    return out


def columns(rows: list[dict[str, Any]], keys: Sequence[str] = ()) -> list[str]:
    other = [k for k in keys if k not in ("train_fraction", "init")]
    models = ["model"] if len({r["model"] for r in rows}) > 1 else []
    return COLUMNS[:2] + models + COLUMNS[2:3] + other + COLUMNS[3:]


def _points(value: float) -> str:
    """A difference of accuracies in points: +6.1, −2.0."""
    return f"{value * 100:+.1f}".replace("-", "\u2212")


def findings_markdown(rows: list[dict[str, Any]]) -> str:
    """The findings in words: per metric, dataset, fraction (and other key) and reference, which modes are
    ahead, behind, or not told apart, with each difference and its 95% interval in points."""
    if not rows:
        return ""
    lines = ["## Findings (computed: findings.csv)", "",
             "Each pretrained tune mode against `frozen` and against `full`: the mean over seeds of the paired "
             "difference (same seed = same pretrained draw, same test questions), in points (x100), with a 95% "
             "hierarchical bootstrap interval (seeds, then questions). *Ahead* / *behind*: the interval excludes 0; "
             "*unresolved*: it does not, and the data cannot order the two.", ""]
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    fixed = {"metric", "model", "dataset", "train_fraction", "tune", "versus", "delta", "ci_low", "ci_high", "verdict", "seeds"}
    for r in rows:
        extra = tuple((k, r[k]) for k in r if k not in fixed)
        groups[(r["metric"], r["model"], r["dataset"], r["train_fraction"], extra, r["versus"])].append(r)
    for (metric, model, dataset, fraction, extra, versus), cell in groups.items():
        cell.sort(key=lambda r: -r["delta"])
        seeds = sorted({r["seeds"] for r in cell})
        where = f"{dataset}, train fraction {fraction}" + "".join(f", {k}={v}" for k, v in extra)
        parts = []
        for kind, word in (("ahead", "ahead of"), ("behind", "behind"), ("unresolved", "not told apart from")):
            modes = [r for r in cell if r["verdict"] == kind]
            if modes:
                listed = ", ".join(f"{r['tune']} {_points(r['delta'])} [{_points(r['ci_low'])}, {_points(r['ci_high'])}]"
                                   for r in modes)
                parts.append(f"{word} {versus}: {listed}")
        n = "/".join(map(str, seeds))
        lines.append(f"- **{WHAT.get(metric, metric)}, {where}** ({n} seed{'s' if seeds != [1] else ''}): "
                     + "; ".join(parts) + ".")
    return "\n".join(lines) + "\n"
