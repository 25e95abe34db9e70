"""Project exceptions: one line a user can act on. CLIs print it and exit non-zero."""


class StylebeamError(Exception):
    """Base of every error a user can fix (bad flag, missing file, unreadable image, missing weights)."""


class UsageError(StylebeamError):
    """A flag or argument combination that cannot work."""


class InputNotFoundError(StylebeamError):
    """An input path, glob or URL matched nothing."""


class InputUnreadableError(StylebeamError):
    """An input exists but cannot be read: a directory where a file is wanted, no permission, a network failure."""


class OutputUnwritableError(StylebeamError):
    """An output cannot be written: no permission, a directory in the way, a network or storage failure."""


class IncompleteOutputError(StylebeamError):
    """A job whose counts do not add up: elements that went into a stage came out neither as rows nor as rejected
    rows. Its output is incomplete and was not marked finished."""


class ImageRejected(StylebeamError):
    """An image that cannot be used. ``reason`` is a short slug counted in summaries."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class WeightsUnavailableError(StylebeamError):
    """Pretrained weights were asked for but cannot be had (offline, no cache, no path)."""


class CheckpointError(StylebeamError):
    """A checkpoint or resume-state file is missing, corrupt or of an unknown layout."""


class TrainingDiverged(StylebeamError):
    """A training loss became NaN or infinite: the run stops, and the message says what to lower."""
