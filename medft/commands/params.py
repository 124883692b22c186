"""``medft params``: trainable parameters of every tune mode, overall and per component.

    medft params model=llava_med                       # the "#Params" table, in seconds, offline
    medft params model=blip_vqa format=json
    medft params model=llava_med model.pretrained=/ckpt/llava-med-hf   # that checkpoint's config.json
    medft params model=llava_med modes=[layernorm,lora] lora_r=16 components=[language]
    medft params model=blip_vqa modes=[layernorm] norm_params=weight      # the norms' gains only
    medft params model=medgemma_4b model.quantization=nf4                  # memory with a 4-bit frozen base

Full-size models (``model.pretrained`` set) are built on the meta device from their architecture
config: no weights are read or allocated and nothing is downloaded (``medft.models.loading.
arch_config`` says where the config comes from). Tiny models (``pretrained: null``) are built as in
training. The counts come from ``apply_tuning`` and ``count_parameters``, the code that makes a
training run's ``params/*`` metrics, so the two always agree.

Each mode's ``memory_gib`` (the ``GiB`` column) is what the parameters hold in a training step at
``model.dtype``: weights, gradients and AdamW state for what trains (:func:`memory_bytes`), with
``model.quantization=nf4|int8`` the frozen Linear weights at bitsandbytes' storage
(:mod:`medft.models.quantization`). Activations are not estimated.
"""

from __future__ import annotations

import json
import sys
import warnings
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from medft.config.overrides import normalize_overrides
from medft.config.resolvers import register_resolvers
from medft.config.search import CONFIG_DIR, available, find_config, take_config_dirs
from medft.tuning import MODE_ORDER
from medft.util.errors import ConfigError, MedftError, user_error


def mode_names(requested: list[str] | None) -> list[str]:
    """The tune modes to count: ``requested``, or every mode in configs/tune/ (``MODE_ORDER`` first)."""
    shipped = available("tune")
    if requested:
        unknown = [m for m in requested if m not in shipped]
        if unknown:
            raise ConfigError(f"modes={list(requested)}: unknown mode(s) {unknown}; choose from {shipped}")
        return list(requested)
    return [m for m in MODE_ORDER if m in shipped] + [m for m in shipped if m not in MODE_ORDER]


def tune_config(
    mode: str, components: list[str] | None, lora_r: int | None, norm_params: str | None = None
) -> dict[str, Any]:
    tune = OmegaConf.to_container(OmegaConf.load(find_config("tune", f"{mode}.yaml")), resolve=True)
    if components:
        tune["components"] = list(components)
    if lora_r is not None and tune.get("select") == "lora":
        tune["r"] = int(lora_r)
    if norm_params is not None and tune.get("select") == "norm":
        tune["norm_params"] = str(norm_params)
    return tune


def skeleton_factory(model_cfg: DictConfig):
    """A function returning a fresh model for each mode: a :class:`medft.models.base.Skeleton` on the
    meta device from the architecture config for full-size models, the real tiny model otherwise."""
    from medft.models import build_model
    from medft.models.base import Skeleton
    from medft.models.loading import arch_config, build_on_meta, torch_dtype

    arch = OmegaConf.to_container(model_cfg.arch, resolve=True)
    pretrained = model_cfg.get("pretrained")
    if pretrained == "embedded":  # medft's own pretrained blip_med: counted on its architecture, never built here
        model_cfg = model_cfg.copy()
        with open_dict(model_cfg):
            model_cfg.pretrained, model_cfg.embedded_dir = None, None
        pretrained = None
    if not pretrained:
        return lambda: build_model(model_cfg)
    config = arch_config(str(pretrained), bool(model_cfg.get("trust_remote_code", False)))
    dtype = torch_dtype(str(model_cfg.get("dtype") or "float32"))  # the byte sizes of medft params' memory figures
    return lambda: Skeleton(build_on_meta(config).to(dtype), arch, name=model_cfg.get("name"), pretrained=pretrained,
                            task=model_cfg.get("task"))


GIB = 2**30


def memory_bytes(model, quantization: str | None = None, quantized: dict[int, int] | None = None) -> dict[str, int]:
    """Bytes a training step holds for the parameters of ``model`` (after its tune mode), at the
    parameters' own dtypes: ``weights`` (every parameter; the frozen Linear weights in ``quantized``,
    ``{id(weight): rows}``, at ``quantization``'s storage), ``gradients`` (one per trained value),
    ``optimizer`` (AdamW's two moments per trained value, in the parameter's dtype, as torch keeps
    them; its per-tensor step counters are host scalars, left out) and their ``total``. Activations
    are left out: they depend on batch size, sequence length (image tokens), attention kernel and
    checkpointing, and only a measured step gives them honestly."""
    from medft.models.quantization import quantized_bytes

    weights = trained = 0
    for param in model.parameters():  # tied weights once
        n, size = param.numel(), param.element_size()
        if quantization and not param.requires_grad and id(param) in (quantized or {}):
            weights += quantized_bytes(quantization, n, quantized[id(param)])
        else:
            weights += n * size
        trained += n * size if param.requires_grad else 0
    out = {"weights": weights, "gradients": trained, "optimizer": 2 * trained}
    out["total"] = sum(out.values())
    return out


def in_gib(memory: dict[str, int]) -> dict[str, float]:
    """Bytes as GiB (2**30 bytes), unrounded: ``format=json`` keeps every byte, the table rounds."""
    return {k: v / GIB for k, v in memory.items()}


def count_modes(
    model_cfg: DictConfig, modes: list[str], components: list[str] | None = None, lora_r: int | None = None,
    norm_params: str | None = None,
) -> dict[str, Any]:
    """``{"model", "pretrained", "total", "modes", "components", "unused", "dtype", "quantization"}``
    for ``model_cfg``; each mode's entry holds ``memory_gib`` (:func:`memory_bytes` in GiB). A mode
    the model cannot have (``prefix`` on BLIP) gets ``{"trainable": None, "unsupported": why}``; one
    that would train quantized weights (``full`` with ``model.quantization``) ``memory_gib: None``
    and ``refused``."""
    from medft.models.quantization import TRAINS_LINEAR_WEIGHTS, check_quantization_config, quantizable_weights, refused_mode
    from medft.tuning import UnsupportedMode, apply_tuning, count_parameters, param_metrics, unused_modules

    quantization = check_quantization_config(model_cfg)  # a known method on a model that can take it
    make = skeleton_factory(model_cfg)
    base = make()
    comps = base.arch["components"]
    base_counts = count_parameters(base.model, comps)
    result: dict[str, Any] = {
        "model": model_cfg.get("name"),
        "pretrained": model_cfg.get("pretrained"),
        "total": base_counts["total"],
        "modes": {},
        "components": {c: {"total": v["total"], "trainable": {}} for c, v in base_counts["components"].items()},
        "unused": unused_modules(base.model, base.arch),  # frozen in every mode
        "dtype": str(model_cfg.get("dtype") or "float32"),
        "quantization": quantization,
    }
    for mode in modes:
        net = make()
        tune = tune_config(mode, components, lora_r, norm_params)
        quantized = quantizable_weights(net.model) if quantization else {}  # before peft wraps the Linears
        try:
            report = apply_tuning(net, tune)
        except UnsupportedMode as err:
            result["modes"][mode] = {"trainable": None, "pct": None, "memory_gib": None, "unsupported": str(err)}
            for comp in result["components"]:
                result["components"][comp]["trainable"][mode] = None
            continue
        counts = count_parameters(net.model, comps)
        entry = {"trainable": counts["trainable"], "pct": param_metrics(counts)["params/trainable_pct"]}
        if quantization and tune["select"] in TRAINS_LINEAR_WEIGHTS:  # the trained weights would be quantized
            entry.update(memory_gib=None, refused=refused_mode(mode, quantization))
        else:
            entry["memory_gib"] = in_gib(memory_bytes(net.model, quantization, quantized))
        if report.modules:
            entry["modules"] = dict(report.modules)
        result["modes"][mode] = entry
        for comp, c in counts["components"].items():
            result["components"][comp]["trainable"][mode] = c["trainable"]
    return result


def format_table(result: dict[str, Any]) -> str:
    """The per-mode table: trainable count and share, then the trainable count of each component."""
    comps = list(result["components"])
    source = f" ({result['pretrained']})" if result.get("pretrained") else " (random weights)"
    storage = result.get("dtype", "") + (f", frozen Linear weights {result['quantization']}" if result.get("quantization") else "")
    lines = [f"{result['model']}{source}: {result['total']:,} parameters; memory in {storage}"]
    header = ["mode", "trainable", "%"] + comps + ["GiB"]
    rows = [header, ["", "", ""] + [f"{result['components'][c]['total']:,}" for c in comps] + [""]]
    for mode, entry in result["modes"].items():
        if entry["trainable"] is None:  # the model cannot have this mode
            rows.append([mode, "-", "-"] + ["-" for _ in comps] + ["-"])
            continue
        per = [f"{result['components'][c]['trainable'][mode]:,}" for c in comps]
        gib = f"{entry['memory_gib']['total']:.2f}" if entry.get("memory_gib") else "-"
        rows.append([mode, f"{entry['trainable']:,}", f"{entry['pct']:.4f}"] + per + [gib])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for k, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if k == 1:
            lines.append("  ".join("-" * w for w in widths))
    for mode, entry in result["modes"].items():
        if entry.get("modules"):
            kinds = ", ".join(f"{n} {kind}" for kind, n in entry["modules"].items())
            lines.append(f"{mode}: trains {kinds} layers")
        if entry.get("unsupported"):
            lines.append(f"{mode}: not available: {entry['unsupported'].removeprefix(f'tune={mode}: ')}")
        if entry.get("refused"):
            lines.append(f"{mode}: refused: {entry['refused']}")
    if result["unused"]:
        lines.append("frozen in every mode (the forward pass never uses them): " + ", ".join(result["unused"]))
    lines.append("GiB: weights + gradients + AdamW's two moments for what trains (memory_gib in format=json); "
                 "activations not included (they depend on batch, image tokens and checkpointing: measure a step)")
    return "\n".join(lines)


def run(cfg: DictConfig) -> dict[str, Any]:
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # peft asks a deprecated name
    fmt = cfg.get("format", "table")
    if fmt not in ("table", "json"):
        raise ConfigError(f"format={fmt!r} is not known; use table or json")
    modes = mode_names(list(cfg.modes) if cfg.get("modes") else None)
    components = list(cfg.components) if cfg.get("components") else None
    result = count_modes(cfg.model, modes, components, cfg.get("lora_r"), cfg.get("norm_params"))
    print(json.dumps(result, indent=2) if fmt == "json" else format_table(result))
    return result


def main(args: list[str] | None = None) -> None:
    """Entry point of ``medft params``: compose configs/params.yaml with the overrides, count, print."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    args = sys.argv[1:] if args is None else list(args)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.strip())
        print("\nmodels: " + ", ".join(available("model")) + "\nmodes: " + ", ".join(mode_names(None)))
        return
    register_resolvers()
    args = normalize_overrides(take_config_dirs(args, "params"), config_name="params")
    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name="params"):
            cfg = compose("params", overrides=args)
        run(cfg)
    except (MedftError, HydraException) as err:
        cause = user_error(err)  # instantiate wraps a builder's MedftError
        message = str(cause or err).strip().splitlines()[0]
        if cause is None and "model/" in message:
            message += f" (models: {', '.join(available('model'))})"
        print(f"medft: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
