"""The ranking cascade: the cut's contract, the pre-ranker's distillation, the artifact fallback."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from app.organic import RankingPart, cascade_state
from app.pipeline import BatchEntry, Candidates, FeedQuery, PipelineRunner
from app.ranking.artifacts import PRE_RANKER_FILE, RankerArtifacts
from app.ranking.config import RankingConfig
from app.ranking.features import CATEGORICAL_ROWS, DENSE_ROWS, RankingFeatureAssembler
from app.ranking.prerank import PRERANK_COLUMN, CascadeCut, PreRanker, PreRankerNet
from app.ranking.scorer import MultiTaskScorer
from config import config_from_mapping
from training.pre_ranker import agreement, distill_loop, teacher_scores
from training.ranker import build_ranking_examples, fit_ranker, split_user_tail

FAST = {"training": {"epochs": 2, "negatives_per_positive": 5, "extra_label_windows": 0},
        "cascade": {"epochs": 10, "batch_size": 128, "keep": 10}}


def items(item_ids: np.ndarray) -> Candidates:
    return Candidates.from_source("ann", item_ids, np.zeros(len(item_ids)))


def candidates_with(scores: list[float]) -> Candidates:
    n = len(scores)
    return Candidates(np.arange(100, 100 + n), np.array(["ann"] * n, dtype=object), np.zeros(n, np.float32),
                      {}, {PRERANK_COLUMN: np.asarray(scores, np.float32)})


def test_cut_keeps_the_top_n_best_first_and_records_why_the_rest_left():
    runner = PipelineRunner("ranking", sources=[], stages=[CascadeCut(3)])
    result = runner.run(FeedQuery(user_id=1), candidates_with([0.1, 0.9, 0.5, 0.9, -1.0, 0.7]))
    assert result.candidates.item_ids.tolist() == [101, 103, 105]  # ties keep input order
    assert sorted(r.item_id for r in result.removals) == [100, 102, 104]
    assert result.removal_counts() == {"cascade_cut: below the pre-ranker's top 3": 3}


def test_cut_with_fewer_candidates_than_n_keeps_them_all_and_removes_nothing():
    result = PipelineRunner("ranking", sources=[], stages=[CascadeCut(50)]).run(
        FeedQuery(user_id=1), candidates_with([0.3, 0.1, 0.2]))
    assert result.candidates.item_ids.tolist() == [100, 101, 102] and result.removal_counts() == {}


def test_cut_refuses_a_keep_below_one():
    with pytest.raises(ValueError, match="keep must be >= 1"):
        CascadeCut(0)


@pytest.fixture(scope="module")
def trained(make_world, tmp_path_factory):
    items, users, interactions = make_world(seed=7, n_rows=1500)
    history, labels = split_user_tail(interactions, 0.2)
    config = RankingConfig.model_validate(FAST)
    directory = tmp_path_factory.mktemp("ranker") / "ranker"
    artifacts = fit_ranker(history, labels, items, users, config, artifact_dir=directory, use_ray=False,
                           log=lambda _: None)
    return artifacts, directory, (history, labels, items, users, config)


def test_distilled_pre_ranker_follows_the_dcn(trained):
    artifacts, _, (history, labels, items, users, config) = trained
    examples = build_ranking_examples(history, labels, items, users, config)
    target = teacher_scores(artifacts.model, examples.dense, examples.categorical, config)
    codes = examples.categorical[:, examples.schema.categorical_names.index("item_id")]
    report = agreement(artifacts.pre_ranker, examples.dense, codes, target, examples.user_ids)
    untrained = PreRankerNet.for_dcn(artifacts.model, config.cascade.hidden)
    untrained.fit_normaliser(examples.dense)
    baseline = agreement(untrained.eval(), examples.dense, codes, target, examples.user_ids)
    assert report["spearman"] > 0.6 and report["spearman"] > baseline["spearman"] + 0.2
    assert report["teacher_top_kept"] > baseline["teacher_top_kept"]


def test_pairwise_distillation_learns_the_order_within_each_user_not_their_levels():
    rng = np.random.default_rng(0)
    n, n_users = 4000, 40
    dense = rng.normal(size=(n, 6)).astype(np.float32)
    users = rng.integers(0, n_users, n)
    level = rng.normal(size=n_users)[users] * 10  # a per-user offset the cut never needs
    order = dense[:, 0] * 2 - dense[:, 3] + 0.5 * dense[:, 1] * dense[:, 2]
    target = (level + order).astype(np.float32)
    losses = []
    config = RankingConfig.model_validate({"cascade": {"epochs": 6, "batch_size": 256}})
    codes = np.zeros(n, np.int64)
    net = distill_loop(dense, codes, users, target, config, report=lambda m, _: losses.append(m["distill_loss"]),
                       log=lambda _: None)
    assert losses[-1] < losses[0]
    assert agreement(net, dense, codes, target, users)["spearman"] > 0.9


def test_a_restarted_distillation_resumes_after_its_checkpoint_epoch():
    from training.ray_job import Resumed

    rng = np.random.default_rng(1)
    dense, users = rng.normal(size=(600, 4)).astype(np.float32), rng.integers(0, 10, 600)
    target, codes = (dense[:, 0] - dense[:, 1]).astype(np.float32), np.zeros(600, np.int64)
    config = RankingConfig.model_validate({"cascade": {"epochs": 3, "batch_size": 128}})
    states = {}
    distill_loop(dense, codes, users, target, config, log=lambda _: None,
                 report=lambda m, net: states.setdefault(m["epoch"], {k: v.clone() for k, v in net.state_dict().items()}))
    epochs = []
    distill_loop(dense, codes, users, target, config, log=lambda _: None, resumed=Resumed(states[1], 1),
                 report=lambda m, _: epochs.append(m["epoch"]))
    assert epochs == [2, 3]
    done = distill_loop(dense, codes, users, target, config, log=lambda _: None, resumed=Resumed(states[3], 3),
                        report=lambda m, _: epochs.append(m["epoch"]))
    assert epochs == [2, 3]  # nothing left to run: the checkpoint's weights come back
    for name, tensor in done.state_dict().items():
        torch.testing.assert_close(tensor, states[3][name])


def test_pre_ranker_stage_scores_every_candidate_of_every_request(trained):
    artifacts, _, _ = trained
    stage = PreRanker(artifacts.pre_ranker, RankingFeatureAssembler(artifacts.store))
    requests = [(FeedQuery(user_id=u), items(np.arange(1, 1 + n))) for u, n in ((1, 30), (2, 7))]
    columns = stage.score_batch(requests)
    assert [len(c[PRERANK_COLUMN]) for c in columns] == [30, 7]
    alone = stage.score(*requests[1])[PRERANK_COLUMN]
    np.testing.assert_allclose(alone, columns[1][PRERANK_COLUMN], rtol=1e-5)  # batching changes nothing
    with pytest.raises(ValueError, match="dense features"):
        PreRanker(PreRankerNet(3), RankingFeatureAssembler(artifacts.store))


def test_artifact_round_trip_keeps_the_pre_ranker(trained):
    artifacts, directory, _ = trained
    loaded = RankerArtifacts.load(directory)
    for name, value in artifacts.pre_ranker.state_dict().items():
        assert torch.equal(loaded.pre_ranker.state_dict()[name], value)


def ranking_part(ranker: RankerArtifacts, **cascade) -> RankingPart:
    return RankingPart(ranker, config_from_mapping({"ranking": {"cascade": cascade, "output_size": 5}}))


def test_the_dcn_scores_only_the_survivors_and_the_cut_shows_in_the_stage_list(trained):
    artifacts, _, _ = trained
    part = ranking_part(artifacts, keep=12)
    assert [s.name for s in part.runner.stages][:5] == ["ranking_features", "pre_ranker", "exploration_picker",
                                                        "cascade_cut", "multitask_ranker"]
    entry = BatchEntry(FeedQuery(user_id=1), items(np.arange(1, 41)))
    result = part.run_batch([entry])[0]
    dcn = next(r for r in result.records if r.name == "multitask_ranker")
    assert dcn.n_in == 12 and len(result.candidates) == 5
    assert result.removal_counts()["cascade_cut: below the pre-ranker's top 12"] == 28


def test_a_batch_is_featurised_once_and_the_dcn_scores_the_survivors_rows(trained, monkeypatch):
    artifacts, _, _ = trained
    part = ranking_part(artifacts, keep=12)
    assemblies = []
    original = RankingFeatureAssembler.batch

    def counted(self, user_ids, item_ids, *args, **kwargs):
        assemblies.append(len(item_ids))
        return original(self, user_ids, item_ids, *args, **kwargs)

    monkeypatch.setattr(RankingFeatureAssembler, "batch", counted)
    entries = [BatchEntry(FeedQuery(user_id=u), items(np.arange(1, 41) + u)) for u in (1, 2)]
    results = part.run_batch(entries)
    assert assemblies == [80]  # both requests' 40 candidates, once: the DCN read the cut's rows
    monkeypatch.setattr(RankingFeatureAssembler, "batch", original)
    fresh = MultiTaskScorer.from_artifacts(artifacts)
    for entry, result in zip(entries, results):
        ranked = result.candidates
        assert np.isin(ranked.item_ids, entry.candidates.item_ids).all()
        bare = Candidates.from_source("ann", ranked.item_ids, np.zeros(len(ranked)))
        np.testing.assert_allclose(ranked.scores["p_click"], fresh.score(entry.query, bare)["p_click"], rtol=1e-5)


def test_the_feature_rows_stay_inside_ranking(trained):
    from app.organic import OrganicRequest, OrganicWork

    artifacts, _, _ = trained
    work = OrganicWork(OrganicRequest(user_id=1, now=0.0, limit=5, request_id="r"), FeedQuery(user_id=1),
                       items(np.arange(1, 41)))
    done = ranking_part(artifacts, keep=12).run(work)
    assert len(done.candidates) == 5
    assert not {DENSE_ROWS, CATEGORICAL_ROWS} & set(done.candidates.features)


def test_feature_rows_of_another_schema_are_refused(trained):
    artifacts, _, _ = trained
    scorer = MultiTaskScorer.from_artifacts(artifacts)
    wrong = items(np.arange(1, 4)).with_features({DENSE_ROWS: np.zeros((3, 2), np.float32),
                                                  CATEGORICAL_ROWS: np.zeros((3, 1), np.int64)})
    with pytest.raises(ValueError, match="feature rows of 2 dense and 1 categorical columns"):
        scorer.score(FeedQuery(user_id=1), wrong)


def test_an_artifact_without_a_pre_ranker_falls_back_to_the_dcn_on_everything(trained, tmp_path):
    artifacts, directory, _ = trained
    import shutil

    old = tmp_path / "old"
    shutil.copytree(directory, old)
    (old / PRE_RANKER_FILE).unlink()
    legacy = RankerArtifacts.load(old)
    assert legacy.pre_ranker is None
    part = ranking_part(legacy, keep=12)
    assert "pre_ranker" not in [s.name for s in part.runner.stages]
    assert part.cascade.startswith("off: the ranker artifact has no pre-ranker")
    off = config_from_mapping({"ranking": {"cascade": {"enabled": False}}})
    assert cascade_state(artifacts, off) == "off: ranking.cascade.enabled is false"
    result = part.run_batch([BatchEntry(FeedQuery(user_id=1), items(np.arange(1, 41)))])[0]
    assert next(r for r in result.records if r.name == "multitask_ranker").n_in == 40


def test_explain_notes_say_how_the_cascade_ran(trained):
    from app.organic import OrganicRequest, OrganicWork

    artifacts, _, _ = trained
    part = ranking_part(artifacts, keep=12)
    request = OrganicRequest(user_id=1, now=0.0, limit=5, request_id="r", explain=True)
    work = OrganicWork(request, FeedQuery(user_id=1), items(np.arange(1, 41)))
    done = part.run(work)
    assert done.notes["cascade"] == "on: the pre-ranker passed 12 of 40 candidates to the DCN"
    assert pd.Series(done.removed).get("cascade_cut: below the pre-ranker's top 12") == 28


def test_a_young_unproven_item_survives_the_cascade_cut_for_the_exploration_slot(trained):
    artifacts, _, _ = trained
    part = ranking_part(artifacts, keep=3)
    candidates = items(np.arange(1, 41)).with_features({
        "published_age_s": np.where(np.arange(1, 41) == 40, 60.0, 1e9),  # item 40 is minutes old
        "item_engagements": np.zeros(40),
    })
    result = part.run_batch([BatchEntry(FeedQuery(user_id=1), candidates)])[0]
    assert 40 in result.candidates.item_ids.tolist()
    assert result.candidates.features["explored"][result.candidates.item_ids == 40][0] == 1.0
