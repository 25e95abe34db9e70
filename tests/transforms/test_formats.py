"""The WebDataset shard writer on its own: members, keys, the json of every other column, fixed bytes."""

import base64
import datetime
import io
import json
import tarfile

from transforms.formats import TarShardSink, dataset_card


def shard_bytes(rows, first_key=0) -> bytes:
    handle = io.BytesIO()
    sink = TarShardSink()
    sink.open(handle)
    sink.write(("augmented-00000-of-00001.tar", rows, first_key))
    sink.flush()
    return handle.getvalue()


def row(row_id, label_index):
    return {"id": row_id, "label": "cats", "label_index": label_index, "image": b"\xff\xd8jpeg", "image_format": "jpeg"}


def test_a_shard_holds_image_class_and_json_per_key_and_its_bytes_are_fixed():
    taken = datetime.datetime(2024, 5, 1, 12, 30)
    rows = [
        {**row("cats/a.jpg#0", 0), "blob": b"\x00\x01", "taken": taken, "bbox": [1.5, 2.0], "meta": {"k": None}},
        {**row("x.png#1", None), "blob": None, "taken": None, "bbox": None, "meta": None},
    ]
    data = shard_bytes(rows, first_key=2000)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        assert {(m.mtime, m.uid, m.gid, m.uname, m.mode) for m in tar.getmembers()} == {(0, 0, 0, "", 0o644)}
    assert sorted(members) == ["000002000.cls", "000002000.jpg", "000002000.json", "000002001.jpg", "000002001.json"]
    assert members["000002000.jpg"] == b"\xff\xd8jpeg" and members["000002000.cls"] == b"0"
    first = json.loads(members["000002000.json"])
    assert first["id"] == "cats/a.jpg#0" and "image" not in first and first["bbox"] == [1.5, 2.0]
    assert base64.b64decode(first["blob"]) == b"\x00\x01" and first["taken"] == str(taken)
    assert json.loads(members["000002001.json"])["label_index"] is None  # no label: no .cls member
    assert shard_bytes(rows, first_key=2000) == data


def test_the_card_points_at_data_only():
    card = dataset_card("webdataset")
    assert 'path: "data/augmented-*.tar"' in card and "split: augmented" in card and "dataset_info" not in card
    features = [{"name": "label", "dtype": {"class_label": {"names": {"0": "a"}}}}]
    assert 'dataset_info: {"features": [{"name": "label"' in dataset_card("parquet", features)
