"""Using a trained model: recommendations from a run or an export, the towers that compute
query vectors (PyTorch or onnxruntime), and the export itself.

- :mod:`~towerkit.retrieval.retriever`: :class:`Retriever` (raw ids in, top-K raw ids out);
- :mod:`~towerkit.retrieval.towers`: the user tower behind one protocol;
- :mod:`~towerkit.retrieval.export`: a run as files a server loads without the model code.
"""

from towerkit import _lazy

__all__ = ["Recommendations", "Retriever", "item_attributes", "parse_id_list"]

__getattr__, __dir__ = _lazy(
    __name__,
    {
        "Recommendations": "retriever",
        "Retriever": "retriever",
        "coerce_raw": "retriever",
        "encode_raw": "retriever",
        "encode_user_features": "retriever",
        "item_attributes": "retriever",
        "parse_id_list": "retriever",
    },
)
