"""Example building (labels, negatives, cut-offs) and the training loop, in-process and on Ray."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.data import labels_from_ratings
from app.ranking import HEADS, RankerArtifacts, RankingConfig
from training.ranker import (
    LOOP_COLUMNS, build_ranking_examples, fit_dcn, fit_ranker, label_windows, split_user_tail, train_loop,
)

FAST = {"training": {"epochs": 2, "negatives_per_positive": 3, "batch_size": 128, "threads": 1},
        "model": {"deep_layers": [16], "expert_dim": 8, "tower_dim": 8}}


def test_split_user_tail_keeps_time_order_and_sizes(make_world):
    _, _, interactions = make_world(seed=1)
    head, tail = split_user_tail(interactions, 0.25)
    assert len(head) + len(tail) == len(interactions)
    for user, g in tail.groupby("user_id"):
        h = head[head["user_id"] == user]
        n = len(g) + len(h)
        assert len(g) == max(1, min(n - 1, int(np.floor(0.25 * n + 0.5))))
        assert (h["timestamp"].max(), 0) <= (g["timestamp"].min(), 1)


def test_examples_labels_negatives_and_cutoff(make_world):
    items, users, interactions = make_world(seed=2)
    config = RankingConfig.model_validate(FAST)
    history, labels = split_user_tail(interactions, 0.2)
    ex = build_ranking_examples(history, labels, items, users, config)
    assert ex.labels.shape == (len(ex), len(HEADS)) and ex.dense.shape[0] == len(ex)
    positives = ex.labels[:, 0] == 1
    # Every fresh label pair is a positive with the documented label mapping.
    label_pairs = {(u, i): r for u, i, r in labels[["user_id", "item_id", "rating"]].itertuples(index=False)}
    seen = set(zip(history["user_id"], history["item_id"]))
    fresh = {p for p in label_pairs if p not in seen}
    got = set(zip(ex.user_ids[positives], ex.item_ids[positives]))
    assert got == fresh
    for k in np.flatnonzero(positives)[:50]:
        want = labels_from_ratings(np.array([label_pairs[(ex.user_ids[k], ex.item_ids[k])]]))
        np.testing.assert_allclose(ex.labels[k], [want[h][0] for h in HEADS])
    # Negatives: all-zero labels, never in the user's history or labels, at most 3 per positive.
    neg = ~positives
    assert (ex.labels[neg] == 0).all()
    assert not any((u, i) in seen or (u, i) in label_pairs for u, i in zip(ex.user_ids[neg], ex.item_ids[neg]))
    assert neg.sum() <= 3 * positives.sum()
    assert len(set(zip(ex.user_ids, ex.item_ids))) == len(ex)  # no duplicates


def test_label_windows_are_disjoint_and_earlier(make_world):
    _, _, interactions = make_world(seed=4)
    history, labels = split_user_tail(interactions, 0.2)
    windows = label_windows(history, labels, extra=2)
    assert len(windows) == 3
    for (h_late, _), (h_early, l_early) in zip(windows, windows[1:]):
        assert len(h_early) + len(l_early) == len(h_late)


def test_training_loop_learns_and_reports_each_epoch(make_world):
    items, users, interactions = make_world(seed=5, n_rows=1500)
    config = RankingConfig.model_validate({**FAST, "training": {**FAST["training"], "epochs": 3}})
    history, labels = split_user_tail(interactions, 0.2)
    ex = build_ranking_examples(history, labels, items, users, config)
    reports = []
    train_loop(ex, config, report=lambda m, model: reports.append(m), log=lambda _: None)
    assert [r["epoch"] for r in reports] == [1, 2, 3]
    assert reports[-1]["train_loss"] < reports[0]["train_loss"]
    assert reports[-1]["valid_auc_click"] > 0.6  # users prefer a genre each: learnable


def test_a_restarted_run_continues_after_its_checkpoint_epoch(make_world):
    """A Ray Train restart hands fit_dcn its last checkpoint and the next epoch: it trains the
    remaining epochs from those weights, and none when all were done."""
    items, users, interactions = make_world(seed=5, n_rows=1500)
    config = RankingConfig.model_validate({**FAST, "training": {**FAST["training"], "epochs": 3}})
    history, labels = split_user_tail(interactions, 0.2)
    ex = build_ranking_examples(history, labels, items, users, config)
    rows = {name: getattr(ex, name) for name in LOOP_COLUMNS}
    states = {}
    fit_dcn(rows, None, ex.schema, config, log=lambda _: None,
            report=lambda m, model: states.setdefault(m["epoch"], {k: v.clone() for k, v in model.state_dict().items()}))
    reports = []
    resumed = fit_dcn(rows, None, ex.schema, config, log=lambda _: None, init_state=states[1], start_epoch=2,
                      report=lambda m, model: reports.append(m))
    assert [r["epoch"] for r in reports] == [2, 3]
    assert not torch.equal(resumed.state_dict()["deep.0.weight"], states[1]["deep.0.weight"])  # it trained on
    untouched = fit_dcn(rows, None, ex.schema, config, log=lambda _: None, init_state=states[3], start_epoch=4,
                        report=lambda m, model: reports.append(m))
    assert len(reports) == 2  # no epoch left
    for name, tensor in untouched.state_dict().items():
        torch.testing.assert_close(tensor, states[3][name])


def test_fit_ranker_in_process_writes_loadable_artifacts(tmp_path, make_world):
    items, users, interactions = make_world(seed=6)
    history, labels = split_user_tail(interactions, 0.2)
    artifacts = fit_ranker(history, labels, items, users, RankingConfig.model_validate(FAST),
                           artifact_dir=tmp_path / "ranker", use_ray=False, log=lambda _: None)
    loaded = RankerArtifacts.load(tmp_path / "ranker")
    assert loaded.store.as_of == interactions["timestamp"].max() == artifacts.store.as_of


def test_the_unknown_item_code_is_trained_by_dropout_and_kept_by_the_mean_fill(make_world):
    """A published item is scored with the unknown item code: with `item_id_dropout` training
    learns that row and the mean fill leaves it; without, the fill makes it the seen rows' mean."""
    items, users, interactions = make_world(seed=6)
    history, labels = split_user_tail(interactions, 0.2)
    rows = {}
    for dropout in (0.0, 0.3):
        config = RankingConfig.model_validate({**FAST, "training": {**FAST["training"], "item_id_dropout": dropout}})
        examples = build_ranking_examples(history, labels, items, users, config)
        column = examples.schema.categorical_names.index("item_id")
        assert (examples.categorical[:, column] > 0).all()  # every example names a known item
        torch.manual_seed(0)
        model = train_loop(examples, config, log=lambda _: None)
        table = model.embeddings[column].weight.detach()
        seen = np.unique(examples.categorical[:, column])
        before = table[0].clone()
        model.fill_unseen_rows(examples.categorical, trained_unknown=(column,) if dropout else ())
        after = model.embeddings[column].weight.detach()
        if dropout:
            assert torch.equal(after[0], before)  # learned, kept
        else:
            assert torch.allclose(after[0], table[torch.as_tensor(seen)].mean(0))
        rows[dropout] = before
    assert not torch.allclose(rows[0.0], rows[0.3])  # dropout moved the unknown row in training


@pytest.mark.slow
def test_ray_train_torchtrainer_on_a_small_movielens_sample(tmp_path):
    import ray

    from app.data import DataConfig, load_dataset
    from training.ranker import build_training_set, train_ranker

    ds = load_dataset(DataConfig())
    sample = ds.interactions[ds.interactions["user_id"] <= 100]
    history, labels = split_user_tail(sample, 0.1)
    config = RankingConfig.model_validate(FAST)
    examples = build_training_set(history, labels, ds.items, ds.users, config)
    was_running = ray.is_initialized()
    result = train_ranker(examples, config, storage_path=tmp_path / "ray", name="ranker_test")
    assert ray.is_initialized() == was_running  # shut down only what it started
    assert result.metrics["epoch"] == 2 and np.isfinite(result.metrics["train_loss"])
    assert result.checkpoint_path is not None
    assert len(list((tmp_path / "ray" / "ranker_test").glob("**/model.pt"))) >= 1
    # The cascade's pre-ranker is distilled from that model by its own Ray Train job.
    from training.pre_ranker import distill_pre_ranker

    net, report = distill_pre_ranker(examples.dense, examples.categorical, examples.user_ids, result.model, config,
                                     storage_path=tmp_path / "ray", log=lambda _: None)
    assert ray.is_initialized() == was_running
    assert len(list((tmp_path / "ray").glob("pre_ranker-*/**/pre_ranker.pt"))) >= 1  # a run of its own
    assert report["spearman"] > 0.5 and net.n_dense == examples.dense.shape[1]
