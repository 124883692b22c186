"""Your own models and datasets (docs/own_configs.md): a user's config dir is searched before medft's
by every command that composes, a run records it for eval/export/ask, and the wheel runs from anywhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from medft_testing import TINY

from medft.config.overrides import normalize_overrides
from medft.config.resolvers import register_resolvers
from medft.config.search import CONFIG_DIR, CONFIG_DIRS_ENV, CONFIG_DIRS_FILE, available, find_config, take_config_dirs
from medft.runs.trust import RunDirError
from medft.util.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]


def user_config_dir(root: Path) -> Path:
    """A lab's config dir: a model (medft's tiny BLIP, smaller images) and a dataset (a small demo set)."""
    cfg = root / "lab_configs"
    (cfg / "model").mkdir(parents=True)
    (cfg / "dataset").mkdir()
    model = (CONFIG_DIR / "model" / "blip_tiny.yaml").read_text()
    (cfg / "model" / "lab_blip.yaml").write_text(
        model.replace("name: blip_tiny", "name: lab_blip").replace("image_size: 64", "image_size: 32"))
    dataset = (CONFIG_DIR / "dataset" / "demo.yaml").read_text().replace("name: demo", "name: lab_demo")
    dataset = dataset.replace("root: ${paths.cache_dir}/demo", "root: ${paths.cache_dir}/lab_demo")
    (cfg / "dataset" / "lab_demo.yaml").write_text(dataset + "  n_train_images: 40\n  n_test_images: 10\n")
    return cfg


def compose_train(*overrides: str):
    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=normalize_overrides(["+tune=layernorm", *overrides]))


def test_config_dir_flags_in_any_position_are_searched_before_medfts(tmp_path):
    cfg = user_config_dir(tmp_path)
    (cfg / "tune").mkdir()
    shipped = (CONFIG_DIR / "tune" / "layernorm.yaml").read_text()
    (cfg / "tune" / "layernorm.yaml").write_text(shipped.replace("lr:", "lr: 0.5 #", 1))  # shadows medft's
    other = tmp_path / "more"
    (other / "dataset").mkdir(parents=True)
    assert take_config_dirs(["model=lab_blip", "--config-dir", str(cfg), "dataset=demo",
                             f"hydra.searchpath=[file://{other}]"]) == ["model=lab_blip", "dataset=demo"]
    assert os.environ[CONFIG_DIRS_ENV].split(os.pathsep) == [str(cfg), str(other)]
    assert {"lab_blip", "blip_tiny"} <= set(available("model")) and "lab_demo" in available("dataset")
    assert find_config("tune", "layernorm.yaml") == cfg / "tune" / "layernorm.yaml"
    composed = compose_train("model=lab_blip", "dataset=lab_demo")
    assert composed.model.name == "lab_blip" and composed.model.image_size == 32 and composed.dataset.name == "lab_demo"
    assert composed.model.arch.components  # the family's arch comes from medft's own configs
    assert composed.tune.lr == 0.5  # the user's tune/layernorm.yaml, not medft's
    os.environ[CONFIG_DIRS_ENV] = ""
    assert take_config_dirs([f"--config-dir={cfg}", "model=lab_blip"]) == ["model=lab_blip"]
    with pytest.raises(ConfigError, match=r"--config-dir .*nowhere: no such directory"):
        take_config_dirs(["-cd", str(tmp_path / "nowhere")])
    with pytest.raises(ConfigError, match="--config-dir needs a directory"):
        take_config_dirs(["dataset=demo", "--config-dir"])


def test_params_and_data_compose_from_a_users_config_dir(tmp_path, capsys, monkeypatch):
    from medft.cli import main

    cfg = user_config_dir(tmp_path)
    monkeypatch.setenv("MEDFT_CACHE_DIR", str(tmp_path / "cache"))
    main(["params", "model=lab_blip", "--config-dir", str(cfg), "tune=layernorm"])
    assert "layernorm" in capsys.readouterr().out
    main(["data", "dataset=lab_demo", "--config-dir", str(cfg), "format=json"])  # the flag after an override
    counts = json.loads(capsys.readouterr().out)
    assert counts["dataset"] == "lab_demo" and counts["splits"]["test"]["n"] > 0


def test_a_demo_root_that_does_not_exist_is_an_error_outside_the_cache(tmp_path, capsys, monkeypatch):
    from medft.cli import main

    monkeypatch.setenv("MEDFT_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as exit_:
        main(["data", "dataset=demo", f"dataset.root={tmp_path / 'typo'}"])
    assert exit_.value.code == 2 and "does not exist: a demo set is generated only under paths.cache_dir" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()


def test_composing_eval_claims_no_run_dir(tmp_path):
    """Every `medft eval` used to leave an empty logs/multiruns/<time>/: eval.yaml's run dirs replaced
    hydra/default.yaml's after those had been resolved (claimed, i.e. created) during the merge."""
    register_resolvers()
    logs = tmp_path / "logs"
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        for name, overrides in (("eval", ["dataset=demo", "ckpt=x"]), ("pretrain", ["out=x"])):
            compose(name, overrides=[*overrides, f"paths.log_dir={logs}"], return_hydra_config=True)
    assert not logs.exists(), sorted(p for p in logs.rglob("*"))


def test_a_runs_config_dirs_are_data_checked_before_use(tmp_path, monkeypatch):
    from medft.training.pipeline import use_run_config_dirs

    run = tmp_path / "run"
    (run / "evil" / "model").mkdir(parents=True)
    (run / CONFIG_DIRS_FILE).write_text(json.dumps({"config_dirs": [str(run / "evil")]}))
    with pytest.raises(RunDirError, match="outside the run dir: refused"):
        use_run_config_dirs(run)
    (run / CONFIG_DIRS_FILE).write_text(json.dumps({"config_dirs": ["relative/dir"]}))
    with pytest.raises(RunDirError, match="not an absolute path"):
        use_run_config_dirs(run)
    (run / CONFIG_DIRS_FILE).write_text("[")
    with pytest.raises(RunDirError, match="damaged"):
        use_run_config_dirs(run)
    lab = user_config_dir(tmp_path)
    (run / CONFIG_DIRS_FILE).write_text(json.dumps({"config_dirs": [str(lab), str(tmp_path / "gone")]}))
    use_run_config_dirs(run)  # a dir that is gone is skipped (said on stderr)
    assert os.environ[CONFIG_DIRS_ENV].split(os.pathsep) == [str(lab)] and "lab_blip" in available("model")


def test_a_runs_config_dir_that_another_user_could_write_is_not_searched(tmp_path, monkeypatch, capsys):
    """A config dir is code: a recorded one that anyone could have written (world-writable, or below a
    world-writable folder without the sticky bit) is skipped with a one-line note, unless given again."""
    from medft.training.pipeline import safe_config_dir, use_run_config_dirs

    monkeypatch.delenv(CONFIG_DIRS_ENV, raising=False)
    shared = tmp_path / "shared"
    lab = user_config_dir(shared)
    run = tmp_path / "run"
    run.mkdir()
    (run / CONFIG_DIRS_FILE).write_text(json.dumps({"config_dirs": [str(lab)]}))
    assert safe_config_dir(lab)
    shared.chmod(0o777)  # anyone may replace lab/ (no sticky bit)
    assert not safe_config_dir(lab)
    use_run_config_dirs(run)
    assert "is not searched" in capsys.readouterr().err and "lab_blip" not in available("model")
    shared.chmod(0o1777)  # sticky, like /tmp: what you own there stays yours
    assert safe_config_dir(lab)
    lab.chmod(0o777)  # the dir itself is world-writable
    assert not safe_config_dir(lab)
    shared.chmod(0o755)
    lab.chmod(0o755)


def test_a_run_of_a_users_model_without_its_config_dir_is_refused(tmp_path):
    from medft.runs.trust import trusted_model_config

    with pytest.raises(RunDirError, match="model.name='lab_blip' is not one of medft's own model configs .*--config-dir DIR"):
        trusted_model_config({"name": "lab_blip"}, "run")
    with pytest.raises(RunDirError, match="is not medft's own .*--config-dir DIR"):
        trusted_model_config({"_target_": "medft.models.blip.build_blip_vqa", "name": "lab_blip"}, "run")


def test_export_and_ask_take_a_run_dir_whose_path_holds_equals(tmp_path):
    from medft.training.pipeline import parse_run_args as parse_args

    run = tmp_path / "layernorm_demo_blip_tiny_optim.lr=0.01"
    run.mkdir()
    assert parse_args([str(run), "format=peft"], "export", ("format", "out")) == (str(run), {"format": "peft"})
    assert parse_args(["image=x.png", str(run)], "ask", ("image", "question")) == (str(run), {"image": "x.png"})
    with pytest.raises(ConfigError, match="takes RUN_DIR and format=, out="):
        parse_args([str(run), "fromat=hf"], "export", ("format", "out"))


def test_a_peft_export_of_an_embedded_model_run_names_the_cached_checkpoint(tmp_path):
    """The draw the run fine-tuned (its pretraining seed's checkpoint), not "embedded", which nothing loads."""
    from types import SimpleNamespace

    from medft.commands.export import _base_reference
    from medft.training.embedded import embedded_dir

    net = SimpleNamespace(pretrained="embedded", pretrained_dir=embedded_dir(tmp_path, 2))
    base, write_base = _base_reference(net, tmp_path / "out")
    assert base == str(embedded_dir(tmp_path, 2).resolve()) and base.endswith("-seed2") and not write_base


# -- the wheel, installed into a fresh environment, run from a folder outside the checkout ------------
def build_wheel(tmp: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of the package (a build in the checkout would leave build/ there)."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "medft", src / "medft", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
                    str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp / "dist").glob("medft-*.whl")
    return wheel


def install_wheel(wheel: Path, venv: Path) -> Path:
    """A fresh virtual environment with the wheel (no deps): medft's dependencies come from this
    environment's site-packages (a .pth line; its editable medft is not among them)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "_medft_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return venv / "bin" / "medft"


@pytest.mark.slow
def test_the_wheel_runs_from_anywhere_and_a_users_model_trains_evaluates_exports_and_answers(tmp_path):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert "medft/configs/local/example.yaml" in names and "medft/configs/local/default.yaml" not in names  # yours stays yours
    assert {"medft/configs/train.yaml", "medft/configs/model/arch/blip_vqa.yaml",
            "medft/configs/model/arch/Salesforce/blip-vqa-base/config.json", "medft/data/demo_report_wording.yaml"} <= names
    medft = install_wheel(wheel, tmp_path / "venv")
    work = tmp_path / "elsewhere"  # outside the checkout, no PYTHONPATH: only the installed wheel
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", CONFIG_DIRS_ENV)}
    env.update(MEDFT_LOG_DIR=str(work / "logs"), MEDFT_CACHE_DIR=str(tmp_path / "cache"))

    def run(*args: str) -> subprocess.CompletedProcess:
        out = subprocess.run([str(medft), *args], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"medft {' '.join(args)}:\n{out.stderr[-3000:]}"
        return out

    where = subprocess.run([str(medft.parent / "python"), "-c", "import medft; print(medft.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout
    assert str(tmp_path / "venv") in where and str(REPO) not in where
    assert "layernorm" in run("params", "model=blip_tiny").stdout
    lab = user_config_dir(tmp_path)
    trained = work / "run"
    run("train", "+tune=lora", "model=lab_blip", "dataset=lab_demo", "trainer.max_epochs=1", *TINY,
        f"hydra.run.dir={trained}", "--config-dir", str(lab))  # the flag after the overrides
    metrics = json.loads((trained / "metrics.json").read_text())
    assert "test/acc" in metrics and metrics["train/steps"] >= 1
    assert json.loads((trained / CONFIG_DIRS_FILE).read_text()) == {"config_dirs": [str(lab)]}
    # eval, export and ask find the user's model config through the run's config_dirs.json
    evaluated = run("eval", f"ckpt={trained}", "dataset=lab_demo", "data.eval_batch_size=8", "+trainer.limit_test_batches=1")
    assert f"evaluating {trained} (trained.safetensors) on lab_demo/test" in evaluated.stdout
    assert not (work / "logs" / "multiruns").exists()
    run("export", str(trained), "format=peft", f"out={work / 'adapter'}")
    assert (work / "adapter" / "adapter_config.json").is_file() and (work / "adapter" / "base" / "config.json").is_file()
    image = next((tmp_path / "cache" / "lab_demo" / "images").glob("*.png"))
    answer = run("ask", str(trained), f"image={image}", "question=is there a lesion?")
    assert answer.stdout.strip()
