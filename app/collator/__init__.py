"""The feed collator: blending rules, guardrails, slot allocation (greedy and exact) and CollatorScore.

Public API: `Collator.collate(organic, ads, notifications, session, limit, weights) -> CollatedPage`,
`CollatorConfig`, the input/output types, `BlendingRules` with `page_violations`, `collator_score`
and `generate_notifications`. Plain Python: no Ray, no Redis.
"""
from app.collator.collator import Allocation, Collator, ExactAllocator, GreedyAllocator, SlotAllocator
from app.collator.config import CollatorConfig, NotificationConfig
from app.collator.guardrails import GuardrailContext, apply_guardrails, guardrails_from_config
from app.collator.notifications import generate_notifications
from app.collator.objective import ObjectiveModel, collator_score
from app.collator.types import BlendingRules
from app.collator.rules import is_brand_safe, page_engagement, page_violations
from app.collator.types import (
    CollatedPage,
    CollatorWeights,
    Notification,
    OrganicEntry,
    ScoreBreakdown,
    SessionSignals,
    Slot,
)

__all__ = [
    "Allocation", "BlendingRules", "CollatedPage", "Collator", "CollatorConfig", "CollatorWeights",
    "ExactAllocator", "GreedyAllocator", "GuardrailContext", "Notification", "NotificationConfig",
    "ObjectiveModel", "OrganicEntry", "ScoreBreakdown", "SessionSignals", "Slot", "SlotAllocator",
    "apply_guardrails", "collator_score", "generate_notifications", "guardrails_from_config",
    "is_brand_safe", "page_engagement", "page_violations",
]
