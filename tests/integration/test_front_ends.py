"""What every front end (TestClient, threaded, asyncio, WSGI, ASGI) must answer alike."""

from __future__ import annotations

from typing import Any

from simple_http_server import App, Environment, Request


# -- Environment ---------------------------------------------------------------
def test_environment_is_the_wsgi_environ_or_the_asgi_scope(make_any_client) -> None:
    app = App()

    @app.route("/env")
    def env(e: Environment, request: Request) -> dict[str, Any]:
        assert isinstance(e, Environment) and e == request.environment
        keep = ("REMOTE_ADDR", "PATH_INFO", "wsgi.url_scheme", "type", "path", "client")
        return {k: v for k, v in e.items() if k in keep}

    client = make_any_client(app)
    seen = client.get("/env").json()
    if client.front_end == "wsgi":
        assert seen == {"REMOTE_ADDR": "127.0.0.1", "PATH_INFO": "/env", "wsgi.url_scheme": "http"}
    elif client.front_end == "asgi":
        assert seen["type"] == "http" and seen["path"] == "/env"
        assert seen["client"][0] == "127.0.0.1"
    else:  # README: empty under the built-in server (and the TestClient)
        assert seen == {}
