"""The DCN's shapes and ranges, the scorer's batch contract, position neutrality, persistence."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.pipeline.candidates import Candidates, FeedQuery
from app.ranking import (
    HEADS,
    SCORE_COLUMNS,
    DCNConfig,
    FeatureStore,
    MultiTaskScorer,
    RankerArtifacts,
    RankingConfig,
    RankingFeatureAssembler,
    ScoreWeights,
    build_model,
    combine_heads,
)
from training.ranker import build_ranking_examples, split_user_tail, train_loop

FAST = {"training": {"epochs": 1, "negatives_per_positive": 3, "batch_size": 128, "threads": 1},
        "model": {"deep_layers": [16], "expert_dim": 8, "tower_dim": 8}}


@pytest.fixture(scope="module")
def world(make_world):
    return make_world(seed=3)


@pytest.fixture(scope="module")
def trained(world):
    items, users, interactions = world
    config = RankingConfig.model_validate(FAST)
    history, labels = split_user_tail(interactions, 0.2)
    examples = build_ranking_examples(history, labels, items, users, config)
    model = train_loop(examples, config, log=lambda _: None)
    store = FeatureStore.build(interactions, items, users, config.features)
    return RankerArtifacts(config, store, model), examples


def requests_for(store: FeatureStore, n: int, seed: int = 0) -> list[tuple[FeedQuery, Candidates]]:
    rng = np.random.default_rng(seed)
    out = []
    for r in range(n):
        items = rng.choice(np.arange(0, store.n_item_slots + 3), size=int(rng.integers(1, 40)), replace=False)
        cands = Candidates.from_source("ann", items, rng.random(len(items)))
        if r % 2:
            cands = cands.with_features({"src_ann": rng.random(len(items)), "n_sources": np.ones(len(items))})
        out.append((FeedQuery(user_id=int(rng.integers(1, 45)), now=store.as_of - r * 3600.0), cands))
    return out


@pytest.mark.parametrize("bottom", ["shared", "mmoe"])
@pytest.mark.parametrize("combination", ["parallel", "stacked"])
@pytest.mark.parametrize("cross_rank", [0, 4])
def test_dcn_shapes_and_head_ranges(world, bottom, combination, cross_rank):
    items, users, interactions = world
    store = FeatureStore.build(interactions, items, users)
    config = RankingConfig(model=DCNConfig(bottom=bottom, combination=combination, cross_rank=cross_rank))
    model = build_model(config, store.schema()).eval()
    batch = RankingFeatureAssembler(store).batch(np.full(30, 2), np.arange(30), store.as_of)
    dense, cat = torch.from_numpy(batch.dense), torch.from_numpy(batch.categorical)
    logits = model(dense, cat)
    assert logits.shape == (30, len(HEADS))
    probs = model.predict(dense, cat)
    assert ((probs >= 0) & (probs <= 1)).all()
    logits.sum().backward()  # every path is differentiable


def test_scorer_columns_ranges_and_final_combination(trained):
    artifacts, _ = trained
    scorer = MultiTaskScorer.from_artifacts(artifacts)
    query, cands = requests_for(artifacts.store, 1)[0]
    columns = scorer.score(query, cands)
    assert set(columns) == set(SCORE_COLUMNS)
    for name in SCORE_COLUMNS[:-1]:
        assert columns[name].shape == (len(cands),)
        assert ((columns[name] >= 0) & (columns[name] <= 1)).all()
    w = artifacts.config.weights
    want = w.click * columns["p_click"] + w.like * columns["p_like"] + w.share * columns["p_share"] \
        - w.hide * columns["p_hide"] + w.watch * columns["e_watch"]
    np.testing.assert_allclose(columns["final"], want, rtol=1e-6)
    scorer.reconfigure(ScoreWeights(click=1, like=0, share=0, hide=0, watch=0))
    np.testing.assert_allclose(scorer.score(query, cands)["final"], columns["p_click"], rtol=1e-6)


def test_combine_heads_signs():
    heads = {c: np.array([0.5]) for c in ("p_click", "p_like", "p_share", "p_hide", "e_watch")}
    assert combine_heads(heads, ScoreWeights(click=0, like=0, share=0, hide=2, watch=0))[0] == pytest.approx(-1.0)


def test_score_batch_equals_per_request_scoring(trained):
    artifacts, _ = trained
    scorer = MultiTaskScorer.from_artifacts(artifacts)
    requests = requests_for(artifacts.store, 7, seed=1)
    batched = scorer.score_batch(requests)
    assert len(batched) == len(requests)
    for (query, cands), got in zip(requests, batched):
        alone = scorer.score(query, cands)
        for name in SCORE_COLUMNS:
            np.testing.assert_allclose(got[name], alone[name], rtol=1e-5, atol=1e-6)


def test_hydrated_candidates_score_like_raw_ones(trained):
    artifacts, _ = trained
    scorer = MultiTaskScorer.from_artifacts(artifacts)
    assembler = RankingFeatureAssembler(artifacts.store)
    query, cands = requests_for(artifacts.store, 2, seed=2)[1]
    hydrated = cands.with_features(assembler.hydrate(query, cands))
    np.testing.assert_allclose(scorer.score(query, hydrated)["final"], scorer.score(query, cands)["final"], rtol=1e-6)
    pure = MultiTaskScorer.from_artifacts(artifacts, hydrate_missing=False)
    np.testing.assert_allclose(pure.score(query, hydrated)["final"], scorer.score(query, cands)["final"], rtol=1e-6)
    with pytest.raises(KeyError, match="lack ranking features"):
        pure.score(query, cands)


def test_empty_requests_and_empty_candidates(trained):
    artifacts, _ = trained
    scorer = MultiTaskScorer.from_artifacts(artifacts)
    assert scorer.score_batch([]) == []
    out = scorer.score_batch([(FeedQuery(user_id=1), Candidates.empty())] + requests_for(artifacts.store, 1))
    assert all(len(v) == 0 for v in out[0].values()) and len(out[1]["final"]) > 0


def test_position_is_neutral_at_serving(trained):
    artifacts, examples = trained
    model = artifacts.model
    # The unknown index is exactly zero and receives no gradient.
    assert torch.count_nonzero(model.position_bias.weight[0]) == 0
    dense, cat = torch.from_numpy(examples.dense[:50]), torch.from_numpy(examples.categorical[:50])
    with torch.no_grad():
        model.position_bias.weight[1:] = 1.5  # pretend training learned a strong position effect
        neutral = model(dense, cat)
        unknown = model(dense, cat, torch.zeros(50, dtype=torch.long))
        at_top = model(dense, cat, torch.ones(50, dtype=torch.long))
    torch.testing.assert_close(neutral, unknown)
    assert (at_top > neutral).all()
    # The scorer never reads a position column, whatever the candidates carry.
    scorer = MultiTaskScorer.from_artifacts(artifacts)
    query, cands = requests_for(artifacts.store, 1, seed=5)[0]
    with_position = cands.with_features({"position": np.arange(1, len(cands) + 1)})
    np.testing.assert_array_equal(scorer.score(query, cands)["final"], scorer.score(query, with_position)["final"])
    with torch.no_grad():
        model.position_bias.weight[1:] = 0.0


def test_position_index_maps_unknown_and_clips(make_world):
    items, users, interactions = make_world(seed=0, n_users=5, n_items=8, n_rows=30)
    model = build_model(RankingConfig(), FeatureStore.build(interactions, items, users).schema())
    np.testing.assert_array_equal(model.position_index(np.array([-1, 0, 1, 7, 10_000])).numpy(), [0, 0, 1, 7, 50])


def test_artifacts_round_trip(tmp_path, trained):
    artifacts, _ = trained
    artifacts.save(tmp_path / "ranker")
    loaded = RankerArtifacts.load(tmp_path / "ranker")
    assert loaded.config == artifacts.config
    requests = requests_for(artifacts.store, 3, seed=4)
    a = MultiTaskScorer.from_artifacts(artifacts).score_batch(requests)
    b = MultiTaskScorer.from_artifacts(loaded).score_batch(requests)
    for x, y in zip(a, b):
        for name in SCORE_COLUMNS:
            np.testing.assert_allclose(x[name], y[name], rtol=1e-6)
    override = RankingConfig(weights=ScoreWeights(like=0.0), device="cpu")
    assert RankerArtifacts.load(tmp_path / "ranker", override).config.weights.like == 0.0


def test_artifacts_refuse_a_mismatched_schema(tmp_path, trained, world):
    artifacts, _ = trained
    artifacts.save(tmp_path / "ranker")
    items, users, interactions = world
    other = FeatureStore.build(interactions, items, users, artifacts.config.features.model_copy(
        update={"window_days": (2.0,)}))
    other.save(tmp_path / "ranker")
    with pytest.raises(ValueError, match="schema"):
        RankerArtifacts.load(tmp_path / "ranker")


def test_cuda_device_is_refused_without_cuda(trained):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ValueError, match="CUDA"):
        MultiTaskScorer(trained[0].model, device="cuda")


@pytest.mark.gpu
def test_gpu_scoring_matches_cpu(trained):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    artifacts, _ = trained
    requests = requests_for(artifacts.store, 4)
    cpu = MultiTaskScorer(artifacts.model, assembler=RankingFeatureAssembler(artifacts.store), device="cpu")
    gpu = MultiTaskScorer(build_model(artifacts.config, artifacts.model.schema), device="cuda",
                          assembler=RankingFeatureAssembler(artifacts.store))
    gpu.model.load_state_dict(artifacts.model.state_dict())
    for a, b in zip(cpu.score_batch(requests), gpu.score_batch(requests)):
        np.testing.assert_allclose(a["final"], b["final"], rtol=1e-4, atol=1e-5)
