"""Resume states of the two trainers: versioned, checksummed, written atomically, local or any fsspec URL.

A resume state holds what a checkpoint does not (optimiser moments, RNG state, step, loss history), as plain
tensors and numbers, and the settings the run was started with: ``check_same_settings`` refuses a resume whose
flags would change the result (a new ``--lr`` recorded beside weights trained with the old one).

The file is a one-line magic, a one-line JSON header (``format``, ``kind``, ``size`` and ``sha256`` of the payload)
and the payload, a ``torch.save`` archive that loads with ``weights_only=True``. Loading checks all of it before
unpickling anything, so an empty, truncated or overwritten file is one ``CheckpointError`` line that says which,
not a traceback and not a run that "diverges" on garbage weights; a state without a part the trainer needs is one
such line too.
"""

import hashlib
import io
import json

import torch

from models.common.errors import CheckpointError, UsageError
from models.common.files import read_file, shown, write_atomically

MAGIC = b"stylebeam resume state\n"
FORMAT_VERSION = 1


def save_resume_state(path: str, kind: str, state: dict) -> None:
    """Write ``state`` (tensors, numbers, strings, lists and dicts of them) as a ``kind`` resume state."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = {
        "format": FORMAT_VERSION,
        "kind": kind,
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    write_atomically(path, MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload)


def load_resume_state(path: str, kind: str, required: tuple[str, ...] = ()) -> dict:
    """Read and verify a ``kind`` resume state holding every key in ``required``; ``CheckpointError`` says what is
    wrong with the file."""
    data = read_file(path, "resume state", missing=CheckpointError, unreadable=CheckpointError)
    if not data:
        raise CheckpointError(f"resume state {path} is empty (0 bytes); start the run again without --resume")
    if not data.startswith(MAGIC):
        raise CheckpointError(
            f"{path} is not a stylebeam resume state with a checksum (an older stylebeam, or another file); "
            "start the run again without --resume"
        )
    header_line, _, payload = data[len(MAGIC) :].partition(b"\n")
    try:
        header = json.loads(header_line)
        expected_size, expected_sha = int(header["size"]), str(header["sha256"])
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(
            f"resume state {path} is corrupt (damaged header); start the run again without --resume"
        ) from None
    if header.get("kind") != kind:
        raise CheckpointError(f"{path} is a {header.get('kind')!r} resume state, not a {kind!r} one")
    if header.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has resume format {header.get('format')}; this stylebeam reads {FORMAT_VERSION}")
    if len(payload) != expected_size:
        raise CheckpointError(
            f"resume state {path} is truncated ({len(payload)} of {expected_size} bytes); "
            "start the run again without --resume"
        )
    if hashlib.sha256(payload).hexdigest() != expected_sha:
        raise CheckpointError(
            f"resume state {path} is corrupt (its checksum does not match); start the run again without --resume"
        )
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # a verified payload that still fails to load was not written by save_resume_state
        raise CheckpointError(f"cannot read resume state {path} ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a resume state (found {type(state).__name__})")
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(
            f"resume state {path} has no {', '.join(missing)} (not written by this stylebeam's trainer); "
            "start the run again without --resume"
        )
    return state


def check_same_settings(path: str, recorded: dict, current: dict, flags: dict[str, str] | None = None) -> None:
    """Refuse to resume the run at ``path`` when a setting differs between what it ``recorded`` and this run's
    ``current`` ones (a key only one of them has counts as "not given"): one line naming the flag (``flags[key]``,
    else ``--key-with-dashes``) and both values. Callers pass the settings that change what the run trains, not
    how far it goes (``--steps``, ``--epochs``)."""
    for key in sorted(recorded.keys() | current.keys()):
        before, now = recorded.get(key, _NOT_GIVEN), current.get(key, _NOT_GIVEN)
        if _comparable(before) != _comparable(now):
            flag = (flags or {}).get(key, "--" + key.replace("_", "-"))
            raise UsageError(
                f"cannot resume {path}: {flag} differs (the run: {_flag_value(before)}; now: {_flag_value(now)}); "
                "resume with the run's settings or start a new --output"
            )


_NOT_GIVEN = object()


def _comparable(value):
    return [_comparable(item) for item in value] if isinstance(value, list | tuple) else value


def _flag_value(value) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    if value is _NOT_GIVEN:
        return "(not given)"
    return shown(value, 80) if isinstance(value, str) and not value.isprintable() else str(value)
