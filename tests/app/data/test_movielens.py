import numpy as np
import pytest

from app.data import DataConfig, DataFormatError, labels_from_ratings, load_dataset
from app.data.movielens import GENRES


@pytest.fixture(scope="module")
def movielens():
    return load_dataset(DataConfig())


def test_movielens_has_the_real_tables(movielens):
    assert movielens.n_users == 943
    assert movielens.n_items == 1682
    assert len(movielens.interactions) == 100_000
    assert set(movielens.interactions["rating"].unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert movielens.users["gender"].isin(["M", "F"]).all()


def test_real_creators_and_content_ratings_come_from_freebase(movielens):
    items = movielens.items
    linked = ~movielens.creators["entity"].str.startswith("unknown:")
    # Most movies link to a real director; several directors have more than one film.
    assert linked.sum() > 800
    assert (movielens.creators.loc[linked, "n_items"] > 1).sum() > 100
    assert set(items["content_rating"]) <= {"G", "PG", "PG-13", "R", "NR"}
    assert (items["content_rating"] == "R").sum() > 500
    assert (items.loc[items["content_rating"] == "R", "min_age"] == 17).all()


def test_unlinked_movies_get_their_own_pseudo_creator(movielens):
    unknown = movielens.creators[movielens.creators["entity"].str.startswith("unknown:")]
    assert (unknown["n_items"] == 1).all()


def test_genres_are_topics(movielens):
    assert movielens.topics == GENRES
    toy_story = movielens.items.set_index("item_id").loc[1, "topics"]
    assert toy_story == ("Animation", "Children's", "Comedy")
    assert movielens.item_topic_matrix.shape == (1683, len(GENRES))


def test_label_mapping_is_the_documented_one():
    labels = labels_from_ratings(np.array([1, 2, 3, 4, 5], dtype=np.float32))
    assert labels["like"].tolist() == [0, 0, 0, 1, 1]
    assert labels["share"].tolist() == [0, 0, 0, 0, 1]
    assert labels["hide"].tolist() == [1, 1, 0, 0, 0]
    assert labels["watch"].tolist() == [0, 0.25, 0.5, 0.75, 1.0]


def _write_grouplens(tmp_path, data_lines, user_lines=None):
    root = tmp_path / "gl"
    root.mkdir()
    (root / "u.user").write_text("\n".join(user_lines or ["1|24|M|technician|85711", "2|53|F|other|94043"]) + "\n")
    flags = "|".join(["0"] * 5 + ["1"] + ["0"] * 13)
    (root / "u.item").write_text(f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags}\n2|GoldenEye (1995)|01-Jan-1995||http://x|{flags}\n")
    (root / "u.data").write_text("\n".join(data_lines) + "\n")
    return root


def test_grouplens_files_are_read_when_present(tmp_path):
    root = _write_grouplens(tmp_path, ["1\t1\t5\t881250949", "2\t2\t3\t881250950"])
    ds = load_dataset(DataConfig(grouplens_dir=root, cache_dir=tmp_path / "cache"))
    assert ds.n_users == 2 and ds.n_items == 2
    assert ds.items["topics"].iloc[0] == ("Comedy",)
    assert (ds.items["content_rating"] == "NR").all()


def test_malformed_rows_name_file_row_and_field(tmp_path):
    root = _write_grouplens(tmp_path, ["1\t1\t5\t881250949", "2\tabc\t3\t881250950"])
    with pytest.raises(DataFormatError) as err:
        load_dataset(DataConfig(grouplens_dir=root, cache_dir=tmp_path / "cache"))
    assert err.value.row == 2 and err.value.field == "item_id"
    assert "u.data" in str(err.value) and "'abc'" in str(err.value)


def test_unknown_ids_are_errors(tmp_path):
    root = _write_grouplens(tmp_path, ["1\t1\t5\t881250949", "2\t99\t3\t881250950"])
    with pytest.raises(DataFormatError) as err:
        load_dataset(DataConfig(grouplens_dir=root, cache_dir=tmp_path / "cache"))
    assert err.value.field == "item_id" and err.value.row == 2 and "99" in str(err.value)


def test_out_of_range_rating_is_an_error(tmp_path):
    root = _write_grouplens(tmp_path, ["1\t1\t9\t881250949"])
    with pytest.raises(DataFormatError, match="rating"):
        load_dataset(DataConfig(grouplens_dir=root, cache_dir=tmp_path / "cache"))


def test_unknown_dataset_name_is_an_error():
    with pytest.raises(ValueError, match="movielens-100k', 'synthetic' or 'tables'"):
        load_dataset(DataConfig(dataset="nope"))
