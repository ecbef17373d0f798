"""Echo upstream on uvicorn with its h11 protocol for the node's desync harness
(../../desync_test.go). Same contract as echo_server.py: "LISTENING <port>", then JSON records
("head" once the request is parsed, "done" after its body), and a 200 with X-Upstream-Saw and a
JSON body for every request; a target containing "chunked" gets a chunked answer.

Keep-alive is held for 10 minutes: uvicorn's default (5 s) would close pooled connections in the
middle of a run and mix that into what the harness measures.
"""

import json
import socket
import sys

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol


def emit(rec):
    sys.stdout.write(json.dumps(rec) + "\n")
    sys.stdout.flush()


_seq = [0]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    headers = {}
    for k, v in scope["headers"]:
        headers.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
    target = scope.get("raw_path") or scope["path"].encode("latin-1", "replace")
    target = target.decode("latin-1")
    if scope.get("query_string"):
        target += "?" + scope["query_string"].decode("latin-1")
    _seq[0] += 1
    rec = {
        "ev": "head", "seq": _seq[0], "method": scope["method"], "target": target,
        "id": headers.get("x-req-id", ""), "cookie": headers.get("cookie", ""),
        "auth": headers.get("authorization", ""), "host": headers.get("host", ""),
    }
    emit(rec)
    n = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return
        n += len(msg.get("body", b""))
        if not msg.get("more_body", False):
            break
    emit(dict(rec, ev="done", body_len=n))
    body = json.dumps({"id": rec["id"], "method": rec["method"], "path": target,
                       "body_len": n}).encode("latin-1", "replace")
    hdrs = [(b"x-upstream-saw", rec["id"].encode("latin-1", "replace")),
            (b"content-type", b"application/json")]
    if "chunked" in target:
        # No length: h11 frames the answer chunked.
        await send({"type": "http.response.start", "status": 200, "headers": hdrs})
        half = len(body) // 2
        await send({"type": "http.response.body", "body": body[:half], "more_body": True})
        await send({"type": "http.response.body", "body": body[half:]})
        return
    hdrs.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


class NoDelayH11(H11Protocol):
    """h11 with Nagle's algorithm off: head and body go out in separate writes, and each answer
    would otherwise wait for the peer's delayed ACK (40 ms), which only slows the harness down."""

    def connection_made(self, transport):
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


def main():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sys.stdout.write("LISTENING %d\n" % sock.getsockname()[1])
    sys.stdout.flush()
    cfg = uvicorn.Config(app, http=NoDelayH11, lifespan="off", log_level="critical", access_log=False,
                         timeout_keep_alive=600)
    uvicorn.Server(cfg).run(sockets=[sock])


if __name__ == "__main__":
    main()
