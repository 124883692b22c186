"""Full-size architectures (random weights) on one GPU: every tune mode through the medft adapters.

Per (model, mode): trainable count, peak GPU memory and time of a training step (batch 4,
gradient checkpointing but for prefix, which peft runs without), the gradient check (every trainable parameter gets a non-zero gradient),
and a short generation. Run (GPU, transformers 5.23 + peft 0.21.2): PYTHONPATH=. python3 scripts/gpu_modes.py OUT_DIR
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from transformers import BlipForQuestionAnswering, LlavaForConditionalGeneration

from medft.models import blip as blip_mod
from medft.models.base import model_config
from medft.models.image_text import ImageTextVLM
from medft.models.tiny_families import FAMILIES
from medft.models.loading import arch_config, enable_gradient_checkpointing
from medft.tuning import MODE_ORDER, UnsupportedMode, apply_tuning, count_parameters

ROOT = Path(__file__).resolve().parents[1]
MODES = MODE_ORDER


def tune(mode):
    return yaml.safe_load((ROOT / "medft" / "configs" / "tune" / f"{mode}.yaml").read_text())


def arch(name):
    return model_config(name)["arch"]


def records(n=4, size=336):
    rng = np.random.default_rng(0)
    qa = [("Is there a lesion?", "yes"), ("Which organ is shown in this image?", "left kidney"),
          ("How many lesions are there?", "2"), ("Is this an image of the chest?", "no")]
    return [{"id": i, "question": q, "answer": a, "answer_type": "OPEN",
             "pil_image": Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))}
            for i, (q, a) in enumerate(qa[:n])]


def build_llava(checkpointing=True):
    config = arch_config("chaoyinshe/llava-med-v1.5-mistral-7b-hf")
    processor = FAMILIES["llava"].processor({"vision_config": {"patch_size": 14}, "text_config": {"max_position_embeddings": 4096}}, 336)  # offline tokenizer: its ids index the real vocab
    config.image_token_index = processor.tokenizer.convert_tokens_to_ids("<image>")
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlavaForConditionalGeneration(config)
    torch.set_default_dtype(torch.float32)
    if checkpointing:
        enable_gradient_checkpointing(model)
    return ImageTextVLM(model, processor, arch("llava_med"), name="llava_med", max_answer_len=8)


def build_blip(checkpointing=True):
    config = arch_config("Salesforce/blip-vqa-base")
    processor = blip_mod.tiny_processor(384, 32)
    with torch.device("cuda"):
        model = BlipForQuestionAnswering(config)
    if checkpointing:
        enable_gradient_checkpointing(model)
    return blip_mod.BlipVQA(model, processor, arch("blip_vqa"), name="blip_vqa")


def to_cuda(batch):
    return {k: (v.cuda() if torch.is_tensor(v) else v) for k, v in batch.items()}


def run_mode(build, mode, steps=3):
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    net = build(checkpointing=mode != "prefix")  # peft's prefix tuning refuses gradient checkpointing
    report = apply_tuning(net, tune(mode))
    built_s = time.perf_counter() - t0
    counts = count_parameters(net.model, net.arch["components"])
    trainable = {n: p for n, p in net.model.named_parameters() if p.requires_grad}
    net.model.train()
    batch = to_cuda(net.collate(records()))
    opt = torch.optim.AdamW(trainable.values(), lr=1e-5, fused=True) if trainable else None
    nonzero, times, losses = set(), [], []
    for _ in range(steps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        loss = net.loss(batch)
        if opt is not None:
            loss.backward()
            nonzero |= {n for n, p in trainable.items() if p.grad is not None and bool(p.grad.abs().sum() > 0)}
            opt.step()
            opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        losses.append(float(loss))
    net.model.eval()
    answers = net.generate(batch, max_new_tokens=4)
    out = {
        "mode": mode, "total": counts["total"], "trainable": counts["trainable"],
        "pct": 100 * counts["trainable"] / counts["total"], "modules": report.modules,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "step_s": float(np.mean(times[1:])),
        "build_s": built_s, "losses": losses, "grad_check": nonzero == set(trainable),
        "missing_grad": sorted(set(trainable) - nonzero)[:5], "generated": answers[:2],
    }
    del net, opt, batch, trainable
    return out


def main(out_dir):
    out_dir = Path(out_dir)
    results = {}
    for name, build in (("blip_vqa", build_blip), ("llava_med", build_llava)):
        results[name] = []
        for mode in MODES:
            try:
                r = run_mode(build, mode)
            except torch.OutOfMemoryError as err:
                r = {"mode": mode, "error": "OOM: " + str(err).splitlines()[0][:200]}
            except UnsupportedMode as err:  # prefix on BLIP
                r = {"mode": mode, "unsupported": str(err)}
            results[name].append(r)
            print(name, json.dumps(r), flush=True)
            (out_dir / "gpu_modes.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    print(torch.__version__, torch.cuda.get_device_name(0), flush=True)
    main(sys.argv[1])
