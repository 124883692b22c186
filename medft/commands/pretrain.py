"""``medft pretrain``: make a pretrained Med-VLM offline, as a Hugging Face checkpoint directory.

    medft pretrain                                   # the embedded recipe: blip_med on demo_source
    medft pretrain --config-name pretrain_report     # the embedded report writer: blip_med_report on demo_report_source
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
pretraining seed (``model.pretrain_seed``) into ``$MEDFT_CACHE_DIR/pretrained/blip_med-v<recipe_version>[-seed<N>]``
on first use (:func:`medft.training.pipeline.build_net` asks :func:`medft.training.embedded.ensure_embedded`
for it and hands it :func:`medft.training.pipeline.run_recipe`, this recipe in-process); a change of
``recipe_version`` in ``configs/pretrain.yaml`` builds a new one. The embedded report writer
(``model=blip_med_report``, ``recipe: pretrain_report``) is ``configs/pretrain_report.yaml`` run the same way,
into ``blip_med_report-v<its recipe_version>[-seed<N>]``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from medft.config.overrides import normalize_overrides
from medft.config.resolvers import register_resolvers
from medft.config.search import CONFIG_DIR, take_config_dirs
from medft.runs.runner import task_wrapper
from medft.training import pipeline
from medft.util.errors import MedftError


def pretrain(cfg: DictConfig) -> dict[str, Any]:
    """Train ``cfg.model`` from random weights with ``tune=full`` and save it to ``cfg.out``
    (:func:`medft.training.pipeline.pretrain`; the training run is wrapped as ``medft train``'s: error.txt, exit status)."""
    return pipeline.pretrain(cfg, task_wrapper(pipeline.train_and_test))


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
