"""``model.quantization=nf4|int8`` end to end through medft's own code path: ``medft train`` on a
quantized llava_tiny checkpoint, resume from ``last.ckpt``, ``medft eval`` of the run, ``medft export``.

Without a CUDA GPU these run on bitsandbytes' CPU backend (``medft_testing.quantize_here``: the refusal
users get without CUDA is bypassed for these tests only, and is tested in ``test_memory.py``); without
bitsandbytes they skip.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from medft_testing import TINY, cache, medft, quantize_here, train_in_process  # noqa: F401 - fixtures
from safetensors.torch import load_file

# LoRA on a quantized base, deterministic: a constant schedule, so a run stopped after epoch 1 and resumed
# to epoch 2 follows the same steps as one run of 2 epochs.
LORA = ["+tune=lora", *TINY, "scheduler=constant", "trainer.deterministic=true", "model.dtype=bfloat16"]


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, cache):
    """``(tmp dir, llava_tiny checkpoint dir, demo cache)`` with quantization runnable here for the whole module."""
    from test_models import build, save_checkpoint

    with pytest.MonkeyPatch.context() as mp:
        quantize_here(mp)
        tmp = tmp_path_factory.mktemp("quantized")
        yield tmp, save_checkpoint(build("llava_tiny"), tmp / "ckpt"), cache


def base_args(ckpt: Path, method: str) -> list[str]:
    return ["model=llava_tiny", f"model.pretrained={ckpt}", f"model.quantization={method}"]


def run_metrics(run_dir: Path) -> dict:
    """metrics.json less what measures the process (time/*, memory/*, checkpoint/*)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if not k.startswith(("time/", "memory/", "checkpoint/"))}


def last_checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


def plain_counts(mode: str) -> dict:
    """``medft params`` of unquantized llava_tiny: what a quantized run must count too."""
    from test_params_cmd import counts

    return counts("llava_tiny", f"modes=[{mode}]")


@pytest.fixture(scope="module")
def lora_nf4(quantized) -> Path:
    """A lora run on an nf4 base stopped after epoch 1 and resumed with ``resume=RUN_DIR trainer.max_epochs=2``."""
    tmp, ckpt, cache = quantized
    run_dir = tmp / "lora_nf4"
    assert train_in_process([*base_args(ckpt, "nf4"), *LORA, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"], tmp, cache) == 0
    first = last_checkpoint(run_dir)
    assert first["global_step"] == 5
    assert train_in_process([f"resume={run_dir}", "trainer.max_epochs=2"], tmp, cache) == 0
    torch.save(first, tmp / "lora_nf4_epoch1.ckpt")
    return run_dir


@pytest.mark.parametrize("method", ["nf4", "int8"])
def test_lora_on_a_quantized_base_trains_only_lora_and_resumes_as_one_run(quantized, lora_nf4, method):
    """The checkpoint holds only LoRA weights; resumed from last.ckpt after epoch 1 the run ends where one
    uninterrupted 2-epoch run ends, weight for weight; the counts are the unquantized model's."""
    tmp, ckpt, cache = quantized
    resumed = lora_nf4
    if method == "int8":  # int8: the same, stopped and resumed as well
        resumed = tmp / "lora_int8"
        assert train_in_process([*base_args(ckpt, "int8"), *LORA, "trainer.max_epochs=1", f"hydra.run.dir={resumed}"], tmp, cache) == 0
        assert train_in_process([f"resume={resumed}", "trainer.max_epochs=2"], tmp, cache) == 0
    straight = tmp / f"lora_{method}_straight"
    assert train_in_process([*base_args(ckpt, method), *LORA, "trainer.max_epochs=2", f"hydra.run.dir={straight}"], tmp, cache) == 0

    one, two = last_checkpoint(straight), last_checkpoint(resumed)
    assert one["global_step"] == two["global_step"] == 10
    lora = set(one["state_dict"])
    assert lora and all(".lora_A." in k or ".lora_B." in k for k in lora)
    assert set(two["state_dict"]) == lora and all(torch.equal(one["state_dict"][k], two["state_dict"][k]) for k in lora)
    if method == "nf4":  # the second epoch moved the weights the first one saved
        first = torch.load(tmp / "lora_nf4_epoch1.ckpt", weights_only=True)["state_dict"]
        assert any(not torch.equal(first[k], two["state_dict"][k]) for k in lora)
    assert run_metrics(straight) == run_metrics(resumed)
    plain = plain_counts("lora")
    assert run_metrics(resumed)["params/total"] == plain["total"] + plain["modes"]["lora"]["trainable"]  # values, not packed bytes
    assert run_metrics(resumed)["params/trainable"] == plain["modes"]["lora"]["trainable"]


def test_lora_on_nf4_exports_a_peft_adapter_for_the_unquantized_checkpoint(quantized, lora_nf4, medft):
    """format=peft: the adapter loads onto the unquantized checkpoint with the trained LoRA weights;
    format=hf is refused in one line (it would hand on the 4-bit approximation as the model)."""
    from peft import PeftModel
    from transformers import LlavaForConditionalGeneration

    _, ckpt, _ = quantized
    status, _, err = medft("export", str(lora_nf4), "format=hf")
    assert status == 2 and err.strip().splitlines() == [
        f"medft: error: run {lora_nf4.name} trained on a model.quantization=nf4 base: format=hf would write its nf4 "
        "weights, not the model's; export format=peft (lora, layernorm) and apply it to the unquantized checkpoint"]
    out = lora_nf4.parent / "lora_nf4_peft"
    assert medft("export", str(lora_nf4), "format=peft", f"out={out}")[0] == 0
    model = PeftModel.from_pretrained(LlavaForConditionalGeneration.from_pretrained(ckpt), out)
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(ckpt.resolve())
    params, trained = dict(model.named_parameters()), load_file(lora_nf4 / "trained.safetensors")
    assert trained and all(torch.equal(params[k], v) for k, v in trained.items())


def test_layernorm_on_nf4_trains_evaluates_and_exports(quantized, medft):
    """A layernorm run on an nf4 base: trained.safetensors holds the norms only; medft eval rebuilds the
    quantized base, loads them and answers as the run did; format=peft carries them to the unquantized model."""
    from peft import PeftModel
    from transformers import LlavaForConditionalGeneration

    tmp, ckpt, cache = quantized
    run_dir = tmp / "layernorm_nf4"
    args = [*base_args(ckpt, "nf4"), "+tune=layernorm", *TINY, "model.dtype=bfloat16", "trainer.max_epochs=1"]
    assert train_in_process([*args, f"hydra.run.dir={run_dir}"], tmp, cache) == 0
    trained = load_file(run_dir / "trained.safetensors")
    plain = plain_counts("layernorm")
    assert sum(v.numel() for v in trained.values()) == plain["modes"]["layernorm"]["trainable"]
    assert all("norm" in k for k in trained)
    assert run_metrics(run_dir)["params/total"] == plain["total"]

    evaluated = tmp / "layernorm_nf4_eval"
    status, _, err = medft("eval", f"ckpt={run_dir}", "dataset=demo", "+trainer.limit_test_batches=1",
                           "data.eval_batch_size=8", "eval.generate.max_new_tokens=2", f"hydra.run.dir={evaluated}")
    assert status == 0, err[-2000:]
    answers = [json.loads(line)["prediction"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    again = [json.loads(line)["prediction"] for line in (evaluated / "predictions.jsonl").read_text().splitlines()]
    assert again == answers

    out = tmp / "layernorm_nf4_peft"
    assert medft("export", str(run_dir), "format=peft", f"out={out}")[0] == 0
    model = PeftModel.from_pretrained(LlavaForConditionalGeneration.from_pretrained(ckpt), out)
    params = dict(model.named_parameters())
    for key, value in trained.items():
        module, leaf = key.rsplit(".", 1)
        assert torch.equal(params[f"base_model.model.{module}.ln_tuning_layers.default.{leaf}"].to(value.dtype), value)
