"""Models: each maps users and items into one vector space (see MatchingModel)."""

from towerkit.models.base import MatchingModel
from towerkit.models.dssm import DSSM
from towerkit.models.gru4rec import GRU4Rec
from towerkit.models.sasrec import SASRec
from towerkit.models.youtube_dnn import YouTubeDNN

__all__ = ["DSSM", "GRU4Rec", "MatchingModel", "SASRec", "YouTubeDNN"]
