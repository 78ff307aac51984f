"""Your own data: the contract's validation on the corrupted variants in tests/data/, the reader
(CSV and Parquet, local and file:// URIs), id maps, the contract → Dataset conversion, the labels
each head learns from, and the exporters' round trip."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from app.data.config import DataConfig
from app.data.contract import TABLES, markdown
from app.data.ids import IdMap
from app.data.labels import impression_labels
from app.data.loading import load_tables, validate_uri
from app.data.storage import read_raw_tables, write_table
from app.data.validation import EXIT_ERRORS, EXIT_OK, EXIT_WARNINGS, InvalidDataset

DATA = Path(__file__).resolve().parents[2] / "data"
ROOT = DATA.parents[1]

# variant -> (table, column, check) of its one error
VARIANTS = {
    "missing_column": ("interactions", "event", "missing column"),
    "wrong_type": ("interactions", "timestamp", "wrong type"),
    "unknown_event": ("interactions", "event", "unknown event type"),
    "duplicate_key": ("items", "item_id", "duplicate key"),
    "dangling_item": ("interactions", "item_id", "unknown item"),
    "nan_timestamp": ("interactions", "timestamp", "null or not finite"),
    "empty_table": ("items", None, "empty table"),
    "uneven_embedding": ("items", "embedding", "uneven length"),
}


def tables_config(uri: str | Path) -> DataConfig:
    return DataConfig(dataset="tables", tables={"uri": str(uri), "name": "t"})


def test_the_valid_sample_passes_every_check():
    tables, report = validate_uri(str(DATA / "valid"), now=1.8e9)
    assert report.exit_code == EXIT_OK and tables is not None and tables.has_impressions
    assert report.rows == {"interactions": 8, "items": 3, "users": 3}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_corruption_gets_its_one_clear_report(variant):
    tables, report = validate_uri(str(DATA / variant), now=1.8e9)
    table, column, check = VARIANTS[variant]
    assert tables is None and report.exit_code == EXIT_ERRORS
    assert [(p.table, p.column, p.check) for p in report.errors] == [(table, column, check)]
    text = report.render()
    assert (f"{table}.{column}" if column else table) in text and check in text
    if variant not in ("missing_column", "empty_table"):
        assert report.errors[0].examples  # which rows: up to ten of them


def test_warnings_let_training_proceed(tmp_path):
    """Items created after their first interaction, and users without a users row: warnings."""
    frames = {name: pd.read_csv(DATA / "valid" / f"{name}.csv", dtype=str, keep_default_na=False)
              for name in ("interactions", "items", "users")}
    frames["items"].loc[0, "created_at"] = "1800000000"
    frames["users"] = frames["users"].iloc[:2]
    for name, frame in frames.items():
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    tables, report = validate_uri(str(tmp_path), now=1.9e9)
    assert tables is not None and report.exit_code == EXIT_WARNINGS
    assert {(p.table, p.column, p.check) for p in report.warnings} == {
        ("items", "created_at", "after first interaction"), ("interactions", "user_id", "unknown user")}


def test_timestamps_in_the_future_are_errors():
    _, report = validate_uri(str(DATA / "valid"), now=1.6e9)  # the sample's 1.7e9 is "ahead" of this clock
    assert ("interactions", "timestamp", "in the future") in {(p.table, p.column, p.check) for p in report.errors}


def test_parquet_and_file_uris_read_the_same_tables(tmp_path):
    csv = read_raw_tables(DATA / "valid")
    for name, table in csv.items():
        write_table(table, tmp_path / "pq", name)
    a, _ = validate_uri(str(DATA / "valid"), now=1.8e9)
    b, _ = validate_uri(f"file://{tmp_path / 'pq'}", now=1.8e9)
    assert a is not None and b is not None
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    # A typed Parquet column of the wrong kind is reported like a CSV cell.
    items = csv["items"].set_column(2, "created_at", pa.array(["soon"] * csv["items"].num_rows))
    write_table(items, tmp_path / "pq", "items")
    _, report = validate_uri(str(tmp_path / "pq"), now=1.8e9)
    assert [(p.table, p.column, p.check) for p in report.errors] == [("items", "created_at", "wrong type")]


def test_the_cli_and_training_refuse_with_the_same_report_and_no_traceback():
    env = {"RAYFEED_DATA__DATASET": "tables", "RAYFEED_DATA__TABLES__URI": str(DATA / "unknown_event"),
           "PATH": str(Path(sys.executable).parent)}
    script = str(Path(sys.executable).with_name("rayfeed"))
    validate = subprocess.run([script, "data", "validate", str(DATA / "unknown_event")], capture_output=True,
                              text=True, timeout=120, cwd=ROOT)
    train = subprocess.run([script, "train", "--no-ray"], capture_output=True, text=True, timeout=120, cwd=ROOT,
                           env=env)
    for run in (validate, train):
        assert run.returncode == EXIT_ERRORS, run.stderr[-2000:]
        assert "Traceback" not in run.stdout + run.stderr
        assert "interactions.event" in run.stdout + run.stderr and "'poke'" in run.stdout + run.stderr
    assert "training refused" in train.stderr


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_training_refuses_each_corruption_with_the_validation_report(variant, monkeypatch, capsys):
    import cli.main as cli

    monkeypatch.setenv("RAYFEED_DATA__DATASET", "tables")
    monkeypatch.setenv("RAYFEED_DATA__TABLES__URI", str(DATA / variant))
    assert cli.main(["train", "--no-ray"]) == EXIT_ERRORS
    err = capsys.readouterr().err
    table, column, check = VARIANTS[variant]
    assert (f"{table}.{column}" if column else table) in err and check in err and "training refused" in err


def test_loading_refuses_an_invalid_dataset_with_its_report():
    with pytest.raises(InvalidDataset) as refused:
        load_tables(tables_config(DATA / "dangling_item"))
    assert "unknown item" in str(refused.value) and refused.value.report.exit_code == EXIT_ERRORS


def test_id_maps_keep_earlier_assignments_and_give_unknown_users_a_stable_index():
    first = IdMap.build(["u2", "u10", "u1"])
    assert first.to_internal(["u1", "u10", "u2", "zz"]).tolist() == [1, 2, 3, -1]
    grown = IdMap.build(["u0", "u1", "u3"], previous=first)
    assert grown.to_internal(["u1", "u10", "u2", "u0", "u3"]).tolist() == [1, 2, 3, 4, 5]
    assert grown.to_external([5, 1, 99]) == ["u3", "u1", None]
    assert grown.guest("new-user") == grown.guest("new-user") > len(grown)
    assert IdMap.build([3, 1, 2]).integer_ids and not first.integer_ids


def test_an_event_log_becomes_a_dataset_with_the_users_ids_kept():
    dataset = load_tables(tables_config(DATA / "valid"))
    ids = dataset.ids
    assert ids is not None and list(ids.users.external) == ["u1", "u2", "u3"]
    log = dataset.interactions.assign(user=ids.users.to_external(dataset.interactions["user_id"]),
                                      item=ids.items.to_external(dataset.interactions["item_id"]))
    # The engagement log: one row per engaged (user, item), a hide overriding; impressions stay in events.
    assert sorted(zip(log["user"], log["item"], log["rating"])) == [("u1", "m1", 4.0), ("u2", "m2", 4.0),
                                                                     ("u2", "m3", 1.0), ("u3", "m1", 5.0)]
    row = log[(log["user"] == "u2") & (log["item"] == "m2")].iloc[0]
    assert row["click"] == 1 and row["like"] == 0 and row["watch"] == pytest.approx(42.5 / 600)
    assert (dataset.events["event"] == "impression").sum() == 4
    items = dataset.items.set_index("item_id")
    m2 = items.loc[ids.items.one("m2")]
    assert m2["min_age"] == 17 and m2["topics"] == ("Horror",) and m2["title"] == "Second"
    assert items.loc[ids.items.one("m3"), "content_rating"] == "NR"
    users = dataset.users.set_index("user_id")
    assert users.loc[ids.users.one("u2"), "age"] == 19 and users.loc[ids.users.one("u3"), "age"] == 0
    assert users.loc[ids.users.one("u1"), "occupation"] == "unknown"  # no occupation column


def test_impressions_are_labelled_by_request_then_by_time():
    events = pd.DataFrame({
        "user_id": [1, 1, 1, 1, 2, 2], "item_id": [7, 7, 8, 8, 7, 7],
        "event": ["impression", "like", "impression", "click", "impression", "click"],
        "timestamp": [100.0, 105.0, 100.0, 9000.0, 200.0, 210.0],
        "value": [np.nan] * 6, "position": [1, -1, 2, -1, 1, -1],
        "request_id": ["r1", "r1", "r1", None, None, None],
    })
    labelled = impression_labels(events, watch_seconds_cap=600, window_s=60)
    by = {(u, i): r for u, i, r in zip(labelled["user_id"], labelled["item_id"], labelled.to_dict("records"))}
    assert by[(1, 7)]["click"] == 1 and by[(1, 7)]["like"] == 1  # the same request: a like implies the click
    assert by[(1, 8)]["click"] == 0  # a click hours later, with no request id, belongs to no impression
    assert by[(2, 7)]["click"] == 1 and by[(2, 7)]["position"] == 1  # no request ids: within the window


def test_movielens_round_trips_through_the_contract_with_string_ids(tmp_path):
    from app.data import load_dataset
    from app.data.export import export_dataset

    built_in = load_dataset(DataConfig())
    rows = export_dataset(built_in, tmp_path, string_ids=True)
    assert rows["interactions"] == len(built_in.interactions)
    tables, report = validate_uri(str(tmp_path), now=time.time())
    assert report.exit_code == EXIT_OK and tables is not None and tables.rating_log
    dataset = load_tables(tables_config(tmp_path))
    to_ml = {i: int(e[1:]) for i, e in enumerate(dataset.ids.items.external, start=1)}
    users = {i: int(e[1:]) for i, e in enumerate(dataset.ids.users.external, start=1)}
    mapped = dataset.interactions.assign(user_id=dataset.interactions["user_id"].map(users),
                                         item_id=dataset.interactions["item_id"].map(to_ml))
    key = ["user_id", "item_id", "timestamp"]
    left = mapped.sort_values(key, ignore_index=True)[key + ["rating"]]
    right = built_in.interactions.sort_values(key, ignore_index=True)[key + ["rating"]]
    assert (left.to_numpy() == right.to_numpy()).all()
    assert len(dataset.social_edges) == len(built_in.social_edges) and dataset.ids.users.external[0] == "u1"


def test_docs_describe_every_column_of_the_contract():
    text = (ROOT / "docs" / "data.md").read_text()
    assert markdown() in text  # the tables in docs/data.md are the declarations, regenerated
    for table in TABLES.values():
        for column in table.columns:
            assert f"`{column.name}`" in text


def test_notifications_name_users_by_the_datasets_own_ids():
    from app.collator.config import NotificationConfig
    from app.collator.inputs import notifications_for
    from app.pipeline import FeedQuery

    dataset = load_tables(tables_config(DATA / "valid"))
    dataset.social_edges = pd.DataFrame({"user_id": [1, 2, 2, 3], "friend_id": [2, 1, 3, 2],
                                         "weight": 1.0, "close": False})
    dataset.__dict__.pop("friend_lists", None)
    query = FeedQuery(user_id=1, friend_ids=(2,))
    config = NotificationConfig(friend_request_probability=1.0)
    (request,) = [n for n in notifications_for(query, dataset, config, seed=1) if n.kind == "friend_request"]
    assert request.notification_id == "fr:u1:u3" and request.text == "User u3 sent you a friend request"


def test_a_serving_dataset_keeps_its_friends_without_the_edge_rows_or_the_log():
    dataset = load_tables(tables_config(DATA / "valid"))
    dataset.social_edges = pd.DataFrame({"user_id": [1, 2, 2, 3], "friend_id": [2, 1, 3, 2],
                                         "weight": 1.0, "close": [False, False, True, False]})
    dataset.__dict__.pop("friend_lists", None)
    serving = dataset.for_serving()
    assert serving.social_edges.empty and serving.interactions.empty and len(dataset.interactions)
    assert serving.friends_of(2).tolist() == [1, 3] and serving.close_friends_of(2).tolist() == [3]
    assert serving.social_edges.columns.tolist() == dataset.social_edges.columns.tolist()
