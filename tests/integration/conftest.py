"""Fixtures of the integration tests: a real redis-server for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_server import RedisServer, redis_server


@pytest.fixture(scope="session")
def redis_service() -> Iterator[RedisServer]:
    """One real ``redis-server`` on 127.0.0.1, started on first use, stopped at the end."""
    with redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_service: RedisServer) -> str:
    """The URL of the test ``redis-server`` (``redis://127.0.0.1:<port>/0``)."""
    return redis_service.url
