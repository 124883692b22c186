"""tune=ia3, dora, prefix and layernorm's norm_params beyond what every mode gets (tests/test_tune_models.py):
prefix tuning is correct with LLaVA's image tokens, refusals come before any model is built, and a
run of each trains, checkpoints only what trained, resumes and is evaluated by `medft eval`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medft.commands.train import train
from medft.config.validate import validate
from medft.runs.trained import load_trained_file, read_metadata
from medft.tuning import UnsupportedMode, apply_tuning, count_parameters
from medft.util.errors import ConfigError
from tests.conftest import FAST, tune_cfg
from tests.test_models import ONE_THREAD, build, image

REPO = Path(__file__).resolve().parents[1]


def llava_records() -> list[dict]:
    """Two questions of different lengths: the generation prompts are left-padded."""
    return [
        {"id": 1, "question": "Is there a lesion?", "answer": "yes", "answer_type": "CLOSED", "pil_image": image(0)},
        {"id": 2, "question": "Which organ is shown in this image of the abdomen?", "answer": "left kidney",
         "answer_type": "OPEN", "pil_image": image(1)},
    ]


@pytest.fixture(scope="module")
def prefixed():
    """llava_tiny with tune=prefix and a prefix moved away from its start, as training would."""
    torch.manual_seed(0)
    net = build("llava_tiny")
    report = apply_tuning(net, tune_cfg("prefix", num_virtual_tokens=4))
    (name,) = report.trainable
    with torch.no_grad():
        dict(net.model.named_parameters())[name].normal_(0.0, 0.1)
    net.model.eval()
    return net


def test_prefix_trains_only_the_language_models_keys_and_values(prefixed):
    (name,) = [n for n, p in prefixed.model.named_parameters() if p.requires_grad]
    text = prefixed.model.get_base_model().config.text_config
    kv = text.num_key_value_heads * text.hidden_size // text.num_attention_heads
    assert name == "prompt_encoder.default.embedding.weight"
    assert dict(prefixed.model.named_parameters())[name].shape == (4, text.num_hidden_layers * 2 * kv)
    counts = count_parameters(prefixed.model, prefixed.arch["components"])
    assert counts["components"]["language"]["trainable"] == counts["trainable"] == 4 * text.num_hidden_layers * 2 * kv
    assert counts["total"] == sum(p.numel() for p in prefixed.model.parameters())


@torch.no_grad()
def test_prefix_sees_the_image_and_changes_the_answer(prefixed):
    batch = prefixed.collate(llava_records())
    loss = prefixed.loss(batch)
    swapped = dict(batch, pixel_values=batch["pixel_values"].flip(0))  # each question with the other image
    assert not torch.allclose(prefixed.loss(swapped), loss)  # the image features still reach the image tokens
    with prefixed.model.disable_adapter():
        assert not torch.allclose(prefixed.loss(batch), loss)  # and the prefix is used
        plain = prefixed.generate(batch, max_new_tokens=6, min_new_tokens=6)
    assert prefixed.generate(batch, max_new_tokens=6, min_new_tokens=6) != plain


@torch.no_grad()
def test_prefix_generation_is_the_argmax_of_the_training_forward(prefixed):
    """Greedy generation with the KV cache (prefix, then prompt with image tokens, then one token a step)
    picks exactly the tokens a full forward pass (as in training) ranks first; batched (left-padded)
    answers equal one-by-one answers."""
    records = llava_records()
    batched = prefixed.generate(prefixed.collate(records), max_new_tokens=6, min_new_tokens=6)
    for record, answer in zip(records, batched):
        batch = prefixed.collate([record])
        prompt = batch["prompt_ids"]
        ids = prefixed.model.generate(
            input_ids=prompt, attention_mask=batch["prompt_attention_mask"], pixel_values=batch["pixel_values"],
            pad_token_id=prefixed.pad_token_id, max_new_tokens=6, min_new_tokens=6, do_sample=False,
        )
        logits = prefixed.model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=batch["pixel_values"]).logits
        assert torch.equal(logits[:, prompt.shape[1] - 1:-1].argmax(-1), ids[:, prompt.shape[1]:])
        assert prefixed.generate(batch, max_new_tokens=6, min_new_tokens=6) == [answer]
    assert len(set(batched)) == 2


def test_prefix_checks_its_config():
    with pytest.raises(ConfigError, match="model.gradient_checkpointing=true .*add model.gradient_checkpointing=false"):
        apply_tuning(build("llava_tiny", "model.gradient_checkpointing=true"), tune_cfg("prefix"))
    with pytest.raises(ConfigError, match=r"language component only, not to tune.components=\['vision'\]"):
        apply_tuning(build("llava_tiny"), tune_cfg("prefix", components=["vision"]))
    with pytest.raises(ConfigError, match="tune.num_virtual_tokens=0 is out of range"):
        apply_tuning(build("llava_tiny"), tune_cfg("prefix", num_virtual_tokens=0))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["tune=prefix"], r"tune=prefix: peft's prefix tuning needs a decoder-only language model .* blip_tiny has none"),
        (["tune=prefix", "model=blip_report_tiny", "dataset=iu_xray"], "blip_report_tiny has none"),
        (["tune=prefix", "model=llava_med"], "add model.gradient_checkpointing=false"),
        (["tune=layernorm", "tune.norm_params=gains"], r"tune.norm_params='gains' is not known; use one of \['both', 'weight', 'bias'\]"),
    ],
)
def test_refused_before_any_model_is_built(make_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(make_cfg(*overrides))


def test_the_cli_refuses_prefix_on_blip_in_one_line(run_cli):
    out = run_cli("train", "+tune=prefix")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "medft: error: tune=prefix: peft's prefix tuning needs a decoder-only language model that takes "
        "past_key_values, and blip_tiny has none (BLIP's question encoder and answer decoder are BERT stacks its "
        "VQA/captioning forward calls internally); use lora, dora, ia3 or layernorm instead"
    ]


RUNS = [  # (model, tune overrides)
    ("blip_tiny", ["tune=ia3"]),
    ("blip_tiny", ["tune=dora"]),
    ("blip_tiny", ["tune=layernorm", "tune.norm_params=bias"]),
    ("llava_tiny", ["tune=ia3"]),
    ("llava_tiny", ["tune=dora"]),
    ("llava_tiny", ["tune=prefix"]),
]


@pytest.mark.parametrize(("model", "tune"), RUNS, ids=lambda v: v if isinstance(v, str) else "-".join(v))
def test_run_saves_only_what_trained_and_resumes(make_cfg, model, tune):
    cfg = make_cfg(f"model={model}", *tune)
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    fresh = build(model)
    apply_tuning(fresh, dict(cfg.tune))
    trainable = {n: p for n, p in fresh.model.named_parameters() if p.requires_grad}
    assert metrics["params/trainable"] == sum(p.numel() for p in trainable.values())
    meta = load_trained_file(fresh, run / "trained.safetensors")  # exactly the trainable keys, or it raises
    assert meta["tune"] == dict(cfg.tune) and read_metadata(run / "trained.safetensors")["model"] == model
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert set(ckpt["state_dict"]) == {f"net.model.{n}" for n in trainable}

    resumed = make_cfg(f"model={model}", *tune, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "trainer.max_epochs=2")
    assert train(resumed)["train/steps"] == 2 * metrics["train/steps"] == 6


@pytest.mark.slow
@pytest.mark.parametrize(("model", "mode"), [("llava_tiny", "prefix")])  # lora: tests/test_report_e2e.py
def test_medft_eval_reproduces_the_runs_predictions(tmp_path, model, mode):
    env = {**os.environ, **ONE_THREAD, "MEDFT_LOG_DIR": str(tmp_path / "logs"), "MEDFT_CACHE_DIR": str(tmp_path / "cache")}

    def medft(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "medft.cli", *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    medft("train", f"model={model}", f"+tune={mode}", "debug=fast", "data.eval_batch_size=16",
          "callbacks.progress_bar.refresh_rate=0")
    (run,) = (tmp_path / "logs" / "runs" / f"{mode}_demo_{model}").iterdir()
    medft("eval", f"ckpt={run}", "dataset=demo", "+trainer.limit_test_batches=2", "data.eval_batch_size=16")
    (out,) = (tmp_path / "logs" / "evals" / "demo").iterdir()
    evaluated = json.loads((out / "metrics.json").read_text())
    assert evaluated["eval/tune"] == mode and evaluated["eval/ckpt"].endswith("trained.safetensors")
    assert (out / "predictions.jsonl").read_text() == (run / "predictions.jsonl").read_text()


def test_prefix_trains_under_bf16_autocast():
    """What trainer.precision=bf16-mixed does on CPU (prefix cannot use gradient checkpointing: refused above)."""
    net = build("llava_tiny")
    apply_tuning(net, tune_cfg("prefix"))
    net.model.train()
    batch = net.collate(llava_records())
    (param,) = [p for p in net.model.parameters() if p.requires_grad]
    before = param.detach().clone()
    opt = torch.optim.AdamW([param], lr=1e-2)
    for _ in range(2):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = net.loss(batch)
        loss.backward()
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert torch.isfinite(loss) and not torch.equal(before, param)


def test_report_keeps_norm_halves_apart_and_orders_the_new_modes(tmp_path):
    """`medft report`: layernorm with tune.norm_params=weight is its own row, never averaged with both."""
    import yaml

    from medft.commands.report import report

    runs = [("full", "both", 0.5), ("layernorm", "weight", 0.3), ("ia3", None, 0.2), ("layernorm", "both", 0.4),
            ("dora", None, 0.25), ("prefix", None, 0.1), ("layernorm", "bias", 0.35)]
    for i, (mode, half, acc) in enumerate(runs):
        run = tmp_path / f"run{i}"
        (run / ".hydra").mkdir(parents=True)
        tune = {"name": mode, **({"norm_params": half} if mode == "layernorm" else {})}
        cfg = {"model": {"name": "blip_tiny"}, "dataset": {"name": "demo"}, "tune": tune}
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
        (run / "metrics.json").write_text(json.dumps({"test/acc": acc, "params/trainable": 10 + i, "params/trainable_pct": 0.1 + i}))
    result = report([tmp_path])
    assert [r["tune"] for r in result["rows"]] == [
        "layernorm", "layernorm:bias", "layernorm:weight", "ia3", "prefix", "dora", "full"]
    pivot = result["markdown"].split("## Tune modes x datasets")[1]
    assert "| layernorm | 3.1 | 0.4 |" in pivot and "| layernorm:weight | 1.1 | 0.3 |" in pivot
    assert result["png"].stat().st_size > 5000
