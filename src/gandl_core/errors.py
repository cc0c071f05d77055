"""User-facing errors.

Every error a user can fix by changing their input or options is a :class:`GandlError`. Its message
names the file, row, column or option at fault and says what to do. The CLI prints it without a
traceback and exits with code 1 (code 2 is kept for usage errors found by argparse: an unknown
option or a missing argument); the napari plugin shows it as a notification.
"""

from __future__ import annotations


class GandlError(Exception):
    """Base class for errors caused by user input or options (not bugs)."""


class DataError(GandlError):
    """A plate, image, table or index is missing, malformed or inconsistent."""


class ConfigError(GandlError):
    """An option or configuration value is invalid or inconsistent."""


class CheckpointError(GandlError):
    """A checkpoint is missing, corrupt, or does not match the data or the run."""
