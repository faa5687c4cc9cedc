"""Routing and parameter injection: run it and try the URLs in the comments.

python examples/controllers.py            # serves on 127.0.0.1:9090
"""

from __future__ import annotations

from simple_http_server import (
    Cookies,
    Header,
    Headers,
    HttpError,
    JSONBody,
    Parameter,
    PathValue,
    Redirect,
    RegGroup,
    controller,
    request_map,
    route,
    server,
)


@route("/")
def index() -> dict[str, str]:
    """GET / -> {"hello": "world"}"""
    return {"hello": "world"}


@route("/greet/{name}", method=["GET", "POST"])
def greet(name: PathValue, times: int = 1, polite: bool = False) -> str:
    """GET /greet/ada?times=2&polite=1"""
    word = "Dear" if polite else "Hi"
    return " ".join([f"{word} {name}!"] * times)


@route("/search")
def search(q: str, tags: list[str] = [], page=Parameter("p", default="1")) -> dict:
    """GET /search?q=x&tags=a&tags=b&p=2 (q is required: 400 without it)"""
    return {"q": q, "tags": tags, "page": int(page)}


@route("/whoami")
def whoami(user_agent=Header("User-Agent", default="?"), headers: Headers = None) -> dict:
    """Headers are matched case-insensitively."""
    return {"agent": str(user_agent), "header_count": len(headers or {})}


@route("/items", method="POST")
def create_item(item: JSONBody) -> tuple:
    """POST /items with a JSON body -> 201 and a Location header."""
    if "name" not in item:
        raise HttpError(400, "Bad Item", "an item needs a name")
    cookies = Cookies()
    cookies["last_item"] = item["name"]
    return 201, Headers({"Location": f"/items/{item['name']}"}), cookies, item


@route(regexp=r"^/files/(.+)\.txt$")
def text_file(stem: RegGroup = RegGroup(0)) -> str:
    """GET /files/notes.txt -> the regexp group"""
    return f"you asked for {stem}"


@route("/old")
def old() -> Redirect:
    """GET /old -> 302 to /"""
    return Redirect("/")


@controller
@request_map("/counter", method="GET")
class Counter:
    """A singleton controller: the count survives between requests."""

    def __init__(self) -> None:
        self.count = 0

    @request_map
    def current(self) -> dict[str, int]:
        return {"count": self.count}

    @request_map("/up", method="POST")
    def up(self) -> dict[str, int]:
        self.count += 1
        return {"count": self.count}


if __name__ == "__main__":
    server.start(host="127.0.0.1", port=9090)
