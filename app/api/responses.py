"""Builds the feed response from the collator's page: pure functions, no I/O.

Item fields: `position` (1-based, continuing across the pages of a cursor chain: page 2 of a
20-item feed starts at 21), `type`, exactly one of `item_id` / `ad_id` / `notification_id`,
`score` (the slot's CollatorScore contribution) and, in explain mode, `provenance`.
"""
from __future__ import annotations

import hmac
import logging
from pathlib import Path
from collections.abc import Mapping

import numpy as np

from app.ads.types import AdCandidate
from app.collator.types import CollatedPage, Notification

def ad_provenance(ad: AdCandidate) -> dict[str, object]:
    return {
        "campaign_id": ad.campaign_id,
        "advertiser_id": ad.advertiser_id,
        "category": ad.category,
        "ecpm": round(ad.ecpm, 6),
        "price": round(ad.price, 6),
        "pctr": round(ad.pctr, 6),
        "pcvr": round(ad.pcvr, 6),
        "pacing_multiplier": round(ad.pacing_multiplier, 4),
        "slot_rank": ad.slot_rank,
    }


def page_items(
    page: CollatedPage,
    first_position: int,
    explain: bool,
    organic: Mapping[int, Mapping[str, object]] | None = None,
    item_ids: Mapping[int, object] | None = None,
) -> list[dict[str, object]]:
    """`item_ids`: internal item index -> the dataset's own id (None: they are the same)."""
    items: list[dict[str, object]] = []
    for slot in page.slots:
        item: dict[str, object] = {"position": first_position + slot.position - 1, "type": slot.kind,
                                   "score": round(float(slot.score), 6)}
        if slot.kind == "organic":
            item["item_id"] = int(slot.ref_id) if item_ids is None else item_ids[int(slot.ref_id)]
        elif slot.kind == "ad":
            item["ad_id"] = int(slot.ref_id)
        else:
            item["notification_id"] = str(slot.ref_id)
        if explain:
            provenance: dict[str, object] = {k: _plain(v) for k, v in slot.provenance.items()}
            if slot.kind == "organic" and organic is not None:
                provenance.update(organic.get(int(slot.ref_id), {}))
            elif slot.kind == "ad" and isinstance(slot.item, AdCandidate):
                provenance.update(ad_provenance(slot.item))
            elif isinstance(slot.item, Notification):
                provenance.update({"kind": slot.item.kind, "text": slot.item.text})
            item["provenance"] = provenance
        items.append(item)
    return items


def _plain(value: object) -> object:
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def load_admin_token(environ: Mapping[str, str], env_var: str, token_file: Path | None) -> str | None:
    """The admin bearer token: the environment variable, else the token file. Never a default:
    without one, the admin API answers 401 to everyone. The caller (a deployment, the CLI) passes
    its environment in: app/ itself reads none."""
    token = environ.get(env_var, "").strip()
    if not token and token_file is not None:
        try:
            token = Path(token_file).expanduser().read_text().strip()
        except OSError as exc:
            logging.getLogger("rayfeed.api").warning("admin token file unreadable: %s", exc)
    return token or None


def bearer_token_matches(authorization: str | None, expected: str | None) -> bool:
    """`Authorization: Bearer <token>` against the configured token, in constant time.
    No configured token means the admin API is closed."""
    if not expected or not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    return hmac.compare_digest(token.strip().encode(), expected.encode())
