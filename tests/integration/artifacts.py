"""Hermetic artifacts for the integration tests: MovieLens-100k models trained in-process with
a reduced configuration (well under a minute on 2 cores), published into a temporary root."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from app.artifacts import ArtifactStore, ArtifactVersion
from config import RayfeedConfig, load_config
from app.data import SNAPSHOT_DIR, load_dataset
from app.data.snapshot import write_snapshot
from training.ads import train_ads
from training.monitor_baseline import save_monitor_baseline
from training.organic import fit_organic, production_split

REPO = Path(__file__).resolve().parents[2]


def reduced_config(root: Path) -> RayfeedConfig:
    return load_config(overrides={
        "artifacts": {"root": str(root)},
        "data": {"cache_dir": str(REPO / "data_cache")},
        "retrieval": {"two_tower": {"epochs": 1}},
        "ranking": {
            "training": {"epochs": 1, "negatives_per_positive": 2, "extra_label_windows": 0, "batch_size": 4096},
            "model": {"deep_layers": [32], "experts": 2, "expert_dim": 16, "tower_dim": 8, "cross_layers": 1},
        },
        "ads": {"ranker_max_iter": 50, "generator": {"logged_impressions": 20_000}},
    })


def train_two_versions(root: Path, log=lambda m: None) -> tuple[ArtifactVersion, ArtifactVersion]:
    """Train once, publish it as two versions (the second a copy), so tests can hot-swap."""
    config = reduced_config(root)
    dataset = load_dataset(config.data)
    started = time.perf_counter()
    store = ArtifactStore(root)
    version, staging = store.new_version()
    history, labels = production_split(dataset.interactions, config.training.label_fraction)
    models = fit_organic(dataset, history, labels, config, use_ray=False, log=log)
    models.save(staging / "organic")
    save_monitor_baseline(models, config, staging / "organic")  # the live monitor's PSI reference
    write_snapshot(dataset, staging / SNAPSHOT_DIR)  # replicas read the dataset from the artifact
    bundle, figures = train_ads(dataset, dataset.interactions, config.ads, now=models.engagements.last_timestamp)
    bundle.save(staging / "ads")
    manifest = {"dataset": dataset.name, "as_of": models.meta["as_of"], "train_seconds": time.perf_counter() - started}
    first = store.publish(version, staging, manifest)
    second_name, second_staging = store.new_version()
    shutil.rmtree(second_staging)
    shutil.copytree(first.path, second_staging)
    (second_staging / "manifest.json").unlink()
    second = store.publish(second_name, second_staging, manifest)
    return first, second
