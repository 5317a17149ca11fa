"""Serving a trained model over HTTP (FastAPI + uvicorn): ``towerkit serve``."""

import importlib.util

from towerkit.errors import MissingExtra

_NEEDS = ("fastapi", "uvicorn", "onnxruntime", "onnx", "prometheus_client")
_missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
if _missing:
    raise MissingExtra(
        f"serving needs {', '.join(_missing)}; install it with pip install 'towerkit[serve]'"
    )

from towerkit.serve.app import create_app, serve  # noqa: E402

__all__ = ["create_app", "serve"]
