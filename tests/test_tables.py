"""Plain-text tables for people."""

from __future__ import annotations

from imgclass.tables import format_table


def test_columns_are_aligned_and_numbers_right_aligned():
    head = ["name", "acc"]
    rows = [["cnn-small", "0.91"], ["pca", "0.8"]]
    assert format_table(head, rows, right={1}, rule=True).splitlines() == [
        "name        acc",
        "---------  ----",
        "cnn-small  0.91",
        "pca         0.8",
    ]


def test_no_trailing_spaces_and_no_rows():
    assert format_table(["A", "B"], [["long value", ""]]) == "A           B\nlong value"
    assert format_table(["A", "BB"], []) == "A  BB"
