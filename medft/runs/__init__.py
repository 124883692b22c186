"""Run directories and their lifecycle: :mod:`~medft.runs.layout` names every file and folder of one and
its status words; :mod:`~medft.runs.trust` reads what a run dir holds without replaying it (status,
locks, sweep claims); :mod:`~medft.runs.resume` continues one; :mod:`~medft.runs.runner` wraps every
run (error.txt, exit status); :mod:`~medft.runs.preempt` saves on a signal; :mod:`~medft.runs.checkpoint`
and :mod:`~medft.runs.trained` read and write the weights a run keeps."""

from medft.runs.layout import PLACEHOLDER, RELATIVE, RunDir, Status

__all__ = ["PLACEHOLDER", "RELATIVE", "RunDir", "Status"]
