"""pCTR/pCVR models against the ground truth that generated their training data."""
from __future__ import annotations

import numpy as np
import pytest

from app.ads.ranking import AdRanker, log_loss


def test_log_loss_matches_naive_reference() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(50) < 0.3
    p = rng.uniform(0.01, 0.99, 50)
    naive = -sum(np.log(pi) if yi else np.log(1 - pi) for yi, pi in zip(y, p)) / len(y)
    assert log_loss(y, p) == pytest.approx(naive)


def test_models_beat_constant_baseline_on_held_out_events(ranker, events, users, world) -> None:
    split = int(0.75 * len(events))
    train, test = events.iloc[:split], events.iloc[split:]
    pctr, pcvr = ranker.predict_events(test, users, world.ads, world.campaigns_by_id)
    click = test["click"].to_numpy()
    ctr_model, ctr_base = log_loss(click, pctr), log_loss(click, np.full(len(click), train["click"].mean()))
    conv = test["conversion"].to_numpy()[click]
    base_cvr = train["conversion"][train["click"]].mean()
    cvr_model, cvr_base = log_loss(conv, pcvr[click]), log_loss(conv, np.full(len(conv), base_cvr))
    print(f"pCTR log-loss {ctr_model:.4f} vs constant {ctr_base:.4f}; pCVR {cvr_model:.4f} vs {cvr_base:.4f}")
    assert ctr_model < 0.95 * ctr_base
    assert cvr_model < 0.98 * cvr_base
    # calibrated on average
    assert pctr.mean() == pytest.approx(click.mean(), rel=0.1)


def test_learned_position_effect_decreases_with_slot(ranker, truth) -> None:
    featurizer = ranker.featurizer
    slot_weights = ranker.ctr.weights[featurizer.n_features - featurizer.n_slots :]
    assert np.all(np.diff(slot_weights) < 0)  # truth: 1.0 > 0.75 > 0.55 > ...


def test_save_and_load_round_trip(ranker, tmp_path, vocab, users, world) -> None:
    path = tmp_path / "ads_ranker.npz"
    ranker.save(path)
    loaded = AdRanker.load(path, vocab.ad_vocabulary())
    a = ranker.score(users[0], world.ads[:20], world.campaigns_by_id)
    b = loaded.score(users[0], world.ads[:20], world.campaigns_by_id)
    assert np.allclose(a, b)
