"""The augment preview samples across labels: a class-folder input shows every class it has room for."""

from transforms.preview import sample_across_labels


def test_round_robin_over_sorted_labels_smallest_ids_first():
    labelled = [
        ("dogs", ["dogs/3.jpg", "dogs/1.jpg", "dogs/2.jpg"]),
        ("cats", [f"cats/{i:02}.jpg" for i in range(10)]),
        ("", ["loose.jpg"]),
    ]
    assert sample_across_labels(labelled, 6) == [
        "loose.jpg",
        "cats/00.jpg",
        "dogs/1.jpg",
        "cats/01.jpg",
        "dogs/2.jpg",
        "cats/02.jpg",
    ]
    # the first 6 ids alone would all have been cats
    assert sorted(id for _, ids in labelled for id in ids)[:6] == [f"cats/{i:02}.jpg" for i in range(6)]
    assert sample_across_labels(labelled, 6) == sample_across_labels(list(reversed(labelled)), 6)


def test_fewer_images_than_the_sheet_holds_are_all_shown():
    assert sample_across_labels([("a", ["a/1"]), ("b", ["b/1"])], 6) == ["a/1", "b/1"]
    assert sample_across_labels([], 6) == []
