"""``medft report`` on a report-writing study (``make study-report``): run dirs shaped as `medft train` writes
them for a ``task: report`` model with ``also_test.source`` / ``also_test.shift``; no training here (the
one real run at the end is marked slow)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from medft.commands.report import _md_text, report, sample_ids
from medft.metrics.stats import report_scores

# A finding per sentence; a run of quality q writes the reference's sentence with probability q, else a stock one.
SENTENCES = ["The liver shows a small bright lesion on the left.", "No lesion in the kidney.",
             "Two large dark nodules in the right lung.", "The heart is normal in size.",
             "A faint lesion near the spine, medium sized.", "Normal study, no abnormality."]
WRONG = ["The study is unremarkable.", "No acute finding."]
SETS = {"test": "predictions.jsonl", "source": "predictions_source.jsonl", "shift": "predictions_shift.jsonl"}
N_ITEMS = {"test": 30, "source": 40, "shift": 24}
COCO = ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider"]


def reference(i: int, where: str) -> str:
    first = SENTENCES[i % len(SENTENCES)]
    return first + " " + SENTENCES[(i * 7 + len(where)) % len(SENTENCES)]


def written(rng: np.random.Generator, ref: str, quality: float) -> str:
    parts = [s + "." for s in ref.split(". ") if s]
    return " ".join(p.rstrip(".") + "." if rng.random() < quality else WRONG[int(rng.integers(0, 2))] for p in parts)


def fake_report_run(root: Path, tune: str, init: str, fraction: float, seed: int, quality: float, pct: float,
                    generated: dict[str, str] | None = None) -> Path:
    """A run of `make study-report` as its run dir looks: config, overrides, metrics.json (the pycocoevalcap set
    under test/, source/ and shift/, scored from the predictions it writes; METEOR stands in), predictions files."""
    run = root / f"{tune}_{init}_f{fraction}_s{seed}"
    (run / ".hydra").mkdir(parents=True)
    cfg = {"seed": seed, "model": {"name": "blip_med_report", "task": "report",
                                   "pretrained": "embedded" if init == "pretrained" else None, "pretrain_seed": "${seed}"},
           "dataset": {"name": "demo_report_ct", "task": "report", "train_fraction": fraction},
           "tune": {"name": tune, "components": None}, "also_test": {"source": "demo_report_source",
                                                                      "shift": "demo_report_findings"},
           "paths": {"output_dir": str(run)}}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    experiment = "study_report" if init == "pretrained" else "study_report_random"
    overrides = [f"tune={tune}", f"seed={seed}", f"dataset.train_fraction={fraction}", f"experiment={experiment}"]
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    metrics = {"params/trainable_pct": pct, "params/trainable": int(pct * 1000), "params/total": 100_000,
               "time/step_s": 0.05 + pct / 1000, "memory/peak_mb": 300.0 + pct}
    if init == "pretrained":
        metrics.update({"pretrained/seed": seed, "pretrained/sha256": f"{seed:012x}"})
    rng = np.random.default_rng([seed, int(fraction * 10), len(tune), init == "random"])
    for where, filename in SETS.items():
        rows = [{"id": f"{where}{i:03d}", "reference": reference(i, where),
                 "generated": (generated or {}).get(f"{where}{i:03d}") or written(rng, reference(i, where), quality)}
                for i in range(N_ITEMS[where])]
        (run / filename).write_text("".join(json.dumps(r) + "\n" for r in rows))
        scores = report_scores(rows)
        metrics.update({f"{where}/{m.removeprefix('test/')}": scores.point(m) for m in scores.metrics})
        metrics[f"{where}/meteor"] = 0.3 * quality
    metrics["val/bleu_4"] = 0.5
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


SAMPLED = sample_ids({f"test{i:03d}" for i in range(N_ITEMS["test"])})
MARKUP = "left_lung **big** | <b>x</b>"  # what lora writes for the first sampled example: shown escaped
MODES = {"frozen": (0.0, 0.2), "layernorm": (0.7, 0.6), "lora": (2.0, 0.6), "full": (100.0, 0.95)}  # pct, quality


@pytest.fixture(scope="module")
def report_study(tmp_path_factory) -> Path:
    """Every mode here x 2 seeds x 2 fractions from pretrained weights; layernorm and full from random ones."""
    root = tmp_path_factory.mktemp("study_report")
    for seed in (1, 2):
        for fraction in (0.2, 1.0):
            for tune, (pct, quality) in MODES.items():
                fake_report_run(root, tune, "pretrained", fraction, seed, quality, pct,
                                generated={SAMPLED[0]: MARKUP} if tune == "lora" else None)
            for tune in ("layernorm", "full"):
                fake_report_run(root, tune, "random", fraction, seed, 0.05, MODES[tune][0])
    report([root])
    return root


def test_results_csv_has_every_column_of_a_report_study(report_study):
    rows = list(csv.DictReader((report_study / "results.csv").open()))
    assert len(rows) == 24 and {r["status"] for r in rows} == {"ok"}
    required = ["tune", "seed", "pretrain_seed", "init", "train_fraction", "trainable", "trainable_pct", "step_s",
                "peak_mb", *(f"{where}/{m}" for where in SETS for m in COCO)]
    assert set(required) <= set(rows[0]), set(required) - set(rows[0])
    for r in rows:
        metrics = json.loads((Path(r["run"]) / "metrics.json").read_text())
        for key in (f"{where}/{m}" for where in SETS for m in COCO):
            assert float(r[key]) == pytest.approx(metrics[key]), (r["run"], key)
        assert r["pretrain_seed"] == (r["seed"] if r["init"] == "pretrained" else "")


def test_the_study_table_shows_bleu_and_rouge_on_every_test_set(report_study):
    md = (report_study / "results.md").read_text()
    table = md.split("## The study — report writing")[1].split("\n## ")[0]
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:6] == ["dataset", "train_fraction", "tune", "init", "seeds", "test/bleu_4"]
    assert {"test/meteor", "test/rouge_l", "test/cider", "source/bleu_4", "source/rouge_l", "shift/bleu_4",
            "shift/rouge_l", "trainable", "step_s", "peak_mb"} <= set(header)
    body = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[1:]]
    assert len(body) == 12 and {b["seeds"] for b in body} == {"2"}
    assert all("±" in b["test/bleu_4"] and "±" in b["shift/rouge_l"] for b in body)
    assert [(b["tune"], b["init"]) for b in body[:6]] == [("frozen", "pretrained"), ("layernorm", "pretrained"),
                                                          ("layernorm", "random"), ("lora", "pretrained"),
                                                          ("full", "pretrained"), ("full", "random")]
    assert "test/acc" not in md and "## The study:" not in md  # no VQA columns, no VQA table


def test_findings_on_bleu_4_and_rouge_l_with_intervals(report_study):
    found = list(csv.DictReader((report_study / "findings.csv").open()))
    judged = [f"{where}/{m}" for where in SETS for m in ("bleu_4", "rouge_l")]
    assert list(dict.fromkeys(f["metric"] for f in found)) == judged  # the target first, then what each keeps
    pretrained = [t for t in MODES]
    assert sorted((f["metric"], f["train_fraction"], f["tune"], f["versus"]) for f in found) == sorted(
        (m, frac, t, v) for m in judged for frac in ("0.2", "1.0") for v in ("frozen", "full") for t in pretrained
        if t != v)
    runs = list(csv.DictReader((report_study / "results.csv").open()))
    score = {(r["tune"], r["train_fraction"], r["seed"]): r for r in runs if r["init"] == "pretrained"}
    for f in found:
        low, delta, high = float(f["ci_low"]), float(f["delta"]), float(f["ci_high"])
        assert low < high and f["seeds"] == "2", f
        assert f["verdict"] == ("ahead" if low > 0 else "behind" if high < 0 else "unresolved"), f
        # every item paired: BLEU-4's delta is the difference of the runs' corpus scores, ROUGE-L's of their means
        expected = np.mean([float(score[(f["tune"], f["train_fraction"], s)][f["metric"]])
                            - float(score[(f["versus"], f["train_fraction"], s)][f["metric"]]) for s in ("1", "2")])
        assert delta == pytest.approx(expected, abs=1e-4), f
    full_vs_frozen = {(f["metric"], f["train_fraction"]): f["verdict"] for f in found
                      if (f["tune"], f["versus"]) == ("full", "frozen")}
    assert set(full_vs_frozen.values()) == {"ahead"}  # 0.95 of the sentences right against 0.2: told apart
    md = (report_study / "results.md").read_text()
    head = md.split("## Runs")[0]
    assert md.startswith("## Findings") and "BLEU-4 rescored on each resample" in head
    for words in ("target BLEU-4", "target ROUGE-L", "source BLEU-4", "shift-set ROUGE-L"):
        assert f"**{words}" in head, words
    assert re.search(r"ahead of frozen: full \+[0-9.]+ \[\+[0-9.]+, \+[0-9.]+\]", head)


def test_bleu_4_findings_rescore_the_corpus_on_each_resample():
    """A mode that writes the reference for half the reports and nothing for the rest: per report, BLEU-4's
    sentence scores would average about 0.5; the corpus score (brevity penalty on the whole set) is far lower."""
    from medft.metrics.findings import paired
    from medft.metrics.stats import Paired, hierarchical_bootstrap

    refs = [reference(i, "test") for i in range(40)]
    mine = report_scores([{"id": f"r{i}", "reference": r, "generated": r if i % 2 else ""} for i, r in enumerate(refs)])
    theirs = report_scores([{"id": f"r{i}", "reference": r, "generated": "no acute finding ."}
                            for i, r in reversed(list(enumerate(refs)))])  # another order: paired by id
    both = paired(mine, theirs, "test/bleu_4")
    assert isinstance(both, Paired) and len(both) == 40
    assert both.point() == pytest.approx(mine.point("test/bleu_4") - theirs.point("test/bleu_4"))
    low, high = hierarchical_bootstrap([both], 300)
    assert low < both.point() < high
    rouge = paired(mine, theirs, "test/rouge_l")  # a mean of per-report scores: per-report differences
    assert isinstance(rouge, np.ndarray) and rouge.mean() == pytest.approx(mine.point("test/rouge_l") - theirs.point("test/rouge_l"))


def test_bleu_4_plots_of_a_report_study(report_study):
    for name in ("study_bleu_4_vs_params.png", "study_bleu_4_gain_vs_kept.png"):
        assert (report_study / name).read_bytes()[:4] == b"\x89PNG" and (report_study / name).stat().st_size > 1000
    assert not (report_study / "study_acc_vs_params.png").exists()


def test_bleu_4_plots_draw_bleu_4(tmp_path, report_study):
    import matplotlib.figure

    from medft.commands import report as rep
    from medft.metrics.findings import STUDY_TASKS

    rows = [rep.read_run(p) for p in sorted(report_study.iterdir()) if p.is_dir()]
    captured = {}
    original = matplotlib.figure.Figure.savefig

    def keep(fig, path, *args, **kwargs):
        captured[Path(path).name] = fig
        return original(fig, path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(matplotlib.figure.Figure, "savefig", keep)
        rep.study_plots(rows, tmp_path, [], STUDY_TASKS["report"])
    vs_params, gain = captured["study_bleu_4_vs_params.png"], captured["study_bleu_4_gain_vs_kept.png"]
    assert vs_params.axes[0].get_ylabel() == "target test BLEU-4"
    assert gain.axes[0].get_xlabel() == "source test BLEU-4 after fine-tuning (kept)"
    full = [r for r in rows if (r["tune"], r["init"], r["train_fraction"]) == ("full", "pretrained", 0.2)]
    (bar,) = [c for c in vs_params.axes[0].containers if c.get_label() == "full"]
    assert bar.lines[0].get_ydata()[0] == pytest.approx(np.mean([r["test/bleu_4"] for r in full]))


def test_sample_reports_show_the_reference_and_each_modes_report(report_study):
    md = (report_study / "results.md").read_text()
    section = md.split("## Sample reports (demo_report_ct, train fraction 1.0, seed 1)")[1]
    ids = sample_ids({f"test{i:03d}" for i in range(N_ITEMS["test"])})
    assert len(ids) == 3 and ids == sample_ids(set(reversed([f"test{i:03d}" for i in range(N_ITEMS["test"])])))
    blocks = section.split("\n**")[1:]
    assert [b.split("**", 1)[0] for b in blocks] == ids  # the same examples for every mode
    labels = ["frozen", "layernorm", "layernorm (random init)", "lora", "full", "full (random init)"]
    for item, block in zip(ids, blocks):
        lines = [line for line in block.splitlines() if line.startswith("- ")]
        assert [line[2:].split(":", 1)[0] for line in lines] == ["*reference*", *labels]
        rows = {}
        for label in labels:  # each from the seed-1 run at the larger fraction
            tune, init = label.split(" ")[0], "random" if "random" in label else "pretrained"
            predictions = (report_study / f"{tune}_{init}_f1.0_s1" / "predictions.jsonl").read_text().splitlines()
            rows[label] = next(json.loads(p) for p in predictions if json.loads(p)["id"] == item)
        assert lines[0] == f"- *reference*: {_md_text(rows['frozen']['reference'])}"
        for line, label in zip(lines[1:], labels):
            assert line == f"- {label}: {_md_text(rows[label]['generated'])}", (item, label)
    assert rf"- lora: left\_lung \*\*big\*\* \| \<b\>x\</b\>" in section  # no table broken, no markup rendered


def test_sample_text_is_escaped_and_kept_short():
    assert _md_text("left_lung **big** | <b>x</b>") == r"left\_lung \*\*big\*\* \| \<b\>x\</b\>"
    assert _md_text("  two\nlines ") == "two lines" and _md_text("") == "*(nothing)*"
    long = _md_text("word " * 200)
    assert long.endswith("…") and len(long) <= 401


def test_a_vqa_study_gets_no_report_sections(tmp_path):
    """The VQA study's report keeps its own metrics, names and sections (tests/test_results_report.py and
    tests/test_study.py hold the rest of it)."""
    from tests.test_results_report import fake_study_run

    for seed in (1, 2):
        for tune, acc, pct in (("frozen", 0.3, 0.0), ("full", 0.6, 100.0)):
            run = fake_study_run(tmp_path, tune, "pretrained", 1.0, seed, acc, pct)
            for filename in ("predictions.jsonl", "predictions_source.jsonl"):
                (run / filename).write_text("".join(json.dumps({"id": f"q{i}", "answer": "yes", "answer_type": "CLOSED",
                                                                "prediction": "yes" if i < acc * 20 else "no"}) + "\n"
                                                    for i in range(20)))
    out = report([tmp_path])
    assert {f["metric"] for f in out["findings"]} == {"test/acc", "source/acc"}
    assert [p.name for p in out["study_pngs"]] == ["study_acc_vs_params.png", "study_gain_vs_kept.png"]
    md = out["markdown"]
    assert "Sample reports" not in md and "BLEU" not in md and "\n## The study: tune mode x init" in md
    assert "same test questions), in points (x100), with a 95% hierarchical bootstrap interval (seeds, then questions)" in md


@pytest.mark.slow
def test_a_real_report_study_in_small(run_cli, tmp_path):
    """Two real `task: report` runs (frozen and layernorm from one saved captioning model, also tested on a source
    and a shift set) through `medft train -m` and `medft report`: every column, findings, samples."""
    from medft.models.blip_report_gen import build_blip_report_gen
    from medft.testing.fixtures import make_iu_xray
    from tests.conftest import model_cfg

    root = make_iu_xray(tmp_path / "iu", sizes=(8, 2, 4))
    net = build_blip_report_gen(**model_cfg("blip_report_tiny"))
    net.model.save_pretrained(tmp_path / "blip")
    net.processor.save_pretrained(tmp_path / "blip")
    sweep = tmp_path / "sweep"
    train = run_cli("train", "-m", "model=blip_report_tiny", "dataset=iu_xray", f"+local.data.iu_xray={root}",
                    f"model.pretrained={tmp_path / 'blip'}", "+tune=frozen,layernorm", "seed=1",
                    "+also_test.source=iu_xray", "+also_test.shift=iu_xray", "dataset.max_new_tokens=8",
                    "trainer.max_epochs=1", "data.batch_size=4", "callbacks.progress_bar.refresh_rate=0",
                    f"hydra.sweep.dir={sweep}")
    assert train.returncode == 0, train.stderr[-3000:]
    rep = run_cli("report", str(sweep))
    assert rep.returncode == 0, rep.stderr[-3000:]
    rows = list(csv.DictReader((sweep / "results.csv").open()))
    assert sorted(r["tune"] for r in rows) == ["frozen", "layernorm"] and {r["status"] for r in rows} == {"ok"}
    for r in rows:
        assert all(r[f"{where}/{m}"] != "" for where in SETS for m in COCO), r
        assert (r["init"], r["seed"], r["train_fraction"]) == ("pretrained", "1", "1.0") and r["trainable"] != ""
    found = list(csv.DictReader((sweep / "findings.csv").open()))
    assert [(f["metric"], f["tune"], f["versus"]) for f in found] == [
        (f"{where}/{m}", "layernorm", "frozen") for where in SETS for m in ("bleu_4", "rouge_l")]
    md = (sweep / "results.md").read_text()
    samples = md.split("## Sample reports (iu_xray, train fraction 1.0, seed 1)")[1]
    for tune in ("frozen", "layernorm"):
        run = next(r["run"] for r in rows if r["tune"] == tune)
        predictions = [json.loads(line) for line in (Path(run) / "predictions.jsonl").read_text().splitlines()]
        shown = [p for p in predictions if f"**{_md_text(p['id'])}**" in samples]
        assert len(shown) == 3
        for p in shown:
            assert f"- *reference*: {_md_text(p['reference'])}" in samples and f"- {tune}: {_md_text(p['generated'])}" in samples
    for name in ("study_bleu_4_vs_params.png", "study_bleu_4_gain_vs_kept.png"):
        assert (sweep / name).stat().st_size > 1000
