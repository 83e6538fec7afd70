"""runs()'s params and metrics columns, read by Arrow's JSON reader: the same frame as one dict a row gives."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ledger.record import canonical_json
from ledger.store.query import build_runs_frame, json_objects_frame

OBJECTS = [
    {"max_depth": "7", "eta": "0.2"},
    {},
    {"eta": "0.3", "objective": "reg:squarederror", "note": 'a "quoted"\nline, ünïcode ✓'},
    {"max_depth": "", "sagemaker_program": "train.py"},
    {"max_depth": "10"},
]


def reference(texts: list[str]) -> pd.DataFrame:
    return pd.DataFrame.from_records([json.loads(text) for text in texts])


@pytest.mark.parametrize("objects", [OBJECTS, OBJECTS[1:], [{}] * 3, [{"only": "one"}]])
def test_params_read_by_arrow_are_the_frame_of_one_dict_a_row(objects):
    texts = [canonical_json(o) for o in objects]
    frame = json_objects_frame(texts)
    if not any(objects):  # no column at all: a frame of no columns either way (its row count does not matter)
        assert frame.columns.empty and reference(texts).columns.empty
        return
    pd.testing.assert_frame_equal(frame, reference(texts))
    assert list(frame.columns) == list(dict.fromkeys(k for text in texts for k in json.loads(text)))


def test_metrics_with_a_column_that_is_never_a_number_read_as_floats():
    objects = [{"rmse": 1.5, "auc": None}, {"rmse": 2.0}, {"auc": None, "loss": 1e-07}, {"rmse": 3.25, "auc": None}]
    texts = [canonical_json(o) for o in objects]
    frame = json_objects_frame(texts).astype("float64")
    pd.testing.assert_frame_equal(frame, reference(texts).astype("float64"))
    assert frame["auc"].isna().all() and frame.loc[2, "loss"] == 1e-07


def test_strings_that_look_like_times_stay_the_text_they_are():
    """Arrow's JSON reader takes ISO 8601-looking strings for timestamps; a hyperparameter is the text it was."""
    objects = [{"eta": "0.2", "since": "2026-01-01", "until": "2026-01-01 10:00:00"},
               {"since": "2026-01-02T00:00:00Z", "note": "x"}, {"eta": "0.3"}]
    texts = [canonical_json(o) for o in objects]
    frame = json_objects_frame(texts)
    pd.testing.assert_frame_equal(frame, reference(texts))
    assert list(frame["since"][:2]) == ["2026-01-01", "2026-01-02T00:00:00Z"]
    assert list(frame.columns) == ["eta", "since", "until", "note"]


@pytest.mark.parametrize("objects", [[{"nested": {"a": "b"}}, {"nested": "text"}], [{"flag": True}, {}]])
def test_what_arrow_refuses_or_reads_otherwise_goes_the_old_way(objects):
    texts = [canonical_json(o) for o in objects]
    pd.testing.assert_frame_equal(json_objects_frame(texts), reference(texts))


def test_the_runs_frame_has_every_column_and_typed_metrics():
    rows = [("01A", "p", "j1", "local", "Completed", "2026-01-01T00:00:00Z", *[None] * 9,
             canonical_json({"max_depth": "7"}), canonical_json({"rmse": 1.5}))]
    from ledger.store.query import RUN_FRAME_COLUMNS

    rows = [row[:len(RUN_FRAME_COLUMNS)] + row[-2:] for row in rows]
    frame = build_runs_frame(rows)
    assert frame.loc[0, "params.max_depth"] == "7" and frame["metrics.rmse"].dtype == "float64"
