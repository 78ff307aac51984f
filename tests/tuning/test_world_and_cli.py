"""The MovieLens world comes from the published artifacts and the real pipeline; CLI wiring."""
from __future__ import annotations

import numpy as np
import pytest

from app.artifacts import ArtifactNotFound, ArtifactStore
from app.collator.config import CollatorConfig
from config import load_config
from cli.main import build_parser
from tuning.config import SimulationConfig
from tuning.simulator import simulate


def _has_artifacts() -> bool:
    """A published artifact trained on the configured dataset (a checkout may hold another's)."""
    from app.data import DatasetMismatch, check_trained_on

    config = load_config()
    try:
        check_trained_on(config.data, ArtifactStore(config.artifacts.root).latest().path)
        return True
    except (ArtifactNotFound, DatasetMismatch):
        return False


@pytest.mark.skipif(not _has_artifacts(), reason="no published artifacts of the configured dataset (rayfeed train)")
def test_world_from_artifacts_uses_the_real_pipeline(tmp_path):
    from app.bootstrap import load_artifacts
    from app.organic import OrganicPipeline
    from tuning.world import world_from_artifacts

    config = load_config()
    loaded = load_artifacts(config)
    sim = SimulationConfig.model_validate({"n_users": 3, "days": 1, "system": {"pool_size": 100}})
    world = world_from_artifacts(loaded, config, sim, cache_dir=tmp_path, log=lambda m: None)
    assert world.n_users == 3 and len(list(tmp_path.glob("pools-*.npz"))) == 1
    user = int(world.user_ids[0])
    query = loaded.organic.query(user, now=float(loaded.organic.meta["as_of"]), limit=100)
    expected = OrganicPipeline(loaded.organic, config).run(query).candidates.item_ids
    np.testing.assert_array_equal(world.pools[user].item_ids, expected)
    row = int(np.flatnonzero(loaded.organic.two_tower.user_ids == user)[0])
    np.testing.assert_allclose(world.user_latent[0], loaded.organic.two_tower.user_embeddings[row], rtol=1e-6)
    again = world_from_artifacts(loaded, config, sim, cache_dir=tmp_path, log=lambda m: None)  # from the cache
    np.testing.assert_array_equal(again.pools[user].item_ids, expected)
    result = simulate(world, CollatorConfig(), sim, seed=0)
    assert result.days[0]["pages"] > 0


def test_commands_are_registered():
    parser = build_parser()
    args = parser.parse_args(["tune", "--samples", "4", "--seeds", "1", "--users", "20", "--days", "3"])
    assert (args.samples, args.seeds, args.users, args.days) == (4, 1, 20, 3)
    args = parser.parse_args(["simulate", "--beta", "5", "--days", "2"])
    assert args.beta == 5 and args.func.__name__ == "cmd_simulate"
    assert parser.parse_args(["audit", "--skip-real"]).skip_real
