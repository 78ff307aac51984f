"""The ranker's versioned artifact directory: everything serving needs, nothing it must rebuild.

    <dir>/ranking_config.json   RankingConfig + the FeatureSchema the model was built for
    <dir>/model.pt              MultiTaskDCN state_dict (normaliser buffers included)
    <dir>/feature_tables/       FeatureStore arrays, one .npy each (memory-mapped when loaded)
    <dir>/feature_meta.json     FeatureStore metadata and feature config
    <dir>/pre_ranker.pt         the cascade's PreRankerNet state_dict (absent in artifacts trained
                                before the cascade: those rank every candidate with the DCN)
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from app.ranking.config import RankingConfig
from app.ranking.dcn import MultiTaskDCN
from app.ranking.features import FeatureSchema, FeatureStore
from app.ranking.prerank import PreRankerNet
from app.shared_arrays import load_state

CONFIG_FILE = "ranking_config.json"
MODEL_FILE = "model.pt"
PRE_RANKER_FILE = "pre_ranker.pt"


def build_model(config: RankingConfig, schema: FeatureSchema) -> MultiTaskDCN:
    return MultiTaskDCN(schema, config.model, config.features.max_position)


@dataclass
class RankerArtifacts:
    config: RankingConfig
    store: FeatureStore
    model: MultiTaskDCN
    pre_ranker: PreRankerNet | None = None

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.store.save(directory)
        torch.save({k: v.detach().cpu() for k, v in self.model.state_dict().items()}, directory / MODEL_FILE)
        if self.pre_ranker is not None:
            torch.save({k: v.detach().cpu() for k, v in self.pre_ranker.state_dict().items()},
                       directory / PRE_RANKER_FILE)
        (directory / CONFIG_FILE).write_text(json.dumps(
            {"config": self.config.model_dump(mode="json"), "schema": self.model.schema.to_json()}, indent=1
        ))
        return directory

    @classmethod
    def load(cls, directory: str | Path, config: RankingConfig | None = None) -> RankerArtifacts:
        """Load a saved ranker. `config` may override serving-time settings (weights, device);
        the architecture always comes from the saved file, and a schema mismatch is an error."""
        directory = Path(directory)
        saved = json.loads((directory / CONFIG_FILE).read_text())
        saved_config = RankingConfig.model_validate(saved["config"])
        if config is not None:
            # The cascade's switch and cut are serving settings; its network's shape is the saved one.
            cascade = saved_config.cascade.model_copy(update={"enabled": config.cascade.enabled,
                                                              "keep": config.cascade.keep})
            saved_config = saved_config.model_copy(update={"weights": config.weights, "device": config.device,
                                                           "score_chunk": config.score_chunk, "cascade": cascade})
        store = FeatureStore.load(directory)
        schema = FeatureSchema.from_json(saved["schema"])
        if schema != store.schema():
            raise ValueError(f"{directory}: model schema does not match the feature tables' schema")
        model = build_model(saved_config, schema)
        # Parameters are the file's mapped pages (app/shared_arrays.py): the node's replicas share them.
        model.load_state_dict(load_state(directory / MODEL_FILE), assign=True)
        model.eval()
        pre_ranker = None
        if (directory / PRE_RANKER_FILE).exists():
            pre_ranker = PreRankerNet.for_dcn(model, saved_config.cascade.hidden)
            pre_ranker.load_state_dict(load_state(directory / PRE_RANKER_FILE), assign=True)
            pre_ranker.eval()
        return cls(saved_config, store, model, pre_ranker)
