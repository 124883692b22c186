"""The dataset layouts medft reads, as one first-match table.

A layout is how a dataset lies on disk (VQA-RAD's split files, LLaVA-Med's json, Parquet shards,
...). Each is one entry of :data:`LAYOUTS`: its name, what it looks like (the error that names what
was expected quotes it), ``detect(root)`` (is this layout under ``root``?) and ``load(root, ask)``,
which returns the splits as :func:`medft.data.drops.loaded` makes them: records, what was dropped,
the rule that gave CLOSED / OPEN, and the layout read as ``medft data`` prints it. A dataset's
``_target_`` function in :mod:`medft.data.sources` lists the layouts it accepts, in order;
:func:`medft.data.sources.load_layout` loads the first one detected.

Adding a layout: a loader module (``read_<layout>(root, ask) -> Loaded`` and a detector) and one
entry here; then name it in the ``layouts`` of the datasets that come in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from medft.data import llava, path_vqa, report_gen, slake, tables, vqa_rad
from medft.data.drops import Ask, Loaded


@dataclass(frozen=True)
class Layout:
    name: str
    about: str  # the files it is: "no <dataset> in <root>: expected <about>, or <about>, ..."
    detect: Callable[[Path], bool]
    load: Callable[[Path, Ask], Loaded]


LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (
    Layout("vqa_rad", vqa_rad.ABOUT, vqa_rad.is_vqa_rad, vqa_rad.read_vqa_rad),
    Layout("slake", slake.ABOUT, slake.is_slake, slake.read_slake),
    Layout("path_vqa", path_vqa.ABOUT, path_vqa.is_path_vqa, path_vqa.read_path_vqa),
    Layout("llava_med", llava.ABOUT, llava.is_llava, llava.read_llava),
    Layout("tables", tables.ABOUT, tables.has_tables, tables.read_table_vqa),
    Layout("r2gen", report_gen.ABOUT, report_gen.is_r2gen, report_gen.read_r2gen),
    Layout("mimic_cxr_jpg", report_gen.MIMIC_ABOUT, report_gen.is_mimic_official, report_gen.read_mimic_official),
    Layout("iu_xray_csv", report_gen.IU_ABOUT, report_gen.is_iu_csv, report_gen.read_iu_csv),
)}
