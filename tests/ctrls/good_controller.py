"""A scanned controller module: registers on the ``scan-fixture`` app."""

from simple_http_server import get_app_conf

app = get_app_conf("scan-fixture")


@app.route("/scanned/good")
def good() -> str:
    return "good"
