"""Performance features: trained.safetensors, the image-feature cache, eval.closed=rank, bf16-mixed
and gradient checkpointing in every mode, and a smoke run of scripts/bench.py (all on tiny models)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from medft.models.base import Skeleton, model_config
from medft.models.loading import arch_config, build_on_meta
from medft.runs.trained import load_trained_file, read_metadata, save_trained, trained_bytes
from medft.training.module import answer_by_rank
from medft.tuning import apply_tuning
from medft.util.errors import ConfigError
from tests.conftest import tune_cfg
from tests.test_models import build, image

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)
MODES = ["layernorm", "bitfit", "attention", "ffn", "lora", "dora", "ia3", "full"]


def records(n: int = 4) -> list[dict]:
    closed = [{"question": "is there a lesion?", "answer": "yes", "answer_type": "CLOSED"},
              {"question": "what organ is this?", "answer": "left kidney", "answer_type": "OPEN"}]
    return [{"id": i, "image": f"/data/img{i}.png", "pil_image": image(i), **closed[i % 2]} for i in range(n)]


def tuned(mode: str, *overrides: str, **tune):
    net = build("blip_tiny", "seed=0", *overrides)
    apply_tuning(net, tune_cfg(mode, **tune))
    return net


def perturb(net, seed: int = 1) -> None:
    """Stand-in for training: move every trainable parameter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.5)


# -- trained.safetensors -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["layernorm", "lora"])
def test_trained_file_applied_to_a_fresh_base_model_gives_identical_predictions(tmp_path, mode):
    net = tuned(mode)
    perturb(net)
    net.eval()
    batch = net.collate(records())
    expected_loss, expected = net.loss(batch), net.generate(batch, max_new_tokens=4)
    path = save_trained(tmp_path / "trained.safetensors", net, tune_cfg(mode), weights="last")

    fresh = tuned(mode)
    fresh.eval()
    assert not torch.equal(fresh.loss(batch), expected_loss)  # the base model alone differs
    meta = load_trained_file(fresh, path)
    assert meta["tune"]["name"] == mode and meta["model"] == "blip_tiny" and meta["pretrained"] is None
    assert meta["weights"] == "last" and read_metadata(path) == meta
    assert torch.equal(fresh.loss(batch), expected_loss)
    assert fresh.generate(batch, max_new_tokens=4) == expected
    trainable = sum(p.numel() for p in net.model.parameters() if p.requires_grad)
    assert path.stat().st_size < trainable * 4 + 10_000  # the trained tensors and a small header, nothing else


def test_trained_file_of_another_mode_is_refused(tmp_path):
    path = save_trained(tmp_path / "trained.safetensors", tuned("layernorm"), tune_cfg("layernorm"))
    with pytest.raises(ConfigError, match=r"does not match this model \(file tune='layernorm'\).*use the same model"):
        load_trained_file(tuned("bitfit"), path)


def test_layernorm_file_of_full_size_blip_vqa_is_under_1mb():
    """The shipped blip-vqa-base architecture on the meta device: what trained.safetensors would hold."""
    arch = model_config("blip_vqa")["arch"]
    sizes = {}
    for mode in ("layernorm", "full"):
        net = Skeleton(build_on_meta(arch_config("Salesforce/blip-vqa-base")), arch, name="blip_vqa")
        apply_tuning(net, tune_cfg(mode))
        sizes[mode] = trained_bytes(net.model)
    assert sizes["layernorm"] == 153_600 * 4  # 0.61 MB
    assert 1.3e9 < sizes["full"] < 1.6e9  # ~1.44 GB


# -- image-feature cache ------------------------------------------------------------------------
@pytest.mark.parametrize(("mode", "tune", "caches"), [
    ("lora", {"dropout": 0.0}, True),  # (LoRA dropout draws random masks: the two models would differ)
    ("layernorm", {"components": ["text", "decoder"]}, True),
    ("layernorm", {}, False),  # the vision encoder's norms train: no cache
    ("full", {}, False),
])
def test_cache_only_with_a_frozen_vision_encoder_and_losses_identical(mode, tune, caches):
    on, off = tuned(mode, **tune), tuned(mode, "model.cache_image_features=false", **tune)
    perturb(on), perturb(off)  # LoRA's B starts at zero: move it, so that every gradient is non-trivial
    assert on.caching() is caches and off.caching() is False
    batch = on.collate(records())
    for step in range(2):  # the second pass reads the cache
        losses = [net.loss(batch) for net in (on, off)]
        assert torch.equal(losses[0], losses[1]), step
        for loss in losses:
            loss.backward()
    grads = [{n: p.grad for n, p in net.model.named_parameters() if p.requires_grad} for net in (on, off)]
    assert grads[0].keys() == grads[1].keys() and all(torch.equal(grads[0][k], grads[1][k]) for k in grads[0])
    assert on.cache_hits == (4 if caches else 0) and len(on.feature_cache) == (4 if caches else 0)
    on.eval(), off.eval()
    assert on.generate(batch, max_new_tokens=4) == off.generate(batch, max_new_tokens=4)


def test_no_cache_for_augmented_batches_or_images_without_a_path():
    net = tuned("lora")
    batch = net.collate(records())
    assert net.caching(batch)
    assert not net.caching({**batch, "augmented": True})
    assert not net.caching(net.collate([{k: v for k, v in r.items() if k != "image"} for r in records()]))
    with pytest.raises(Exception, match="cache_image_features='sometimes'"):
        build("blip_tiny", "model.cache_image_features=sometimes")


# -- eval.closed=rank ---------------------------------------------------------------------------
def test_rank_picks_the_likelier_candidate_in_one_pass():
    net = tuned("layernorm")
    perturb(net)
    net.eval()
    batch = net.collate(records())
    ranked = net.rank(batch, ("yes", "no"))
    for i in range(4):  # the same choice, candidate by candidate, through the training loss
        one = {k: (v[i:i + 1] if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        nll = {}
        for cand in ("yes", "no"):
            labelled = net.collate([{**records()[i], "answer": cand}])
            one.update({k: labelled[k] for k in ("decoder_input_ids", "decoder_attention_mask", "labels")})
            nll[cand] = float(net.loss(one)) * int((labelled["labels"][0, 1:] != -100).sum())
        assert ranked[i] == min(nll, key=nll.get), (i, nll)
    preds = answer_by_rank(net, batch, ("yes", "no"), {"max_new_tokens": 4})
    assert [preds[0], preds[2]] == [ranked[0], ranked[2]]  # CLOSED rows ranked
    assert [preds[1], preds[3]] == net.generate(batch, max_new_tokens=4)[1::2]  # OPEN rows generated


def test_closed_rank_is_checked_before_training():
    from medft.training.module import MedVLMModule

    with pytest.raises(ConfigError, match="eval.closed='vote'"):
        MedVLMModule(tuned("layernorm"), optim=None, closed="vote")
    with pytest.raises(ConfigError, match="cannot rank answers"):
        MedVLMModule(SimpleNamespace(task="vqa", can_rank=False), optim=None, closed="rank")


# -- bf16-mixed and gradient checkpointing ------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_bf16_autocast_and_gradient_checkpointing_train_every_mode(mode):
    """What trainer.precision=bf16-mixed does on CPU (autocast), with model.gradient_checkpointing=true."""
    net = tuned(mode, "model.gradient_checkpointing=true", "model.cache_image_features=false")
    net.train()
    batch = net.collate(records())
    trainable = [p for p in net.model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    for _ in range(2):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = net.loss(batch)
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert torch.isfinite(loss)
    assert all(not torch.equal(a, p) for a, p in zip(before, trainable) if a.numel() > 1)


def test_bf16_mixed_and_checkpointing_through_medft_train(make_cfg):
    from medft.commands.train import train

    cfg = make_cfg("tune=lora", "trainer.precision=bf16-mixed", "model.gradient_checkpointing=true",
                   "eval.closed=rank")
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    assert metrics["train/steps"] == 3 and 0 < metrics["checkpoint/trained_bytes"] < 100_000
    assert read_metadata(run / "trained.safetensors")["tune"]["name"] == "lora"
    assert "val/acc_closed" in metrics and "test/acc_closed" in metrics
    ranked = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert {r["prediction"] for r in ranked if r["answer_type"] == "CLOSED"} <= {"yes", "no"}  # eval.closed=rank


# -- the bench itself ---------------------------------------------------------------------------
@pytest.mark.slow
def test_bench_smoke(tmp_path):
    proc = subprocess.run(
        [sys.executable, "scripts/bench.py", "--parts", "modes", "--model", "blip_tiny", "--modes", "layernorm", "--no-cache",
         "--steps", "1", "--warmup", "0", "--mem-steps", "1", "--eval-reps", "1", "--batch", "2", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    bench = json.loads((tmp_path / "bench.json").read_text())
    row = bench["modes"]["layernorm"]
    assert {"step_s", "peak_mb", "trainable", "ckpt_bytes", "eval_samples_per_s", "eval_rank_samples_per_s"} <= set(row)
    assert row["trainable"] == 2560 and row["step_s"] > 0 and row["peak_mb"] > 0
    assert bench["reference"]["torch_loop"]["layernorm"]["step_s"] > 0
    assert row["interleaved_loop_step_s"] > 0 and bench["reference"]["peft_ln"]["interleaved_loop_step_s"] > 0
    assert bench["reference"]["peft_ln"]["trainable"] == 2560  # peft trains the same norms
    assert f"wrote {tmp_path / 'bench.json'}" in proc.stdout
    assert "| layernorm | 2,560 |" in (tmp_path / "bench.md").read_text()
