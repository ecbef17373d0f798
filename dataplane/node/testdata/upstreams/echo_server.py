"""Echo upstream on Python's http.server for the node's desync harness (../../desync_test.go).

Keep-alive (HTTP/1.1), one thread per connection. Prints "LISTENING <port>" once it listens,
then one JSON line per request it parsed: {"ev": "head", ...} as soon as the head is parsed
(so a request that never completes still shows), {"ev": "done", ..., "body_len": n} after the
body. Every request is answered 200 with X-Upstream-Saw: <X-Req-Id> and a JSON body naming what
was seen; a target containing "chunked" gets a chunked answer.

The body is read the way careful applications do (Content-Length, else chunked), so that what
the harness finds is how http.server reads the head, not a missing feature of this script.
Strings are logged as http.server decoded them (ISO-8859-1), which the harness turns back into
bytes.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_out = threading.Lock()
_seq = [0]


def emit(rec):
    line = json.dumps(rec)
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def next_seq():
    with _out:
        _seq[0] += 1
        return _seq[0]


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body go out in separate writes: with Nagle's algorithm each answer would wait for
    # the peer's delayed ACK (40 ms), which only slows the harness down.
    disable_nagle_algorithm = True

    def __getattr__(self, name):
        # http.server looks up do_<METHOD>: every method, odd ones too, is echoed.
        if name.startswith("do_"):
            return self._echo
        raise AttributeError(name)

    def log_message(self, *args):
        pass  # stdout carries the records; nothing else is logged

    def _read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            n = 0
            while True:
                line = self.rfile.readline(1 << 16)
                if not line:
                    return n
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(1 << 16) not in (b"\r\n", b"\n", b""):
                        pass
                    return n
                n += len(self.rfile.read(size))
                self.rfile.readline(1 << 16)
        cl = self.headers.get("Content-Length")
        if cl is None:
            return 0
        return len(self.rfile.read(int(cl)))

    def _echo(self):
        h = self.headers
        rec = {
            "ev": "head", "seq": next_seq(), "method": self.command, "target": self.path,
            "id": h.get("X-Req-Id", ""), "cookie": h.get("Cookie", ""),
            "auth": h.get("Authorization", ""), "host": h.get("Host", ""),
        }
        emit(rec)
        try:
            n = self._read_body()
        except ValueError:
            self.send_error(400, "unreadable body")
            return
        emit(dict(rec, ev="done", body_len=n))
        body = json.dumps({"id": rec["id"], "method": self.command, "path": self.path,
                           "body_len": n}).encode("latin-1", "replace")
        self.send_response(200)
        self.send_header("X-Upstream-Saw", rec["id"])
        self.send_header("Content-Type", "application/json")
        if "chunked" in self.path:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            half = len(body) // 2
            for part in (body[:half], body[half:]):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        self.wfile.flush()


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    srv.daemon_threads = True
    emit_line = "LISTENING %d" % srv.server_address[1]
    with _out:
        sys.stdout.write(emit_line + "\n")
        sys.stdout.flush()
    srv.serve_forever()


if __name__ == "__main__":
    main()
