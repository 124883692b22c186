"""Run directories: :mod:`medft.runs.layout` names every file and folder of one, and its status words."""

from medft.runs.layout import PLACEHOLDER, RELATIVE, RunDir, Status

__all__ = ["PLACEHOLDER", "RELATIVE", "RunDir", "Status"]
