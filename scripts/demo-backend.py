#!/usr/bin/python3
"""A demo backend: an HTTP server on port 80 (all addresses, so also the VIPs
on lo) that answers every GET with its own name and the client's address;
GET /slow sends 20,000 bytes over 10 s (a long download).

    demo-backend.py NAME      (prints "ready" when listening)
"""
import http.server
import sys
import time

NAME = sys.argv[1]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes: without this, Nagle and the
    # client's delayed ACK would add 40 ms to every keep-alive response.
    disable_nagle_algorithm = True

    def do_GET(self):
        if self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "20000")
            self.end_headers()
            for _ in range(20):
                self.wfile.write(b"x" * 999 + b"\n")
                self.wfile.flush()
                time.sleep(0.5)
            return
        body = f"{NAME} (you are {self.client_address[0]})\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer.request_queue_size = 256
server = http.server.ThreadingHTTPServer(("0.0.0.0", 80), Handler)
print("ready", flush=True)
server.serve_forever()
