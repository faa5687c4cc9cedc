"""The README's "WSGI Support": the same controllers behind any WSGI server.

    gunicorn -w 2 -b 127.0.0.1:9090 examples.wsgi_app:application
    python examples/wsgi_app.py 9090        # wsgiref, for a quick try

Websockets need a server of our own or ASGI (``examples/asgi_app.py``).
"""

import os
import sys

from simple_http_server import request_map, server

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


@request_map("/hello_wsgi")
def my_controller(name: str = "WSGI"):
    return 200, f"Hello, {name}!"


@request_map("/numbers")
def numbers(count: int = 3):
    # A generator is streamed chunk by chunk, not buffered.
    for i in range(count):
        yield f"{i}\n"


# resources is optional
wsgi_proxy = server.init_wsgi_proxy(resources={"/public/**": STATIC})


# The WSGI entrance: the proxy's app_proxy, or the proxy itself.
def application(environ, start_response):
    return wsgi_proxy.app_proxy(environ, start_response)


# If your entrance is async:
async def async_application(environ, start_response):
    return await wsgi_proxy.async_app_proxy(environ, start_response)


if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9090
    with make_server("127.0.0.1", port, application) as httpd:
        print(f"Serving on http://127.0.0.1:{port}/hello_wsgi")
        httpd.serve_forever()
