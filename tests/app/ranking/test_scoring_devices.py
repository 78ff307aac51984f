"""The scorer on CUDA gives the CPU's scores (ray-free, so it runs on a bare GPU machine too)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.pipeline.candidates import Candidates, FeedQuery
from app.ranking import FeatureStore, MultiTaskScorer, RankingConfig, RankingFeatureAssembler, build_model

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _requests(store: FeatureStore, n: int, size: int) -> list[tuple[FeedQuery, Candidates]]:
    rng = np.random.default_rng(size)
    out = []
    for r in range(n):
        items = rng.choice(np.arange(1, store.n_item_slots), size=size, replace=True)
        out.append((FeedQuery(user_id=int(rng.integers(1, 40)), now=store.as_of - r * 60.0),
                    Candidates.from_source("ann", items, rng.random(size))))
    return out


def test_auto_device_is_cuda_exactly_when_torch_sees_it(make_world):
    items, users, interactions = make_world(seed=5)
    store = FeatureStore.build(interactions, items, users)
    scorer = MultiTaskScorer(build_model(RankingConfig(), store.schema()), device="auto")
    assert scorer.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("size", [500, 5000])
def test_cuda_scores_equal_cpu_scores_for_a_batch_of_requests(make_world, size):
    items, users, interactions = make_world(seed=5)
    store = FeatureStore.build(interactions, items, users)
    torch.manual_seed(0)
    model = build_model(RankingConfig(), store.schema()).eval()
    assembler = RankingFeatureAssembler(store)
    requests = _requests(store, 4, size)
    on_cpu = MultiTaskScorer(model, assembler=assembler, device="cpu").score_batch(requests)
    on_gpu = MultiTaskScorer(model, assembler=assembler, device="cuda").score_batch(requests)
    assert next(model.parameters()).device.type == "cpu"  # the caller's model was copied, not moved
    for a, b in zip(on_cpu, on_gpu):
        for column in a:
            np.testing.assert_allclose(a[column], b[column], rtol=1e-4, atol=1e-5)
