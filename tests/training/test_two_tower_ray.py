"""The real Ray Train path of the two-tower on a small MovieLens sample (slow: starts Ray)."""
from __future__ import annotations

import numpy as np
import pytest

from app.data import DataConfig, load_dataset
from app.retrieval.config import RetrievalConfig, TwoTowerConfig
from app.retrieval.two_tower import TwoTowerArtifacts

pytestmark = pytest.mark.slow


def test_torch_trainer_reports_a_checkpoint_per_epoch_and_exports_artifacts(tmp_path) -> None:
    ray = pytest.importorskip("ray")
    from training.two_tower import train_two_tower

    ds = load_dataset(DataConfig())
    sample = ds.interactions[ds.interactions["user_id"] <= 100]
    config = RetrievalConfig(
        two_tower=TwoTowerConfig(embedding_dim=16, id_dim=16, feature_dim=4, hidden_dim=32, epochs=2, batch_size=512)
    )
    started_here = not ray.is_initialized()

    artifacts = train_two_tower(ds, sample, config, tmp_path / "runs", run_name="tt-test")

    assert [m["epoch"] for m in artifacts.metrics] == [1.0, 2.0]
    checkpoints = sorted(p for p in (tmp_path / "runs" / "tt-test").glob("checkpoint_*") if p.is_dir())
    assert len(checkpoints) == 2 and all((c / "model.pt").exists() for c in checkpoints)
    assert artifacts.item_embeddings.shape == (ds.n_items, 16)
    np.testing.assert_allclose(np.linalg.norm(artifacts.user_embeddings, axis=1), 1.0, rtol=1e-5)
    if started_here:
        assert not ray.is_initialized()  # the job shuts down only a cluster it started
    artifacts.save(tmp_path / "art")
    assert TwoTowerArtifacts.load(tmp_path / "art").state_dict.keys() == artifacts.state_dict.keys()
