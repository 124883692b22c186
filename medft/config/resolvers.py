"""medft's OmegaConf resolvers (``medft_suffix``, ``medft_claim``, ``medft_mul``, ``medft_lr``) and the default
learning rate of a tune mode on a model."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from medft.config.overrides import run_suffix
from medft.config.search import use_search_path


def register_resolvers() -> None:
    """medft's OmegaConf resolvers, and its Hydra search path (the user's config dirs first)."""
    use_search_path()
    if not OmegaConf.has_resolver("medft_suffix"):
        OmegaConf.register_new_resolver("medft_suffix", run_suffix)
    if not OmegaConf.has_resolver("medft_claim"):  # hydra.run.dir / hydra.sweep.dir: never another run's
        from medft.runs.trust import claim_dir

        OmegaConf.register_new_resolver("medft_claim", claim_dir)
    if not OmegaConf.has_resolver("medft_mul"):  # optim.lr: ${medft_mul:${tune.lr},${model.lr_scale}}
        OmegaConf.register_new_resolver("medft_mul", lambda a, b: float(a) * float(b))
    if not OmegaConf.has_resolver("medft_lr"):  # optim.lr: ${medft_lr:${tune},${model}}
        OmegaConf.register_new_resolver("medft_lr", default_lr)


def default_lr(tune: DictConfig, model: DictConfig) -> float:
    """The default ``optim.lr`` of a tune mode on a model: ``tune.lr * model.lr_scale``, or, for a
    pretrained model whose config names ``lr_key`` (the embedded ``blip_med``: ``lr_pretrained``), the
    mode's own rate under that key when the mode has one (searched on that model, see configs/tune)."""
    key = model.get("lr_key")
    if key and model.get("pretrained") and tune.get(key) is not None:
        return float(tune[key])
    return float(tune.lr) * float(model.lr_scale)
