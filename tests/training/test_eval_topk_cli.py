"""`rayfeed eval topk` trains the organic pipeline on a CSV and writes valid top-K lists."""
from __future__ import annotations

import pandas as pd
import pytest

from app.data import DataConfig, load_dataset
from cli.main import main


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("topk")
    interactions = load_dataset(DataConfig()).interactions
    users = sorted(interactions["user_id"].unique())[:80]
    sample = interactions[interactions["user_id"].isin(users)][["user_id", "item_id", "rating", "timestamp"]]
    sample.to_csv(root / "H.csv", index=False)
    (root / "U.txt").write_text("\n".join(str(u) for u in [*users[:10], 99999]) + "\n")
    return root, sample


def test_eval_topk_writes_unseen_known_items_per_user(inputs, monkeypatch):
    root, sample = inputs
    monkeypatch.setenv("RAYFEED_RETRIEVAL__TWO_TOWER__EPOCHS", "1")
    monkeypatch.setenv("RAYFEED_RANKING__TRAINING__EPOCHS", "1")
    code = main(["eval", "topk", "--interactions", str(root / "H.csv"), "--users", str(root / "U.txt"),
                 "--k", "10", "--out", str(root / "TOPK.csv"), "--no-ray"])
    assert code == 0
    out = pd.read_csv(root / "TOPK.csv")
    assert list(out.columns) == ["user_id", "item_id", "rank"]
    assert set(out["user_id"]) == set(sorted(sample["user_id"].unique())[:10]) | {99999}
    assert (out.groupby("user_id").size() == 10).all()
    assert (out.groupby("user_id")["rank"].apply(list).apply(lambda r: r == list(range(1, len(r) + 1)))).all()
    history = set(zip(sample["user_id"], sample["item_id"]))
    assert not any((u, i) in history for u, i in zip(out["user_id"], out["item_id"]))
    assert out["item_id"].isin(sample["item_id"]).all()


def test_eval_topk_names_the_bad_row(inputs, tmp_path, capsys):
    root, _ = inputs
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id,rating,timestamp\n1,2,5,100\n1,abc,4,101\n")
    code = main(["eval", "topk", "--interactions", str(bad), "--users", str(root / "U.txt"),
                 "--k", "5", "--out", str(tmp_path / "o.csv"), "--model", "ease"])
    assert code == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "3" in err and "item_id" in err
