// Echo upstream on Node's http module for the node's desync harness (../../desync_test.go).
// Same contract as echo_server.py: "LISTENING <port>", then JSON records ("head" once the request
// is parsed, "done" after its body), and a 200 with X-Upstream-Saw and a JSON body for every
// request; a target containing "chunked" gets a chunked answer (no length: Node frames it).
// Writes to a pipe are synchronous on Linux, so a record is out before its answer.
'use strict';

const http = require('http');

let seq = 0;
const emit = (rec) => process.stdout.write(JSON.stringify(rec) + '\n');

const server = http.createServer((req, res) => {
  const h = req.headers;
  const rec = {
    ev: 'head', seq: ++seq, method: req.method, target: req.url,
    id: h['x-req-id'] || '', cookie: h.cookie || '', auth: h.authorization || '', host: h.host || '',
  };
  emit(rec);
  let n = 0;
  req.on('data', (c) => { n += c.length; });
  req.on('end', () => {
    emit({ ...rec, ev: 'done', body_len: n });
    const body = Buffer.from(JSON.stringify({ id: rec.id, method: req.method, path: req.url, body_len: n }), 'latin1');
    try {
      res.setHeader('X-Upstream-Saw', rec.id);
    } catch (e) {
      res.setHeader('X-Upstream-Saw', 'unprintable');
    }
    res.setHeader('Content-Type', 'application/json');
    if (req.url.includes('chunked')) {
      const half = body.length >> 1;
      res.write(body.subarray(0, half));
      res.end(body.subarray(half));
    } else {
      res.setHeader('Content-Length', body.length);
      res.end(body);
    }
  });
});
// Node closes idle keep-alive connections after 5 s by default; pooled tunnel channels would then
// die in the middle of a run and mix that into what the harness measures.
server.keepAliveTimeout = 0;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write('LISTENING ' + server.address().port + '\n');
});
