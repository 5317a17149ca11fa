"""towerkit: train, evaluate and serve matching models (the retrieval stage of a recommender)."""

from towerkit.errors import DataError, TowerkitError

__version__ = "0.1.0"

__all__ = ["DataError", "TowerkitError", "__version__"]
