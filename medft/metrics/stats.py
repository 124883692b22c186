"""How sure is a number, and a difference? Bootstrap intervals and paired tests from ``predictions.jsonl``.

``medft report`` calls :func:`add_statistics` on its rows. For every run it rebuilds per-question
(VQA) or per-report (report generation) scores from the run's ``predictions.jsonl`` once, then:

* a 95% percentile bootstrap interval of every test metric it can rebuild (1,000 resamples of the
  test questions / reports, seeded): ``<metric>_ci_low``, ``<metric>_ci_high``. Accuracies (exact
  match, LLaVA-Med's closed and candidate accuracies) and LLaVA-Med's open recall / F1 are means of
  per-question scores; an accuracy over one answer type is the mean over that type's questions in
  the resample. BLEU-1..4 is recomputed per resample from per-report n-gram counts (pycocoevalcap's
  corpus formula: clipped matches, guesses, closest reference length), ROUGE-L as the mean of its
  per-report scores, CIDEr as the mean of per-report scores with the document frequencies of the
  whole test set (pycocoevalcap's own score is that mean; only the IDF is held fixed). METEOR gets
  no interval (its Java scorer's corpus score is not a per-report mean).
* a paired comparison with the reference mode's run on the same test questions (same model and
  dataset, the same ids; the same seed preferred): ``<metric>_delta_vs_ref`` (run - reference) and
  ``<metric>_p_vs_ref``: McNemar's exact test for accuracies (questions one got right and the other
  wrong, binomial two-sided), a paired bootstrap for the others (the same resamples for both runs;
  p = twice the smaller share of resampled differences on either side of 0, at most 1).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from medft.runs.layout import RELATIVE, RunDir, Status

RESAMPLES = 1000
SEED = 0
LEVEL = 0.95
SUFFIXES = ("_ci_low", "_ci_high", "_delta_vs_ref", "_p_vs_ref")
BLEU_SMALL, BLEU_TINY = 1e-9, 1e-15  # pycocoevalcap's BleuScorer constants


def is_stat_column(name: str) -> bool:
    return name.endswith(SUFFIXES)


def is_accuracy(metric: str) -> bool:
    """Metrics that are a share of questions answered right (McNemar applies)."""
    return metric.rsplit("/", 1)[-1].endswith("acc") or "acc_" in metric.rsplit("/", 1)[-1]


class RunScores:
    """Per-item scores of one run, enough to recompute each metric on any resample of its items."""

    def __init__(self, ids: list[str], means: dict[str, np.ndarray], bleu: dict[str, np.ndarray] | None = None) -> None:
        self.ids = ids
        self.means = means  # metric -> (n,) per-item values, NaN where the item does not count
        self.bleu = bleu    # testlen, reflen (n,), guess, correct (n, 4)

    @property
    def metrics(self) -> list[str]:
        return list(self.means) + ([f"test/bleu_{k}" for k in range(1, 5)] if self.bleu is not None else [])

    def value(self, metric: str, idx: np.ndarray) -> np.ndarray:
        """``metric`` on each row of ``idx`` ((B, n) item indices) -> (B,); NaN where no item counts."""
        if metric in self.means:
            values = self.means[metric][idx]
            counted = ~np.isnan(values)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(counted, values, 0.0).sum(axis=-1) / counted.sum(axis=-1)
        k = int(metric.rsplit("_", 1)[-1])
        b = self.bleu
        assert b is not None
        score = np.ones(idx.shape[:-1])
        for j in range(k):
            score = score * (b["correct"][idx, j].sum(axis=-1) + BLEU_TINY) / (b["guess"][idx, j].sum(axis=-1) + BLEU_SMALL)
        score = score ** (1.0 / k)
        ratio = (b["testlen"][idx].sum(axis=-1) + BLEU_TINY) / (b["reflen"][idx].sum(axis=-1) + BLEU_SMALL)
        return np.where(ratio < 1, score * np.exp(1 - 1 / np.minimum(ratio, 1)), score)

    def point(self, metric: str) -> float:
        return float(self.value(metric, np.arange(len(self.ids))[None, :])[0])


def read_rows(run_dir: Path, filename: str = str(RELATIVE.predictions)) -> list[dict[str, Any]]:
    from medft.util.safe_load import load_jsonl

    return load_jsonl(Path(run_dir) / filename)


def vqa_scores(rows: Sequence[Mapping[str, Any]], protocol: str = "exact", candidates: Sequence[str] | None = None) -> RunScores:
    """Per-question scores of a VQA run under its protocol (the keys its ``metrics.json`` has)."""
    from medft.metrics.protocols import PROTOCOLS, answers_of
    from medft.metrics.vqa import is_correct

    n = len(rows)
    kinds = np.array([str(r.get("answer_type") or "").upper() for r in rows])
    correct = np.array([float(is_correct(r.get("prediction"), r.get("answer"))) for r in rows])
    nan = np.full(n, np.nan)
    scoring = PROTOCOLS.get(protocol)
    prefix = "test/exact_" if scoring is not None and scoring.score is not None else "test/"  # as apply_protocol
    means = {"test/acc": correct,
             f"{prefix}acc_closed": np.where(kinds == "CLOSED", correct, nan),
             f"{prefix}acc_open": np.where(kinds == "OPEN", correct, nan)}
    if scoring is not None and scoring.per_question is not None:
        own = scoring.per_question(rows, candidates or answers_of(rows))
        means.update({f"test/{key}": np.asarray(values, dtype=float) for key, values in own.items()})
    return RunScores([str(r.get("id", i)) for i, r in enumerate(rows)], means)


def report_scores(rows: Sequence[Mapping[str, Any]], cider: bool = True) -> RunScores:
    """Per-report BLEU counts, ROUGE-L and CIDEr (unless ``cider`` is false: most of the time goes there), cleaned
    as :func:`medft.metrics.report_gen.coco_scores` cleans."""
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    from medft.metrics.report_gen import clean_report

    gts = {i: [clean_report(r["reference"])] for i, r in enumerate(rows)}
    res = {i: [clean_report(r["generated"]) if str(r["generated"]).strip() else "."] for i, r in enumerate(rows)}
    scorer = BleuScorer(n=4)
    for i in gts:
        scorer += (res[i][0], gts[i])
    comps = scorer.ctest
    bleu = {
        "testlen": np.array([c["testlen"] for c in comps], dtype=float),
        "reflen": np.array([scorer._single_reflen(c["reflen"], "closest", c["testlen"]) for c in comps], dtype=float),
        "guess": np.array([c["guess"] for c in comps], dtype=float),
        "correct": np.array([c["correct"] for c in comps], dtype=float),
    }
    _, rouge = Rouge().compute_score(gts, res)
    means = {"test/rouge_l": np.asarray(rouge, dtype=float)}
    if cider:
        means["test/cider"] = np.asarray(Cider().compute_score(gts, res)[1], dtype=float)
    return RunScores([str(r.get("id", i)) for i, r in enumerate(rows)], means, bleu)


def file_scores(run_dir: Path, filename: str, cider: bool = True) -> RunScores | None:
    """The per-item scores of one predictions file of a run (VQA: exact match; reports: as
    :func:`report_scores`), or None when the run has no such file or it is empty."""
    if not (Path(run_dir) / filename).is_file():
        return None
    rows = read_rows(Path(run_dir), filename)
    if not rows:
        return None
    return report_scores(rows, cider) if "generated" in rows[0] else vqa_scores(rows)


def run_scores(run_dir: Path, metrics: Mapping[str, Any]) -> RunScores | None:
    """The per-item scores of a finished run, or None when it has no usable ``predictions.jsonl``."""
    from medft.metrics.protocols import read_candidates

    path = RunDir(run_dir).predictions
    if not path.is_file():
        return None
    rows = read_rows(run_dir)
    if not rows:
        return None
    if "generated" in rows[0]:
        return report_scores(rows)
    return vqa_scores(rows, str(metrics.get("eval/protocol") or "exact"), read_candidates(run_dir))


def indices(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """The bootstrap resamples of ``n`` items: (resamples, n), the same for every run of that size."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


class Paired:
    """One metric of two runs on the items both scored (paired by id): its difference (mine - theirs) on any
    resample of those items. A corpus metric (BLEU) is recomputed on each resample, never averaged per item."""

    def __init__(self, mine: RunScores, theirs: RunScores, metric: str) -> None:
        shared = sorted(set(_occurrences(mine.ids)) & set(_occurrences(theirs.ids)))
        self.mine, self.theirs, self.metric = mine, theirs, metric
        self.at_mine = _positions(mine.ids, shared)
        self.at_theirs = _positions(theirs.ids, shared)

    def __len__(self) -> int:
        return len(self.at_mine)

    def value(self, idx: np.ndarray) -> np.ndarray:
        """The difference on each row of ``idx`` ((B, n) indices of the shared items) -> (B,)."""
        return self.mine.value(self.metric, self.at_mine[idx]) - self.theirs.value(self.metric, self.at_theirs[idx])

    def point(self) -> float:
        return float(self.value(np.arange(len(self))[None, :])[0])


def _positions(ids: list[str], shared: list[tuple[str, int]]) -> np.ndarray:
    where = {item: i for i, item in enumerate(_occurrences(ids))}
    return np.array([where[item] for item in shared], dtype=int)


def hierarchical_bootstrap(groups: Sequence[np.ndarray | Paired], resamples: int = RESAMPLES, seed: int = SEED,
                           level: float = LEVEL) -> tuple[float, float]:
    """A percentile interval of the mean over groups of each group's statistic (e.g. seeds, then test
    questions): each resample draws as many groups as there are, with replacement, then each drawn group's
    items, with replacement. A group is per-item values (its statistic: their mean) or a :class:`Paired`
    (its statistic recomputed on the drawn items). One group: the plain bootstrap of its items."""
    rng = np.random.default_rng(seed)
    k = len(groups)
    picks = rng.integers(0, k, size=(resamples, k))
    total = np.zeros(resamples)
    for slot in range(k):
        for g, values in enumerate(groups):
            chosen = picks[:, slot] == g
            if chosen.any():
                idx = rng.integers(0, len(values), size=(int(chosen.sum()), len(values)))
                if isinstance(values, Paired):
                    total[chosen] += values.value(idx)
                else:
                    total[chosen] += np.asarray(values, dtype=float)[idx].mean(axis=1)
    return interval(total / k, level)


def interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if not len(values):
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def mcnemar_exact(run: np.ndarray, ref: np.ndarray) -> float:
    """Two-sided exact McNemar p-value of paired 0/1 outcomes (NaN pairs left out)."""
    keep = ~(np.isnan(run) | np.isnan(ref))
    b = int(((ref == 1) & (run == 0) & keep).sum())  # reference right, run wrong
    c = int(((ref == 0) & (run == 1) & keep).sum())
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_bootstrap_p(deltas: np.ndarray) -> float:
    deltas = deltas[~np.isnan(deltas)]
    if not len(deltas):
        return math.nan
    return float(min(1.0, 2 * min((deltas <= 0).mean(), (deltas >= 0).mean())))


def _pick_reference(row: Mapping[str, Any], candidates: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    if not candidates:
        return None
    same_seed = [c for c in candidates if c.get("_seed") == row.get("_seed")]
    return (same_seed or candidates)[0]


def add_statistics(rows: list[dict[str, Any]], reference: str = "full", resamples: int = RESAMPLES,
                   seed: int = SEED, loader: Callable[[Path, Mapping[str, Any]], RunScores | None] = run_scores,
                   config: Callable[[Mapping[str, Any]], Any] = lambda row: None) -> None:
    """Add ``<metric>_ci_low/_ci_high`` to every ok row with predictions, and ``<metric>_delta_vs_ref`` /
    ``<metric>_p_vs_ref`` to those with a reference-mode run on the same test items and of the same
    ``config(row)`` (the other configuration keys: a layernorm run at one data fraction is never
    compared with full at another) (in place).
    Rows need ``run``, ``status``, ``model``, ``dataset``, ``tune`` and their ``test/*`` metrics."""
    scores: dict[str, RunScores] = {}
    for row in rows:
        if row.get("status") != Status.OK:
            continue
        metrics = _metrics(row)
        found = loader(Path(row["run"]), metrics)
        if found is not None and found.ids:
            scores[row["run"]] = found
            row["_seed"], row["_protocol"] = _seed(Path(row["run"])), metrics.get("eval/protocol")
    draws: dict[int, np.ndarray] = {}
    for row in rows:
        run = scores.get(row["run"])
        if run is None:
            continue
        idx = draws.setdefault(len(run.ids), indices(len(run.ids), resamples, seed))
        for metric in run.metrics:
            if row.get(metric) is None:
                continue
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = interval(run.value(metric, idx))
        if row.get("tune") == reference:
            continue
        refs = [r for r in rows if r.get("tune") == reference and r["run"] in scores and r.get("model") == row.get("model")
                and r.get("dataset") == row.get("dataset") and r.get("_protocol") == row.get("_protocol")
                and config(r) == config(row) and sorted(scores[r["run"]].ids) == sorted(run.ids)]
        ref_row = _pick_reference(row, refs)
        if ref_row is None:
            continue
        ref = scores[ref_row["run"]]
        order = {item: i for i, item in enumerate(_occurrences(run.ids))}
        align = np.array([order[item] for item in _occurrences(ref.ids)])  # the run's items in the reference's order
        for metric in run.metrics:
            if row.get(metric) is None or metric not in ref.metrics:
                continue
            mine = run.value(metric, align[idx])
            theirs = ref.value(metric, idx)
            row[f"{metric}_delta_vs_ref"] = run.point(metric) - ref.point(metric)
            if is_accuracy(metric) and metric in run.means:
                row[f"{metric}_p_vs_ref"] = mcnemar_exact(run.means[metric][align], ref.means[metric])
            else:
                row[f"{metric}_p_vs_ref"] = paired_bootstrap_p(mine - theirs)
        row["reference_run"] = ref_row["run"]
    for row in rows:
        row.pop("_seed", None)
        row.pop("_protocol", None)


def _occurrences(ids: list[str]) -> list[tuple[str, int]]:
    """Each id with its occurrence number: a test set listing one id twice (a duplicated record) pairs
    the k-th row of an id in one run with the k-th in the other, never every row with the last one."""
    seen: dict[str, int] = {}
    out = []
    for item in ids:
        seen[item] = seen.get(item, 0) + 1
        out.append((item, seen[item]))
    return out


def _metrics(row: Mapping[str, Any]) -> dict[str, Any]:
    from medft.util.safe_load import load_json

    path = RunDir(row["run"]).metrics
    metrics = load_json(path) if path.is_file() else {}
    return metrics if isinstance(metrics, dict) else {}


def _seed(run: Path) -> Any:
    from medft.util.safe_load import load_yaml

    try:
        cfg = load_yaml(RunDir(run).config)
    except (OSError, ValueError):  # medft.util.safe_load.UnsafeFile is a ValueError
        return None
    return cfg.get("seed") if isinstance(cfg, dict) else None


def cell(row: Mapping[str, Any], metric: str, reference: str) -> str:
    """``0.712 [0.670, 0.751] (−1.3 vs full, p=0.41)``: deltas in points (x100) except CIDEr."""
    value = row.get(metric)
    if value is None:
        return ""
    text = f"{float(value):.3f}"
    low, high = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
    if low is not None and not math.isnan(low):
        text += f" [{low:.3f}, {high:.3f}]"
    delta = row.get(f"{metric}_delta_vs_ref")
    if delta is not None:
        scale = 1 if metric.endswith("cider") else 100
        p = row.get(f"{metric}_p_vs_ref")
        p_text = "" if p is None or math.isnan(p) else (", p<0.001" if p < 0.001 else f", p={p:.2g}")
        text += f" ({delta * scale:+.1f}".replace("-", "\u2212") + f" vs {reference}{p_text})"
    return text


def statistics_markdown(rows: Sequence[Mapping[str, Any]], reference: str) -> str:
    """One line per run with intervals: ``| model | dataset | tune | run | test/acc ... |``."""
    shown = [r for r in rows if any(k.endswith("_ci_low") for k in r)]
    if not shown:
        return ""
    metrics = sorted({k.removesuffix("_ci_low") for r in shown for k in r if k.endswith("_ci_low")})
    cols = ["model", "dataset", "tune", "run"] + [m.removeprefix("test/") for m in metrics]
    lines = [f"## 95% bootstrap intervals ({RESAMPLES} resamples), paired vs tune={reference}\n",
             "McNemar's exact test for accuracies, paired bootstrap otherwise; differences in points "
             "(x100; CIDEr as is).\n", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in shown:
        cells = [str(r.get("model", "")), str(r.get("dataset", "")), str(r.get("tune", "")), Path(str(r["run"])).name]
        cells += [cell(r, m, reference) for m in metrics]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
