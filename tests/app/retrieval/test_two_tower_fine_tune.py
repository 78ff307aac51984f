"""Two-tower fine-tuning options of `fit`: warm start (`init_state`) and the L2-SP anchor."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.data import DataConfig
from app.data.synthetic import SyntheticWorldSpec, generate_world
from app.retrieval.config import TwoTowerConfig
from app.retrieval.two_tower import (
    anchor_penalty,
    build_model,
    fit,
    make_loader,
    prepare_training,
    train_two_tower_in_process,
)

SMALL = dict(embedding_dim=8, id_dim=8, feature_dim=4, hidden_dim=16, history_length=4, batch_size=64, epochs=1)


@pytest.fixture(scope="module")
def world():
    spec = SyntheticWorldSpec(n_users=60, n_items=200, n_creators=20, n_topics=4, interactions_per_user=12, days=10)
    return generate_world(spec, DataConfig(seed=3))


@pytest.fixture(scope="module")
def base(world):
    return train_two_tower_in_process(world, world.interactions, TwoTowerConfig(**SMALL, seed=1), on_epoch=None)


def _distance(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> float:
    return float(sum((p.detach() - state[n]).pow(2).sum() for n, p in model.named_parameters() if p.requires_grad))


def test_warm_start_with_no_steps_reproduces_the_base_embeddings(world, base) -> None:
    config = TwoTowerConfig(**SMALL, seed=99)  # another seed: the weights must come from init_state
    model = build_model(base.features, config)
    history = fit(model, [], config, init_state=base.state_dict)  # an epoch of zero steps
    assert history[0]["loss"] == 0.0
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, base.state_dict[name])


def test_warm_start_with_negligible_lr_keeps_the_base_embeddings(world, base) -> None:
    config = TwoTowerConfig(**SMALL, seed=99, lr=1e-12, weight_decay=0.0)
    tuned = train_two_tower_in_process(
        world, world.interactions, config, on_epoch=None, init_state=base.state_dict, features=base.features
    )
    np.testing.assert_allclose(tuned.item_embeddings, base.item_embeddings, atol=1e-5)
    np.testing.assert_allclose(tuned.user_embeddings, base.user_embeddings, atol=1e-5)
    cold = train_two_tower_in_process(world, world.interactions, config, on_epoch=None)
    assert not np.allclose(cold.item_embeddings, base.item_embeddings, atol=1e-3)  # seed 99 differs


def test_anchor_keeps_fine_tuned_weights_closer_to_the_base(world, base) -> None:
    recent = world.interactions.sort_values("timestamp").tail(200)  # a narrow slice, like a window
    config = TwoTowerConfig(**{**SMALL, "epochs": 3}, lr=0.01)
    prepared = prepare_training(world, recent, config, base.features)
    distances, anchors = {}, {}
    for anchor_l2 in (0.0, 1.0):
        model = build_model(prepared.features, config, prepared.tables)
        metrics = fit(model, make_loader(prepared.examples, config), config, init_state=base.state_dict, anchor_l2=anchor_l2)
        distances[anchor_l2] = _distance(model, base.state_dict)
        anchors[anchor_l2] = metrics[-1].get("anchor")
    assert distances[0.0] > 0
    assert distances[1.0] < 0.5 * distances[0.0]
    assert anchors[0.0] is None and anchors[1.0] is not None and anchors[1.0] >= 0


def test_anchor_penalty_is_the_squared_distance_and_rejects_negative_weights(base) -> None:
    config = TwoTowerConfig(**SMALL)
    model = build_model(base.features, config)
    model.load_state_dict(base.state_dict)
    anchor = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert float(anchor_penalty(model, anchor).detach()) == 0.0
    with torch.no_grad():
        model.item_id.weight[1, 0] += 0.5
        model.user_mlp[0].bias[0] -= 2.0
    assert float(anchor_penalty(model, anchor).detach()) == pytest.approx(0.25 + 4.0, rel=1e-5)
    with pytest.raises(ValueError, match="anchor_l2"):
        fit(model, [], config, anchor_l2=-1.0)


def test_a_restarted_run_continues_from_its_checkpoint_with_the_anchor_of_its_start(world, base) -> None:
    """`resume_state` + `start_epoch` (a Ray Train restart): only the remaining epochs run, from
    the checkpoint's weights, while the L2-SP anchor stays the init_state the run began from."""
    recent = world.interactions.sort_values("timestamp").tail(200)
    config = TwoTowerConfig(**{**SMALL, "epochs": 3}, lr=0.01)
    prepared = prepare_training(world, recent, config, base.features)
    checkpoint = {k: v + 0.05 if v.is_floating_point() else v for k, v in base.state_dict.items()}  # "after epoch 2"
    model = build_model(prepared.features, config, prepared.tables)
    history = fit(model, [], config, init_state=base.state_dict, anchor_l2=1.0, resume_state=checkpoint, start_epoch=2)
    assert [m["epoch"] for m in history] == [3.0]  # the third epoch alone
    for name, tensor in model.state_dict().items():  # no steps: the checkpoint's weights, not the base's
        torch.testing.assert_close(tensor, checkpoint[name])
    model = build_model(prepared.features, config, prepared.tables)
    history = fit(model, make_loader(prepared.examples, config), config, init_state=base.state_dict, anchor_l2=1.0,
                  resume_state=checkpoint, start_epoch=2)
    assert history[0]["anchor"] > 0  # measured against the base: the checkpoint starts 0.05 away from it
    assert fit(build_model(prepared.features, config, prepared.tables), [], config, resume_state=checkpoint,
               start_epoch=3) == []  # every epoch done before the failure
