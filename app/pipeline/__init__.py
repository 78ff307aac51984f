"""The closed set of stage kinds and the runner that executes a declared list of them.

Stages never call other stages; the runner times them, counts kept/removed candidates, and
applies their failure policy through a hook that observability/ implements.
"""
from app.pipeline.candidates import Candidates, FeedQuery, Removal
from app.pipeline.runner import (
    BATCH_WAIT,
    BatchEntry,
    NullHook,
    PartSpan,
    PipelineResult,
    PipelineRunner,
    StageHook,
    StageRecord,
    timed_step,
)
from app.pipeline.stages import (
    BatchScorer,
    CandidateSource,
    Filter,
    Hydrator,
    Scorer,
    Selector,
    Stage,
)

__all__ = [
    "Candidates",
    "FeedQuery",
    "Removal",
    "BATCH_WAIT",
    "BatchEntry",
    "BatchScorer",
    "PartSpan",
    "CandidateSource",
    "Filter",
    "Hydrator",
    "Scorer",
    "Selector",
    "Stage",
    "PipelineRunner",
    "PipelineResult",
    "StageHook",
    "StageRecord",
    "NullHook",
    "timed_step",
]
