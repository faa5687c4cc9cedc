"""A scanned controller module that fails to import."""

raise RuntimeError("broken on purpose")
