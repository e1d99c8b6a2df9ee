"""A standard-library Python web app for corral.

corral runs several copies of it and balances requests across them; each copy
only has to listen on 127.0.0.1:$PORT and stop cleanly on SIGTERM.

    PORT=8000 python3 app.py

`app` is also a WSGI callable with the same answers, so the same file runs
under gunicorn (see config.hcl).
"""

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORKER = os.environ.get("CORRAL_WORKER", "standalone")


def respond(path):
    """Return (status, content type, body) for a GET of path."""
    if path == "/healthz":
        return 200, "text/plain", b"ok\n"
    body = json.dumps({"worker": WORKER, "pid": os.getpid(), "path": path})
    return 200, "application/json", body.encode() + b"\n"


def app(environ, start_response):
    """WSGI entry point, for gunicorn and other WSGI servers."""
    status, ctype, body = respond(environ.get("PATH_INFO", "/"))
    start_response(
        f"{status} OK",
        [("Content-Type", ctype), ("Content-Length", str(len(body)))],
    )
    return [body]


class Handler(BaseHTTPRequestHandler):
    """Answers every GET through respond()."""

    # HTTP/1.1 keep-alive: corral pools its connections to workers.
    protocol_version = "HTTP/1.1"
    # An idle keep-alive connection is closed after this many seconds (as
    # Node does by default), so it cannot hold a thread, and with it the
    # exit after SIGTERM, forever.
    timeout = 5

    def do_GET(self):
        status, ctype, body = respond(self.path.split("?", 1)[0])
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        # One line per request would drown corral's log of this worker.
        pass


class Server(ThreadingHTTPServer):
    # Request threads are not daemons and server_close() joins them, so
    # in-flight requests finish before the process exits.
    daemon_threads = False
    block_on_close = True


def main():
    port = int(os.environ.get("PORT", "8000"))
    # Loopback only: corral is the public face.
    server = Server(("127.0.0.1", port), Handler)

    def stop(signum, frame):
        # shutdown() waits for serve_forever() to return, which runs in this
        # very thread, so it must be called from another one.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"{WORKER} listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
