"""Serving a trained model over HTTP (FastAPI + uvicorn): ``towerkit serve``.

The server modules load on first use (:func:`create_app`, :func:`serve`), so that
:mod:`towerkit.serve.threads` can set the thread pools' environment before torch and
onnxruntime load.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from towerkit.errors import MissingExtra

_NEEDS = ("fastapi", "uvicorn", "onnxruntime", "onnx", "prometheus_client", "orjson")
_missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
if _missing:
    raise MissingExtra(
        f"serving needs {', '.join(_missing)}; install it with pip install 'towerkit[serve]'"
    )


def __getattr__(name: str) -> Any:
    if name in ("create_app", "serve"):
        from towerkit.serve import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["create_app", "serve"]
