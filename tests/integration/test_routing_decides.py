"""Which route decides a request, as in the original's method tables.

The first url that has routes for the method (the exact url, then patterns, then
regexps; routes naming the method before routes without ``method=``) decides: when
none of its routes' ``params=``/``headers=`` match, the answer is 404 and no other
route, resource or 405 is tried.  Every test runs through the TestClient and both
real transports (``make_client``).
"""

from __future__ import annotations

from pathlib import Path

from simple_http_server import App, PathValue, RegGroup


def narrowing_app() -> App:
    app = App()

    @app.route("/dupn", method="GET", params="x=1")
    def dupn_get() -> str:
        return "get-x1"

    @app.route("/dupn")
    def dupn_any() -> str:
        return "any-method"

    @app.route("/items/special", params="admin")
    def special() -> str:
        return "special"

    @app.route("/items/{item_id}")
    def item(item_id: PathValue) -> str:
        return f"item {item_id}"

    @app.route("/pat/{x}", method="GET", params="q")
    def pat_q() -> str:
        return "pattern with q"

    @app.route("/pat/**", method="GET")
    def pat_deep() -> str:
        return "deep pattern"

    @app.route(regexp="^/reg/(.*)$", method="GET", params="q")
    def reg_q() -> str:
        return "regexp with q"

    @app.route(regexp="^/reg/(a.*)$", method="GET")
    def reg_a() -> str:
        return "regexp a"

    @app.route("/split", method="GET", params="a")
    def split_get() -> str:
        return "get with a"

    @app.route("/split", method="POST")
    def split_post() -> str:
        return "post"

    return app


def test_exact_url_whose_narrowing_fails_is_404_not_the_any_method_route(make_client):
    client = make_client(narrowing_app())
    assert client.get("/dupn?x=1").text == "get-x1"
    missed = client.get("/dupn?x=2")
    assert missed.status == 404 and missed.json()["message"] == "Controller Not Found"
    assert client.post("/dupn").text == "any-method"  # no POST route names it


def test_exact_url_whose_narrowing_fails_is_404_not_a_pattern(make_client):
    client = make_client(narrowing_app())
    assert client.get("/items/special?admin").text == "special"
    assert client.get("/items/special").status == 404
    assert client.get("/items/42").text == "item 42"


def test_pattern_and_regexp_whose_narrowing_fails_are_404(make_client):
    client = make_client(narrowing_app())
    assert client.get("/pat/y?q").text == "pattern with q"
    assert client.get("/pat/y").status == 404  # "/pat/**" is not tried
    assert client.get("/pat/y/z").text == "deep pattern"
    assert client.get("/reg/ab?q").text == "regexp with q"
    assert client.get("/reg/ab").status == 404  # "^/reg/(a.*)$" is not tried


def test_narrowing_404_and_wrong_method_405(make_client):
    client = make_client(narrowing_app())
    refused = client.get("/split")  # GET is served there; its expressions failed
    assert (refused.status, refused.header("Allow")) == (404, None)
    assert client.get("/split?a").text == "get with a"
    wrong = client.request("PUT", "/split")  # no route serves PUT there
    assert (wrong.status, wrong.header("Allow")) == (405, "GET, HEAD, POST")
    pattern = client.post("/pat/y")
    assert (pattern.status, pattern.header("Allow")) == (405, "GET, HEAD")


def test_narrowing_404_goes_to_the_404_error_page(make_client):
    app = narrowing_app()

    @app.error_message("404")
    def not_found(message: str, explain: str) -> str:
        return f"404 page: {message}: {explain}"

    reply = make_client(app).get("/dupn?x=2")
    assert (reply.status, reply.text) == (
        404,
        "404 page: Controller Not Found: Cannot find a controller for your path",
    )


def test_narrowing_404_does_not_fall_back_to_a_resource(make_client, tmp_path: Path):
    (tmp_path / "a.txt").write_text("the file")
    app = App()

    @app.route("/pub/a.txt", params="fresh")
    def fresh() -> str:
        return "generated"

    client = make_client(app, {"/pub/*": str(tmp_path)})
    assert client.get("/pub/a.txt?fresh").text == "generated"
    assert client.get("/pub/a.txt").status == 404


def ordering_app() -> App:
    app = App()

    @app.route("/o/{a}")
    def first() -> str:
        return "first registered"

    @app.route("/o/**")
    def second() -> str:
        return "second registered"

    @app.route("/m/{x}", method="GET")
    def m_get() -> str:
        return "GET pattern"

    @app.route("/m/**")
    def m_any() -> str:
        return "any-method pattern"

    @app.route("/s/{a}", method="GET", params="y")
    def s_named(a: PathValue) -> str:
        return f"s named {a}"

    @app.route("/s/**", method="GET")
    def s_deep() -> str:
        return "s deep"

    @app.route("/s/*", method="GET", params="x")
    def s_star(p: PathValue) -> str:
        return f"s star {p}"

    @app.route(regexp="^/r/(.*)$")
    def r_first(g: RegGroup = RegGroup(0)) -> str:
        return f"first regexp {g}"

    @app.route(regexp="^/r/(a.*)$")
    def r_second() -> str:
        return "second regexp"

    return app


def test_different_patterns_and_regexps_are_tried_in_registration_order(make_client):
    client = make_client(ordering_app())
    assert client.get("/o/x").text == "first registered"
    assert client.get("/o/x/y").text == "second registered"
    assert client.get("/r/ab").text == "first regexp ab"


def test_patterns_naming_the_method_come_first(make_client):
    client = make_client(ordering_app())
    assert client.get("/m/y").text == "GET pattern"
    assert client.post("/m/y").text == "any-method pattern"


def test_patterns_of_one_shape_are_one_url(make_client):
    """``/s/{a}`` and ``/s/*`` match the same paths: one url (placed where ``/s/{a}``
    was registered, before ``/s/**``), its last registered route tried first."""
    client = make_client(ordering_app())
    assert client.get("/s/v?x&y").text == "s star v"
    assert client.get("/s/v?y").text == "s named v"
    assert client.get("/s/v").status == 404  # "/s/**" is not tried
    assert client.get("/s/v/w").text == "s deep"
