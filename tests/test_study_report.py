"""The study in miniature, report half: the demo report domains, the embedded report writer's recipe and
draws, and a shrunken `make study-report` end to end through Make and the real CLI.

Nothing here builds the full-size blip_med_report (a minute a draw): the draws are a shrunken blip_med_report
pretrained for a few steps by `medft pretrain --config-name pretrain_report`, placed where the embedded model's
draws live (model.embedded_dir).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from medft_testing import quoted_findings, shipped_findings
from PIL import Image

from medft.data.demo import ANNOTATION_FILE, REPORT_DOMAINS, ensure_demo

REPO = Path(__file__).resolve().parents[1]
SMALL = {"n_train_images": 24, "n_test_images": 6, "image_size": 64, "task": "report"}
# a blip_med_report small enough for seconds (the draws and the study's runs must agree on it)
SHRINK = [f"model.config.{part}.{key}={value}" for part in ("vision_config", "text_config")
          for key, value in (("hidden_size", 32), ("intermediate_size", 64), ("num_hidden_layers", 1),
                             ("num_attention_heads", 2))] + ["model.config.text_config.encoder_hidden_size=32"]
FEW_STEPS = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
             "+trainer.limit_test_batches=1", "data.batch_size=8", "data.eval_batch_size=8",
             "eval.generate.max_new_tokens=6", "callbacks.progress_bar.refresh_rate=0"]
SMALL_SETS = [f"dataset.load.n_train_images={12}", f"dataset.load.n_test_images={4}"]


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


# --- the report domains --------------------------------------------------------------------


def test_report_domains_are_deterministic_differ_and_load_through_the_iu_xray_loader(tmp_path):
    from medft.data.sources import r2gen

    digests, words = {}, {}
    for domain in REPORT_DOMAINS:
        a = ensure_demo(tmp_path / f"{domain}_a", domain=domain, **SMALL)
        b = ensure_demo(tmp_path / f"{domain}_b", domain=domain, **SMALL)
        digests[domain] = tree_digest(a)
        assert digests[domain] == tree_digest(b), domain  # same parameters, same bytes
        assert digests[domain] != tree_digest(ensure_demo(tmp_path / f"{domain}_c", domain=domain, **{**SMALL, "seed": 1}))
        splits = r2gen(str(a), "iu_xray", val_fraction=0.25)  # the IU X-ray loader, R2Gen layout
        assert [len(splits[s]) for s in ("train", "val", "test")] == [18, 6, 6] and "R2Gen" in splits.layout
        record = splits["test"][0]
        assert Path(record["image"]).is_file() and record["report"].endswith(".")
        words[domain] = {w for r in json.loads((a / ANNOTATION_FILE).read_text())["train"] for w in r["report"].split()}
    images = {d: {v for k, v in digests[d].items() if k.endswith(".png")} for d in REPORT_DOMAINS}
    assert not images["source"] & images["ct"] and not images["source"] & images["findings"]
    # another reporting style: words the source reports never use, and source words the others never use
    assert {"ct", "mass", "hypodense", "impression"} <= words["ct"] and not {"ct", "mass", "hypodense", "impression"} & words["source"]
    assert {"nodules", "study", "pelvis"} <= words["findings"] and not {"nodules", "pelvis"} & (words["ct"] | words["source"])
    assert {"lesion", "bright"} <= words["source"] and not {"lesion", "bright", "heart"} & words["findings"]
    assert not {"lesion", "bright"} & words["ct"]
    # a VQA set of the same domain and seed is another folder's content: its files do not change
    vqa = ensure_demo(tmp_path / "vqa", domain="source", n_train_images=24, n_test_images=6)
    assert not (vqa / ANNOTATION_FILE).exists() and (vqa / "trainset.json").is_file()


def test_the_wording_file_gives_every_style_every_sentence_and_a_change_bumps_the_version():
    """The reports' wording is data (medft/data/demo_report_wording.yaml): every style has every sentence kind in two
    wordings and a word per brightness class; and an edit of the wording must bump REPORT_VERSION, or cached sets of
    the old wording would be reused as if they were the new one (update the digest below with the bump)."""
    from medft.data.demo_report import BRIGHT_WORDS, REPORT_VERSION, STOCK, STYLES

    assert set(STYLES) == set(BRIGHT_WORDS) == set(STOCK) == {spec["style"] for spec in REPORT_DOMAINS.values()}
    for style, kinds in STYLES.items():
        assert set(kinds) == set(STYLES["source"]) and all(len(w) == 2 for w in kinds.values()), style
        assert set(BRIGHT_WORDS[style]) == {"bright", "faint"}, style
        assert all(len(w) == 2 for sentences in STOCK[style].values() for w in sentences), style
    wording = json.dumps({"styles": STYLES, "bright_words": BRIGHT_WORDS, "stock": STOCK}, sort_keys=True)
    assert (REPORT_VERSION, hashlib.sha256(wording.encode()).hexdigest()[:12]) == (2, "277c34588ca5")


def test_reports_describe_the_image(tmp_path):
    """The source reports say what the pixels show: a lesion's side is the brighter half (the organ templates are
    left-right symmetric), a study reported normal has two alike halves, a large lesion brightens more than a small one."""
    root = ensure_demo(tmp_path / "source", domain="source", **{**SMALL, "n_train_images": 60})
    asym: dict[str, list[float]] = {"left": [], "right": [], "none": []}
    by_size: dict[str, list[float]] = {"small": [], "large": []}
    organs = []
    for r in json.loads((root / ANNOTATION_FILE).read_text())["train"]:
        pixels = np.asarray(Image.open(root / "images" / r["image_path"][0]), dtype=float)
        diff = pixels[:, :32].sum() - pixels[:, 32:][:, ::-1].sum()  # left half minus the mirrored right half
        text = r["report"]
        organs.append(next(o for o in ("chest", "head", "abdomen") if ("heart" in text or "lungs" in text) == (o == "chest")
                           and ("skull" in text or "brain" in text) == (o == "head")))
        if "no lesion" in text:
            asym["none"].append(abs(diff))
        elif " a " in f" {text} " and "lesion" in text:  # exactly one lesion
            side = "left" if "left" in text else "right"
            asym[side].append(diff)
            by_size["small" if "small" in text else "large"].append(abs(diff))
    assert len(asym["none"]) >= 10 and len(asym["left"]) >= 5 and len(asym["right"]) >= 5
    assert min(asym["left"]) > 0 > max(asym["right"])  # the side the report names is the brighter one
    assert max(asym["none"]) < min(map(abs, asym["left"] + asym["right"]))
    assert np.mean(by_size["large"]) > 1.5 * np.mean(by_size["small"])
    assert len(set(organs)) == 3


def test_every_report_word_is_one_token_of_the_offline_tokenizer(tmp_path):
    """Reports stay short in tokens (no word spelled out letter by letter), so report length and decoding stay cheap."""
    from medft.models.tokenizer import build_vocab

    vocab = build_vocab()  # what the tokenizer is made of: a word in it is one token
    for domain in REPORT_DOMAINS:
        root = ensure_demo(tmp_path / domain, domain=domain, **SMALL)
        words = {w for split in ("train", "test") for r in json.loads((root / ANNOTATION_FILE).read_text())[split]
                 for w in r["report"].split()}
        assert [w for w in sorted(words) if w not in vocab] == [], domain


def test_a_report_demo_root_outside_the_cache_must_exist(make_cfg, tmp_path):
    from medft.data.sources import load_splits
    from medft.util.errors import DataError

    cfg = make_cfg("dataset=demo_report_ct", f"dataset.root={tmp_path / 'elsewhere'}")
    with pytest.raises(DataError, match="generated only under paths.cache_dir"):
        load_splits(cfg.dataset)
    assert not (tmp_path / "elsewhere").exists()


# --- the embedded report writer ------------------------------------------------------------


def test_each_recipe_has_its_own_draws_and_names(tmp_path):
    """model.recipe names the recipe: its draws are named after the model it trains and its own recipe_version;
    blip_med's names do not change; the recipe is told which config to run."""
    from medft.training import embedded

    calls = []

    def fake_recipe(out, run_dir, seed, cache_dir, config="pretrain"):
        out.mkdir(parents=True)
        (out / "pretrain.json").write_text(json.dumps({"recipe_version": embedded.recipe_version(config), "seed": seed}))
        run_dir.mkdir(parents=True)
        calls.append((seed, config))

    version = yaml.safe_load((REPO / "medft" / "configs" / "pretrain_report.yaml").read_text())["recipe_version"]
    assert embedded.recipe_version("pretrain_report") == version and embedded.recipe_model("pretrain_report") == "blip_med_report"
    vqa = embedded.ensure_embedded(tmp_path, 0, fake_recipe)
    report = embedded.ensure_embedded(tmp_path, 2, fake_recipe, config="pretrain_report")
    assert vqa.name == f"blip_med-v{embedded.recipe_version()}"
    assert report.name == f"blip_med_report-v{version}-seed2" and calls == [(0, "pretrain"), (2, "pretrain_report")]
    assert embedded.ensure_embedded(tmp_path, 2, fake_recipe, config="pretrain_report") == report and len(calls) == 2


def test_build_net_hands_over_the_model_configs_recipe(make_cfg, monkeypatch, report_draws):
    from medft.training import embedded, pipeline

    asked = []

    def cached(cache_dir, seed, config="pretrain", recipe=None):
        asked.append((seed, config, recipe))
        return report_draws[seed]

    monkeypatch.setattr(embedded, "ensure_embedded", cached)
    cfg = make_cfg("model=blip_med_report", "tune=frozen", "dataset=demo_report_ct", "model.pretrain_seed=2", *SHRINK)
    net = pipeline.build_net(cfg.model)
    assert asked == [(2, "pretrain_report", pipeline.run_recipe)]
    assert net.task == "report" and net.pretrained_id["pretrained/seed"] == 2


def pretrain_report(tmp: Path, cache_dir: Path, out: Path, *extra: str, **env_extra: str) -> Path:
    """`medft pretrain --config-name pretrain_report` of the shrunken writer for two steps, in a subprocess: ``out``."""
    from tests.medft_testing import env_for

    proc = subprocess.run(
        [sys.executable, "-m", "medft.cli", "pretrain", "--config-name", "pretrain_report", f"out={out}",
         *SHRINK, *FEW_STEPS, *SMALL_SETS, "dataset.root=${paths.cache_dir}/demo_report_source_small", *extra],
        cwd=REPO, env=env_for(tmp, MEDFT_CACHE_DIR=str(cache_dir), **env_extra), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"checkpoint: {out}" in proc.stdout and "source test BLEU-4" in proc.stdout
    return out


@pytest.fixture(scope="module")
def report_draws(tmp_path_factory, cache_dir) -> dict[int, Path]:
    """Two draws of the shrunken report writer (seeds 1 and 2), as the study's seeds 1 and 2 fine-tune them."""
    tmp = tmp_path_factory.mktemp("report_draws")
    return {seed: pretrain_report(tmp, cache_dir, tmp / f"seed{seed}", f"seed={seed}") for seed in (1, 2)}


def test_report_draws_are_deterministic_and_differ_by_seed(report_draws, tmp_path, cache_dir):
    weights = {seed: (path / "model.safetensors").read_bytes() for seed, path in report_draws.items()}
    assert weights[1] != weights[2]
    again = pretrain_report(tmp_path, cache_dir, tmp_path / "again", "seed=1", MEDFT_THREADS="2", OMP_NUM_THREADS="2")
    assert (again / "model.safetensors").read_bytes() == weights[1]  # threads: 1 fixes the float path
    info = json.loads((report_draws[1] / "pretrain.json").read_text())
    assert (info["model"], info["model_class"], info["seed"], info["threads"]) == ("blip_med_report", "BlipForConditionalGeneration", 1, 1)
    assert info["recipe_version"] == yaml.safe_load((REPO / "medft/configs/pretrain_report.yaml").read_text())["recipe_version"]
    assert {"test/bleu_4", "test/meteor", "test/rouge_l", "test/cider"} <= set(info["source_test"])
    assert "report writer" in (report_draws[1] / "README.md").read_text()


# --- the study, its configs and a shrunken `make study-report` -------------------------------


def test_study_report_grid_and_learning_rates(make_cfg):
    from medft.config.search import available
    from tests.test_study import study_sweep

    study = study_sweep("study_report")
    assert sorted(study["tune"]) == sorted(m for m in available("tune") if m != "prefix")
    assert sorted(study["seed"]) == ["1", "2", "3"] and sorted(study["dataset.train_fraction"]) == ["0.2", "1.0"]
    assert sorted(study_sweep("study_report_random")["tune"]) == ["full", "layernorm"]
    assert study_sweep("study_report_lr")["seed"] == ["0"]
    assert [make_cfg("experiment=study_report", f"seed={s}").model.pretrain_seed for s in (1, 2, 3)] == [1, 2, 3]
    assert make_cfg("experiment=study_report_lr", "seed=5").model.pretrain_seed == 0
    cfg = make_cfg("experiment=study_report", "tune=layernorm")
    assert (cfg.model.name, cfg.model.recipe, cfg.dataset.name, dict(cfg.also_test)) == (
        "blip_med_report", "pretrain_report", "demo_report_ct", {"source": "demo_report_source", "shift": "demo_report_findings"})
    for mode in study["tune"]:  # pretrained: the mode's searched lr_report; random weights: the mode's lr
        tune = yaml.safe_load((REPO / "medft" / "configs" / "tune" / f"{mode}.yaml").read_text())
        if mode != "frozen":
            assert make_cfg("experiment=study_report", f"tune={mode}").optim.lr == pytest.approx(float(tune["lr_report"])), mode
    assert make_cfg("experiment=study_report_random", "tune=full").optim.lr == pytest.approx(1e-3)


REQUIRED = ["tune", "seed", "pretrain_seed", "init", "train_fraction", "trainable", "trainable_pct", "step_s", "peak_mb"] + [
    f"{split}/{metric}" for split in ("test", "source", "shift")
    for metric in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")]


def test_shrunken_make_study_report_runs_end_to_end(report_draws, tmp_path):
    """`make study-report` in small, through Make and the real CLI (a `medft` that runs this checkout): the
    pretrained sweep on the draws of seeds 1 and 2 and the random-init control into one dir, then `medft report`;
    results.csv has every column the issue lists and agrees with the runs' metrics.json."""
    from medft.training.embedded import embedded_dir

    draws = tmp_path / "draws"
    for seed, path in report_draws.items():
        shutil.copytree(path, embedded_dir(draws, seed, "pretrain_report"))
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "medft").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m medft.cli "$@"\n')
    (venv / "bin" / "medft").chmod(0o755)
    (venv / ".installed").touch()  # newer than pyproject.toml: make's install step has nothing to do
    # one seed, two modes, a small target set (the source and shift test sets are the study's: 40 reports each)
    args = [*SHRINK, *FEW_STEPS, *SMALL_SETS, f"model.embedded_dir={draws}", "tune=layernorm,full", "seed=1",
            "dataset.train_fraction=0.5", f"dataset.root={tmp_path / 'cache' / 'demo_report_ct_small'}"]
    env = dict(os.environ, MEDFT_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(REPO))
    out = subprocess.run(
        ["make", "-s", "study-report", f"VENV={venv}", f"LOGS={tmp_path / 'logs'}", "NOW=t", "STUDY_JOBS=1",
         "ARGS=" + " ".join(f"'{a}'" for a in args)],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    sweep = tmp_path / "logs" / "study-report" / "t"
    assert f"study-report: {sweep}" in out.stdout
    rows = list(csv.DictReader((sweep / "results.csv").open()))
    missing = [c for c in REQUIRED if c not in rows[0]]
    assert missing == [], f"results.csv lacks {missing}"  # seed, train_fraction: `medft report` must see a report study
    assert sorted((r["tune"], r["init"], r["seed"], r["train_fraction"]) for r in rows) == [
        (t, init, "1", "0.5") for t in ("full", "layernorm") for init in ("pretrained", "random")]
    for r in rows:
        assert r["status"] == "ok", r
        assert all(r[c] != "" for c in REQUIRED if c != "pretrain_seed"), r
        metrics = json.loads((Path(r["run"]) / "metrics.json").read_text())
        for key in ("test/bleu_4", "source/rouge_l", "shift/meteor", "source/cider"):
            assert float(r[key]) == pytest.approx(metrics[key])
        assert r["pretrain_seed"] == (r["seed"] if r["init"] == "pretrained" else "")
        assert (Path(r["run"]) / "predictions_shift.jsonl").is_file()
    # the report's study sections: its table, findings on BLEU-4 / ROUGE-L, BLEU-4 plots, sample reports
    md = (sweep / "results.md").read_text()
    assert "## The study — report writing" in md and "## Sample reports" in md and "## Findings" in md
    found = list(csv.DictReader((sweep / "findings.csv").open()))
    assert {(f["metric"], f["tune"], f["versus"]) for f in found} >= {("test/bleu_4", "layernorm", "full"),
                                                                     ("shift/rouge_l", "layernorm", "full")}
    assert all((sweep / name).is_file() for name in ("study_bleu_4_vs_params.png", "study_bleu_4_gain_vs_kept.png"))


def test_one_meteor_per_process_serves_every_scoring(monkeypatch):
    """METEOR's Java start (10-20 s) once per process, not once per test set: a run scores three."""
    import pycocoevalcap.meteor.meteor

    from medft.metrics import report_gen

    made = []

    class CountingMeteor:
        def __init__(self):
            made.append(self)

        def compute_score(self, gts, res):
            return 0.5, [0.5] * len(gts)

    monkeypatch.setattr(pycocoevalcap.meteor.meteor, "Meteor", CountingMeteor)
    monkeypatch.setattr(report_gen, "_METEOR", {})
    for _ in range(3):
        assert report_gen.coco_scores(["no mass is present ."], ["no mass ."])["meteor"] == 0.5
    assert len(made) == 1


# --- the shipped run and its reading ---------------------------------------------------------
def test_the_shipped_report_study_reading_quotes_its_findings():
    """docs/study_report.md and the README claim only what the shipped run's findings say: every difference
    and interval they quote is one `medft report` wrote, each verdict agrees with the interval findings.csv
    prints, and the run is the whole grid over three pretraining draws."""
    shipped = REPO / "docs" / "results" / "study-report"
    found, generated = shipped_findings(shipped)
    metrics = [f"{where}/{m}" for where in ("test", "source", "shift") for m in ("bleu_4", "rouge_l")]
    assert list(dict.fromkeys(f["metric"] for f in found)) == metrics and {f["seeds"] for f in found} == {"3"}
    assert len(found) == 6 * 2 * 16  # metrics x fractions x (8 modes vs frozen + 8 vs full)
    doc = (REPO / "docs" / "study_report.md").read_text()
    readme = (REPO / "README.md").read_text()
    quoted = quoted_findings(doc[doc.index("## What the findings say"):]) + quoted_findings(readme.split("make study-report` is")[1])
    assert len(quoted) >= 20 and set(quoted) <= generated, set(quoted) - generated
    rows = list(csv.DictReader((shipped / "results.csv").open()))
    assert len(rows) == 66 and {r["status"] for r in rows} == {"ok"}
    pretrained = [r for r in rows if r["init"] == "pretrained"]
    assert {(r["seed"], r["pretrain_seed"]) for r in pretrained} == {("1", "1"), ("2", "2"), ("3", "3")}
    assert len({r["pretrained_sha256"] for r in pretrained}) == 3  # one draw per seed
    frozen = {r["seed"]: float(r["source/bleu_4"]) for r in rows if r["tune"] == "frozen" and r["train_fraction"] == "0.2"}
    assert "| `make study-report` <= 30 min incl. its draws |" in doc
    assert " / ".join(f"{frozen[s]:.3f}" for s in "123") in doc  # the budget table quotes the run
    for name in ("study_bleu_4_vs_params.png", "study_bleu_4_gain_vs_kept.png"):
        assert (shipped / name).read_bytes()[:4] == b"\x89PNG"
