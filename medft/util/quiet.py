"""Library messages that are not the user's business, silenced at the start of every job.

Kept: Lightning's own progress lines (GPU available, checkpoint restored, fit stopped), every
warning about the user's data or settings, and medft's own counts (e.g. truncated questions).
"""

from __future__ import annotations

import logging
import warnings

# (warning message regex, why it is not the user's business)
WARNINGS = [
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", "Lightning's use of a torch API it will update"),
    (r"`is_gradient_checkpointing` is deprecated", "peft's use of a transformers API it will update"),
]
# Lightning's INFO lines that advertise a product instead of reporting on the run
LOG_LINES = {"lightning.pytorch.utilities.rank_zero": ("litlogger",)}


class _DropLines(logging.Filter):
    def __init__(self, needles: tuple[str, ...]) -> None:
        super().__init__()
        self.needles = needles

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(n in message for n in self.needles)


def install() -> None:
    for pattern, _why in WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name, needles in LOG_LINES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in logger.filters):
            logger.addFilter(_DropLines(needles))
