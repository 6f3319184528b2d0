// A FHIR stand-in upstream for fhirguard's interop test (tests/interop_oidc.rs). Loopback only.
//
// Usage: node fhir-echo.mjs [PORT]      (or env PORT; 0 or absent = ephemeral)
//
// Answers every request with 200, content-type application/fhir+json, and a JSON body that
// echoes what it received, exactly as it arrived on the wire:
//
//   {
//     "resourceType": "Parameters",          // so the body is still FHIR-shaped
//     "method": "GET",
//     "url": "/fhir/Observation?code=x",    // the request target, path and query, undecoded
//     "httpVersion": "1.1",
//     "headers": { "host": "...", ... },     // names lower-cased; a repeated header is joined by ", "
//     "rawHeaders": [["Host", "..."], ...],  // every header line in order, names as sent
//     "body": "..."                          // the request body as UTF-8 text ("" when none)
//   }
//
// When listening it prints ONE line of JSON to stdout: {"port": N}.
// It exits on SIGTERM / SIGINT and when its stdin closes, so a crashed parent never leaves it running.

import { once } from 'node:events';
import { createServer } from 'node:http';
import { stopWithParent } from './lifetime.mjs';

const HOST = '127.0.0.1';
const port = Number.parseInt(process.argv[2] ?? process.env.PORT ?? '0', 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`invalid port: ${process.argv[2] ?? process.env.PORT}`);
  process.exit(2);
}

// Bodies are echoed back; anything larger than this is cut (a test upstream, not a store).
const MAX_BODY_BYTES = 1024 * 1024;

function pairs(rawHeaders) {
  const out = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) out.push([rawHeaders[i], rawHeaders[i + 1]]);
  return out;
}

const server = createServer(async (req, res) => {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    if (size < MAX_BODY_BYTES) chunks.push(chunk);
    size += chunk.length;
  }
  const headers = {};
  for (const [name, value] of pairs(req.rawHeaders)) {
    const key = name.toLowerCase();
    headers[key] = key in headers ? `${headers[key]}, ${value}` : value;
  }
  const echo = {
    resourceType: 'Parameters',
    method: req.method,
    url: req.url,
    httpVersion: req.httpVersion,
    headers,
    rawHeaders: pairs(req.rawHeaders),
    body: Buffer.concat(chunks).toString('utf8'),
  };
  const payload = Buffer.from(JSON.stringify(echo));
  res.writeHead(200, {
    'content-type': 'application/fhir+json',
    'content-length': payload.length,
  });
  res.end(payload);
});

server.listen(port, HOST);
await once(server, 'listening');
process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);

stopWithParent(server);
