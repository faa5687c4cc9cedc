"""Controller modules that ``server.scan`` tests import (they register on a tagged app)."""
