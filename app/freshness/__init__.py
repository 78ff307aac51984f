"""Freshness: models and embeddings that follow the event stream (see docs/freshness.md)."""
