"""``status.json``: a run dir's one current state, kept by ``medft train`` and read by ``medft report``.

``running`` (written when the job starts), ``preempted`` (a signal stopped it after saving
checkpoints/last.ckpt: medft.preempt), ``failed`` (its last attempt raised: error.txt holds why) or
``finished`` (metrics.json is written). Each comes with the time, host and pid, and the step where known.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

EXIT_PREEMPTED = 3  # medft train's exit status when a signal stopped the run after saving it
STATUS_FILE = "status.json"
STATES = ("running", "preempted", "failed", "finished")


def write_status(run_dir: str | Path, state: str, **fields: Any) -> None:
    """Write ``status.json`` (rank zero only): ``{"state", **fields, "time", "host", "pid"}``."""
    from medft.files import write_json_atomic
    from medft.rundir import is_rank_zero

    if state not in STATES:
        raise ValueError(f"status {state!r}: one of {', '.join(STATES)}")
    if not is_rank_zero():
        return
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_json_atomic(Path(run_dir) / STATUS_FILE,
                      {"state": state, **fields, "time": stamp, "host": socket.gethostname(), "pid": os.getpid()})


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """``status.json`` as a dict ({} when missing or damaged: the run dir predates it, or was cut short)."""
    try:
        status = json.loads((Path(run_dir) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) and status.get("state") in STATES else {}
