"""Datasets as one set of tables: MovieLens-100k (real) and a synthetic world of any size."""
from app.data.config import DataConfig
from app.data.errors import DataFormatError
from app.data.tables import Dataset, labels_from_ratings


def load_dataset(config: DataConfig) -> Dataset:
    """The configured world: MovieLens-100k by default, else the synthetic generator."""
    if config.dataset == "movielens-100k":
        from app.data.movielens import load_movielens

        return load_movielens(config)
    if config.dataset == "synthetic":
        from app.data.synthetic import load_synthetic

        return load_synthetic(config)
    raise ValueError(f"data.dataset: unknown dataset {config.dataset!r} (movielens-100k or synthetic)")


__all__ = ["DataConfig", "DataFormatError", "Dataset", "labels_from_ratings", "load_dataset"]
