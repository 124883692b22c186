"""Trust boundaries, second pass (issue 21): a run dir from someone else runs no code and leaks no
secret, whatever command touches it. Each crafted dir of the issue is built here and must be
refused in one line (or handled) with nothing run: a marker file a payload would create stays absent.

* overrides.yaml entries Hydra would act on (``--experimental-rerun`` pickle, ``+x@_global_=../..``,
  ``--cfg``, ``-m``, ``--config-dir``) through resume, resume=auto, eval, export, ask and report;
* resolvers in a run's config.yaml (``${oc.env:..}``, ``${medft_claim:..}``): never evaluated;
* a YAML bomb, a 50 MB config, a metrics.json nested 100,000 deep: refused well under a second;
* a second process on a run dir refused before Hydra rewrites its .hydra/; a stale lock reads as
  ``incomplete``.
"""

import json
import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from medft_testing import TINY, cache, cli, medft  # noqa: F401 - fixtures
from test_trust import Payload, fake_run

from medft.util.safe_load import UnsafeFile, load_json, load_yaml


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("medft: error: "), err
    return lines[0]


def crafted_overrides(tmp_path: Path, run: Path) -> dict[str, tuple[str, Path]]:
    """The issue's entries, each with the marker file it would create if Hydra acted on it."""
    pickle_marker = tmp_path / "pwned_pickle"
    (run / ".hydra" / "config.pickle").write_bytes(pickle.dumps(Payload(pickle_marker)))
    evil_marker = tmp_path / "pwned_yaml"
    evil = tmp_path / "evil"
    evil.mkdir(exist_ok=True)
    (evil / "x.yaml").write_text(yaml.safe_dump(
        {"callbacks": {"evil": {"_target_": "builtins.open", "_args_": [str(evil_marker), "w"]}}}))
    climb = "../" * 12 + str(evil / "x").lstrip("/")
    return {
        "rerun": (f"--experimental-rerun={run / '.hydra' / 'config.pickle'}", pickle_marker),
        "package": (f"+logger@_global_={climb}", evil_marker),
        "cfg": ("--cfg", None),
        "multirun": ("-m", None),
        "config_dir": (f"--config-dir={evil}", evil_marker),
    }


@pytest.mark.parametrize("case", ["rerun", "package", "cfg", "multirun", "config_dir"])
def test_resume_refuses_each_crafted_override_and_runs_nothing(cli, tmp_path, case):
    run = fake_run(tmp_path / "run", {"name": "blip_tiny"})
    entry, marker = crafted_overrides(tmp_path, run)[case]
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["+tune=layernorm", *TINY, entry]))
    before = (run / ".hydra" / "overrides.yaml").read_bytes()
    status, out, err, _ = cli(f"resume={run}")
    line = one_line(err)
    assert status == 2 and "overrides.yaml" in line and "refused, a run dir brings data only" in line
    assert marker is None or not marker.exists(), "the crafted override ran"
    assert (run / ".hydra" / "overrides.yaml").read_bytes() == before
    assert not (run / "metrics.json").exists() and "Traceback" not in out + err


def test_every_command_that_reads_a_run_dir_refuses_the_same_crafted_dir(medft, cli, tmp_path):
    from medft.commands.report import report

    run = fake_run(tmp_path / "sweep" / "run", {"name": "blip_tiny"})
    entry, marker = crafted_overrides(tmp_path, run)["rerun"]
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["+tune=layernorm", entry]))
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    for args in (["eval", f"ckpt={run}", "dataset=demo", f"hydra.run.dir={tmp_path / 'eval'}"],
                 ["export", str(run), "format=hf", f"out={tmp_path / 'out'}"],
                 ["ask", str(run), f"image={image}", "question=what?"],
                 ["eval", f"rescore={run}"]):
        (run / "predictions.jsonl").write_text('{"answer": "yes", "prediction": "yes"}\n')
        status, out, err = medft(*args)
        assert status == 2 and "'--experimental-rerun=" in one_line(err) and "is not a key=value override" in err, args
    status, _, err, _ = cli("+tune=layernorm", "resume=auto", run_dir=run)
    assert status == 2 and "is not a key=value override" in one_line(err)
    row = report([tmp_path / "sweep"])["rows"][0]
    assert row["status"] == "incomplete" and "is not a key=value override" in row["error"]  # listed, never replayed
    assert not marker.exists() and not (tmp_path / "out").exists()


# -- resolvers in a run's config: never evaluated ------------------------------------------------
def test_a_secret_named_by_a_resolver_never_leaves_the_environment(medft, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_leaked_token_123")
    monkeypatch.setenv("MY_PASSWORD", "pw_leaked_456")
    tune = {"name": "layernorm", "select": "norm", "lr": "${oc.env:HF_TOKEN}", "components": None}
    run = fake_run(tmp_path / "runs" / "a", {"name": "blip_tiny"}, tune=tune)
    status, out, err = medft("export", str(run), "format=hf", f"out={tmp_path / 'out'}")
    assert status == 2 and "tune.lr calls ${oc.env:...}: refused" in one_line(err)
    run = fake_run(tmp_path / "runs" / "b", {"name": "blip_tiny", "pretrained": "${oc.env:MY_PASSWORD}"})
    status, out2, err2 = medft("eval", f"ckpt={run}", "dataset=demo", f"hydra.run.dir={tmp_path / 'logs' / 'ev'}")
    assert status == 2 and "model.pretrained calls ${oc.env:...}: refused" in one_line(err2)
    written = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".ckpt")
    for secret in ("hf_leaked_token_123", "pw_leaked_456"):
        assert secret not in out + err + out2 + err2 + written


def test_resolvers_elsewhere_in_a_run_config_stay_literal(tmp_path, monkeypatch):
    """A resolver in a key medft does not use (or one the model's values point to) is text, never
    called: ${medft_claim:DIR} creates no directory, ${oc.env:X} reads nothing."""
    from omegaconf import OmegaConf

    from medft.config.resolvers import register_resolvers
    from medft.runs.trust import read_run_config

    register_resolvers()
    monkeypatch.setenv("MY_PASSWORD", "pw_leaked_456")
    claimed = tmp_path / "claimed"
    run = fake_run(tmp_path / "run", {"name": "blip_tiny", "pretrained": "${oc.select:local.x}"})
    cfg = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    cfg.update({"local": {"x": "${oc.env:MY_PASSWORD}"}, "extra": f"${{medft_claim:{claimed}}}",
                "eval": {"generate": {"max_new_tokens": f"${{medft_claim:{claimed}}}"}}})
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    resolved = OmegaConf.to_container(OmegaConf.create(read_run_config(run)), resolve=True)
    assert "pw_leaked_456" not in json.dumps(resolved)
    assert resolved["model"]["pretrained"] == "$\\{oc.env:MY_PASSWORD}"  # literal text
    from medft.commands.ask import run_generate_kwargs

    run_generate_kwargs(run, "vqa")
    assert not claimed.exists(), "a resolver of the run dir created a directory"


# -- size, depth and alias limits ----------------------------------------------------------------
def yaml_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_a_yaml_bomb_a_huge_config_and_deep_json_are_refused_fast(medft, tmp_path):
    run = fake_run(tmp_path / "run", {"name": "blip_tiny"})
    config = run / ".hydra" / "config.yaml"
    config.write_text(config.read_text() + yaml_bomb())
    started = time.perf_counter()
    status, _, err = medft("eval", f"ckpt={run}", "dataset=demo", f"hydra.run.dir={tmp_path / 'ev'}")
    assert status == 2 and "YAML alias *a0 is refused" in one_line(err)
    for command in (["ask", str(run), "image=x.png", "question=q"], ["export", str(run)]):
        status, _, err = medft(*command)
        assert status == 2 and "YAML alias" in one_line(err), command
    assert time.perf_counter() - started < 20  # three commands (the issue: > 60 s each); the parse itself below

    big = tmp_path / "big.yaml"
    with open(big, "w") as fh:
        fh.write("model: {name: blip_tiny}\npad:\n")
        fh.write("  - xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n" * 1_000_000)  # 50 MB
    deep = tmp_path / "metrics.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("- " + yaml_bomb().replace("\n", "\n  ").replace("a0", "x0", 1))
    wide = tmp_path / "wide.yaml"  # under 1 MB, but 180,000 nodes: seconds to build
    wide.write_text(yaml.safe_dump({f"k{i}": {"a": i, "b": "x" * 20, "c": [1, 2, 3]} for i in range(14000)}))
    for path, load, message in ((big, load_yaml, "bytes, over the"), (deep, load_json, "nested deeper than 64"),
                                (wide, load_yaml, "holds more than 20,000 YAML nodes"),
                                (overrides, load_yaml, "nested deeper than|YAML alias|not valid YAML"),
                                (tmp_path / "bomb.yaml", load_yaml, "YAML alias")):
        if path.name == "bomb.yaml":
            path.write_text(yaml_bomb())
        started = time.perf_counter()
        with pytest.raises(UnsafeFile, match=message):
            load(path)
        assert time.perf_counter() - started < 1.0, path


def test_report_lists_bombs_and_odd_metrics_in_one_row_each(tmp_path):
    from medft.commands.report import report

    good = fake_run(tmp_path / "sweep" / "good", {"name": "blip_tiny"})
    # medft's own note in words (which rule typed the answers) is neither a column nor an error
    (good / "metrics.json").write_text(json.dumps({"test/acc": 0.5, "params/trainable": 10, "data/answer_types": "yes/no"}))
    bomb = fake_run(tmp_path / "sweep" / "bomb", {"name": "blip_tiny"})
    (bomb / ".hydra" / "overrides.yaml").write_text(yaml_bomb())
    deep = fake_run(tmp_path / "sweep" / "deep", {"name": "blip_tiny"})
    (deep / "metrics.json").write_text("[" * 100_000 + "]" * 100_000)
    odd = fake_run(tmp_path / "sweep" / "odd", {"name": "blip_tiny"})
    (odd / "metrics.json").write_text(json.dumps({"test/acc": "high", "test/acc_open": [1], "test/acc_closed": 0.7}))
    started = time.perf_counter()
    result = report([tmp_path / "sweep"])
    assert time.perf_counter() - started < 30
    rows = {Path(r["run"]).name: r for r in result["rows"]}
    assert rows["good"]["status"] == "ok" and rows["good"]["test/acc"] == 0.5
    assert rows["good"]["error"] == "" and "data/answer_types" not in rows["good"]
    assert rows["bomb"]["status"] == "incomplete" and "YAML alias" in rows["bomb"]["error"]  # listed, overrides unused
    assert rows["deep"]["status"] == "unreadable" and "nested deeper than 64" in rows["deep"]["error"]
    assert rows["odd"]["status"] == "ok" and rows["odd"]["test/acc_closed"] == 0.7 and "test/acc" not in rows["odd"]
    assert "2 value(s) not numbers, ignored: test/acc, test/acc_open" in rows["odd"]["error"]
    assert result["md"].is_file()


# -- one writer per run dir: locked before Hydra writes --------------------------------------------
def test_a_second_resume_auto_is_refused_before_hydra_rewrites_the_run(cli, tmp_path):
    run = fake_run(tmp_path / "run", {"name": "blip_tiny"}, overrides=["+tune=layernorm", *TINY])
    (run / "metrics.json").write_text(json.dumps({"test/acc": 0.5}))
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".medft.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid}))
        before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
        status, _, err, _ = cli("+tune=ffn", "resume=auto", run_dir=run)
    finally:
        holder.kill()
        holder.wait()
    assert status == 2 and f"is in use by process {holder.pid}" in one_line(err)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # lora did not become ffn


def test_a_stale_lock_of_a_dead_process_reads_as_incomplete(tmp_path):
    from medft.commands.report import report
    from medft.runs.trust import write_status

    run = fake_run(tmp_path / "sweep" / "killed", {"name": "blip_tiny"})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_status(run, "running")
    (run / ".medft.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    row = report([tmp_path / "sweep"])["rows"][0]
    assert row["status"] == "incomplete" and "killed while running" in row["error"]
    (run / ".medft.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    assert report([tmp_path / "sweep"])["rows"][0]["status"] == "running"


# -- wrong answers and tracebacks that should be one line -------------------------------------------
def test_status_json_masks_a_secret_as_error_txt_does(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("MY_PASSWORD", "pw_leaked_456")
    status, _, err, run = cli("+tune=layernorm", "dataset=vqa_rad", f"dataset.root={tmp_path}/no/pw_leaked_456")
    assert status == 2  # the terminal shows what the user typed; the run dir keeps it masked
    assert "pw_leaked_456" not in (run / "error.txt").read_text()
    assert json.loads((run / "status.json").read_text())["state"] == "failed"
    assert "pw_leaked_456" not in (run / "status.json").read_text() and "***" in (run / "status.json").read_text()


def test_a_full_disk_before_the_first_checkpoint_does_not_advise_resume(cli, monkeypatch):
    import medft.runs.checkpoint

    def disk_full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 2070592 vs 2070480")

    monkeypatch.setattr(medft.runs.checkpoint.torch, "save", disk_full)
    status, _, err, run = cli("+tune=layernorm", *TINY, "trainer.max_epochs=1")
    line = one_line(err)
    assert status == 2 and "no space left on the device" in line and not (run / "checkpoints" / "last.ckpt").exists()
    assert "resume=" not in line and "there is nothing to resume" in line


def test_an_unwritable_log_dir_is_one_line(medft, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MEDFT_LOG_DIR", str(blocker / "logs"))  # as a read-only disk: mkdir fails
    status, _, err = medft("train", "+tune=layernorm")
    assert status == 2 and "cannot be created" in one_line(err) and "point MEDFT_LOG_DIR" in err


def test_a_pickled_pytorch_model_bin_is_refused_in_one_line_and_not_run(tmp_path):
    import torch
    from transformers import BlipConfig, BlipForQuestionAnswering, BlipProcessor

    from medft.models.loading import load_pretrained
    from medft.util.errors import ConfigError

    small = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 37}
    BlipConfig(text_config={**small, "vocab_size": 100},
               vision_config={**small, "image_size": 32, "patch_size": 16}).save_pretrained(tmp_path / "ckpt")
    marker = tmp_path / "pwned"
    torch.save({"weight": Payload(marker)}, tmp_path / "ckpt" / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="pytorch_model.bin holds pickled objects, not plain weights, and was not loaded"):
        load_pretrained(BlipForQuestionAnswering, BlipProcessor, str(tmp_path / "ckpt"))
    assert not marker.exists()


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe{\"answer\": 1}\n", "is not UTF-8 text"),
    (b'["answer", "prediction"]\n', ":1 is a JSON list, not an object"),
    (b"[" * 100_000 + b"\n", ":1: nested deeper than 64 levels"),
])
def test_rescore_of_a_damaged_predictions_file_is_one_line(medft, tmp_path, content, message):
    run = tmp_path / "run"
    run.mkdir()
    (run / "predictions.jsonl").write_bytes(content)
    status, out, err = medft("eval", f"rescore={run}")
    assert status == 2 and message in one_line(err) and "Traceback" not in out + err
