"""Multipart uploads and static files.

python examples/upload.py     # then open http://127.0.0.1:9090/public/upload.html
"""

from __future__ import annotations

import os
import tempfile

from simple_http_server import MultipartFile, StaticFile, route, server

HERE = os.path.dirname(os.path.abspath(__file__))
UPLOADS = os.environ.get("UPLOAD_DIR") or tempfile.mkdtemp(prefix="shs-uploads-")


@route("/upload", method="POST")
def upload(file: MultipartFile, note: str = "") -> dict:
    """Streams the part to a temporary file; nothing large is held in memory."""
    name = os.path.basename(file.filename) or "upload.bin"
    file.save_to_file(os.path.join(UPLOADS, name))
    return {"saved": name, "size": file.size, "note": note}


@route("/download/{name}")
def download(name: str) -> StaticFile:
    """Sends an uploaded file back as an attachment."""
    path = os.path.join(UPLOADS, os.path.basename(name))
    return StaticFile(path, None, download_name=os.path.basename(name))


if __name__ == "__main__":
    server.start(
        host="127.0.0.1",
        port=9090,
        resources={"/public/*": os.path.join(HERE, "static")},
        max_upload_size=1024 * 1024 * 1024,
    )
