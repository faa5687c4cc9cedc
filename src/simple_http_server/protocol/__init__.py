"""Sans-IO protocol layer: bytes in, events out, bytes to send back."""
