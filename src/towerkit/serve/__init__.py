"""Serving a trained model over HTTP (FastAPI + uvicorn): ``towerkit serve``."""

from towerkit.serve.app import create_app, serve

__all__ = ["create_app", "serve"]
