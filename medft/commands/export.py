"""``medft export RUN_DIR [out=DIR] format=hf|peft``: a trained run in the ecosystem's formats.

    medft export logs/runs/lora_vqa_rad_blip_tiny/<time> format=hf          # complete model, LoRA merged
    medft export logs/runs/lora_vqa_rad_blip_tiny/<time> format=peft out=lora_adapter

* ``hf``: a Hugging Face model directory (``config.json``, ``model.safetensors``, the processor's
  files): the base weights with what was trained put in (LoRA merged into the weights).
  ``BlipForQuestionAnswering.from_pretrained(DIR)`` / ``LlavaForConditionalGeneration.from_pretrained(DIR)``
  and ``AutoProcessor.from_pretrained(DIR)`` load it without medft.
* ``peft``: a peft adapter directory (``adapter_config.json``, ``adapter_model.safetensors``) for the
  modes that have a peft equivalent: ``lora`` (LoRA) and ``layernorm`` (peft's LN tuning on exactly
  the norm modules medft trained). ``PeftModel.from_pretrained(base, DIR)`` loads it; its
  ``base_model_name_or_path`` is the hub id or directory the run started from, or, for a model built
  from random weights (the tiny models), ``DIR/base``, where the untouched base model is exported.
  Other modes are refused: they change weights peft has no adapter for (use ``format=hf``).

A run trained on a quantized base (``model.quantization=nf4|int8``) is refused with ``format=hf``:
its frozen weights are 4- or 8-bit approximations of the checkpoint's, and merging the trained slice
into them would hand on the approximation as the model. ``format=peft`` writes the trained slice
alone (LoRA, or the norms of ``layernorm``), to apply to the unquantized checkpoint.

Both write a model card (``README.md``): base model, dataset, tune mode, trainable parameters, test
metrics. The run is rebuilt with :func:`medft.training.pipeline.load_run_model` (the same path as ``medft eval``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from medft.runs.layout import RunDir
from medft.runs.trust import read_run_config
from medft.training.pipeline import load_run_model, parse_run_args, resolve_run
from medft.util.errors import ConfigError
from medft.util.safe_load import load_json

FORMATS = ("hf", "peft")
PEFT_MODES = ("lora", "layernorm")


def _run_tune_name(run_dir: Path) -> str:
    cfg = read_run_config(run_dir)
    return str((cfg.get("tune") or {}).get("name", ""))


def _run_quantization(run_dir: Path) -> str | None:
    cfg = read_run_config(run_dir)  # bounded, as data (medft.runs.trust)
    return (cfg.get("model") or {}).get("quantization")


def export(run: str | Path, fmt: str = "hf", out: str | Path | None = None) -> Path:
    """Export the run in ``fmt`` to ``out`` (default ``RUN_DIR/export_<fmt>``); returns ``out``."""
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r} is not known: use hf (a complete model) or peft (an adapter)")
    run_dir, _ = resolve_run(run)
    mode = _run_tune_name(run_dir)
    quantization = _run_quantization(run_dir)
    if fmt == "hf" and quantization:
        raise ConfigError(
            f"run {run_dir.name} trained on a model.quantization={quantization} base: format=hf would write its "
            f"{quantization} weights, not the model's; export format=peft (lora, layernorm) and apply it to the "
            "unquantized checkpoint"
        )
    if fmt == "peft" and mode not in PEFT_MODES:
        raise ConfigError(f"tune={mode} has no peft adapter format (peft covers {', '.join(PEFT_MODES)}): "
                          f"export it with format=hf (a complete model)")
    out = Path(out).expanduser() if out else RunDir(run_dir).export_dir(fmt)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"out={out} exists and is not empty: give another out=DIR or remove it")
    loaded = load_run_model(run_dir, keep_original=fmt == "peft")
    net = loaded["net"]
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "hf":
        model = net.merged_model()
        model.save_pretrained(out)
        net.processor.save_pretrained(out)
        base = None
    else:
        base = _export_peft(net, loaded, out)
    write_model_card(out, loaded, fmt, base)
    return out


def _base_reference(net: Any, out: Path) -> tuple[str, bool]:
    """What ``adapter_config.json`` names as base: the run's hub id / directory, or ``out/base`` (to write)."""
    pretrained = net.pretrained
    if net.pretrained_dir:  # medft's own pretrained model: the cached checkpoint of the draw it was built from
        return str(Path(net.pretrained_dir).resolve()), False
    if pretrained:
        path = Path(str(pretrained)).expanduser()
        return (str(path.resolve()) if path.is_dir() else str(pretrained)), False
    return str((out / "base").resolve()), True


def _export_peft(net: Any, loaded: dict[str, Any], out: Path) -> str:
    import torch

    mode = loaded["report"].mode
    base_ref, write_base = _base_reference(net, out)
    if mode == "lora":
        peft_model = net.model
        peft_model.peft_config["default"].base_model_name_or_path = base_ref
        peft_model.save_pretrained(out)
        if write_base:
            base = peft_model.unload()  # the frozen base weights, adapters removed (not merged)
            base.save_pretrained(out / "base")
            net.processor.save_pretrained(out / "base")
        return base_ref
    # layernorm: peft LN tuning on exactly the norm modules medft trained
    from peft import LNTuningConfig, get_peft_model

    model = net.model
    trained = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    modules = sorted({k.rsplit(".", 1)[0] for k in trained})
    params = dict(model.named_parameters())
    with torch.no_grad():  # back to the base weights: the trained values go into the adapter
        for key, value in loaded["original"].items():
            params[key].copy_(value)
    if write_base:
        model.save_pretrained(out / "base")
        net.processor.save_pretrained(out / "base")
    model.requires_grad_(False)
    peft_model = get_peft_model(model, LNTuningConfig(target_modules=modules))
    peft_model.peft_config["default"].base_model_name_or_path = base_ref
    adapter_params = dict(peft_model.named_parameters())
    with torch.no_grad():
        for key, value in trained.items():
            module, leaf = key.rsplit(".", 1)
            adapter_params[f"base_model.model.{module}.ln_tuning_layers.default.{leaf}"].copy_(value)
    peft_model.save_pretrained(out)
    return base_ref


def write_model_card(out: Path, loaded: dict[str, Any], fmt: str, base: str | None) -> Path:
    run_dir = loaded["run_dir"]
    model_cfg = loaded["model_cfg"]
    metrics_file = RunDir(run_dir).metrics
    metrics = load_json(metrics_file) if metrics_file.is_file() else {}
    metrics = metrics if isinstance(metrics, dict) else {}
    cfg = read_run_config(run_dir)
    dataset = (cfg.get("dataset") or {}).get("name", "?")
    net = loaded["net"]
    cls = type(net.base_model()).__name__
    tested = {k: v for k, v in metrics.items() if k.startswith("test/") and isinstance(v, (int, float))}
    lines = [
        f"# {model_cfg.get('name', 'model')} fine-tuned with medft (tune={loaded['report'].mode})", "",
        f"- base model: {net.pretrained or 'random weights from medft model config ' + str(model_cfg.get('name'))}",
        f"- architecture: `{cls}`",
        f"- dataset: {dataset}",
        f"- tune mode: {loaded['report'].mode} ({json.dumps(loaded['tune'], sort_keys=True)})",
        f"- trainable parameters: {metrics.get('params/trainable', '?'):,} of {metrics.get('params/total', '?'):,}"
        if isinstance(metrics.get("params/trainable"), int) and isinstance(metrics.get("params/total"), int)
        else f"- trainable parameters: {metrics.get('params/trainable', '?')}",
        f"- scoring: eval.protocol={metrics.get('eval/protocol', 'exact')}",
        f"- exported from: {run_dir.name} ({loaded['ckpt_file'].name}), format={fmt}", "",
        "## Test metrics", "",
        "| metric | value |", "|---|---|",
        *[f"| {k} | {v:.4f} |" for k, v in sorted(tested.items())], "",
        "## Loading", "",
    ]
    if fmt == "hf":
        lines += ["```python", "from transformers import AutoProcessor, " + cls,
                  f"model = {cls}.from_pretrained(DIR)", "processor = AutoProcessor.from_pretrained(DIR)", "```"]
    else:
        lines += ["```python", "from peft import PeftModel", "from transformers import " + cls,
                  f"base = {cls}.from_pretrained({base!r})", "model = PeftModel.from_pretrained(base, DIR)", "```",
                  "", "If the directory moved, load the base from its `base/` folder." if base and base.endswith("/base") else ""]
    path = out / "README.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path


def main(args: list[str] | None = None) -> None:
    args = sys.argv[1:] if args is None else list(args)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return
    run, opts = parse_run_args(args, "export", ("format", "out"))
    out = export(run, opts.get("format", "hf"), opts.get("out"))
    print(f"exported {run} (format={opts.get('format', 'hf')}) to {out}")
