"""Nothing is lost, nothing unsafe is loaded, nothing secret is written.

* checkpoint, metrics and prediction files are replaced atomically: a failure during a save
  leaves the previous file whole and no temp file behind;
* checkpoints are loaded with weights_only=True: a pickled payload is refused, not run;
* trust_remote_code is never switched on by medft itself;
* secrets from the environment never reach a file of the run dir (W&B offline included).
"""

import json
import os
import re
from pathlib import Path

import pytest
import torch
import yaml
from medft_testing import REPO, TINY, cache, cli, env_for, medft_train  # noqa: F401 - fixtures

from medft.runs.checkpoint import AtomicCheckpointIO, load_checkpoint
from medft.util.errors import CheckpointError
from medft.util.files import write_json_atomic, write_jsonl_atomic


# -- atomic writes ---------------------------------------------------------------------------
def test_checkpoint_save_is_atomic(tmp_path, monkeypatch):
    io, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, path)
    before = path.read_bytes()

    def killed_mid_write(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 the first bytes of a zip archive")
        raise KeyboardInterrupt  # stands in for the kill: the write never finishes

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "global_step": 2}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temp file left
    assert io.load_checkpoint(path)["global_step"] == 1

    io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "global_step": 3}, path)
    assert io.load_checkpoint(path)["global_step"] == 3


def test_metrics_and_predictions_writes_are_atomic(tmp_path, monkeypatch):
    metrics, predictions = tmp_path / "metrics.json", tmp_path / "predictions.jsonl"
    write_json_atomic(metrics, {"test/acc": 0.5})
    write_jsonl_atomic(predictions, [{"id": "1", "prediction": "yes"}])

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_json_atomic(metrics, {"test/acc": 0.9})
    with pytest.raises(OSError):
        write_jsonl_atomic(predictions, [{"id": "2", "prediction": "no"}])
    monkeypatch.undo()
    assert json.loads(metrics.read_text()) == {"test/acc": 0.5}
    assert predictions.read_text() == '{"id": "1", "prediction": "yes"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "predictions.jsonl"]


# -- weights_only loading --------------------------------------------------------------------
class Payload:
    """What a booby-trapped checkpoint carries: unpickling it runs a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_a_pickled_payload_is_refused_not_run(cli, tmp_path):
    marker, evil = tmp_path / "pwned", tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(evil)
    status, _, err, _ = cli("+tune=layernorm", *TINY, f"ckpt_path={evil}")  # Lightning's load goes through it
    assert status == 2
    assert f"medft: error: checkpoint {evil} holds objects that are not plain weights" in err
    assert not marker.exists(), "the payload ran"


# -- trust_remote_code -----------------------------------------------------------------------
def test_trust_remote_code_is_off_unless_a_config_sets_it():
    import inspect

    from medft.models import blip, image_text
    from medft.models.loading import load_pretrained, model_kwargs

    for path in sorted((REPO / "medft" / "configs" / "model").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text()) or {}
        assert cfg.get("trust_remote_code", False) is False, f"{path.name} switches trust_remote_code on"
    for fn in (blip.build_blip_vqa, image_text.build_image_text, load_pretrained):
        assert inspect.signature(fn).parameters["trust_remote_code"].default is False, fn.__name__
    assert "trust_remote_code" not in model_kwargs("float32", None)
    assert model_kwargs("float32", None, trust_remote_code=True)["trust_remote_code"] is True  # only when asked


# -- secrets ---------------------------------------------------------------------------------
SECRETS = {"WANDB_API_KEY": "wandb-fake-0123456789abcdef0123456789abcdef", "HF_TOKEN": "hf_FakeTokenForMedftTests42"}


@pytest.mark.slow
def test_secrets_from_the_environment_never_reach_the_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    env = env_for(tmp_path, WANDB_MODE="offline", **SECRETS)
    proc = medft_train(
        ["+tune=layernorm", *TINY, "trainer.max_epochs=1", "logger=wandb",
         "+hub_token=${oc.env:HF_TOKEN}", "+note=key ${oc.env:WANDB_API_KEY}", f"hydra.run.dir={run_dir}"],
        env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files), "W&B wrote nothing: the test would prove nothing"
    hparams = yaml.safe_load((run_dir / "csv" / "hparams.yaml").read_text())
    assert hparams["hub_token"] == "***" and hparams["note"] == "key ***"  # logged, but masked
    for path in files:
        data = path.read_bytes()
        for name, value in SECRETS.items():
            assert value.encode() not in data, f"{name} written to {path.relative_to(run_dir)}"
    assert not any(value in proc.stdout + proc.stderr for value in SECRETS.values())
