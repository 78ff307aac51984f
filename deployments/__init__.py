"""Ray Serve deployments: one per stage, each a thin shell over app/; `graph.py` composes them.

    FeedIngress (FastAPI, collator, Redis feed state)
      ├─> Retrieval ─> Ranking (@serve.batch, GPU if given) ─> Reranking   chained responses
      └─> Auction (ads: targeting → pCTR·pCVR → eligibility → auction)     concurrently
"""
