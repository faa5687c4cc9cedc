"""0.22.x's module of ``WebsocketException``, kept so that imports from it still work."""

from .websocket import WebsocketException

__all__ = ["WebsocketException"]
