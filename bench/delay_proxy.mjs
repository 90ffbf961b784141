// A reverse proxy that adds a fixed latency to every request: the benchmark's "remote" FHIR server.
//
//   node bench/delay_proxy.mjs --upstream http://127.0.0.1:18090 --port 18091 --delay-ms 50
//
// Each request is read in full, held for --delay-ms, then forwarded (keep-alive pool) to --upstream
// with its Host header unchanged, so the upstream's absolute URLs (fullUrl, next links) point back at
// this proxy. Prints "delay proxy listening on http://HOST:PORT" on stdout when ready; stops on
// SIGTERM/SIGINT. GET /__log: timings of the forwarded requests (see below).

import http from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    upstream: { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
    'delay-ms': { type: 'string', default: '50' },
  },
});
if (!values.upstream) {
  console.error('--upstream is required');
  process.exit(2);
}
const upstream = new URL(values.upstream);
const delayMs = Number(values['delay-ms']);
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const HOP_BY_HOP = ['connection', 'keep-alive', 'transfer-encoding', 'proxy-connection', 'upgrade'];

function strip(headers) {
  const copy = { ...headers };
  for (const name of HOP_BY_HOP) delete copy[name];
  return copy;
}

// GET /__log answers (and clears) the timings of the requests forwarded since the last call, in ms
// on one clock: [{path, arrived, forwarded, done}]. It is answered here, never forwarded.
let timings = [];

const server = http.createServer((req, res) => {
  if (req.url === '/__log') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(timings));
    timings = [];
    return;
  }
  const timing = { path: req.url, arrived: performance.now(), forwarded: null, done: null };
  if (timings.length < 10000) timings.push(timing);
  res.on('finish', () => {
    timing.done = performance.now();
  });
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    setTimeout(() => {
      timing.forwarded = performance.now();
      const forward = http.request(
        {
          host: upstream.hostname,
          port: upstream.port,
          method: req.method,
          path: req.url,
          headers: strip(req.headers),
          agent,
        },
        (upstreamRes) => {
          res.writeHead(upstreamRes.statusCode ?? 502, strip(upstreamRes.headers));
          upstreamRes.pipe(res);
        },
      );
      forward.on('error', (err) => {
        if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(`delay proxy: upstream error: ${err.message}\n`);
      });
      forward.end(Buffer.concat(chunks));
    }, delayMs);
  });
});

server.keepAliveTimeout = 65_000;
server.on('error', (err) => {
  console.error(`delay proxy: ${err.message}`);
  process.exit(1);
});
server.listen(Number(values.port), values.host, () => {
  const { address, port } = server.address();
  process.stdout.write(`delay proxy listening on http://${address}:${port}\n`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    agent.destroy();
    process.exit(0);
  });
}
