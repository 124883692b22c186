"""Check a dataset root without loading a model: per split, samples, CLOSED / OPEN, images.

    medft data dataset=vqa_rad dataset.root=/data/vqa_rad
    medft data dataset=slake dataset.root=/data/Slake1.0 dataset.lang=all format=json
    medft data dataset=path_vqa dataset.root=/data/pvqa decode=false   # existence only, faster

Splits are shown as published: a validation split that training carves out of train (when the
layout has none) is not subtracted from train, and is reported on its own line / as
``val_from_train``. Exit status: 0 all good, 1 some images missing or unreadable, 2 the root or
layout is not recognised (the message names the expected files).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig

from medft.config.overrides import normalize_overrides
from medft.config.resolvers import register_resolvers
from medft.config.search import CONFIG_DIR, available, take_config_dirs
from medft.data.drops import REASONS
from medft.util.errors import ConfigError, MedftError

COLUMNS = ("n", "closed", "open", "images", "missing_images")


def inspect(cfg: DictConfig) -> dict[str, Any]:
    """The JSON summary for ``cfg.dataset``: ``{"dataset", "task", "root", "splits", "val_from_train"}``."""
    from medft.data.checks import allowed_roots, drop_outside_root, summarize
    from medft.data.images import set_max_pixels
    from medft.data.sources import load_splits

    if cfg.format not in ("text", "json"):
        raise ConfigError(f"format={cfg.format!r} is not known; use text or json")
    from medft.data.drops import dropped_summary, examples, info_of
    from medft.data.sources import resolved_root

    splits = load_splits(cfg.dataset, val_fraction=0.0)  # as published: val not carved
    info = info_of(splits)
    if not splits.get("val"):
        splits.pop("val", None)
    set_max_pixels(cfg.dataset.get("max_image_pixels"))
    before = {k: len(v) for k, v in splits.items()}
    splits, outside = drop_outside_root(splits, allowed_roots(cfg.dataset), file=sys.stderr)
    dropped = dropped_summary(info) if info is not None else {}
    for split, n in before.items():
        if n - len(splits[split]):
            dropped.setdefault(split, {})["outside_root"] = n - len(splits[split])
    summary: dict[str, Any] = {
        "dataset": cfg.dataset.name,
        "task": cfg.dataset.get("task", "vqa"),
        "root": str(resolved_root(cfg.dataset)),
        "layout": info.layout if info is not None else "",
        "splits": summarize(splits, decode=bool(cfg.decode)),
        "dropped": dropped,  # {split: {reason: n}}: left out by the loader (or dataset.dedupe=true)
        "dropped_ids": examples(info) if info is not None else {},  # {split: {reason: [first ids]}}
        "found": {reason: {s: {"n": len(ids), "ids": ids[:3]} for s, ids in per.items()}
                  for reason, per in (info.kept if info is not None else {}).items()},  # duplicates / overlaps kept
    }
    if summary["task"] == "vqa" and info is not None and info.answer_types:
        summary["answer_types"] = info.answer_types
    if "val" not in splits:
        fraction = float(cfg.dataset.get("val_fraction", 0.0) or 0.0)
        summary["val_from_train"] = int(round(len(splits["train"]) * fraction))
    return summary


def format_text(summary: dict[str, Any], cfg: DictConfig) -> str:
    splits = summary["splits"]
    cols = [c for c in COLUMNS if any(c in row for row in splits.values())]
    lines = [f"dataset {summary['dataset']} ({summary['task']}) at {summary['root']}"]
    lines.append(f"{'split':<6}" + "".join(f"{c:>16}" for c in cols))
    for name, row in splits.items():
        lines.append(f"{name:<6}" + "".join(f"{row.get(c, ''):>16}" for c in cols))
    if "val_from_train" in summary:
        n_train = splits["train"]["n"]
        lines.append(
            f"val: not in this layout; training carves {summary['val_from_train']} of the {n_train} train samples "
            f"(dataset.val_fraction={cfg.dataset.get('val_fraction')}, dataset.split_seed={cfg.dataset.get('split_seed')})"
        )
    if summary.get("layout"):
        lines.append(f"layout: {summary['layout']}")
    if summary.get("answer_types"):
        lines.append(f"CLOSED / OPEN: {summary['answer_types']}")
    for split, reasons in summary.get("dropped", {}).items():
        for reason, n in reasons.items():
            ids = summary.get("dropped_ids", {}).get(split, {}).get(reason, [])
            lines.append(f"dropped from {split}: {n} {REASONS.get(reason, reason)}" + (f" (e.g. {', '.join(ids)})" if ids else ""))
    for reason, per in summary.get("found", {}).items():
        for split, row in per.items():
            lines.append(
                f"found in {split}: {row['n']} {REASONS.get(reason, reason)} (e.g. {', '.join(row['ids'])}): kept as "
                + ("published" if reason == "duplicate_id" else "published; dataset.dedupe=true removes them")
            )
    missing = sum(row["missing_images"] for row in splits.values())
    if missing:
        lines.append(f"{missing} image(s) missing or unreadable: restore them, or train with dataset.skip_bad_images=true")
    return "\n".join(lines)


def compose_config(args: list[str]) -> DictConfig:
    register_resolvers()
    args = normalize_overrides(take_config_dirs(args, "data"), config_name="data")
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("data", overrides=args)
    except HydraException as err:
        message = str(err).splitlines()[0]
        if "dataset" in message and ("must specify" in message.lower() or "???" in message):
            message = "no dataset given"
        raise ConfigError(
            f"{message}: run `medft data dataset=<name> dataset.root=DIR` with one of: {', '.join(available('dataset'))}"
        ) from None
    return cfg


def main(args: list[str] | None = None) -> None:
    """Entry point of ``medft data``."""
    args = sys.argv[1:] if args is None else list(args)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.strip())
        return
    try:
        cfg = compose_config(args)
        summary = inspect(cfg)
    except MedftError as err:
        print(f"medft: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(summary, indent=2) if cfg.format == "json" else format_text(summary, cfg))
    train = summary["splits"].get("train", {})
    if not train.get("n") or train.get("missing_images", 0) >= train.get("images", 0) > 0:
        why = "no sample left after loading (the skipped records are counted above)" if not train.get("n") else \
            "every one of its images is missing or unreadable"
        print(f"medft data: the train split of {cfg.dataset.name} at {summary['root']} is unusable: {why}; "
              "medft train would refuse it", file=sys.stderr)
        raise SystemExit(1)
    if any(row["missing_images"] for row in summary["splits"].values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
