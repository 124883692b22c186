"""The study's findings, computed: each pretrained tune mode against ``frozen`` and against ``full``.

``medft report`` on a study dir (runs tested on the source domain too) writes ``findings.csv``, one
row per (metric, dataset, train fraction, any other configuration key that varies, tune mode, versus).
What a study is judged by follows its runs' task (:data:`STUDY_TASKS`): accuracy on the target and
the source for VQA (``make study``); BLEU-4 and ROUGE-L on the target, the source and the shift set
for report writing (``make study-report``).

* ``delta``: the mean over seeds of the paired difference (mode - versus), each seed's two runs
  compared on the same test items (paired by id from ``predictions.jsonl``; ``source/*`` from
  ``predictions_source.jsonl``, ``shift/*`` from ``predictions_shift.jsonl``): accuracy and ROUGE-L
  as the mean of per-item differences, BLEU-4 as the difference of the two corpus scores. In
  experiment=study each seed fine-tunes its own pretrained draw, so the seeds carry the
  pretraining's variation as well as the fine-tuning's.
* ``ci_low``, ``ci_high``: a 95% hierarchical bootstrap interval, 2,000 resamples
  (:func:`medft.metrics.stats.hierarchical_bootstrap`):
  resample the seeds, then each drawn seed's test items (BLEU-4 rescored on each resample).
* ``verdict``: ``ahead`` (the interval lies above 0), ``behind`` (below 0) or ``unresolved``.

:func:`findings_markdown` says the same in words for ``results.md``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from medft.metrics.stats import Paired, RunScores, file_scores, hierarchical_bootstrap
from medft.runs.layout import RELATIVE, Status


@dataclass(frozen=True)
class StudyTask:
    """What a study of one task (``dataset.task``) shows and is judged by."""

    name: str
    main: str                 # the metric a run is plotted by; ``source/<main>`` present: a study run
    main_words: str           # it in words, on the plots' axes
    shown: tuple[str, ...]    # the study table's metrics (mean ± std over seeds)
    judged: tuple[str, ...]   # findings.csv's metrics, in this order
    what: Mapping[str, str]   # a judged metric in words
    how: str                  # how a finding's difference and interval are made, in words (results.md)
    plots: tuple[str, str]    # file names: main metric vs trainable %, gain over frozen vs kept on the source
    title: str = ""           # the study table's heading says it after "The study"
    samples: bool = False     # results.md shows what the runs write

    def is_study(self, row: Mapping[str, Any]) -> bool:
        return row.get(f"source/{self.main}") is not None


STUDY_TASKS = {
    "vqa": StudyTask("vqa", "acc", "accuracy", ("test/acc", "source/acc", "shift/acc"), ("test/acc", "source/acc"),
                     {"test/acc": "target accuracy", "source/acc": "source accuracy (what each keeps)"},
                     "the mean over seeds of the paired difference (same seed = same pretrained draw, same test "
                     "questions), in points (x100), with a 95% hierarchical bootstrap interval (seeds, then questions).",
                     ("study_acc_vs_params.png", "study_gain_vs_kept.png")),
    "report": StudyTask(
        "report", "bleu_4", "BLEU-4",
        ("test/bleu_4", "test/meteor", "test/rouge_l", "test/cider", "source/bleu_4", "source/rouge_l", "shift/bleu_4",
         "shift/rouge_l"),
        ("test/bleu_4", "test/rouge_l", "source/bleu_4", "source/rouge_l", "shift/bleu_4", "shift/rouge_l"),
        {"test/bleu_4": "target BLEU-4", "test/rouge_l": "target ROUGE-L",
         "source/bleu_4": "source BLEU-4 (what each keeps)", "source/rouge_l": "source ROUGE-L (what each keeps)",
         "shift/bleu_4": "shift-set BLEU-4 (what each keeps of the other target)",
         "shift/rouge_l": "shift-set ROUGE-L (what each keeps of the other target)"},
        "the mean over seeds of the paired difference (same seed = same pretrained draw, same test reports), in "
        "points (x100; BLEU-4 is the difference of the two corpus scores, ROUGE-L the mean per-report difference), "
        "with a 95% hierarchical bootstrap interval (seeds, then reports; BLEU-4 rescored on each resample).",
        ("study_bleu_4_vs_params.png", "study_bleu_4_gain_vs_kept.png"), " — report writing", samples=True),
}


def task_of(row: Mapping[str, Any]) -> StudyTask:
    """The study task of a report row: its ``task`` (the run's ``dataset.task``), else the task whose main
    metric it has (a run dir from before datasets named their task), else VQA."""
    if row.get("task") in STUDY_TASKS:
        return STUDY_TASKS[row["task"]]
    return next((t for t in STUDY_TASKS.values() if row.get(f"test/{t.main}") is not None), STUDY_TASKS["vqa"])


def predictions_file(metric: str) -> str:
    """The predictions file a metric's per-item scores come from: ``source/bleu_4`` -> predictions_source.jsonl."""
    where = metric.split("/", 1)[0]
    return str(RELATIVE.predictions if where == "test" else RELATIVE.predictions_of(where))


VERSUS = ("frozen", "full")
RESAMPLES = 2000  # a verdict sits on the interval's ends: twice the per-run intervals' resamples
COLUMNS = ["metric", "dataset", "train_fraction", "tune", "versus", "delta", "ci_low", "ci_high", "verdict", "seeds"]
NUMBERS = ("delta", "ci_low", "ci_high")
WHAT = {m: words for task in STUDY_TASKS.values() for m, words in task.what.items()}


# An interval end that findings.csv prints as 0.0000 (4 decimals) is 0: a verdict the file cannot show is
# none. Where a run matches no 4-gram, BLEU-4 is pycocoevalcap's smoothing constants (1e-15 / 1e-9) at work,
# ~1e-6 to 1e-13, and the differences between such runs are those constants, not writing.
TIE = 5e-5


def verdict(low: float, high: float) -> str:
    if low > TIE:
        return "ahead"
    if high < -TIE:
        return "behind"
    return "unresolved"


Cache = dict[tuple[str, str], RunScores | None]


def scores_of(run: str, filename: str, cache: Cache) -> RunScores | None:
    """Per-item scores of one run's predictions file (exact match, or a report's: no CIDEr, which no finding
    is on), or None when it has none."""
    if (run, filename) not in cache:
        cache[(run, filename)] = file_scores(Path(run), filename, cider=False)
    return cache[(run, filename)]


def paired(mine: RunScores, theirs: RunScores, metric: str) -> np.ndarray | Paired:
    """Two runs' ``metric`` (a key of :class:`RunScores`: ``test/acc``, ``test/bleu_4``) on the items both scored:
    per-item differences where the metric is a mean of per-item scores, else the :class:`Paired` to rescore."""
    both = Paired(mine, theirs, metric)
    if metric in mine.means and metric in theirs.means:
        return mine.means[metric][both.at_mine] - theirs.means[metric][both.at_theirs]
    return both


def compare(mine: dict[str, dict[str, Any]], theirs: dict[str, dict[str, Any]], metric: str, cache: Cache,
            resamples: int) -> tuple[float, float, float, int] | None:
    """(delta, ci_low, ci_high, seeds) of two modes' runs by seed (``{seed: row}``) on ``metric`` (``source/acc``:
    accuracy on predictions_source.jsonl), or None when no seed pairs."""
    filename, scored = predictions_file(metric), "test/" + metric.split("/", 1)[1]
    diffs = []
    for seed in sorted(set(mine) & set(theirs)):  # the same seed: the same pretrained draw, the same test items
        a = scores_of(mine[seed]["run"], filename, cache)
        b = scores_of(theirs[seed]["run"], filename, cache)
        if a is not None and b is not None and scored in a.metrics and scored in b.metrics \
                and len(diff := paired(a, b, scored)):
            diffs.append(diff)
    if not diffs:
        return None
    low, high = hierarchical_bootstrap(diffs, resamples)
    return float(np.mean([d.point() if isinstance(d, Paired) else d.mean() for d in diffs])), low, high, len(diffs)


def findings(rows: list[dict[str, Any]], keys: Sequence[str] = (), resamples: int = RESAMPLES) -> list[dict[str, Any]]:
    """The findings rows of the study runs among ``rows`` (report rows: ``status``, ``init``, ``tune``, ``seed``,
    ``train_fraction``, ``run``, ``source/acc`` ...); ``keys``: other configuration keys that vary (columns)."""
    study = [r for r in rows if r.get("status") == Status.OK and r.get("init") == "pretrained" and task_of(r).is_study(r)]
    other = [k for k in keys if k not in ("train_fraction", "init")]
    cells: dict[tuple, dict[str, dict[str, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    for r in study:
        where = (r["model"], r["dataset"], r["train_fraction"], *(str(r.get(k, "")) for k in other))
        cells[where][r["tune"]][str(r.get("seed"))] = r
    cache: Cache = {}
    out = []
    judged = list(dict.fromkeys(m for r in study for m in task_of(r).judged))
    for metric in judged:  # the target first, then what each keeps of the source (and the shift set)
        for where in sorted(cells, key=lambda w: tuple(map(str, w))):
            modes = cells[where]
            for versus in [v for v in VERSUS if v in modes]:
                for tune in [t for t in modes if t != versus]:
                    found = compare(modes[tune], modes[versus], metric, cache, resamples)
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
    judged = {r["metric"] for r in rows}
    how = " Or: ".join(t.how for t in STUDY_TASKS.values() if judged & set(t.judged))
    lines = ["## Findings (computed: findings.csv)", "",
             f"Each pretrained tune mode against `frozen` and against `full`: {how} *Ahead* / *behind*: the interval "
             "excludes 0; *unresolved*: it does not, and the data cannot order the two.", ""]
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
