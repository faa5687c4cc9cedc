"""The minimum app answers the same through every front end."""

from __future__ import annotations

from simple_http_server import App


def hello_app() -> App:
    app = App()

    @app.route("/")
    def index() -> dict[str, str]:
        return {"hello": "world"}

    @app.route("/boom")
    def boom() -> None:
        raise RuntimeError("secret detail")

    @app.route("/only-post", method="POST")
    def only_post() -> str:
        return "posted"

    return app


def test_hello_json(make_client):
    client = make_client(hello_app())
    reply = client.get("/")
    assert reply.status == 200
    assert reply.json() == {"hello": "world"}
    assert reply.header("Content-Type") == "application/json; charset=utf-8"


def test_500_hides_exception_text(make_client):
    reply = make_client(hello_app()).get("/boom")
    assert reply.status == 500
    assert b"secret detail" not in reply.body
    assert reply.json()["code"] == 500


def test_405_carries_allow(make_client):
    reply = make_client(hello_app()).get("/only-post")
    assert reply.status == 405
    assert reply.header("Allow") == "POST"


def test_404(make_client):
    reply = make_client(hello_app()).get("/nope")
    assert reply.status == 404
    assert reply.json()["code"] == 404
