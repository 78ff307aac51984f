"""The two-tower as serving holds it: numpy towers equal to torch's, mapped weights, no torch import."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from app.data import DataConfig, load_dataset
from app.retrieval.config import TwoTowerConfig
from app.retrieval.features import OOV
from app.retrieval.two_tower import train_two_tower_in_process
from app.retrieval.two_tower_serving import LEGACY_STATE_FILE, WEIGHTS_DIR, TwoTowerArtifacts

SMALL = dict(embedding_dim=16, id_dim=16, feature_dim=4, hidden_dim=32, history_length=5, batch_size=256, epochs=1)
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def ds():
    return load_dataset(DataConfig())


@pytest.fixture(scope="module")
def saved(ds, tmp_path_factory) -> tuple[TwoTowerArtifacts, Path]:
    users = ds.users["user_id"].to_numpy()[:150]
    sample = ds.interactions[ds.interactions["user_id"].isin(users)].reset_index(drop=True)
    artifacts = train_two_tower_in_process(ds, sample, TwoTowerConfig(**SMALL), on_epoch=None)
    path = tmp_path_factory.mktemp("tt") / "two_tower"
    artifacts.save(path)
    return artifacts, path


def test_the_numpy_user_tower_is_torchs(saved) -> None:
    artifacts, path = saved
    loaded = TwoTowerArtifacts.load(path)
    model = artifacts.build_model()
    rng = np.random.default_rng(0)
    rows = np.r_[OOV, rng.integers(1, artifacts.features.n_user_rows, 40)]
    history = rng.integers(1, artifacts.features.n_item_rows, (len(rows), 5))
    history[::3, 2:] = OOV  # padded histories
    history[1] = OOV  # no history at all
    with torch.no_grad():
        expected = model.user_vectors(torch.as_tensor(rows), torch.as_tensor(history)).numpy()
        no_history = model.user_vectors(torch.as_tensor(rows), torch.zeros((len(rows), 0), dtype=torch.long)).numpy()
    np.testing.assert_allclose(loaded.user_vectors(rows, history), expected, atol=1e-5)
    np.testing.assert_allclose(loaded.user_vectors(rows, np.zeros((len(rows), 0), np.int64)), no_history, atol=1e-5)
    assert loaded.user_vectors(rows, history).dtype == np.float32


def test_the_numpy_content_item_tower_is_torchs(ds, saved) -> None:
    artifacts, path = saved
    loaded = TwoTowerArtifacts.load(path)
    cats, genres = artifacts.features.encode_items(ds.items.head(25))
    with torch.no_grad():
        expected = artifacts.build_model().content_item_tower(torch.as_tensor(cats), torch.as_tensor(genres)).numpy()
    np.testing.assert_allclose(loaded.encode_new_items(ds.items.head(25)), expected, atol=1e-5)


def test_loaded_weights_are_the_saved_ones_mapped_read_only(saved) -> None:
    artifacts, path = saved
    loaded = TwoTowerArtifacts.load(path)
    assert loaded.weights.keys() == artifacts.weights.keys()
    for name, array in loaded.weights.items():
        np.testing.assert_array_equal(array, artifacts.weights[name])
        assert not array.flags.writeable, name
    # Training code reads them as torch tensors over the same memory.
    state = loaded.state_dict
    assert state.keys() == loaded.weights.keys()
    assert state["user_mlp.0.weight"].data_ptr() == loaded.weights["user_mlp.0.weight"].ctypes.data


def test_an_artifact_saved_with_a_torch_state_file_still_loads(saved, tmp_path) -> None:
    artifacts, path = saved
    legacy = tmp_path / "legacy"
    shutil.copytree(path, legacy)
    shutil.rmtree(legacy / WEIGHTS_DIR)
    torch.save(artifacts.state_dict, legacy / LEGACY_STATE_FILE)
    loaded = TwoTowerArtifacts.load(legacy)
    for name, array in loaded.weights.items():
        np.testing.assert_array_equal(array, artifacts.weights[name])


def test_an_artifact_without_weights_names_what_is_missing(saved, tmp_path) -> None:
    _, path = saved
    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    shutil.rmtree(broken / WEIGHTS_DIR)
    with pytest.raises(FileNotFoundError, match=f"neither {WEIGHTS_DIR}/ nor {LEGACY_STATE_FILE}"):
        TwoTowerArtifacts.load(broken)


def test_serving_the_towers_never_imports_torch(saved) -> None:
    """What a Retrieval replica runs: load, dynamic embeddings from live events, new items' vectors."""
    _, path = saved
    script = textwrap.dedent(f"""
        import sys
        from app.data import DataConfig, load_dataset
        from app.freshness.live import LiveEngagement
        from app.retrieval.config import DynamicEmbeddingConfig
        from app.retrieval.two_tower_serving import TwoTowerArtifacts
        from app.state.events import StreamEvent
        art = TwoTowerArtifacts.load({str(path)!r})
        live = LiveEngagement(art, DynamicEmbeddingConfig())
        live.observe([StreamEvent(event_id="1-0", type="click", user_id=1, item_id=50, ts=1.0)])
        assert live.embedding(1, 1.0) is not None
        assert art.encode_new_items(load_dataset(DataConfig()).items.head(3)).shape == (3, art.dim)
        print("torch" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
