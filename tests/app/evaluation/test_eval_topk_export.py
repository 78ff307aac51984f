"""`rayfeed eval topk` core: input validation with file/line/field errors, and the output contract."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.evaluation.recommenders import PopularityRecommender
from app.evaluation.sets import PAD
from app.evaluation.topk_export import (
    InputFileError,
    read_interactions_csv,
    read_users_file,
    recommend_topk,
    write_topk,
)

HEADER = "user_id,item_id,rating,timestamp\n"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_a_valid_file_with_the_schema(tmp_path):
    path = write(tmp_path, "h.csv", "timestamp,item_id,extra,user_id,rating\n5,10,x,1,4\n6, 11 ,y,2,3.5\n")
    frame = read_interactions_csv(path)
    assert frame.dtypes.astype(str).to_dict() == {
        "user_id": "int64", "item_id": "int64", "rating": "float32", "timestamp": "int64"}
    assert frame.values.tolist() == [[1, 10, 4.0, 5], [2, 11, 3.5, 6]]


@pytest.mark.parametrize(
    "body, line, field, detail",
    [
        ("user_id,item_id,rating\n1,2,3\n", 1, "timestamp", "missing column"),
        (HEADER + "1,2,3,4\n1,x2,3,4\n", 3, "item_id", "'x2'"),
        (HEADER + "1,2,3,4\n1.5,2,3,4\n", 3, "user_id", "'1.5'"),
        (HEADER + "-1,2,3,4\n", 2, "user_id", "non-negative"),
        (HEADER + "1,2,good,4\n", 2, "rating", "finite number"),
        (HEADER + "1,2,nan,4\n", 2, "rating", "finite number"),
        (HEADER + "1,2,,4\n", 2, "rating", "finite number"),
        (HEADER + "1,2,3,4.5\n", 2, "timestamp", "integer"),
        (HEADER + "1,2,3,4\n\n1,2,3,4\n", 3, "user_id", "''"),  # a blank line keeps the numbering
        (HEADER + "1,2,3\n", 2, "timestamp", "''"),  # short row
        (HEADER + "1,2,3,4,5,6\n", 2, None, "malformed"),  # long row
        ("", 1, None, "empty file"),
    ],
)
def test_bad_interactions_name_file_line_and_field(tmp_path, body, line, field, detail):
    path = write(tmp_path, "H.csv", body)
    with pytest.raises(InputFileError, match=detail) as err:
        read_interactions_csv(path)
    assert (err.value.path, err.value.line, err.value.field) == (str(path), line, field)
    assert str(path) in str(err.value) and f"line {line}" in str(err.value)


def test_users_file(tmp_path):
    assert read_users_file(write(tmp_path, "u.txt", "3\n1\n\n 3 \n2\n")).tolist() == [3, 1, 2]
    assert read_users_file(write(tmp_path, "empty.txt", "")).tolist() == []
    with pytest.raises(InputFileError, match=r"u2.txt, line 3, field 'user_id'.*'abc'"):
        read_users_file(write(tmp_path, "u2.txt", "1\n2\nabc\n"))


def test_write_topk_contract(tmp_path):
    rng = np.random.default_rng(0)
    users, items = np.nonzero(rng.random((30, 20)) < 0.3)
    history = pd.DataFrame({"user_id": users + 1, "item_id": items + 100, "rating": 4.0, "timestamp": 7})
    h_csv = tmp_path / "H.csv"
    history.to_csv(h_csv, index=False)
    # User 999 is unknown (cold start); user 5 appears twice.
    listed = [5, 999, 1, 5, 30]
    u_txt = write(tmp_path, "U.txt", "\n".join(map(str, listed)) + "\n")
    out = tmp_path / "TOPK.csv"
    rows = write_topk(None, h_csv, u_txt, 8, out)  # None: the default model (EASE)

    written = pd.read_csv(out)
    assert list(written.columns) == ["user_id", "item_id", "rank"]
    pd.testing.assert_frame_equal(written, rows)
    assert list(dict.fromkeys(written.user_id)) == [5, 999, 1, 30]
    seen = set(zip(history.user_id, history.item_id))
    for user, group in written.groupby("user_id", sort=False):
        assert group["rank"].tolist() == list(range(1, len(group) + 1))
        assert len(group) == min(8, 20 - history[history.user_id == user].item_id.nunique())
        assert not {(user, i) for i in group.item_id} & seen
    assert set(written.item_id) <= set(history.item_id)  # never an item absent from H.csv
    pop = PopularityRecommender()
    pop.fit(history)
    assert written[written.user_id == 999].item_id.tolist() == pop.recommend_cold(1, 8)[0].tolist()
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_users_with_fewer_unseen_items_get_fewer_rows_and_k_is_checked():
    history = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 11, 10], "rating": 1.0, "timestamp": 0})
    lists = recommend_topk(PopularityRecommender, history, np.array([1, 2]), 3)
    assert lists.items.tolist() == [[PAD, PAD, PAD], [11, PAD, PAD]]
    with pytest.raises(ValueError, match="k must be"):
        recommend_topk(PopularityRecommender, history, np.array([1]), 0)


class LeakyRecommender:
    """Breaks the contract: recommends the user's own history."""

    name = "leaky"

    def fit(self, interactions):
        self.first = int(interactions.item_id.iloc[0])

    def recommend(self, user_ids, k, exclude):
        return np.full((len(user_ids), k), self.first)


def test_a_model_breaking_the_contract_is_an_error(tmp_path):
    history = pd.DataFrame({"user_id": [1, 2], "item_id": [10, 11], "rating": 1.0, "timestamp": 0})
    with pytest.raises(ValueError, match="history"):
        recommend_topk(LeakyRecommender, history, np.array([1]), 1)
    h_csv = write(tmp_path, "H.csv", HEADER)
    with pytest.raises(InputFileError, match="no interactions"):
        write_topk(None, h_csv, write(tmp_path, "U.txt", "1\n"), 5, tmp_path / "out.csv")


def test_a_long_row_after_the_first_names_its_line(tmp_path):
    path = write(tmp_path, "H.csv", HEADER + "1,2,3,4\n1,2,3,4\n1,2,3,4,5\n")
    with pytest.raises(InputFileError, match="line 4"):
        read_interactions_csv(path)
