"""The dispatch layer: ``Request -> Response`` with no knowledge of sockets."""
