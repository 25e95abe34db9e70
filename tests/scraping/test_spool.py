"""The scraper's state folder when it is damaged: one line that says what to do, never a traceback."""

import json

import pytest

from models.common.errors import StylebeamError
from scraping.spool import Spool


@pytest.fixture
def state(tmp_path):
    spool = Spool.open(str(tmp_path / "state"))
    spool.add_post("ABC", "miro", [])
    spool.commit()
    return tmp_path / "state"


@pytest.mark.parametrize(
    "damage",
    [
        lambda state: (state / "progress.json").write_text("{not json"),
        lambda state: (state / "progress.json").write_bytes(b"\xff\xfe"),
        lambda state: (state / "progress.json").write_text(json.dumps({"version": 1})),
        lambda state: (state / "progress.json").write_text(json.dumps([1])),
        lambda state: (state / "sightings-00000.parquet").write_bytes(b"PAR1 cut"),
        lambda state: (state / "sightings-00000.parquet").unlink(),
    ],
    ids=["not JSON", "not UTF-8", "fields missing", "a list", "a cut shard", "a missing shard"],
)
def test_a_damaged_state_is_one_line(state, damage):
    damage(state)
    with pytest.raises(StylebeamError, match=f"the scraper state in {state} is damaged .*move it away"):
        Spool.open(str(state))


def test_an_intact_state_resumes(state):
    assert Spool.open(str(state)).sightings == {"ABC": {"miro"}}
