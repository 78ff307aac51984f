"""CLI wiring: training on demand keeps the user's configuration."""
from __future__ import annotations

import cli.main as cli
from app.config import load_config


def test_training_on_demand_uses_the_given_configuration(tmp_path, monkeypatch):
    path = tmp_path / "rayfeed.yaml"
    path.write_text(f"artifacts:\n  root: {tmp_path / 'my-artifacts'}\n")
    trained_with = []
    monkeypatch.setattr(cli, "train", lambda config, no_ray: trained_with.append(config) or 0)
    cli._ensure_artifacts(load_config(path), no_ray=True)
    assert [c.artifacts.root for c in trained_with] == [tmp_path / "my-artifacts"]
