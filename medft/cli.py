"""``medft``: one command per experiment step. ``medft --help`` lists the subcommands."""

from __future__ import annotations

import importlib
import sys

from medft.util.errors import MedftError

# subcommand -> one-line description; its code is the module medft.commands.<subcommand> (a main(args))
COMMANDS: dict[str, str] = {
    "train": "train and test a model with a tune mode (Hydra overrides; -m for sweeps)",
    "pretrain": "pretrain a small Med-VLM offline on the demo source domain; writes a HF checkpoint dir",
    "report": "the results report: every run under run / multirun dirs as tables and a plot (results.csv/.md/.png)",
    "params": "trainable parameters of every tune mode, per component (no weights loaded)",
    "data": "check a dataset root: samples, CLOSED/OPEN, images, missing images per split",
    "eval": "evaluate a trained run (ckpt=RUN_DIR) on a dataset; writes its own run dir",
    "export": "export a run as a Hugging Face model (format=hf) or a peft adapter (format=peft)",
    "ask": "answer questions about an image with a trained run (image=PATH question=...)",
}

# a command's mode that is a module of its own: ``medft eval rescore=RUN`` scores predictions.jsonl again
# (no model, no dataset): medft.commands.rescore
MODES: dict[tuple[str, str], str] = {("eval", "rescore="): "rescore"}

USAGE = """usage: medft <command> [overrides...]

Parameter-efficient fine-tuning experiments for medical vision-language models.

commands:
{commands}

examples:
  medft train +tune=layernorm                       train only the normalization layers
  medft train -m tune=layernorm,ffn,attention,lora,full
  medft train +tune=lora dataset=vqa_rad dataset.root=/data/vqa_rad
  medft train --help                                Hydra's help: config groups and options
  medft pretrain out=/ckpt/blip_med                 pretrain the embedded Med-VLM recipe into a checkpoint dir
  medft params model=llava_med                      the #Params table of every tune mode
  medft data dataset=slake dataset.root=/data/Slake1.0 format=json
  medft eval ckpt=logs/runs/layernorm_vqa_rad_blip_tiny/<time> dataset=slake dataset.root=/data/Slake1.0
  medft eval rescore=logs/runs/lora_vqa_rad_llava_tiny/<time> eval.protocol=llava_med
  medft export logs/runs/lora_vqa_rad_blip_tiny/<time> format=peft out=adapter
  medft ask logs/runs/lora_vqa_rad_blip_tiny/<time> image=chest.png question="is there a lesion?"
"""


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {desc}" for name, desc in COMMANDS.items()]
    return USAGE.format(commands="\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        raise SystemExit(0 if argv else 2)
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"medft: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        raise SystemExit(2)
    from medft.util.threads import set_wait_policy

    set_wait_policy()  # before torch loads: idle OpenMP threads sleep instead of spinning
    mode = next((m for (command, prefix), m in MODES.items() if command == name and any(a.startswith(prefix) for a in rest)), name)
    module = importlib.import_module(f"medft.commands.{mode}")
    sys.argv = [f"medft {name}", *rest]
    try:
        module.main(rest)
    except MedftError as err:  # a mistake the user can fix: one line, no traceback
        print(f"medft: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
