"""MultiTaskScorer: per-head predictions and the configured final score, batched across requests.

The serving layer collects many requests and calls `score_batch` once: every request's
candidates go through the model in ONE tensor pass, then the outputs are split back per
request. Scores never depend on position (the position tower is only used in training).

Example:
    artifacts = RankerArtifacts.load("artifacts/ranker")
    scorer = MultiTaskScorer.from_artifacts(artifacts)
    columns = scorer.score(query, candidates)   # p_click, p_like, p_share, p_hide, e_watch, final
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from app.pipeline.candidates import Candidates, FeedQuery
from app.ranking.artifacts import RankerArtifacts
from app.ranking.config import HEAD_COLUMNS, HEADS, ScoreWeights
from app.ranking.dcn import MultiTaskDCN
from app.ranking.features import FeatureBatch, RankingFeatureAssembler

SCORE_COLUMNS = (*HEAD_COLUMNS.values(), "final")


def combine_heads(heads: dict[str, np.ndarray], weights: ScoreWeights) -> np.ndarray:
    """final = w_click·P(click) + w_like·P(like) + w_share·P(share) − w_hide·P(hide) + w_watch·E(watch)."""
    return (
        weights.click * heads["p_click"] + weights.like * heads["p_like"] + weights.share * heads["p_share"]
        - weights.hide * heads["p_hide"] + weights.watch * heads["e_watch"]
    ).astype(np.float32)


def resolve_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("ranking.device is 'cuda' but CUDA is not available")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class MultiTaskScorer:
    """Scorer stage over a trained MultiTaskDCN.

    Reads the declared ranking features from `candidates.features` (the RankingFeatureAssembler
    hydrator puts them there). Given an `assembler`, candidates without them are featurised in
    the same vectorised pass, so a serving replica can rank raw retrieval output directly.
    """

    name = "multitask_ranker"

    def __init__(
        self,
        model: MultiTaskDCN,
        weights: ScoreWeights | None = None,
        assembler: RankingFeatureAssembler | None = None,
        device: str = "auto",
        chunk: int = 65_536,
    ) -> None:
        if assembler is not None and assembler.schema != model.schema:
            raise ValueError("assembler and model disagree on the feature schema")
        self.device = resolve_device(device)
        # Never move the caller's model: another scorer (or the trainer) may share it.
        on_device = next(model.parameters()).device == self.device
        self.model = (model if on_device else copy.deepcopy(model).to(self.device)).eval()
        self.schema = model.schema
        self.weights = weights or ScoreWeights()
        self.assembler = assembler
        self.chunk = chunk
        # Called after each pass with (requests, features, columns): the live monitor samples the
        # inputs the model saw without a second featurisation. None: nobody listens.
        self.on_scored = None

    @classmethod
    def from_artifacts(cls, artifacts: RankerArtifacts, hydrate_missing: bool = True) -> MultiTaskScorer:
        assembler = RankingFeatureAssembler(artifacts.store) if hydrate_missing else None
        c = artifacts.config
        return cls(artifacts.model, c.weights, assembler, c.device, c.score_chunk)

    @property
    def requires(self) -> tuple[str, ...]:
        return self.schema.names

    def reconfigure(self, weights: ScoreWeights) -> None:
        """Swap the combination weights (no model reload)."""
        self.weights = weights

    def predict(self, batch: FeatureBatch) -> dict[str, np.ndarray]:
        """Model only: head columns and final score for a prepared feature batch (chunked)."""
        outputs = []
        with torch.inference_mode():
            for lo in range(0, max(len(batch), 1), self.chunk):
                dense = torch.from_numpy(batch.dense[lo:lo + self.chunk]).to(self.device)
                categorical = torch.from_numpy(batch.categorical[lo:lo + self.chunk]).to(self.device)
                outputs.append(torch.sigmoid(self.model(dense, categorical)).float().cpu().numpy())
        probs = np.concatenate(outputs) if outputs else np.zeros((0, len(HEADS)), np.float32)
        heads = {HEAD_COLUMNS[h]: probs[:, k] for k, h in enumerate(HEADS)}
        heads["final"] = combine_heads(heads, self.weights)
        return heads

    def features_for(self, requests: list[tuple[FeedQuery, Candidates]]) -> FeatureBatch:
        """The stacked model inputs of all requests: the rows `RankingFeatureRows` attached, or
        hydrated columns, if every request carries them; else (with an assembler) one vectorised
        featurisation of all of them."""
        rows = FeatureBatch.from_rows([c for _, c in requests], self.schema)
        if rows is not None:
            return rows
        names = self.schema.names
        if all(all(n in c.features for n in names) for _, c in requests):
            parts = [FeatureBatch.from_columns(c.features, self.schema) for _, c in requests]
            return FeatureBatch.concat(parts) if parts else FeatureBatch(
                np.zeros((0, len(self.schema.dense)), np.float32), np.zeros((0, len(self.schema.categorical)), np.int64)
            )
        if self.assembler is None:
            missing = [n for n in names if any(n not in c.features for _, c in requests)]
            raise KeyError(f"candidates lack ranking features {missing[:8]} and the scorer has no assembler")
        return self.assembler.batch_for_requests(requests)

    def score_batch(
        self, requests: list[tuple[FeedQuery, Candidates]], features: FeatureBatch | None = None
    ) -> list[dict[str, np.ndarray]]:
        """Score many requests' candidates in one tensor pass; one dict of columns per request.
        `features`: `features_for(requests)` when the caller already made it (the live monitor
        samples the same inputs the model saw)."""
        features = self.features_for(requests) if features is None else features
        scores = self.predict(features)
        bounds = np.cumsum([0] + [len(c) for _, c in requests])
        columns = [{k: v[lo:hi] for k, v in scores.items()} for lo, hi in zip(bounds[:-1], bounds[1:])]
        if self.on_scored is not None:
            self.on_scored(requests, features, columns)
        return columns

    def score(self, query: FeedQuery, candidates: Candidates) -> dict[str, np.ndarray]:
        return self.score_batch([(query, candidates)])[0]


def top_k_all_items(
    scorer: MultiTaskScorer,
    assembler: RankingFeatureAssembler,
    user_ids: np.ndarray,
    now: np.ndarray,
    exclude: list[np.ndarray],
    catalogue: np.ndarray,
    k: int,
    users_per_pass: int = 64,
) -> np.ndarray:
    """Offline full ranking: for each user, the k best catalogue items not in `exclude[u]`,
    by the final score (−1 pads rows with fewer than k candidates)."""
    out = np.full((len(user_ids), k), -1, dtype=np.int64)
    catalogue = np.asarray(catalogue, dtype=np.int64)
    for lo in range(0, len(user_ids), users_per_pass):
        block = range(lo, min(lo + users_per_pass, len(user_ids)))
        items = [np.setdiff1d(catalogue, exclude[r], assume_unique=False) for r in block]
        lengths = np.array([len(x) for x in items])
        users = np.repeat(np.asarray(user_ids)[list(block)], lengths)
        times = np.repeat(np.asarray(now, dtype=np.float64)[list(block)], lengths)
        final = scorer.predict(assembler.batch(users, np.concatenate(items), times))["final"]
        start = 0
        for r, cand in zip(block, items):
            s = final[start:start + len(cand)]
            start += len(cand)
            top = np.argsort(-s, kind="stable")[:k]
            out[r, :len(top)] = cand[top]
    return out
