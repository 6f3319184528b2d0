// The SMART app's web server for the real-browser suite (tests/it/browser.rs): two loopback
// origins, each a tiny static server.
//
// - the app origin serves the app (app/launch.html, app/index.html, app/app.js) and fhirclient's
//   browser bundle (node_modules/fhirclient/build/fhir-client.js) as /fhir-client.js;
// - the foreign origin serves only app/foreign.html: a page on an origin that fhirguard's
//   `cors.origins` does not list, from which the driver makes a request the browser must block.
//
// Usage: node app-server.mjs      (both ports ephemeral)
//
// When listening it prints one line of JSON to stdout: {"origin": "...", "foreignOrigin": "..."}.
// It exits on SIGTERM / SIGINT and when its stdin closes, so a crashed parent never leaves it running.

import { readFile } from 'node:fs/promises';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stopWithParent } from '../interop/lifetime.mjs';

const HOST = '127.0.0.1';
const here = dirname(fileURLToPath(import.meta.url));

const APP_FILES = {
  '/launch.html': join(here, 'app/launch.html'),
  '/index.html': join(here, 'app/index.html'),
  '/app.js': join(here, 'app/app.js'),
  '/fhir-client.js': join(here, 'node_modules/fhirclient/build/fhir-client.js'),
};
const FOREIGN_FILES = {
  '/foreign.html': join(here, 'app/foreign.html'),
};
const TYPES = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8' };

function serve(files) {
  return createServer(async (req, res) => {
    const path = new URL(req.url, `http://${HOST}`).pathname;
    const file = files[path];
    if (req.method !== 'GET' || !file) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, {
        'content-type': TYPES[file.split('.').pop()],
        'cache-control': 'no-store',
      });
      res.end(body);
    } catch (error) {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(String(error));
    }
  });
}

async function listen(server) {
  server.listen(0, HOST);
  await once(server, 'listening');
  return `http://${HOST}:${server.address().port}`;
}

const app = serve(APP_FILES);
const foreign = serve(FOREIGN_FILES);
const origin = await listen(app);
const foreignOrigin = await listen(foreign);
process.stdout.write(`${JSON.stringify({ origin, foreignOrigin })}\n`);

stopWithParent(app, foreign);
