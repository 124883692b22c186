"""Keep secrets (API keys, tokens) out of everything a run writes.

Hydra's ``.hydra/config.yaml`` keeps ``${oc.env:...}`` unresolved, but the resolved config that
goes to the loggers (CSV ``hparams.yaml``, W&B) would hold the value itself. :func:`redact`
replaces the value of every secret-looking environment variable, wherever it appears in a
string, and every value under a secret-looking key, with ``***``.
"""

from __future__ import annotations

import os
import re
from typing import Any

# a name part: HF_TOKEN, WANDB_API_KEY, db.password -- not max_new_tokens or tokenizer
SECRET_NAME = re.compile(
    r"(^|_)(token|secret|password|passwd|api_?key|access_?key|private_?key|credentials?)($|_)", re.I
)
MASK = "***"
_MIN_LEN = 6  # shorter values ("1", "true") would mask innocent text


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    """Values of environment variables named like secrets (WANDB_API_KEY, HF_TOKEN, ...), longest first."""
    environ = os.environ if environ is None else environ
    values = {v for k, v in environ.items() if SECRET_NAME.search(k) and len(v) >= _MIN_LEN}
    return sorted(values, key=len, reverse=True)


def redact(obj: Any, secrets: list[str] | None = None) -> Any:
    """A copy of ``obj`` (dicts, lists, strings) with secrets masked."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(obj, dict):
        return {
            k: MASK if isinstance(k, str) and SECRET_NAME.search(k) and v not in (None, "") else redact(v, secrets)
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v, secrets) for v in obj)
    if isinstance(obj, str):
        for value in secrets:
            obj = obj.replace(value, MASK)
    return obj
