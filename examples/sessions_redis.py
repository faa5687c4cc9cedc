"""Sessions shared through Redis: run it twice on two ports, both see the same sessions.

pip install "simple_http_server[redis]"
REDIS_URL=redis://127.0.0.1:6379/0 python examples/sessions_redis.py 9090
REDIS_URL=redis://127.0.0.1:6379/0 python examples/sessions_redis.py 9091

curl -c jar -b jar "http://127.0.0.1:9090/login?user=alice"
curl -c jar -b jar "http://127.0.0.1:9091/me"      # {"user": "alice", ...}
"""

import os
import sys

from simple_http_server import Session, route, server, set_session_factory
from simple_http_server.sessions_redis import RedisSessionFactory

set_session_factory(
    RedisSessionFactory(
        url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        prefix="myapp:session:",
        max_inactive_interval=30 * 60,
    )
)


@route("/login")
def login(session: Session, user: str = "guest"):
    session.set_attribute("user", user)
    return {"user": user, "session": session.id[:8] + "..."}


@route("/me")
def me(session: Session):
    return {"user": session.get_attribute("user"), "pid": os.getpid()}


@route("/logout")
def logout(session: Session):
    session.invalidate()
    return {"bye": True}


port = int(sys.argv[1]) if len(sys.argv) > 1 else 9090
server.start(port=port, session_timeout=30 * 60)
