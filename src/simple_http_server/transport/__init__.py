"""Transports: move bytes between sockets and the protocol objects."""
