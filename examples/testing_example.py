"""Testing an app with TestClient and pytest, no socket needed.

python -m pytest examples/testing_example.py
"""

from __future__ import annotations

from simple_http_server import App, JSONBody
from simple_http_server.testing import TestClient

app = App()


@app.route("/hello/{name}")
def hello(name: str) -> dict[str, str]:
    return {"hello": name}


@app.route("/echo", method="POST")
def echo(body: JSONBody) -> dict:
    return body


def test_hello() -> None:
    client = TestClient(app)
    response = client.get("/hello/world")
    assert response.status_code == 200
    assert response.json() == {"hello": "world"}


def test_echo_and_errors() -> None:
    client = TestClient(app)
    assert client.post("/echo", json={"a": 1}).json() == {"a": 1}
    bad = client.post("/echo", body=b"not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400
    assert client.get("/nowhere").status_code == 404
