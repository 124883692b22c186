"""medft report's statistics: bootstrap intervals and paired tests from predictions.jsonl (medft.metrics.stats)."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from medft.metrics.stats import cell, indices, mcnemar_exact, paired_bootstrap_p, report_scores, vqa_scores
from medft.commands.report import report


def fake_run(root: Path, name: str, tune: str, correct: list[bool], kinds: list[str], seed: int = 42,
             model: str = "blip_tiny", dataset: str = "demo") -> Path:
    """A finished VQA run dir: config, metrics.json and predictions.jsonl with the given right/wrong answers."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    cfg = {"model": {"name": model}, "dataset": {"name": dataset}, "tune": {"name": tune}, "seed": seed}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = [{"id": f"q{i}", "question": "?", "answer": "yes" if kind == "CLOSED" else "left lung",
             "prediction": ("yes" if kind == "CLOSED" else "left lung") if ok else "maybe", "answer_type": kind}
            for i, (ok, kind) in enumerate(zip(correct, kinds))]
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    closed = [ok for ok, k in zip(correct, kinds) if k == "CLOSED"]
    opened = [ok for ok, k in zip(correct, kinds) if k == "OPEN"]
    metrics = {"test/acc": sum(correct) / len(correct), "test/acc_closed": sum(closed) / len(closed),
               "test/acc_open": sum(opened) / len(opened), "eval/protocol": "exact", "params/trainable": 10}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_mcnemar_exact_and_paired_bootstrap_p():
    ref = np.array([1.0] * 10 + [0.0] * 2 + [1.0] * 20)
    run = np.array([0.0] * 10 + [1.0] * 2 + [1.0] * 20)  # b = 10 (ref right, run wrong), c = 2
    assert mcnemar_exact(run, ref) == pytest.approx(2 * (1 + 12 + 66) / 2 ** 12)
    assert mcnemar_exact(ref, ref) == 1.0
    assert mcnemar_exact(np.array([0.0] * 6), np.array([1.0] * 6)) == pytest.approx(2 / 64)
    assert paired_bootstrap_p(np.zeros(10)) == 1.0
    assert paired_bootstrap_p(np.full(1000, 0.1)) == 0.0
    assert paired_bootstrap_p(np.array([1.0] * 900 + [-1.0] * 100)) == pytest.approx(0.2)


def test_intervals_and_paired_columns_of_a_sweep(tmp_path):
    rng = np.random.default_rng(1)
    n = 300
    kinds = ["CLOSED" if i % 2 else "OPEN" for i in range(n)]
    full = rng.random(n) < 0.7
    layernorm = full.copy()
    layernorm[np.flatnonzero(full)[:5]] = False  # 5 questions only full gets right, 3 only layernorm: a small gap
    layernorm[np.flatnonzero(~full)[:3]] = True
    runs = tmp_path / "sweep"
    fake_run(runs, "full_demo_blip_tiny", "full", list(full), kinds)
    fake_run(runs, "layernorm_demo_blip_tiny", "layernorm", list(layernorm), kinds)
    fake_run(runs, "lora_other_blip_tiny", "lora", list(full), kinds, dataset="other")  # no full run on its test set
    result = report([runs])
    rows = {r["tune"]: r for r in result["rows"]}

    ln, ref = rows["layernorm"], rows["full"]
    for row in (ln, ref, rows["lora"]):
        for metric in ("test/acc", "test/acc_closed", "test/acc_open"):
            assert row[f"{metric}_ci_low"] <= row[metric] <= row[f"{metric}_ci_high"]
    p = ln["test/acc"]
    half = 1.96 * math.sqrt(p * (1 - p) / n)  # the normal approximation, for scale
    assert ln["test/acc_ci_high"] - ln["test/acc_ci_low"] == pytest.approx(2 * half, rel=0.2)
    assert ln["test/acc_delta_vs_ref"] == pytest.approx(ln["test/acc"] - ref["test/acc"])
    b = int((full & ~layernorm).sum())
    c = int((~full & layernorm).sum())
    assert ln["test/acc_p_vs_ref"] == pytest.approx(mcnemar_exact(layernorm.astype(float), full.astype(float)))
    assert ln["test/acc_p_vs_ref"] == pytest.approx(min(1.0, 2 * sum(math.comb(b + c, i) for i in range(min(b, c) + 1)) / 2 ** (b + c)))
    assert "test/acc_delta_vs_ref" not in ref and "test/acc_delta_vs_ref" not in rows["lora"]

    with (runs / "results.csv").open() as fh:
        header = next(csv.reader(fh))
    for col in ("test/acc_ci_low", "test/acc_ci_high", "test/acc_delta_vs_ref", "test/acc_p_vs_ref",
                "test/acc_open_ci_low", "reference_run"):
        assert col in header
    md = (runs / "results.md").read_text()
    readable = cell(ln, "test/acc", "full")
    assert readable.startswith(f"{ln['test/acc']:.3f} [{ln['test/acc_ci_low']:.3f}, {ln['test/acc_ci_high']:.3f}] (")
    assert f"{100 * ln['test/acc_delta_vs_ref']:+.1f}".replace("-", "\u2212") + " vs full, p=" in readable
    assert (b, c) == (5, 3) and ln["test/acc_p_vs_ref"] == pytest.approx(2 * (1 + 8 + 28 + 56) / 2 ** 8)
    assert readable in md and "95% bootstrap intervals" in md
    assert "acc_ci_low" not in md.split("## 95%")[0]  # the runs table stays readable

    again = report([runs], out=tmp_path / "again")  # seeded: the same intervals
    assert [r.get("test/acc_ci_low") for r in again["rows"]] == [r.get("test/acc_ci_low") for r in result["rows"]]
    other = report([runs], out=tmp_path / "vs_layernorm", reference="layernorm")
    full_row = next(r for r in other["rows"] if r["tune"] == "full")
    assert full_row["test/acc_delta_vs_ref"] == pytest.approx(-ln["test/acc_delta_vs_ref"])


def test_llava_protocol_metrics_get_intervals(tmp_path):
    rows = [{"id": "a", "answer": "no", "prediction": "normal", "answer_type": "CLOSED"},
            {"id": "b", "answer": "left lung", "prediction": "left left left", "answer_type": "OPEN"},
            {"id": "c", "answer": "yes", "prediction": "yes", "answer_type": "CLOSED"}]
    scores = vqa_scores(rows, "llava_med", ["left lung", "yes"])
    assert scores.point("test/acc_closed") == 1.0 and scores.point("test/exact_acc_closed") == 0.5
    assert scores.point("test/recall_open") == pytest.approx(0.75) and scores.point("test/open_candidate_acc") == 1.0


REFS = ["The heart is normal in size. No effusion.", "Lungs are clear. No pneumothorax.",
        "Heart size is normal. No focal consolidation.", "Normal chest.", "Small left pleural effusion."]


def report_rows(n: int, rng: np.random.Generator) -> list[dict]:
    gens = ["the heart is normal .", "no effusion .", "lungs are clear .", "", "heart size normal no consolidation ."]
    return [{"id": f"r{i}", "reference": REFS[i % 5], "generated": gens[rng.integers(0, 5)]} for i in range(n)]


def test_report_metrics_resample_the_corpus_formula():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    from medft.metrics.report_gen import clean_report

    rows = report_rows(40, np.random.default_rng(0))
    scores = report_scores(rows)
    gts = {i: [clean_report(r["reference"])] for i, r in enumerate(rows)}
    res = {i: [clean_report(r["generated"]) or "."] for i, r in enumerate(rows)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for k in range(4):
        assert scores.point(f"test/bleu_{k + 1}") == pytest.approx(bleu[k], rel=1e-9)
    assert scores.point("test/rouge_l") == pytest.approx(Rouge().compute_score(gts, res)[0])
    assert scores.point("test/cider") == pytest.approx(Cider().compute_score(gts, res)[0])
    idx = indices(40, resamples=3, seed=5)  # a resample is scored as pycocoevalcap scores that subset
    sub = {j: gts[i] for j, i in enumerate(idx[1])}
    sub_res = {j: res[i] for j, i in enumerate(idx[1])}
    assert scores.value("test/bleu_4", idx)[1] == pytest.approx(Bleu(4).compute_score(sub, sub_res, verbose=0)[0][3], rel=1e-9)


def test_report_generation_sweep_is_fast_and_paired(tmp_path):
    """IU X-ray's size (590 test reports), two runs: intervals and a paired bootstrap in seconds."""
    runs = tmp_path / "sweep"
    for tune, seed in (("full", 0), ("layernorm", 1)):
        run = runs / f"{tune}_iu_xray_blip_report_tiny"
        (run / ".hydra").mkdir(parents=True)
        cfg = {"model": {"name": "blip_report_tiny"}, "dataset": {"name": "iu_xray"}, "tune": {"name": tune}, "seed": 42}
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
        rows = report_rows(590, np.random.default_rng(seed))
        (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        point = report_scores(rows)
        metrics = {m: point.point(m) for m in point.metrics}
        metrics["test/meteor"] = 0.2
        (run / "metrics.json").write_text(json.dumps(metrics))
    started = time.perf_counter()
    result = report([runs])
    seconds = time.perf_counter() - started
    assert seconds < 30, seconds
    ln = next(r for r in result["rows"] if r["tune"] == "layernorm")
    for metric in ("test/bleu_1", "test/bleu_4", "test/rouge_l", "test/cider"):
        assert ln[f"{metric}_ci_low"] <= ln[metric] <= ln[f"{metric}_ci_high"]
        assert 0.0 <= ln[f"{metric}_p_vs_ref"] <= 1.0 and f"{metric}_delta_vs_ref" in ln
    assert "test/meteor_ci_low" not in ln  # no interval for METEOR (its corpus score is not a mean)


def test_hierarchical_bootstrap_resamples_seeds_then_questions():
    import numpy as np

    from medft.metrics.stats import hierarchical_bootstrap, indices, interval

    rng = np.random.default_rng(1)
    one = rng.integers(-1, 2, size=200).astype(float)
    # one seed: the plain bootstrap of its questions (same draws: the same interval up to resampling noise)
    low, high = hierarchical_bootstrap([one])
    plain = interval(one[indices(len(one))].mean(axis=1))
    assert low == pytest.approx(plain[0], abs=0.03) and high == pytest.approx(plain[1], abs=0.03)
    assert low < one.mean() < high
    # every question of every seed +1: nothing to resample, the interval is the point
    assert hierarchical_bootstrap([np.ones(50), np.ones(80)]) == (1.0, 1.0)
    # seeds that disagree widen the interval beyond what their pooled questions say
    seeds = [np.full(300, 0.3) + rng.normal(0, 0.01, 300), np.full(300, -0.1), np.full(300, 0.1)]
    low, high = hierarchical_bootstrap(seeds)
    pooled = interval(np.concatenate(seeds)[indices(900)].mean(axis=1))
    assert low < pooled[0] and high > pooled[1] and low < 0 < high
