"""What trains: the one module in medft that sets ``requires_grad``.

A tune mode is data (``configs/tune/<mode>.yaml``): ``select`` names what trains, ``components``
optionally restricts it to some of the model's components (``vision``, ``text``, ``decoder``).
Modules are selected by type, never by name substring: BLIP's BERT blocks keep a ``LayerNorm``
inside ``attention.output`` and ``output``, and neither ``ffn`` nor ``attention`` may include it.

    select      trains
    all         every parameter (``full``)
    norm        weight and bias of every normalization layer (LayerNorm, RMSNorm-style, ...);
                ``norm_params``: ``both`` (default), ``weight`` (the gains only) or ``bias`` (the shifts)
    ffn         the Linear layers of feed-forward blocks (model config ``arch.ffn`` types)
    attention   the Linear q/k/v/output projections of self- and cross-attention (``arch.attention``)
    bias        every bias (BitFit)
    lora        peft LoRA adapters on ``target_modules`` (default ``arch.lora_targets``: a list of
                Linear names, or ``{component: [names]}`` to place them in some components only);
                ``use_dora: true`` makes them DoRA (``tune=dora``)
    ia3         peft (IA)^3 vectors on ``target_modules`` (default ``arch.ia3_targets``): each scales
                its Linear's output, or its input for the ``feedforward_modules`` among them (default
                ``arch.ia3_feedforward``). A target name is a Linear's last name part (``k_proj``)
                or ``ParentClass.name`` (``BlipTextOutput.dense``: the FFN's, not attention's, dense)
    prefix      peft prefix tuning: ``num_virtual_tokens`` learned keys and values in front of every
                layer of the language model named by ``arch.prefix`` (the component they belong
                to); a model without it (BLIP) is refused
    none        nothing (zero-shot evaluation)

Adapters (lora, dora, ia3) wrap Linear layers only, never inside ``arch.no_adapters`` (Qwen-VL's
Conv3d patch embedding). Parameters the forward pass never uses (``unused_modules``: LLaVA's vision
layers after ``vision_feature_layer`` and the tower's final norm) stay frozen in every mode, so the
trainable counts (``params/*``, ``medft params``) hold only parameters that can learn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from medft.util.errors import ConfigError

if TYPE_CHECKING:  # torch where modules are handled: `medft report` / `medft params` read MODE_ORDER first
    from torch import nn

    from medft.models.base import MedVLM

SELECTORS = ("all", "norm", "ffn", "attention", "bias", "lora", "ia3", "prefix", "none")
# The shipped tune modes (configs/tune/), from nothing trained to everything: the one order of
# `medft params`, `medft report` (rows, plot colours), `make sweep`, scripts/ and the tests.
MODE_ORDER = ("frozen", "layernorm", "bitfit", "ia3", "prefix", "lora", "dora", "attention", "ffn", "full")
NORM_PARAMS = ("both", "weight", "bias")
PEFT_PREFIX = "base_model.model."  # what peft puts in front of the wrapped model's names


def norm_kind(module: nn.Module) -> str | None:
    """``"layernorm"``, ``"rmsnorm"``, ``"norm"`` (group/batch norm) or None for other modules."""
    from torch import nn

    name = type(module).__name__
    if isinstance(module, nn.RMSNorm) or name.endswith("RMSNorm"):
        return "rmsnorm"
    if isinstance(module, nn.LayerNorm) or name.endswith("LayerNorm"):
        return "layernorm"
    if isinstance(module, (nn.GroupNorm, nn.modules.batchnorm._BatchNorm)):
        return "norm"
    return None


def base_name(name: str) -> str:
    """A parameter or module name without peft's wrapper prefix."""
    return name[len(PEFT_PREFIX):] if name.startswith(PEFT_PREFIX) else name


def under(name: str, prefixes: str | Iterable[str]) -> bool:
    """True if the module or parameter ``name`` is one of ``prefixes`` or lies inside one."""
    name = base_name(name)
    prefixes = [prefixes] if isinstance(prefixes, str) else prefixes
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def component_of(name: str, components: dict[str, str | list[str]]) -> str | None:
    """The component (e.g. ``vision``) whose module prefix (or one of its prefixes) ``name`` lies under;
    the longest prefix wins (Qwen-VL's projector ``model.visual.merger`` lies inside ``model.visual``)."""
    best, length = None, -1
    for comp, prefixes in components.items():
        for prefix in [prefixes] if isinstance(prefixes, str) else prefixes:
            if under(name, prefix) and len(prefix) > length:
                best, length = comp, len(prefix)
    return best


def unused_modules(model: nn.Module, arch: dict[str, Any]) -> list[str]:
    """Names of modules whose output the forward pass discards, so they can never get a gradient.

    ``arch.never_trained`` lists such modules outright. LLaVA-style models take image features from
    the vision hidden state ``config.vision_feature_layer`` (-2 for LLaVA-Med): the layers of
    ``arch.vision_layers`` after it, and ``arch.vision_head`` (the tower's final norm), are unused.
    """
    names = list(arch.get("never_trained") or [])
    from medft.models.base import vision_feature_layer

    feature_layer = vision_feature_layer(model)
    if arch.get("vision_layers") and feature_layer is not None:
        n = len(model.get_submodule(arch["vision_layers"]))
        selected = [feature_layer] if isinstance(feature_layer, int) else list(feature_layer)
        last = max(i % (n + 1) for i in selected)  # hidden_states[k] = output of layer k-1; [0] = embeddings
        names += [f"{arch['vision_layers']}.{k}" for k in range(last, n)]
        names += list(arch.get("vision_head") or [])
    return names


@dataclass
class TuneSummary:
    """What a tune mode matched: trainable parameter names and module counts."""

    mode: str
    trainable: list[str] = field(default_factory=list)
    modules: dict[str, int] = field(default_factory=dict)  # trained norm layers, e.g. {"layernorm": 25, "rmsnorm": 0}
    unused: list[str] = field(default_factory=list)  # modules left frozen: the forward pass never uses them


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters of ``model`` that train (``requires_grad``), by name, tied weights once: the one
    trainable key set (:func:`apply_tuning` reports it, checkpoints and ``trained.safetensors`` hold it)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _modules_of_types(model: nn.Module, type_names: Iterable[str]) -> list[tuple[str, nn.Module]]:
    wanted = set(type_names)
    return [(n, m) for n, m in model.named_modules() if type(m).__name__ in wanted]


def _linear_children(parents: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """The Linear layers directly inside the given modules (not their norms, not nested blocks)."""
    from torch import nn

    out = []
    for pname, parent in parents:
        for cname, child in parent.named_children():
            if isinstance(child, nn.Linear):
                out.append((f"{pname}.{cname}", child))
    return out


def _selected_modules(model: nn.Module, select: str, arch: dict[str, Any]) -> list[tuple[str, nn.Module]]:
    if select == "norm":
        return [(n, m) for n, m in model.named_modules() if norm_kind(m)]
    if select in ("ffn", "attention"):
        types = arch.get(select) or []
        if not types:
            raise ConfigError(f"model config has no arch.{select} module types; tune mode {select!r} needs them")
        return _linear_children(_modules_of_types(model, types))
    raise AssertionError(select)


def _in_components(name: str, arch: dict[str, Any], wanted: list[str] | None) -> bool:
    return wanted is None or component_of(name, arch["components"]) in wanted


def _check_components(arch: dict[str, Any], wanted: list[str] | None) -> None:
    if wanted is None:
        return
    unknown = [c for c in wanted if c not in arch["components"]]
    if unknown:
        raise ConfigError(
            f"tune.components={list(wanted)}: unknown component(s) {unknown}; "
            f"this model has {sorted(arch['components'])}"
        )


class UnsupportedMode(ConfigError):
    """A tune mode this model cannot have at all (``medft params`` lists it as unsupported)."""


PREFIX_INSTEAD = "use lora, dora, ia3 or layernorm instead"


def check_tune(tune: dict[str, Any], arch: dict[str, Any], model_name: str = "", gradient_checkpointing: bool = False) -> None:
    """Refuse, in one line and before any model is built, a tune config this model cannot take."""
    select = tune.get("select")
    if select not in SELECTORS:
        raise ConfigError(f"tune.select={select!r} is not known; use one of {list(SELECTORS)}")
    if select == "norm" and tune.get("norm_params", "both") not in NORM_PARAMS:
        raise ConfigError(f"tune.norm_params={tune.get('norm_params')!r} is not known; use one of {list(NORM_PARAMS)}")
    if select != "prefix":
        return
    model = model_name or "this model"
    component = arch.get("prefix")
    if not component and arch.get("no_prefix"):
        raise UnsupportedMode(f"tune=prefix: {model}: {arch['no_prefix']}; {PREFIX_INSTEAD}")
    if not component:
        raise UnsupportedMode(
            f"tune=prefix: peft's prefix tuning needs a decoder-only language model that takes past_key_values, "
            f"and {model} has none (BLIP's question encoder and answer decoder are BERT stacks its VQA/captioning "
            f"forward calls internally); {PREFIX_INSTEAD}"
        )
    wanted = tune.get("components")
    if wanted and component not in wanted:
        raise ConfigError(
            f"tune=prefix adds learned keys and values to the {component} component only, "
            f"not to tune.components={list(wanted)}: leave tune.components out or include {component}"
        )
    n = tune.get("num_virtual_tokens")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"tune.num_virtual_tokens={n!r} is out of range: it must be an integer >= 1")
    if gradient_checkpointing:
        raise ConfigError(
            "tune=prefix cannot run with model.gradient_checkpointing=true (peft keeps the prefix in the KV cache "
            "and refuses checkpointing): add model.gradient_checkpointing=false"
        )


def apply_tuning(net: MedVLM, tune: dict[str, Any]) -> TuneSummary:
    """Freeze everything, then unfreeze (or add, for peft's methods) exactly what ``tune`` selects.

    ``net`` (a :class:`medft.models.base.MedVLM`) holds ``.model`` (the Hugging Face model; replaced by
    a peft model for LoRA, IA3 and prefix) and ``.arch`` (component prefixes and module types from
    the model config). Raises ConfigError when the mode or component matches nothing.
    """
    mode, select = tune["name"], tune["select"]
    arch = net.arch
    check_tune(tune, arch, net.name, net.uses_gradient_checkpointing)
    wanted = list(tune["components"]) if tune.get("components") else None
    _check_components(arch, wanted)
    report = TuneSummary(mode, unused=unused_modules(net.model, arch))

    net.model.requires_grad_(False)
    if select in ("lora", "ia3", "prefix"):  # peft marks its adapters (and only them) trainable
        wrap = {"lora": _wrap_lora, "ia3": _wrap_ia3, "prefix": _wrap_prefix}[select]
        skip = report.unused + list(arch.get("no_adapters") or [])  # modules no adapter may wrap
        net.model = wrap(net.model, tune, arch, wanted, skip)
    elif select != "none":
        norm_params = tune.get("norm_params", "both") if select == "norm" else "both"
        for name, param in _params_to_train(net.model, select, arch, wanted):
            if norm_params == "both" or name.rsplit(".", 1)[-1] == norm_params:  # weight = gain, bias = shift
                param.requires_grad_(not under(name, report.unused))
    if select == "norm":
        report.modules = {"layernorm": 0, "rmsnorm": 0}
        for name, module in net.model.named_modules():
            kind = norm_kind(module)
            if kind and any(p.requires_grad for p in module.parameters(recurse=False)):
                report.modules[kind] = report.modules.get(kind, 0) + 1

    report.trainable = list(trainable_parameters(net.model))
    if select != "none" and not report.trainable:
        where = f" in components {wanted}" if wanted else ""
        raise ConfigError(f"tune mode {mode!r} (select={select}) matched no parameter{where}: check tune.components")
    return report


def _params_to_train(model: nn.Module, select: str, arch: dict[str, Any], wanted: list[str] | None):
    if select == "all":
        return [(n, p) for n, p in model.named_parameters() if _in_components(n, arch, wanted)]
    if select == "bias":
        return [(n, p) for n, p in model.named_parameters() if n.endswith("bias") and _in_components(n, arch, wanted)]
    params = []
    for mname, module in _selected_modules(model, select, arch):
        if _in_components(mname, arch, wanted):
            params.extend((f"{mname}.{pn}", p) for pn, p in module.named_parameters(recurse=False))
    return params


def lora_target_names(
    model: nn.Module,
    targets: list[str] | dict[str, list[str]],
    arch: dict[str, Any],
    wanted: list[str] | None,
    skip: Iterable[str] = (),
) -> list[str]:
    """Full names of the Linear layers named by ``targets``, within ``wanted``, outside the ``skip``
    modules. A target is a Linear's last name part (``query``) or ``ParentClass.name`` (the Linear
    ``name`` directly inside a module of class ``ParentClass``: ``BlipTextOutput.dense`` is the FFN's
    dense, not attention's). ``targets`` may map components to names (``{language: [q_proj]}``):
    then each name list applies inside its own component only."""
    if isinstance(targets, dict):
        return [
            n for comp, names in targets.items() if wanted is None or comp in wanted
            for n in lora_target_names(model, list(names), arch, [comp], skip)
        ]
    from torch import nn

    modules = dict(model.named_modules())

    def named(name: str) -> bool:
        parent, _, last = name.rpartition(".")
        return last in targets or f"{type(modules.get(parent)).__name__}.{last}" in targets

    targets = set(targets)
    return [
        n for n, m in modules.items()
        if isinstance(m, nn.Linear) and named(n) and _in_components(n, arch, wanted) and not under(n, skip)
    ]


def _target_names(
    model: nn.Module, tune: dict[str, Any], arch: dict[str, Any], wanted: list[str] | None, skip: list[str],
    default: str, key: str, fix: str,
) -> list[str]:
    """The Linear layers ``tune.target_modules`` (else ``arch[default]``) names: :func:`lora_target_names`,
    or a ConfigError saying that they matched none and ``fix``."""
    targets = tune.get("target_modules") or arch.get(default) or []
    names = lora_target_names(model, targets, arch, wanted, skip)
    if not names:
        where = f" in components {wanted}" if wanted else ""
        other = "" if targets else f", or arch.{default} in the model config"
        raise ConfigError(f"{key}={targets} matched no Linear layer{where}; {fix}{other}")
    return names


def _wrap_lora(
    model: nn.Module, tune: dict[str, Any], arch: dict[str, Any], wanted: list[str] | None, skip: list[str]
) -> nn.Module:
    from peft import LoraConfig

    r = int(tune.get("r", 8))
    if r <= 0:
        raise ConfigError(f"tune.r={r} must be > 0")
    names = _target_names(model, tune, arch, wanted, skip, "lora_targets", "tune.target_modules",
                          "set tune.target_modules to names of Linear layers of this model")
    config = LoraConfig(
        r=r,
        lora_alpha=int(tune.get("alpha", 16)),
        lora_dropout=float(tune.get("dropout", 0.0)),
        target_modules=names,
        bias="none",
        use_dora=bool(tune.get("use_dora", False)),
    )
    return _peft(model, config)


def _peft(model: nn.Module, config: Any) -> nn.Module:
    """``get_peft_model``: peft freezes the base model and marks its own parameters trainable."""
    from peft import get_peft_model

    wrapped = get_peft_model(model, config)
    # peft hooks the input embeddings to require grad when checkpointing is on (for *reentrant*
    # checkpointing; medft's is non-reentrant). Frozen embeddings then become leaves that require
    # grad and BLIP's in-place position add fails: see medft.models.loading.enable_gradient_checkpointing.
    wrapped.get_base_model().disable_input_require_grads()
    return wrapped


def _wrap_ia3(
    model: nn.Module, tune: dict[str, Any], arch: dict[str, Any], wanted: list[str] | None, skip: list[str]
) -> nn.Module:
    from peft import IA3Config

    names = _target_names(model, tune, arch, wanted, skip, "ia3_targets", "tune=ia3: target_modules",
                          "set tune.target_modules (and tune.feedforward_modules) to Linear layers of this model")
    feedforward = tune.get("feedforward_modules") or arch.get("ia3_feedforward") or []
    ff_names = set(lora_target_names(model, feedforward, arch, wanted, skip)) & set(names)
    config = IA3Config(target_modules=names, feedforward_modules=sorted(ff_names))
    return _peft(model, config)


def _wrap_prefix(
    model: nn.Module, tune: dict[str, Any], arch: dict[str, Any], wanted: list[str] | None, skip: list[str]
) -> nn.Module:
    from peft import PrefixTuningConfig, TaskType

    config = PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=int(tune["num_virtual_tokens"]))
    return _peft(model, config)  # the layer count, KV heads and head size come from the text config


def _component_params(model: nn.Module):
    """``(name, parameter)`` with the names of the unwrapped model, for per-component counts. peft's
    prompt learning (``prefix``) keeps the base model as ``base_model`` (not ``base_model.model``) and
    its prompt encoder beside it; the prefix extends the language model, so its parameters are counted
    where that model's input embeddings are."""
    from medft.models.base import is_prompt_learning

    if not is_prompt_learning(model):
        yield from model.named_parameters()
        return
    base = model.get_base_model()
    embeddings = base.get_input_embeddings()
    where = next(n for n, m in base.named_modules() if m is embeddings)
    yield from base.named_parameters()
    for name, param in model.prompt_encoder.named_parameters():
        yield f"{where}.prompt_encoder.{name}", param


def count_parameters(model: nn.Module, components: dict[str, str]) -> dict[str, Any]:
    """Total and trainable parameter counts, overall and per component (tied weights counted once); a
    4-bit weight counts the values it stands for, not its packed bytes (``model.quantization=nf4``)."""
    from medft.models.quantization import parameter_count

    total = trainable = 0
    per: dict[str, dict[str, int]] = {c: {"total": 0, "trainable": 0} for c in components}
    for name, param in _component_params(model):
        n = parameter_count(param)
        total += n
        trainable += n if param.requires_grad else 0
        comp = component_of(name, components)
        if comp is not None:
            per[comp]["total"] += n
            per[comp]["trainable"] += n if param.requires_grad else 0
    return {"total": total, "trainable": trainable, "components": per}


def param_metrics(counts: dict[str, Any]) -> dict[str, float]:
    """``params/*`` metrics: totals, trainable share, and per-component trainable counts."""
    pct = 100.0 * counts["trainable"] / max(counts["total"], 1)
    out = {"params/total": counts["total"], "params/trainable": counts["trainable"], "params/trainable_pct": pct}
    for comp, c in counts["components"].items():
        out[f"params/{comp}/total"] = c["total"]
        out[f"params/{comp}/trainable"] = c["trainable"]
    return out


def summary_line(counts: dict[str, Any]) -> str:
    """peft's familiar one-liner: ``trainable params: N || all params: M || trainable%: p``."""
    pct = 100.0 * counts["trainable"] / max(counts["total"], 1)
    return f"trainable params: {counts['trainable']:,} || all params: {counts['total']:,} || trainable%: {pct:.4f}"


PEFT_SCALES = ("ia3_l", "lora_magnitude_vector")  # peft's learned scales: IA3 vectors (start at 1), DoRA magnitudes


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters only, split so norm weights and biases get no weight decay, nor do peft's
    learned scales (IA3 vectors, DoRA magnitudes): like norm gains, decay would pull them to 0."""
    no_decay: set[int] = set()
    for module in model.modules():
        if norm_kind(module):
            no_decay.update(id(p) for p in module.parameters(recurse=False))
    for name, param in model.named_parameters():
        if any(f".{scale}." in name for scale in PEFT_SCALES):
            no_decay.add(id(param))
    decay, plain = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (plain if id(param) in no_decay or name.endswith("bias") else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]
