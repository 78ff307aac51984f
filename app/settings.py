"""What app/ reads of the composed configuration, as structural types.

The composed object (`config.RayfeedConfig`) is the composition root and sits above app/; app/
names only the sections it reads, so it never imports that layer. Any object with these
sections satisfies the protocols (RayfeedConfig does; a test may pass a smaller one).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from app.ads.config import AdsConfig
    from app.api.config import ApiConfig
    from app.artifacts import ArtifactsConfig
    from app.collator.config import CollatorConfig
    from app.data.config import DataConfig
    from app.ranking.config import RankingConfig
    from app.reranking.config import RerankingConfig
    from app.retrieval.config import RetrievalConfig


class OrganicSettings(Protocol):
    """The sections the organic pipeline's stages are declared from."""

    @property
    def retrieval(self) -> RetrievalConfig: ...

    @property
    def ranking(self) -> RankingConfig: ...

    @property
    def reranking(self) -> RerankingConfig: ...

    @property
    def collator(self) -> CollatorConfig: ...

    @property
    def data(self) -> DataConfig: ...


class FeedSettings(OrganicSettings, Protocol):
    """Everything a whole page reads: the organic sections plus ads, the API and the artifacts."""

    @property
    def ads(self) -> AdsConfig: ...

    @property
    def api(self) -> ApiConfig: ...

    @property
    def artifacts(self) -> ArtifactsConfig: ...

    @property
    def redis_url(self) -> str | None: ...
