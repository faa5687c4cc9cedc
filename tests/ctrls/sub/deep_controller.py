"""A scanned controller module in a sub-folder."""

from simple_http_server import get_app_conf

app = get_app_conf("scan-fixture")


@app.route("/scanned/deep")
def deep() -> str:
    return "deep"
