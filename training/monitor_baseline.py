"""The live monitor's training baseline, fitted when an artifact is made and saved inside it.

What served traffic looked like for the model at publication: for `live_monitor.baseline_users`
users (a seeded sample of those with history), the retrieval pipeline runs as of the artifact's
time, the ranker featurises and scores what it returns, and `FeatureSampler` keeps the same
candidates per request that Ranking samples when serving (even stride, `feature_rows`). PSI bins
per monitored feature and per head are cut on those values. Comparing served samples with this
(and not with the ranker's training examples, which are positives plus sampled negatives) keeps
PSI ≈ 0 while traffic looks like the data the model was made on.

    <version>/organic/monitor_baseline.json     TrainingBaseline.to_json()

Artifacts published before this file existed get one with:

    python -m training.monitor_baseline [--root artifacts] [--version VERSION]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from config import RayfeedConfig
from app.organic import OrganicModels, retrieval_pipeline
from app.ranking.scorer import HEAD_COLUMNS, MultiTaskScorer
from observability.live_monitor import BASELINE_FILE, FeatureSampler
from observability.monitors import TrainingBaseline


def fit_monitor_baseline(models: OrganicModels, config: RayfeedConfig, seed: int = 0) -> TrainingBaseline:
    live = config.observability.live_monitor
    scorer = MultiTaskScorer.from_artifacts(models.ranker)
    sampler = FeatureSampler(scorer.schema.dense, live.features, live.feature_rows or 16)
    runner = retrieval_pipeline(models, config)
    users = np.unique(models.dataset.interactions["user_id"].to_numpy())
    rng = np.random.default_rng(seed)
    users = rng.choice(users, size=min(live.baseline_users, len(users)), replace=False)
    now = models.engagements.last_timestamp
    features: dict[str, list] = {}
    scores: dict[str, list] = {}
    for user in users:
        query = models.query(int(user), now=now, limit=config.reranking.output_size)
        candidates = runner.run(query).candidates
        batch = scorer.features_for([(query, candidates)])
        columns = scorer.predict(batch)
        sample = sampler.sample(batch.dense, {h: columns[c] for h, c in HEAD_COLUMNS.items()})
        for name, values in sample.features.items():
            features.setdefault(name, []).extend(values)
        for head, values in sample.scores.items():
            scores.setdefault(head, []).extend(values)

    def arrays(d: dict[str, list]) -> dict[str, np.ndarray]:
        out = {k: np.array([np.nan if v is None else v for v in vs], dtype=np.float64) for k, vs in d.items()}
        return {k: v for k, v in out.items() if np.isfinite(v).any()}

    return TrainingBaseline.fit(arrays(features), arrays(scores), config.observability.psi_bins)


def save_monitor_baseline(models: OrganicModels, config: RayfeedConfig, organic_dir: Path) -> Path:
    """Fit and write `<organic_dir>/monitor_baseline.json`; returns the path."""
    path = Path(organic_dir) / BASELINE_FILE
    fit_monitor_baseline(models, config).save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    from app.artifacts import ArtifactStore
    from config import load_config
    from app.data import load_dataset_for

    parser = argparse.ArgumentParser(prog="python -m training.monitor_baseline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="rayfeed YAML config")
    parser.add_argument("--root", default=None, help="artifact root (default: artifacts.root)")
    parser.add_argument("--version", default=None, help="artifact version (default: the latest)")
    args = parser.parse_args(argv)
    config = load_config(args.config) if args.config else load_config()
    store = ArtifactStore(Path(args.root or config.artifacts.root).resolve())
    version = store.get(args.version) if args.version else store.latest()
    models = OrganicModels.load(version.path / "organic", load_dataset_for(config.data, version.path), config)
    print(f"wrote {save_monitor_baseline(models, config, version.path / 'organic')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
