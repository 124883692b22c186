"""``medft pretrain``: make a pretrained Med-VLM offline, as a Hugging Face checkpoint directory.

    medft pretrain                                   # the embedded recipe: blip_med on demo_source
    medft pretrain out=/ckpt/my_blip trainer.max_epochs=5 model=blip_tiny
    medft train +tune=layernorm model.pretrained=/ckpt/my_blip dataset=demo_ct

Trains ``model`` (from random weights, every parameter: ``tune=full``) on ``dataset`` (the demo
*source* domain by default) exactly as ``medft train`` does, then writes into ``out``:

* the model and processor with ``save_pretrained`` (``model.pretrained=OUT`` loads them as any hub
  checkpoint directory);
* ``pretrain.json``: recipe version, model, dataset, seed, epochs, learning rate, parameter count,
  source test scores, seconds, the sha256 of ``model.safetensors``;
* ``README.md``: a model card saying the same in words.

The training run itself (metrics.json, predictions, logs) stays in the run dir. The result is
a function of the seed and the float path: the recipe fixes torch's threads (``threads: 1``), so the
same command gives the same weights whatever the machine's core count.

The *embedded* model (``model=blip_med``, ``pretrained: embedded``) is this recipe run once per
pretraining seed (``model.pretrain_seed``) into ``$MEDFT_CACHE_DIR/pretrained/blip_med-v<recipe_version>[-seed<N>]`` on first use (see :func:`medft.embedded.ensure_embedded`);
a change of ``recipe_version`` in ``configs/pretrain.yaml`` builds a new one.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from medft.config import CONFIG_DIR, normalize_overrides, register_resolvers, take_config_dirs
from medft.embedded import INFO_FILE, is_built, weights_sha256
from medft.errors import ConfigError, MedftError
from medft.files import write_json_atomic, write_text_atomic
from medft.threads import THREADS_ENV


def save_checkpoint(net: Any, out: Path, info: dict[str, Any]) -> Path:
    """``save_pretrained`` of model and processor, then README.md and pretrain.json (last, with the weights' sha256)."""
    out.mkdir(parents=True, exist_ok=True)
    net.model.save_pretrained(out)
    net.processor.save_pretrained(out)
    info = {**info, "weights_sha256": weights_sha256(out)}  # the draw's identity, quoted by every run fine-tuning it
    write_text_atomic(out / "README.md", model_card(info))
    write_json_atomic(out / INFO_FILE, info)
    return out


def model_card(info: dict[str, Any]) -> str:
    scores = info.get("source_test", {})
    acc = scores.get("test/acc")
    lines = [
        f"# {info['model']} pretrained by medft (recipe v{info['recipe_version']})",
        "",
        f"A BLIP-style VQA model (`BlipForQuestionAnswering`, {info['params']:,} parameters) trained from random",
        f"weights on the synthetic `{info['dataset']}` set (domain `{info['domain']}`: {info['train_samples']:,} "
        f"training questions on {info['image_size']} px images) by `medft pretrain`.",
        "",
        "| recipe | value |",
        "| --- | --- |",
        f"| seed | {info['seed']} |",
        f"| weights sha256 | `{info['weights_sha256'][:12]}` |",
        f"| threads | {info.get('threads') or 'as medft train chooses'} |",
        f"| epochs | {info['epochs']} |",
        f"| optimizer | AdamW, lr {info['lr']:g}, weight decay {info['weight_decay']:g}, {info['scheduler']} schedule |",
        f"| batch size | {info['batch_size']} |",
        f"| training time | {info['seconds']:.0f} s |",
        "",
        f"Source test accuracy: **{acc:.3f}**" + (
            f" (closed {scores.get('test/acc_closed', float('nan')):.3f}, open {scores.get('test/acc_open', float('nan')):.3f})"
            if acc is not None else ""
        ),
        "",
        "Use it as any checkpoint directory: `medft train +tune=layernorm model.pretrained=THIS_DIR` (with the",
        "model config it was made from), or `BlipForQuestionAnswering.from_pretrained(THIS_DIR)`. Synthetic",
        "images only: it knows nothing about real medical images.",
        "",
    ]
    return "\n".join(lines)


def pretrain(cfg: DictConfig) -> dict[str, Any]:
    """Train ``cfg.model`` from random weights with ``tune=full`` and save it to ``cfg.out``."""
    from medft.models import build_model
    from medft.commands.train import train
    from medft.runs.layout import RunDir
    from medft.trained import load_trained_file
    from medft.tuning import apply_tuning, count_parameters

    if not cfg.get("out"):
        raise ConfigError("out= is not set: give the checkpoint directory to write, e.g. out=/ckpt/my_blip")
    out = Path(str(cfg.out)).expanduser()
    if is_built(out):
        raise ConfigError(f"out={out} already holds a pretrained checkpoint: choose a new directory or remove it")
    with open_dict(cfg):
        cfg.model.pretrained = None  # pretraining starts from random weights, whatever the model config says
    from medft.data.sources import load_splits

    if cfg.get("threads"):  # the recipe's float path: the same weights at any core count (medft.threads reads it)
        os.environ[THREADS_ENV] = str(int(cfg.threads))
    started = time.perf_counter()
    train_samples = len(load_splits(cfg.dataset)["train"])  # records only (generates the set on first use)
    metrics = train(cfg)
    seconds = time.perf_counter() - started
    # the run saved every parameter (tune=full; the best validation checkpoint's): put them into a fresh model
    net = build_model(cfg.model)
    tune = OmegaConf.to_container(cfg.tune, resolve=True)
    apply_tuning(net, tune)
    load_trained_file(net, RunDir(cfg.paths.output_dir).trained)
    net.model.requires_grad_(True)
    info = {
        "recipe_version": int(cfg.recipe_version),
        "model": str(cfg.model.name),
        "params": count_parameters(net.model, net.arch["components"])["total"],
        "dataset": str(cfg.dataset.name),
        "domain": str(OmegaConf.select(cfg, "dataset.load.domain", default="source")),
        "image_size": int(cfg.model.image_size),
        "train_samples": train_samples,
        "seed": int(cfg.seed),
        "threads": int(cfg.threads) if cfg.get("threads") else None,
        "epochs": int(cfg.trainer.max_epochs),
        "lr": float(cfg.optim.lr),
        "weight_decay": float(cfg.optim.weight_decay),
        "scheduler": "cosine" if OmegaConf.select(cfg, "scheduler.fn") is not None else "constant",
        "batch_size": int(cfg.data.batch_size),
        "seconds": round(seconds, 1),
        "source_test": {k: float(v) for k, v in metrics.items() if k.startswith("test/")},
        "run_dir": str(cfg.paths.output_dir),
    }
    save_checkpoint(net, out, info)
    acc = info["source_test"].get("test/acc")
    print(f"pretrained {info['model']} in {seconds:.0f} s" + (f", source test accuracy {acc:.3f}" if acc is not None else ""))
    print(f"checkpoint: {out}")
    return info


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="pretrain")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        pretrain(cfg)
    except MedftError as err:  # a mistake the user can fix: one line, no traceback
        print(f"medft: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def main(args: list[str] | None = None) -> None:
    """Entry point of ``medft pretrain`` (Hydra overrides, as ``medft train``)."""
    register_resolvers()
    args = take_config_dirs(sys.argv[1:] if args is None else list(args), "pretrain")
    args = normalize_overrides(args, "pretrain")
    sys.argv = [str(Path(__file__).resolve()), *args]
    _hydra_main()


if __name__ == "__main__":
    main()
