"""The same controllers and websocket handlers behind any ASGI server.

uvicorn examples.asgi_app:app --port 9090
hypercorn examples.asgi_app:app --bind 127.0.0.1:9090
"""

import asyncio
import os

from simple_http_server import WebsocketHandler, request_map, server, websocket_handler

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


@request_map("/hello_asgi")
def hello(name: str = "ASGI"):
    return {"hello": name}


@request_map("/ticks")
async def ticks(count: int = 3):
    async def lines():
        for i in range(count):
            await asyncio.sleep(0.1)
            yield f"tick {i}\n"

    return lines()  # streamed to the client as it is produced


@websocket_handler(endpoint="/ws/echo")
class Echo(WebsocketHandler):
    def on_text_message(self, session, message):
        session.send(f"echo: {message}")


# An ASGI 3 application: the proxy itself, or its app_proxy.
app = server.init_asgi_proxy(resources={"/public/**": STATIC})


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=9090)
