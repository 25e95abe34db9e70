"""The held-out split of a corpus: which posts training never sees and evaluation scores.

One function, used by the trainer's data stream, the embedding job and the evaluation, so that all of them agree
on every post without a file listing the split.
"""

import hashlib

HELDOUT_SALT = "stylebeam-heldout"


def is_heldout(post_id: str, fraction: float) -> bool:
    """Stable split by a hash of the id: the same post is held out in every run, job and machine, and a larger
    ``fraction`` holds out a superset of a smaller one."""
    digest = hashlib.sha256(f"{HELDOUT_SALT}:{post_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction
