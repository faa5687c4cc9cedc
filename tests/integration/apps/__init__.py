"""App scripts that integration tests run in subprocesses (gunicorn, uvicorn, workers, CLI)."""
