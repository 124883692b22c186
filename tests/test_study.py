"""The study in miniature: medft pretrain, the demo domains, and a shrunken `make study` end to end.

Nothing here builds the embedded blip_med (minutes): pretraining uses blip_tiny for a few steps, and
the shrunken study finds those checkpoints where the embedded model's draws live (model.embedded_dir).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from medft_testing import quoted_findings, shipped_findings

from medft.data.demo import DOMAINS, ensure_demo

SMALL = {"n_train_images": 12, "n_test_images": 4, "image_size": 32}
FEW_STEPS = [
    "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
    "+trainer.limit_test_batches=1", "data.batch_size=8", "data.eval_batch_size=16",
    "eval.generate.max_new_tokens=3", "callbacks.progress_bar.refresh_rate=0",
]


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


# --- domains -------------------------------------------------------------------------------


def test_domains_are_deterministic_and_differ(tmp_path):
    digests, questions, answers = {}, {}, {}
    for domain in DOMAINS:
        a = ensure_demo(tmp_path / f"{domain}_a", domain=domain, **SMALL)
        b = ensure_demo(tmp_path / f"{domain}_b", domain=domain, **SMALL)
        digests[domain] = tree_digest(a)
        assert digests[domain] == tree_digest(b), domain  # same parameters, same bytes
        records = json.loads((a / "trainset.json").read_text())
        questions[domain] = {r["question"] for r in records}
        answers[domain] = {r["answer"] for r in records}
    images = {d: {k: v for k, v in digests[d].items() if k.endswith(".png")} for d in DOMAINS}
    for one in DOMAINS:
        for other in DOMAINS:
            if one < other:  # every image differs between any two domains
                assert not set(images[one].values()) & set(images[other].values()), (one, other)
    assert {"Which organ is shown?", "How many lesions are there?"} <= questions["ct"] & questions["source"]  # ct: same questions
    assert not questions["findings"] & questions["source"]  # other wording
    assert {"pelvis", "neck"} & answers["findings"] and not {"pelvis", "neck"} & answers["source"]  # other anatomy


def test_ct_domain_inverts_the_intensity_profile(tmp_path):
    """Same scenes drawn in the two looks: the background (air) is dark in source, bright in ct."""
    import numpy as np
    from PIL import Image

    means = {}
    for domain in ("source", "ct"):
        root = ensure_demo(tmp_path / domain, domain=domain, **SMALL)
        corners = [np.asarray(Image.open(p))[:3, :3].mean() for p in sorted((root / "images").glob("*.png"))]
        means[domain] = float(np.mean(corners))
    assert means["source"] < 40 < 150 < means["ct"]


def test_unknown_domain_is_one_line(tmp_path):
    from medft.util.errors import ConfigError

    with pytest.raises(ConfigError, match="dataset.domain"):
        ensure_demo(tmp_path / "x", domain="mri", **SMALL)


# --- medft pretrain ------------------------------------------------------------------------


def run_pretrain(tmp: Path, cache_dir: Path, out: Path, *extra: str, **env_extra: str) -> None:
    """`medft pretrain` of blip_tiny for two steps on the demo source set, in a subprocess."""
    import subprocess
    import sys

    from tests.medft_testing import env_for

    env = env_for(tmp, MEDFT_CACHE_DIR=str(cache_dir), **env_extra)
    proc = subprocess.run(
        [sys.executable, "-m", "medft.cli", "pretrain", "model=blip_tiny", "dataset=demo", f"out={out}", *FEW_STEPS, *extra],
        cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"checkpoint: {out}" in proc.stdout


@pytest.fixture(scope="module")
def pretrained_tiny(tmp_path_factory, cache_dir):
    """A blip_tiny checkpoint dir made by `medft pretrain` (two steps)."""
    tmp = tmp_path_factory.mktemp("pretrain")
    run_pretrain(tmp, cache_dir, tmp / "ckpt")
    return tmp / "ckpt"


@pytest.fixture(scope="module")
def tiny_draws(tmp_path_factory, cache_dir) -> dict[int, Path]:
    """Two pretraining draws of blip_tiny (seeds 1 and 2), as the study's seeds 1 and 2 fine-tune them."""
    tmp = tmp_path_factory.mktemp("draws")
    for seed in (1, 2):
        run_pretrain(tmp, cache_dir, tmp / f"seed{seed}", f"seed={seed}")
    return {seed: tmp / f"seed{seed}" for seed in (1, 2)}


def test_two_pretraining_seeds_give_two_different_each_deterministic_checkpoints(tiny_draws, tmp_path, cache_dir):
    weights = {seed: (path / "model.safetensors").read_bytes() for seed, path in tiny_draws.items()}
    assert weights[1] != weights[2]
    for seed, path in tiny_draws.items():
        # again, with another thread setting outside: the recipe's `threads: 1` fixes the float path all the same
        run_pretrain(tmp_path, cache_dir, tmp_path / f"again{seed}", f"seed={seed}", MEDFT_THREADS="2", OMP_NUM_THREADS="2")
        assert (tmp_path / f"again{seed}" / "model.safetensors").read_bytes() == weights[seed], seed
        info = json.loads((path / "pretrain.json").read_text())
        assert info["seed"] == seed and info["threads"] == 1
        assert info["weights_sha256"] == hashlib.sha256(weights[seed]).hexdigest()  # the draw's identity
        assert f"seed | {seed}" in (path / "README.md").read_text()
    info = json.loads((tmp_path / "again1" / "pretrain.json").read_text())
    assert json.loads((Path(info["run_dir"]) / "metrics.json").read_text())["system/threads"] == 1


def test_the_embedded_recipe_runs_in_process_as_medft_pretrain_does(tiny_draws, tmp_path, cache_dir, monkeypatch):
    """pipeline.run_recipe: the pretrain recipe as a library call inside a running `medft train` job gives the
    weights `medft pretrain` gives, and leaves the job as it was: its Hydra, config, threads, RNG streams,
    environment, log file and working directory (no stray outputs/ or logs/); the user's config dirs are
    not searched (the recipe is medft's)."""
    import logging
    import random

    import numpy as np
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from medft.config.search import CONFIG_DIR, CONFIG_DIRS_ENV
    from medft.training.pipeline import run_recipe

    broken = tmp_path / "user_configs" / "model"
    broken.mkdir(parents=True)
    (broken / "blip_tiny.yaml").write_text("_target_: no.such.builder\nname: blip_tiny\n")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv(CONFIG_DIRS_ENV, str(broken.parent))
    log = tmp_path / "job.log"
    handler = logging.FileHandler(log)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [handler])
    before_threads, before_hydra = torch.get_num_threads(), HydraConfig.instance().cfg
    torch.set_num_threads(2)
    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name="train"):
            job = compose("train", ["tune=layernorm", f"paths.log_dir={tmp_path / 'logs'}"], return_hydra_config=True)
            HydraConfig.instance().set_config(job)
            caller, job_hydra = GlobalHydra.instance().hydra, HydraConfig.instance().cfg
            random.seed(7), np.random.seed(7), torch.manual_seed(7)
            rng = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
            environ = dict(os.environ)
            info = run_recipe(tmp_path / "model", tmp_path / "run", 1, cache_dir,
                              ("model=blip_tiny", "dataset=demo", *FEW_STEPS))
            assert GlobalHydra.instance().hydra is caller and HydraConfig.instance().cfg is job_hydra
            assert torch.get_num_threads() == 2 and dict(os.environ) == environ
            assert random.getstate() == rng[0] and (np.random.get_state()[1] == rng[1]).all()
            assert torch.equal(torch.get_rng_state(), rng[2])
            assert root.handlers == [handler] and log.read_text() == ""
    finally:
        torch.set_num_threads(before_threads)
        HydraConfig.instance().cfg = before_hydra
        handler.close()
    weights = (tmp_path / "model" / "model.safetensors").read_bytes()
    assert weights == (tiny_draws[1] / "model.safetensors").read_bytes()  # what `medft pretrain seed=1` wrote
    assert info["seed"] == 1 and info["threads"] == 1 and info["run_dir"] == str(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["system/threads"] == 1
    assert (tmp_path / "run" / ".hydra" / "config.yaml").is_file() and (tmp_path / "run" / "pretrain.log").is_file()
    assert list(cwd.iterdir()) == []


def test_pretrain_writes_a_checkpoint_that_loads_back_with_identical_logits(pretrained_tiny):
    from transformers import BlipForQuestionAnswering

    from medft.models.blip import build_blip_vqa
    from medft.runs.trained import FILENAME, load_trained_file
    from medft.tuning import apply_tuning
    from tests.conftest import model_cfg, tune_cfg

    info = json.loads((pretrained_tiny / "pretrain.json").read_text())
    assert info["model"] == "blip_tiny" and info["dataset"] == "demo" and info["params"] == 334625
    assert 0.0 <= info["source_test"]["test/acc"] <= 1.0 and info["seed"] == 0
    card = (pretrained_tiny / "README.md").read_text()
    assert "Source test accuracy" in card and "seed | 0" in card
    # the run's own trained parameters, applied onto a fresh random blip_tiny ...
    ref = build_blip_vqa(**model_cfg("blip_tiny"))
    apply_tuning(ref, tune_cfg("full"))
    load_trained_file(ref, Path(info["run_dir"]) / FILENAME)
    # ... against the checkpoint dir, through transformers and through medft's model.pretrained
    hf = BlipForQuestionAnswering.from_pretrained(pretrained_tiny)
    via_medft = build_blip_vqa(**model_cfg("blip_tiny", pretrained=str(pretrained_tiny)))
    torch.manual_seed(0)
    pixels = torch.rand(2, 3, 64, 64)
    ids = via_medft.tokenizer(["is there a lesion?", "which organ is shown?"], padding=True, return_tensors="pt")
    dec = torch.tensor([[ref.tokenizer.bos_token_id, 5, 6]] * 2)
    logits = [answer_logits(m, pixels, ids, dec) for m in (ref.model, hf, via_medft.model)]
    assert torch.equal(logits[0], logits[1]) and torch.equal(logits[0], logits[2])
    # the weights were trained: not the random initialisation
    assert not torch.equal(answer_logits(build_blip_vqa(**model_cfg("blip_tiny")).model, pixels, ids, dec), logits[0])


def answer_logits(model, pixels, ids, dec):
    """The answer decoder's logits for ``dec`` (image -> question encoder -> decoder), in eval mode."""
    model.eval()
    with torch.no_grad():
        image = model.vision_model(pixel_values=pixels).last_hidden_state
        question = model.text_encoder(input_ids=ids.input_ids, attention_mask=ids.attention_mask,
                                      encoder_hidden_states=image, return_dict=False)[0]
        return model.text_decoder(input_ids=dec, encoder_hidden_states=question,
                                  encoder_attention_mask=ids.attention_mask, return_dict=True).logits


def test_pretrain_refuses_to_overwrite_a_checkpoint(pretrained_tiny, run_cli):
    out = run_cli("pretrain", "model=blip_tiny", "dataset=demo", f"out={pretrained_tiny}")
    assert out.returncode == 2
    assert "already holds a pretrained checkpoint" in out.stderr


def test_embedded_is_built_once_and_rebuilt_for_a_new_recipe(tmp_path, monkeypatch):
    """ensure_embedded runs the pretrain recipe only when no finished checkpoint of this recipe is there."""
    import medft.training.embedded as embedded

    calls = []

    def fake_recipe(out, run_dir, seed, cache_dir, config="pretrain"):
        out.mkdir(parents=True)
        (out / "pretrain.json").write_text(json.dumps({"recipe_version": embedded.recipe_version()}))
        run_dir.mkdir(parents=True)
        calls.append(seed)

    first = embedded.ensure_embedded(tmp_path, 0, fake_recipe)
    assert first == tmp_path / "pretrained" / f"blip_med-v{embedded.recipe_version()}" and len(calls) == 1
    assert embedded.ensure_embedded(tmp_path, 0, fake_recipe) == first and len(calls) == 1  # reused
    monkeypatch.setattr(embedded, "recipe_version", lambda config="pretrain": 99)
    assert embedded.ensure_embedded(tmp_path, 0, fake_recipe).name == "blip_med-v99" and len(calls) == 2  # new recipe: rebuilt
    assert not list((tmp_path / "pretrained").glob("*.tmp-*"))


def test_parallel_first_uses_build_the_embedded_model_once(tmp_path, monkeypatch, capsys):
    """A sweep's parallel jobs on a fresh cache: the first builds, the others wait for its model."""
    import threading
    import time

    import medft.training.embedded as embedded

    calls, started = [], threading.Event()

    def slow_recipe(out, run_dir, seed, cache_dir, config="pretrain"):
        calls.append(seed)
        started.set()
        time.sleep(0.5)  # the others arrive while this build is under way
        out.mkdir(parents=True)
        (out / "pretrain.json").write_text(json.dumps({"recipe_version": embedded.recipe_version()}))
        run_dir.mkdir(parents=True)

    results = []
    first = threading.Thread(target=lambda: results.append(embedded.ensure_embedded(tmp_path, 0, slow_recipe)))
    first.start()
    assert started.wait(10)
    others = [threading.Thread(target=lambda: results.append(embedded.ensure_embedded(tmp_path, 0, slow_recipe))) for _ in range(2)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join(30)
    assert len(calls) == 1 and len(results) == 3 and len(set(results)) == 1
    assert embedded.is_built(results[0], embedded.recipe_version())
    assert capsys.readouterr().out.count("waiting for it") == 2


def test_each_pretraining_seed_is_its_own_embedded_draw(tmp_path, monkeypatch):
    """model.pretrain_seed=N: the recipe run with seed=N into blip_med-v<recipe>-seedN, once; seed 0 keeps the
    name medft train has always used; a directory holding another seed's draw is never taken for this one."""
    import medft.training.embedded as embedded

    calls = []

    def fake_recipe(out, run_dir, seed, cache_dir, config="pretrain"):
        out.mkdir(parents=True)
        (out / "model.safetensors").write_bytes(bytes([seed]) * 8)
        info = {"recipe_version": embedded.recipe_version(), "seed": seed,
                "weights_sha256": hashlib.sha256(bytes([seed]) * 8).hexdigest()}
        (out / "pretrain.json").write_text(json.dumps(info))
        run_dir.mkdir(parents=True)
        calls.append(seed)

    version = embedded.recipe_version()
    zero, two = embedded.ensure_embedded(tmp_path, 0, fake_recipe), embedded.ensure_embedded(tmp_path, 2, fake_recipe)
    assert (zero.name, two.name) == (f"blip_med-v{version}", f"blip_med-v{version}-seed2") and calls == [0, 2]
    assert embedded.ensure_embedded(tmp_path, 2, fake_recipe) == two and calls == [0, 2]  # reused
    assert embedded.identity(two) == {"pretrained/seed": 2, "pretrained/sha256": hashlib.sha256(bytes([2]) * 8).hexdigest()[:12]}
    assert embedded.identity(zero) != embedded.identity(two)
    (tmp_path / "pretrained" / f"blip_med-v{version}-seed3").mkdir()
    (tmp_path / "pretrained" / f"blip_med-v{version}-seed3" / "pretrain.json").write_text((two / "pretrain.json").read_text())
    assert not embedded.is_built(tmp_path / "pretrained" / f"blip_med-v{version}-seed3", version, 3)  # seed 2's, not 3's


def test_build_net_loads_the_draw_of_the_pretraining_seed_and_says_which(tiny_draws, make_cfg, monkeypatch):
    """pretrained: embedded is resolved by the pipeline (the model builders never see it): the cached draw of
    model.pretrain_seed is loaded, and the model names it (pretrained_id, pretrained_dir) for metrics and exports."""
    from medft.models import build_model
    from medft.training import embedded, pipeline
    from medft.util.errors import ConfigError

    asked = []

    def cached(cache_dir, seed, config="pretrain", recipe=None):
        asked.append((str(cache_dir), seed, recipe, config))
        return tiny_draws[seed]

    monkeypatch.setattr(embedded, "ensure_embedded", cached)
    cfg = make_cfg("model=blip_tiny", "tune=frozen", "model.pretrained=embedded", "++model.embedded_dir=/cache", "++model.pretrain_seed=2")
    net = pipeline.build_net(cfg.model)
    assert asked == [("/cache", 2, pipeline.run_recipe, "pretrain")]
    assert (net.pretrained, net.pretrained_dir) == ("embedded", tiny_draws[2])
    assert net.pretrained_id == embedded.identity(tiny_draws[2]) and net.pretrained_id["pretrained/seed"] == 2
    weights = {k: v for k, v in net.model.state_dict().items()}
    plain = pipeline.build_net(make_cfg("model=blip_tiny", "tune=frozen", f"model.pretrained={tiny_draws[2]}").model)
    assert all(torch.equal(v, plain.model.state_dict()[k]) for k, v in weights.items())  # the draw's weights
    with pytest.raises(ConfigError, match="built on first use by medft.training.pipeline.build_net"):
        build_model(cfg.model)


def test_the_study_gives_each_seed_its_draw_and_the_lr_search_keeps_draw_zero(make_cfg):
    """experiment=study: model.pretrain_seed follows the seed (1, 2, 3); study_lr stays on draw 0 whatever the
    seed, and 0 is no study seed; medft train's default is draw 0."""
    assert [make_cfg("experiment=study", f"seed={s}").model.pretrain_seed for s in (1, 2, 3)] == [1, 2, 3]
    assert "0" not in study_sweep("study")["seed"]
    assert study_sweep("study_lr")["seed"] == ["0"]
    assert make_cfg("experiment=study_lr", "seed=5").model.pretrain_seed == 0
    assert make_cfg("model=blip_med", "seed=5").model.pretrain_seed == 0


# --- the study, shrunken -------------------------------------------------------------------

REQUIRED = ["tune", "seed", "init", "train_fraction", "test/acc", "source/acc", "shift/acc", "trainable",
            "trainable_pct", "step_s", "peak_mb"]


def test_shrunken_study_runs_end_to_end(tiny_draws, run_cli, tmp_path):
    """`make study` in small: experiment=study then study_random into one dir, then medft report. Each seed
    fine-tunes its own draw (placed where the embedded model's draws live); the report names each run's draw
    and writes findings.csv, whose verdicts agree with their intervals."""
    import shutil

    from medft.training.embedded import embedded_dir

    draws = tmp_path / "draws"
    for seed, path in tiny_draws.items():
        shutil.copytree(path, embedded_dir(draws, seed))
    sweep = tmp_path / "study"
    shrink = [
        "model=blip_tiny", "dataset=demo_ct", *FEW_STEPS, "dataset.load.n_train_images=20",
        "dataset.load.n_test_images=4", "dataset.root=${paths.cache_dir}/demo_ct_small",
        "seed=1,2", "dataset.train_fraction=0.5",  # the command line wins over the experiment's sweep params
        f"hydra.sweep.dir={sweep}",
    ]
    pre = run_cli("train", "-m", "experiment=study", "model.pretrained=embedded", f"++model.embedded_dir={draws}",
                  "tune=frozen,layernorm,full", *shrink)
    assert pre.returncode == 0, pre.stderr[-3000:]
    rnd = run_cli("train", "-m", "experiment=study_random", "tune=layernorm", *shrink)
    assert rnd.returncode == 0, rnd.stderr[-3000:]
    rep = run_cli("report", str(sweep))
    assert rep.returncode == 0, rep.stderr[-3000:]
    rows = list(csv.DictReader((sweep / "results.csv").open()))
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows), rows
    assert all(r[c] != "" for r in rows for c in REQUIRED if not (c == "step_s" and r["tune"] == "frozen"))
    cells = sorted((r["tune"], r["init"], r["seed"]) for r in rows)
    assert cells == [("frozen", "pretrained", "1"), ("frozen", "pretrained", "2"),
                     ("full", "pretrained", "1"), ("full", "pretrained", "2"),
                     ("layernorm", "pretrained", "1"), ("layernorm", "pretrained", "2"),
                     ("layernorm", "random", "1"), ("layernorm", "random", "2")]
    sha = {seed: json.loads((path / "pretrain.json").read_text())["weights_sha256"][:12] for seed, path in tiny_draws.items()}
    for r in rows:
        metrics = json.loads((Path(r["run"]) / "metrics.json").read_text())
        assert float(r["source/acc"]) == pytest.approx(metrics["source/acc"])
        assert float(r["shift/acc"]) == pytest.approx(metrics["shift/acc"])
        assert (Path(r["run"]) / "predictions_source.jsonl").is_file()
        drawn = (r["pretrain_seed"], r["pretrained_sha256"])  # which draw the run fine-tuned
        assert drawn == ((r["seed"], sha[int(r["seed"])]) if r["init"] == "pretrained" else ("", "")), r
    assert "mean ± std over seeds" in rep.stdout and "±" in (sweep / "results.md").read_text()
    for png in ("study_acc_vs_params.png", "study_gain_vs_kept.png"):
        assert (sweep / png).stat().st_size > 1000
    # findings: every pretrained mode vs frozen and vs full, target and source accuracy
    found = list(csv.DictReader((sweep / "findings.csv").open()))
    assert list(found[0])[:9] == ["metric", "dataset", "train_fraction", "tune", "versus", "delta", "ci_low", "ci_high",
                                  "verdict"]
    assert sorted((f["metric"], f["tune"], f["versus"]) for f in found) == sorted(
        (m, t, v) for m in ("test/acc", "source/acc") for v in ("frozen", "full") for t in ("frozen", "layernorm", "full")
        if t != v)
    acc = {(r["tune"], r["seed"]): r for r in rows if r["init"] == "pretrained"}
    for f in found:
        low, delta, high = float(f["ci_low"]), float(f["delta"]), float(f["ci_high"])
        assert low <= delta + 1e-4 and delta <= high + 1e-4, f
        assert f["verdict"] == ("ahead" if low > 0 else "behind" if high < 0 else "unresolved"), f
        assert f["seeds"] == "2" and f["dataset"] == "demo_ct" and f["train_fraction"] == "0.5"
        # every test question paired: the mean paired difference is the difference of the runs' accuracies
        key = "test/acc" if f["metric"] == "test/acc" else "source/acc"
        expected = sum(float(acc[(f["tune"], s)][key]) - float(acc[(f["versus"], s)][key]) for s in ("1", "2")) / 2
        assert delta == pytest.approx(expected, abs=1e-4), f
    md = (sweep / "results.md").read_text()
    assert md.startswith("## Findings") and "vs full" not in md.split("## Runs")[0].split("\n")[0]
    assert "layernorm" in md.split("## Runs")[0] and "[" in md.split("## Runs")[0]


@pytest.mark.parametrize("overrides, lr", [
    (["model=blip_med", "tune=layernorm"], 1e-2),                       # pretrained: the mode's lr_pretrained
    (["model=blip_med", "tune=full"], 1e-3),
    (["model=blip_med", "model.pretrained=null", "tune=layernorm"], 1e-1),  # random weights: tune.lr
    (["model=blip_tiny", "tune=layernorm"], 1e-1),                      # no lr_key: tune.lr x lr_scale
    (["model=blip_vqa", "tune=layernorm"], 1e-3),
    (["model=blip_med", "tune=layernorm", "optim.lr=0.5"], 0.5),
])
def test_default_learning_rate_follows_the_init(make_cfg, overrides, lr):
    cfg = make_cfg(*overrides)
    assert cfg.optim.lr == pytest.approx(lr)


def test_also_test_names_an_unknown_dataset_in_one_line_before_training(run_cli, tmp_path):
    out = run_cli("train", "+tune=layernorm", "+also_test.source=no_such_set")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("medft: error: also_test.source=no_such_set: no such dataset")
    assert "Epoch" not in out.stderr and not list((tmp_path / "logs").rglob("metrics.json"))


def study_sweep(experiment: str, *extra: str) -> dict[str, list[str]]:
    """The jobs Hydra's basic sweeper makes of ``medft train -m experiment=<experiment>``: key -> values
    (glob() expanded against configs/tune/ exactly as `make study` expands it)."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra._internal.utils import create_config_search_path
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from medft.config.resolvers import register_resolvers
    from medft.config.search import CONFIG_DIR

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()] + list(extra)
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONFIG_DIR)))
    overrides = OverridesParser.create(config_loader=loader).parse_overrides(params)
    (jobs,) = BasicSweeper.split_arguments(overrides, None)
    values: dict[str, list[str]] = {}
    for job in jobs:
        for override in job:
            key, value = override.split("=", 1)
            values.setdefault(key, [])
            if value not in values[key]:
                values[key].append(value)
    return values


def test_study_sweeps_every_tune_mode_but_prefix():
    """`make study` runs every mode in configs/tune/ (a new mode joins by itself) except prefix, which
    BLIP refuses: one failed job per cell would make the whole study exit 1."""
    from medft.config.search import available

    modes = available("tune")
    assert "prefix" in modes and {"frozen", "layernorm", "full", "ia3", "dora"} <= set(modes)
    study = study_sweep("study")
    assert sorted(study["tune"]) == sorted(m for m in modes if m != "prefix")
    assert sorted(study["seed"]) == ["1", "2", "3"] and sorted(study["dataset.train_fraction"]) == ["0.2", "1.0"]
    assert sorted(study_sweep("study_random")["tune"]) == ["full", "layernorm"]
    # the helper sees what the sweeper sees: a plain glob(*) would include prefix
    assert "prefix" in study_sweep("study", "tune=glob(*)")["tune"]


def test_every_study_mode_trains_something_on_the_study_model():
    """Each mode the study sweeps applies to blip_med's architecture (random weights: the same modules
    as the embedded checkpoint): blip_med once lacked arch.ia3_targets, so every ia3 job failed."""
    from medft.tuning import apply_tuning
    from tests.conftest import tune_cfg
    from tests.test_models import build

    for mode in study_sweep("study")["tune"]:
        report = apply_tuning(build("blip_med", "model.pretrained=null"), tune_cfg(mode))
        assert bool(report.trainable) == (mode != "frozen"), mode


def test_make_study_writes_the_report_when_a_job_failed_then_fails(tmp_path):
    """`make study` with a stand-in `medft` whose pretrained sweep fails (as a failed job makes `medft
    train -m` exit 1): the control still runs, the report is still written, then make fails."""
    import os
    import subprocess

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    calls = tmp_path / "calls.txt"
    medft = venv / "bin" / "medft"
    medft.write_text(f'#!/bin/sh\necho "$*" >> {calls}\ncase "$*" in *"experiment=study "*) exit 1;; esac\nexit 0\n')
    medft.chmod(0o755)
    (venv / ".installed").touch()  # newer than pyproject.toml: make's install step has nothing to do
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run(["make", "-s", "study", f"VENV={venv}", f"LOGS={tmp_path / 'logs'}", "NOW=t"],
                         cwd=repo, capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert out.returncode != 0, out.stdout
    lines = calls.read_text().splitlines()
    assert [line.split()[:3] for line in lines] == [["train", "-m", "experiment=study"],
                                                    ["train", "-m", "experiment=study_random"],
                                                    ["report", str(tmp_path / "logs" / "study" / "t")]]
    assert f"study: {tmp_path / 'logs' / 'study' / 't'}" in out.stdout
    medft.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexit 0\n')  # no failed job: make succeeds
    ok = subprocess.run(["make", "-s", "study", f"VENV={venv}", f"LOGS={tmp_path / 'logs'}", "NOW=t"],
                        cwd=repo, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr


def test_the_shipped_study_reading_quotes_its_findings():
    """docs/study.md claims only what the shipped run's findings say: every difference and interval it
    quotes is one `medft report` wrote, and each findings.csv verdict agrees with its interval."""
    repo = Path(__file__).resolve().parents[1]
    shipped = repo / "docs" / "results" / "study"
    found, generated = shipped_findings(shipped)
    assert len(found) == 64 and {f["seeds"] for f in found} == {"3"}
    doc = (repo / "docs" / "study.md").read_text()
    quoted = quoted_findings(doc[doc.index("## What the findings say"):doc.index("## Figures move from CPU to CPU")])
    assert len(quoted) >= 25 and set(quoted) <= generated, set(quoted) - generated
    rows = list(csv.DictReader((shipped / "results.csv").open()))
    assert len(rows) == 66 and {r["status"] for r in rows} == {"ok"}
    assert {(r["seed"], r["pretrain_seed"]) for r in rows if r["init"] == "pretrained"} == {("1", "1"), ("2", "2"), ("3", "3")}
    assert len({r["pretrained_sha256"] for r in rows if r["init"] == "pretrained"}) == 3
