"""Not named like a controller: the scan with ``.*controller.*`` must skip it."""

from simple_http_server import get_app_conf

app = get_app_conf("scan-fixture")


@app.route("/scanned/not-matching")
def not_matching() -> str:
    return "should not be imported"
