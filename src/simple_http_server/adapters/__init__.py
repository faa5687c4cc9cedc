"""Adapters that put the dispatch layer behind other servers (WSGI, ASGI)."""
