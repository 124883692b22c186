"""Trust boundaries: a run dir or a dataset from someone else is data, never code (issue 12).

* ``medft eval ckpt=RUN_DIR`` and ``medft train resume=RUN_DIR`` never instantiate what a run dir
  names: the two payloads of the issue (a ``torch.load`` of a pickled payload, ``builtins.open``
  truncating a file) are refused in one line and do nothing;
* one writer per run dir (a lock file with host and pid).
"""

import os
import sys
from pathlib import Path

import pytest
import torch
import yaml
from medft_testing import TINY, cache, cli, medft  # noqa: F401 - fixtures

from medft.runs.trust import RunDirError, RunLock, check_replayed_overrides, trusted_model_config, trusted_tune_config

LAYERNORM = {"name": "layernorm", "select": "norm", "lr": 0.1, "components": None}


class Payload:
    """What a booby-trapped pickle carries: unpickling it runs a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def fake_run(root: Path, model: dict, tune: dict | None = None, overrides: list | None = None) -> Path:
    """A run dir someone else wrote: its config names ``model``; a dummy checkpoint beside it."""
    (root / ".hydra").mkdir(parents=True)
    (root / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"model": model, "tune": tune or LAYERNORM, "seed": 0}))
    (root / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides or ["+tune=layernorm"]))
    (root / "checkpoints").mkdir()
    torch.save({"state_dict": {}}, root / "checkpoints" / "last.ckpt")
    return root


@pytest.fixture
def medft_eval(tmp_path, medft):
    """``medft eval ARGS`` through the CLI inside this process -> (status, stdout, stderr)."""
    return lambda *args: medft("eval", *args, "dataset=demo", f"hydra.run.dir={tmp_path / 'eval'}")


# -- the two payloads ----------------------------------------------------------------
def test_eval_never_unpickles_what_a_run_config_names(medft_eval, tmp_path):
    marker, evil = tmp_path / "pwned", tmp_path / "EVIL.ckpt"
    torch.save({"state_dict": {}, "x": Payload(marker)}, evil)
    run = fake_run(tmp_path / "run", {"_target_": "torch.load", "f": str(evil), "weights_only": False})
    status, _, err = medft_eval(f"ckpt={run}")
    assert not marker.exists(), "the pickled payload ran"
    assert status == 2
    assert "medft: error:" in err and "model._target_='torch.load' is not medft's own" in err
    assert "Traceback" not in err


def test_eval_never_calls_a_function_a_run_config_names(medft_eval, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    run = fake_run(tmp_path / "run", {"_target_": "builtins.open", "_args_": [str(victim), "w"]})
    status, _, err = medft_eval(f"ckpt={run}")
    assert victim.read_text() == "precious\n", "the run config truncated a file"
    assert status == 2 and "model._target_='builtins.open' is not medft's own" in err


def test_resume_never_replays_a_target_from_the_run_dir(cli, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    evil = f"+callbacks.evil={{_target_:builtins.open,_args_:['{victim}',w]}}"
    run = fake_run(tmp_path / "run", {"name": "blip_tiny"}, overrides=["+tune=layernorm", *TINY, evil])
    status, _, err, _ = cli(f"resume={run}")
    assert victim.read_text() == "precious\n", "the replayed override truncated a file"
    assert status == 2 and "holds _target_: refused, a run dir brings data only" in err


# -- what a run dir may bring ----------------------------------------------------------------
def test_model_is_chosen_by_name_and_brings_plain_values_only():
    source = "r/.hydra/config.yaml"
    ok = trusted_model_config({"name": "blip_tiny", "image_size": 32, "_target_": "medft.models.blip.build_blip_vqa"}, source)
    assert ok["_target_"] == "medft.models.blip.build_blip_vqa" and ok["image_size"] == 32
    assert trusted_model_config({"name": "blip_tiny"}, source)["_target_"] == "medft.models.blip.build_blip_vqa"
    refused = {
        "another builder": ({"name": "blip_tiny", "_target_": "medft.models.llava.build_llava"}, "is not medft's own"),
        "not medft's model": ({"name": "evil"}, "is not one of medft's own model configs"),
        "nested target": ({"name": "blip_tiny", "config": {"vision_config": {"_target_": "os.system"}}},
                          "model.config.vision_config._target_='os.system' is refused"),
        "unknown key": ({"name": "blip_tiny", "command": "rm -rf /"}, "model.command is not a key of medft's model config"),
        "mapping for a value": ({"name": "blip_tiny", "image_size": {"x": 1}}, "model.image_size=.* should be a plain value"),
        "remote code": ({"name": "llava_tiny", "trust_remote_code": True}, "trust_remote_code=true is refused"),
        "hub kernel": ({"name": "blip_tiny", "attn_implementation": "kernels-community/flash-attn"},
                       "model.attn_implementation='kernels-community/flash-attn' is refused"),
    }
    for case, (node, message) in refused.items():
        with pytest.raises(RunDirError, match=message.replace("(", r"\(").replace("[", r"\[")):
            trusted_model_config(node, source)
        print(case, "refused")
    with pytest.raises(RunDirError, match="tune.select='full' is not what tune layernorm selects"):
        trusted_tune_config({**LAYERNORM, "select": "full"}, source)
    with pytest.raises(RunDirError, match="tune.r is not a key"):
        trusted_tune_config({**LAYERNORM, "r": 8}, source)


@pytest.mark.parametrize("override, message", [
    ("model._target_=builtins.open", "holds _target_"),
    ("+trainer.plugins=[{_args_:[x]}]", "holds _args_"),
    ("optim.lr=${oc.decode:'{a: 1}'}", "holds an interpolation"),
    ("hydra.searchpath=[file:///tmp/evil]", "holds a hydra setting"),
    ("hydra/launcher=slurm", "holds a hydra setting"),
    ("model=../../../tmp/evil", "does not name one of medft's own model configs"),
    ("+experiment=nope", "does not name one of medft's own experiment configs"),
])
def test_replayed_overrides_are_plain(override, message):
    with pytest.raises(RunDirError, match=message.replace("[", r"\[")):
        check_replayed_overrides(["+tune=layernorm", override], Path("r/.hydra/overrides.yaml"))
    plain = ["+tune=lora", "model=blip_tiny", "tune.components=[text,decoder]", "optim.lr=0.05", "experiment=null"]
    assert check_replayed_overrides(plain, Path("o.yaml")) == plain
    for damaged in ({"a": 1}, "text", [1, 2]):
        with pytest.raises(RunDirError, match="is not a list of overrides"):
            check_replayed_overrides(damaged, Path("o.yaml"))


# -- one writer per run dir ------------------------------------------------------------------
def test_a_live_lock_refuses_a_second_process_before_it_writes(cli, tmp_path):
    import socket
    import subprocess

    run = fake_run(tmp_path / "run", {"name": "blip_tiny"}, overrides=["+tune=layernorm", *TINY])
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".medft.lock").write_text(f'{{"host": "{socket.gethostname()}", "pid": {holder.pid}}}\n')
        before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
        status, out, err, _ = cli(f"resume={run}")
    finally:
        holder.kill()
        holder.wait()
    assert status == 2
    assert [line for line in err.splitlines() if line.strip()] == [
        f"medft: error: run dir {run} is in use by process {holder.pid} on {socket.gethostname()} ({run / '.medft.lock'}): "
        "wait for it to finish, or delete the lock file if that process is gone"
    ]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing written


def test_a_stale_lock_of_a_dead_process_is_taken_over_and_said(tmp_path, capsys):
    import socket
    import subprocess

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".medft.lock").write_text(f'{{"host": "{socket.gethostname()}", "pid": {dead.pid}}}\n')
    with RunLock(tmp_path) as lock:
        assert f'"pid": {os.getpid()}' in lock.path.read_text()
        with RunLock(tmp_path):  # the same process again (medft train resume=: main, then the task): fine
            pass
        assert lock.path.exists()
    assert not (tmp_path / ".medft.lock").exists()
    assert f"taking over the stale lock {tmp_path / '.medft.lock'} of process {dead.pid}" in capsys.readouterr().err


# -- one current state per run dir -----------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cache) -> Path:
    """A finished 2-epoch run (its own copy per test: copy it)."""
    from medft_testing import train_in_process

    tmp = tmp_path_factory.mktemp("finished")
    status = train_in_process(["+tune=layernorm", *TINY, "trainer.max_epochs=2", f"hydra.run.dir={tmp / 'run'}"], tmp, cache)
    assert status == 0
    return tmp / "run"


def copy_run(run: Path, to: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, to, symlinks=True))


def test_a_refused_resume_leaves_a_finished_run_finished(cli, finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "train.log"}
    status, _, err, _ = cli(f"resume={run}", "trainer.max_epochs=1")
    assert status == 2
    assert "trainer.max_epochs=1 is below the 2 epoch(s)" in err and "Traceback" not in err
    assert f"the finished run in {run} is unchanged" in err
    assert not (run / "error.txt").exists()
    history = list((run / "errors").iterdir())
    assert len(history) == 1 and "trainer.max_epochs=1 is below" in history[0].read_text()
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "train.log" and "errors" not in p.parts}
    assert after == before  # config, overrides, metrics, checkpoints: as they were


def test_a_successful_resume_clears_the_failed_state_and_keeps_the_history(cli, finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    from medft.runs.runner import record_error
    from medft.runs.trust import run_state

    record_error(run, "medft: error: an earlier attempt failed\n")
    assert run_state(run) == "failed"
    status, _, err, _ = cli(f"resume={run}", "trainer.max_epochs=2")
    assert status == 0, err
    assert run_state(run) == "ok" and not (run / "error.txt").exists()
    assert "an earlier attempt failed" in next((run / "errors").iterdir()).read_text()


def test_best_checkpoint_and_score_travel_with_a_moved_run(cli, finished_run, tmp_path):
    from medft.runs.checkpoint import load_checkpoint

    def best_state(path: Path) -> dict:
        states = load_checkpoint(path)["callbacks"]
        return next(v for k, v in states.items() if "'monitor': 'val/acc'" in k)

    saved = best_state(finished_run / "checkpoints" / "last.ckpt")
    run = copy_run(finished_run, tmp_path / "moved")
    status, _, err, _ = cli(f"resume={run}", "trainer.max_epochs=3")
    assert status == 0, err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]  # no best-v1.ckpt
    state = best_state(run / "checkpoints" / "last.ckpt")
    assert state["best_model_path"] == str(run / "checkpoints" / "best.ckpt")
    assert float(state["best_model_score"]) >= float(saved["best_model_score"])  # the score so far was kept


# -- results others can read; a report that one bad run does not break -----------------------
@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_written_files_follow_the_umask(tmp_path, umask):
    from torch import nn

    from medft.runs.checkpoint import AtomicCheckpointIO
    from medft.runs.trained import save_trained
    from medft.util.files import write_json_atomic, write_jsonl_atomic, write_text_atomic

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = nn.Linear(2, 2)
            self.name, self.pretrained = "linear", None

    old = os.umask(umask)
    try:
        files = [
            write_json_atomic(tmp_path / "metrics.json", {"a": 1}),
            write_jsonl_atomic(tmp_path / "predictions.jsonl", [{"a": 1}]),
            write_text_atomic(tmp_path / "error.txt", "x"),
            save_trained(tmp_path / "trained.safetensors", Net(), {"name": "full"}),
        ]
        AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, tmp_path / "checkpoints" / "last.ckpt")
        files.append(tmp_path / "checkpoints" / "last.ckpt")
    finally:
        os.umask(old)
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: oct(0o666 & ~umask) for p in files}


def test_report_lists_a_damaged_run_as_unreadable_and_reports_the_rest(finished_run, tmp_path):
    from medft.commands.report import report

    good = copy_run(finished_run, tmp_path / "sweep" / "good")
    truncated = copy_run(finished_run, tmp_path / "sweep" / "truncated")
    (truncated / "metrics.json").write_text((truncated / "metrics.json").read_text()[:40])
    corrupt = copy_run(finished_run, tmp_path / "sweep" / "corrupt")
    (corrupt / ".hydra" / "config.yaml").write_text("model: {name: [unclosed\n")
    result = report([tmp_path / "sweep"])
    rows = {Path(r["run"]).name: r for r in result["rows"]}
    assert rows["good"]["status"] == "ok" and rows["good"]["tune"] == "layernorm"
    assert rows["truncated"]["status"] == "unreadable" and rows["truncated"]["error"].startswith("metrics.json is damaged (")
    assert rows["corrupt"]["status"] == "unreadable" and rows["corrupt"]["error"].startswith(".hydra/config.yaml is damaged (")
    assert "| layernorm |" in result["markdown"] and result["md"].is_file()
    assert good.exists()


# -- trained weights: shapes, dtypes, finiteness ---------------------------------------------
class TinyNet(torch.nn.Module):
    name, pretrained = "tiny", None  # what save_trained records of a MedVLM

    def __init__(self):
        super().__init__()
        self.model = torch.nn.LayerNorm(64)


@pytest.mark.parametrize("case, tensor, message", [
    ("broadcast", torch.ones(1), r"1 tensor\(s\) of another shape \(file vs model\), e.g. \['weight \(1,\) vs \(64,\)'\]"),
    ("other size", torch.ones(128), r"'weight \(128,\) vs \(64,\)'\] — a file of another model size"),
    ("int8", torch.ones(64, dtype=torch.int8), r"not floating point, e.g. \['weight \(int8\)'\]"),
    ("bool", torch.ones(64, dtype=torch.bool), r"not floating point, e.g. \['weight \(bool\)'\]"),
    ("nan", torch.full((64,), float("nan")), r"NaN or infinite values, e.g. \['weight'\]"),
])
def test_trained_file_with_unusable_tensors_is_refused_in_one_line(tmp_path, case, tensor, message):
    from safetensors.torch import save_file

    from medft.runs.trained import load_trained_file
    from medft.util.errors import ConfigError

    net = TinyNet()
    path = tmp_path / "trained.safetensors"
    save_file({"weight": tensor, "bias": torch.zeros(64)}, str(path), metadata={"medft": '{"tune": {"name": "layernorm"}}'})
    before = net.model.weight.detach().clone()
    with pytest.raises(ConfigError, match=f"trained.safetensors was not loaded: .*{message}"):
        load_trained_file(net, path)
    assert torch.equal(net.model.weight, before)  # nothing was copied


def test_trained_file_with_bad_metadata_json_is_one_line(tmp_path):
    from safetensors.torch import save_file

    from medft.runs.trained import load_trained_file
    from medft.util.errors import ConfigError

    path = tmp_path / "trained.safetensors"
    save_file({"weight": torch.ones(64), "bias": torch.zeros(64)}, str(path), metadata={"medft": '{"tune": '})
    with pytest.raises(ConfigError, match="its medft metadata is not valid JSON"):
        load_trained_file(TinyNet(), path)


def test_checkpoints_and_trained_files_go_through_one_key_check(tmp_path):
    """check_compatible (last.ckpt) and load_trained_file (trained.safetensors) list key differences alike."""
    from safetensors.torch import save_file

    from medft.runs.checkpoint import check_compatible
    from medft.runs.trained import load_trained_file
    from medft.util.errors import CheckpointError, ConfigError

    state = {"weight": torch.ones(64), "gain": torch.ones(64)}
    parts = "1 trained key(s) missing, e.g. ['bias']; 1 unexpected key(s), e.g. ['gain']"
    path = tmp_path / "trained.safetensors"
    save_file(state, str(path), metadata={"medft": '{"tune": {"name": "layernorm"}}'})
    with pytest.raises(ConfigError) as from_file:
        load_trained_file(TinyNet(), path)
    with pytest.raises(CheckpointError) as from_ckpt:
        check_compatible(state, {n: p.shape for n, p in TinyNet().model.named_parameters()}, "layernorm", "layernorm")
    assert parts in str(from_file.value) and parts in str(from_ckpt.value)


def test_checkpoint_with_nan_weights_is_refused():
    from medft.runs.checkpoint import check_compatible
    from medft.util.errors import CheckpointError

    expected = {"w": torch.Size([3])}
    check_compatible({"w": torch.ones(3)}, expected, "layernorm", "layernorm")
    with pytest.raises(CheckpointError, match=r"checkpoint was not loaded: it holds 1 tensor\(s\) with NaN or infinite values"):
        check_compatible({"w": torch.tensor([1.0, float("nan"), 2.0])}, expected, "layernorm", "layernorm")


# -- values that cannot be meant -------------------------------------------------------------
@pytest.mark.parametrize("override, expected", [
    ("trainer.max_epochs=0", "trainer.max_epochs=0 is out of range: it must be a number >= 1 (or -1: until max_steps)"),
    ("optim.lr=1e9", "optim.lr=1000000000.0 cannot be meant: AdamW with a learning rate >= 10 diverges; use e.g. 1e-3"),
    ("eval.generate.max_new_tokens=0", "eval.generate.max_new_tokens=0 is out of range: it must be an integer >= 1 (answers need at least one token)"),
    ("seed=-1", "seed=-1 is out of range: it must be an integer in [0, 2**32 - 1]"),
    ("dataset.max_image_pixels=0", "dataset.max_image_pixels=0 is out of range: it must be an integer >= 1"),
])
def test_values_that_cannot_be_meant_are_one_line_before_training(cli, override, expected):
    status, out, err, _ = cli("+tune=layernorm", *TINY, override)
    assert status == 2
    assert [line for line in err.splitlines() if line.startswith("medft: error:")] == [f"medft: error: {expected}"]
    assert "Traceback" not in err and "dataset demo:" not in out  # before any data or model


def test_an_odd_learning_rate_is_a_warning(capsys):
    from omegaconf import OmegaConf

    from medft.config.validate import check_values

    check_values(OmegaConf.create({"optim": {"lr": 2.0}}))
    assert "medft: warning: optim.lr=2.0 is unusually high" in capsys.readouterr().err
    check_values(OmegaConf.create({"optim": {"lr": 0.1}}))
    assert capsys.readouterr().err == ""


def test_eval_refuses_max_new_tokens_0_before_loading(medft_eval, finished_run):
    status, out, err = medft_eval(f"ckpt={finished_run}", "eval.generate.max_new_tokens=0")
    assert status == 2 and "medft: error: eval.generate.max_new_tokens=0 is out of range" in err
    assert "evaluating" not in out


# -- a full disk, a read-only run dir, a cache dir that is a file: one line each ----------------
@pytest.mark.parametrize("failure", [
    RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 2070592 vs 2070480"),
    RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file data/0: file write failed"),
    OSError(28, "No space left on device"),
])
def test_a_full_disk_during_a_checkpoint_save_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch, failure):
    from medft.runs.checkpoint import AtomicCheckpointIO
    from medft.util.files import WriteError

    io, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, path)

    def disk_full(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04")
        raise failure

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(WriteError, match=f"cannot write {path}: no space left on the device, .* MiB free there — free some space"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "global_step": 2}, path)
    monkeypatch.undo()
    assert io.load_checkpoint(path)["global_step"] == 1 and sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


@pytest.mark.parametrize("code, message", [(28, "no space left on the device"), (30, "read-only or not yours")])
def test_a_failed_trained_file_save_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch, code, message):
    """save_trained goes through medft.util.files' atomic writer: safetensors' I/O errors ("(os error N)")
    become the one-line WriteError, the earlier file stays whole and no temp file is left."""
    import safetensors.torch

    from medft.runs.trained import read_metadata, save_trained
    from medft.util.files import WriteError

    net = TinyNet()
    path = save_trained(tmp_path / "trained.safetensors", net, {"name": "first"})

    def failing(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise Exception(f"Error while serializing: IoError(Os {{ code: {code} }}) (os error {code})")

    monkeypatch.setattr(safetensors.torch, "save_file", failing)
    with pytest.raises(WriteError, match=f"cannot write {path}: .*{message}") as excinfo:
        save_trained(path, net, {"name": "second"})
    assert "\n" not in str(excinfo.value)
    monkeypatch.undo()
    assert read_metadata(path)["tune"] == {"name": "first"} and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_full_disk_during_training_is_one_line(cli, monkeypatch):
    import medft.runs.checkpoint

    def disk_full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 2070592 vs 2070480")

    monkeypatch.setattr(medft.runs.checkpoint.torch, "save", disk_full)
    status, _, err, run_dir = cli("+tune=layernorm", *TINY, "trainer.max_epochs=1")
    assert status == 2 and "Traceback" not in err
    assert f"medft: error: cannot write {run_dir / 'checkpoints'}" in err and "no space left on the device" in err
    assert "no space left" in (run_dir / "error.txt").read_text()


def test_a_read_only_run_dir_is_one_line(cli, finished_run, tmp_path, monkeypatch):
    run = copy_run(finished_run, tmp_path / "run")
    real_open = os.open

    def read_only(path, *args, **kwargs):
        if str(path).endswith(".medft.lock"):
            raise OSError(30, "Read-only file system", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    status, _, err, _ = cli(f"resume={run}", "trainer.max_epochs=3")
    assert status == 2
    assert [line for line in err.splitlines() if line.strip()] == [
        f"medft: error: run dir {run} cannot be written (Read-only file system): make it writable, or work on a copy of it"
    ]


def test_a_cache_dir_that_is_a_file_is_one_line(cli, tmp_path, monkeypatch):
    blocker = tmp_path / "cache-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MEDFT_CACHE_DIR", str(blocker))
    status, _, err, _ = cli("+tune=layernorm", *TINY)
    assert status == 2 and "Traceback" not in err
    assert f"medft: error: the demo dataset's folder {blocker / 'demo'} cannot be created: {blocker} is a file, not a folder" in err


@pytest.mark.parametrize("content, message", [
    ("- +tune=layernorm\n- [unclosed\n", "overrides.yaml cannot be read ("),
    ("tune: layernorm\n", "overrides.yaml is not a list of overrides (found a dict)"),
])
def test_a_damaged_overrides_file_on_resume_is_one_line(cli, tmp_path, content, message):
    run = fake_run(tmp_path / "run", {"name": "blip_tiny"})
    (run / ".hydra" / "overrides.yaml").write_text(content)
    status, _, err, _ = cli(f"resume={run}")
    assert status == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and message in err


@pytest.mark.parametrize("command", ["export", "ask"])
@pytest.mark.parametrize("payload", ["pickle", "open"])
def test_export_and_ask_never_run_what_a_run_config_names(command, payload, tmp_path, cache, monkeypatch, capsys):
    """``medft export`` and ``medft ask`` read a run dir the way ``medft eval`` does: data only."""
    marker, victim, evil = tmp_path / "pwned", tmp_path / "victim.txt", tmp_path / "EVIL.ckpt"
    victim.write_text("precious\n")
    torch.save({"state_dict": {}, "x": Payload(marker)}, evil)
    model = ({"_target_": "torch.load", "f": str(evil), "weights_only": False} if payload == "pickle"
             else {"_target_": "builtins.open", "_args_": [str(victim), "w"]})
    run = fake_run(tmp_path / "run", model)
    monkeypatch.setenv("MEDFT_CACHE_DIR", str(cache))
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    from PIL import Image

    from medft.cli import main

    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")  # a real image: the run dir is what must be refused
    extra = [f"out={tmp_path / 'out'}"] if command == "export" else [f"image={tmp_path / 'x.png'}", "question=is it?"]
    with pytest.raises(SystemExit) as exit_:
        main([command, str(run), *extra])
    err = capsys.readouterr().err
    assert not marker.exists(), "the pickled payload ran"
    assert victim.read_text() == "precious\n", "the run config truncated a file"
    assert exit_.value.code == 2 and "is not medft's own" in err and "Traceback" not in err
