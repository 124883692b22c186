"""User-facing errors: one line that names the thing and the fix.

The CLI prints ``MedftError`` messages without a traceback and exits with status 2.
"""


class MedftError(Exception):
    """An error the user caused and can fix (bad config value, missing file, ...)."""


class ConfigError(MedftError):
    """A config value is invalid."""


class DataError(MedftError):
    """A dataset root, annotation file or image is missing or unreadable."""


def user_error(err: BaseException) -> MedftError | None:
    """The ``MedftError`` behind ``err``, if any: Hydra's ``instantiate`` wraps what a builder raises."""
    while err is not None:
        if isinstance(err, MedftError):
            return err
        err = err.__cause__
    return None
