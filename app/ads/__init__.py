"""The ads side of the feed: targeting, ad ranking, eligibility, auctions and budget pacing."""
