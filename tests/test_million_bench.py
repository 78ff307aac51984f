"""benchmarks/million_items.py: the config overrides it serves the 1M world with, and the
reduced training split (only sampled users are labelled; history + labels = the whole log)."""
import dataclasses

import numpy as np
import pandas as pd

from config import load_config
from benchmarks.million_items import (
    WORLD, Reduction, build_key, contract_overrides, export_contract, million_overrides, split_for_reduced_training,
)


def test_overrides_validate_and_name_the_reference_sizes(tmp_path):
    overrides = million_overrides(tmp_path, WORLD, Reduction())
    config = load_config(overrides=overrides)
    assert config.data.dataset == "synthetic" and config.data.synthetic.n_items == 1_000_000
    assert config.data.cache_dir.is_absolute() and config.artifacts.root == str((tmp_path / "artifacts").resolve())
    assert config.retrieval.index.kind == "ivf"
    assert (config.retrieval.sources.total_candidates, config.ranking.output_size,
            config.reranking.output_size) == (5000, 500, 100)
    assert config.training.refit_retrieval is False
    changed = dataclasses.replace(Reduction(), ranker_users=10)
    assert build_key(overrides, Reduction()) != build_key(million_overrides(tmp_path, WORLD, changed), changed)


def test_the_contract_variant_exports_the_world_once_and_reads_it_as_tables(tmp_path):
    from app.data.loading import validate_uri

    world = {"n_users": 40, "n_items": 120, "n_creators": 10}
    overrides = contract_overrides(million_overrides(tmp_path, world, Reduction()), tmp_path, world)
    config = load_config(overrides=overrides)
    assert config.data.dataset == "tables" and config.data.tables.uri == str(tmp_path.resolve() / "million-contract-40-120-10")
    assert build_key(overrides, Reduction()) != build_key(million_overrides(tmp_path, world, Reduction()), Reduction())
    lines: list[str] = []
    first = export_contract(overrides, lines.append)
    tables, report = validate_uri(config.data.tables.uri)
    assert tables is not None and report.exit_code == 0, report.render()
    assert str(tables.items["item_id"].iloc[0]).startswith("m")  # string ids, as a user's tables would have
    assert export_contract(overrides, lines.append) == first and "reusing" in lines[-1]


def test_reduced_split_labels_only_the_sampled_users():
    rng = np.random.default_rng(0)
    log = pd.DataFrame({"user_id": np.repeat(np.arange(1, 41), 10), "item_id": rng.integers(1, 500, 400),
                        "rating": 4.0, "timestamp": rng.integers(0, 10_000, 400)})
    history, labels = split_for_reduced_training(log, 0.2, ranker_users=5, seed=3)
    assert labels["user_id"].nunique() == 5 and len(labels) == 5 * 2
    assert len(history) + len(labels) == len(log)
    merged = pd.concat([history, labels]).sort_values(["user_id", "timestamp", "item_id"], ignore_index=True)
    assert merged.equals(log.sort_values(["user_id", "timestamp", "item_id"], ignore_index=True))
    for user, g in labels.groupby("user_id"):  # the labels are each sampled user's newest rows
        assert g["timestamp"].min() >= history.loc[history["user_id"] == user, "timestamp"].max()
