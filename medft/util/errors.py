"""User-facing errors: one line that names the thing and the fix.

The CLI prints ``MedftError`` messages without a traceback and exits with status 2.
"""

_WORKER_PREFIX = "Caught "  # torch.utils.data re-raises a worker's error as Type("Caught Type in DataLoader worker ...")


class MedftError(Exception):
    """An error the user caused and can fix (bad config value, missing file, ...)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(_unwrap_worker_message(str(message)))


def _unwrap_worker_message(message: str) -> str:
    """A DataLoader worker's error arrives as "Caught X in DataLoader worker 0.\\nOriginal Traceback
    ...\\nmodule.X: the message"; keep only the message, so users see the same line as with 0 workers."""
    if not message.startswith(_WORKER_PREFIX) or "Traceback" not in message:
        return message
    last = [line for line in message.splitlines() if line.strip()][-1]
    head, sep, tail = last.partition(": ")
    return tail if sep and "Error" in head else last


class ConfigError(MedftError):
    """A config value is invalid."""


class DataError(MedftError):
    """A dataset root, annotation file or image is missing or unreadable."""


class CheckpointError(MedftError):
    """A checkpoint is missing, damaged, unsafe to unpickle, or from another model / tune mode."""


class TrainingDiverged(MedftError):
    """The loss became NaN or infinite."""


def user_error(err: BaseException) -> MedftError | None:
    """The ``MedftError`` behind ``err``, if any: Hydra's ``instantiate`` wraps what a builder raises."""
    while err is not None:
        if isinstance(err, MedftError):
            return err
        err = err.__cause__
    return None
