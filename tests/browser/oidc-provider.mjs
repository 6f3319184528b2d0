// The authorization server of the real-browser suite (tests/it/browser.rs): npm `oidc-provider`
// (v9) with the authorization_code flow for one public SMART app, and its own minimal login and
// consent pages. Loopback only.
//
// Usage: node oidc-provider.mjs [PORT]      (or env PORT; 0 or absent = ephemeral)
//
// Environment:
// - APP_ORIGIN (required): the SMART app's origin, e.g. http://127.0.0.1:4321. The client's one
//   redirect URI is APP_ORIGIN/index.html, and the token endpoint answers CORS for that origin
//   only (clientBasedCORS).
// - CLIENT_ID (default `browser-app`): the public client (token_endpoint_auth_method `none`,
//   PKCE S256 required, as oidc-provider requires for public clients).
// - RESOURCE (default https://fhir.example.test/browser): the resource indicator (RFC 8707) of
//   the FHIR server. An authorization request names no resource (fhirclient sends SMART's `aud`
//   parameter, which is not a resource indicator and is ignored), so every access token is for
//   this one: an RS256 JWT (`typ: at+jwt`) with `aud` = RESOURCE.
// - ACCESS_TOKEN_TTL (seconds, default 300): lifetime of the access tokens. The suite makes it
//   short so that the browser can watch its token really expire.
//
// Accounts (login name / password → the patient they are): `alice` / `alice-password` →
// Patient p1, `bob` / `bob-password` → Patient p2. Access tokens carry `azp` and `client_id`
// (the client), `scp` (the granted scope string), `fhirUser` (`Patient/<id>`) and `patient`
// (`<id>`), the claims fhirguard needs of a SMART patient app with `smartLaunchPatientClaim:
// patient`. The token endpoint's JSON answer also carries `patient`, as SMART's launch context
// requires (fhirclient reads it there).
//
// The login page is a form (`#login`, `#password`, `#submit`); the consent page lists the
// requested scopes and has `#allow`. Each authorization request is printed on stdout as
// {"event":"authorize","query":{...}} and each token request as {"event":"token","status":N},
// so the test can check what the browser really sent.
//
// When listening it prints one line of JSON to stdout first: {"issuer": "...", "port": N}.
// It exits on SIGTERM / SIGINT and when its stdin closes, so a crashed parent never leaves it running.

import { once } from 'node:events';
import { createServer } from 'node:http';

import Provider, { errors } from 'oidc-provider';

import { signingKeys } from '../interop/signing-keys.mjs';
import { stopWithParent } from '../interop/lifetime.mjs';

const HOST = '127.0.0.1';
const port = Number.parseInt(process.argv[2] ?? process.env.PORT ?? '0', 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`invalid port: ${process.argv[2] ?? process.env.PORT}`);
  process.exit(2);
}
const APP_ORIGIN = process.env.APP_ORIGIN;
if (!APP_ORIGIN || new URL(APP_ORIGIN).origin !== APP_ORIGIN) {
  console.error(`APP_ORIGIN must be an origin (scheme://host:port), not ${APP_ORIGIN}`);
  process.exit(2);
}
const CLIENT_ID = process.env.CLIENT_ID ?? 'browser-app';
const RESOURCE = process.env.RESOURCE ?? 'https://fhir.example.test/browser';
const ACCESS_TOKEN_TTL = Number.parseInt(process.env.ACCESS_TOKEN_TTL ?? '300', 10);
if (!Number.isInteger(ACCESS_TOKEN_TTL) || ACCESS_TOKEN_TTL < 1) {
  console.error(`invalid ACCESS_TOKEN_TTL: ${process.env.ACCESS_TOKEN_TTL}`);
  process.exit(2);
}

// SMART scopes the FHIR resource server grants (v1 and v2 syntax).
const RESOURCE_SCOPES = [
  'patient/Observation.rs',
  'patient/Observation.read',
  'patient/Patient.rs',
  'patient/Patient.read',
].join(' ');

const ACCOUNTS = {
  alice: { password: 'alice-password', patient: 'p1' },
  bob: { password: 'bob-password', patient: 'p2' },
};

// The listener is bound first, so an ephemeral port is known before the issuer is fixed.
const server = createServer();
server.listen(port, HOST);
await once(server, 'listening');
const actualPort = server.address().port;
const issuer = `http://${HOST}:${actualPort}`;

function event(object) {
  process.stdout.write(`${JSON.stringify(object)}\n`);
}

const provider = new Provider(issuer, {
  jwks: signingKeys(),
  scopes: ['openid', 'fhirUser', 'launch/patient', 'offline_access'],
  claims: { openid: ['sub'], fhirUser: ['fhirUser'] },
  clients: [
    {
      client_id: CLIENT_ID,
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: [`${APP_ORIGIN}/index.html`],
    },
  ],
  findAccount: async (_ctx, id) => {
    const account = ACCOUNTS[id];
    if (!account) return undefined;
    return {
      accountId: id,
      claims: async () => ({ sub: id, fhirUser: `Patient/${account.patient}` }),
    };
  },
  interactions: {
    url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  // The token endpoint answers CORS for the app's origin only (the origin of its redirect URI).
  clientBasedCORS: (_ctx, origin, client) =>
    client.clientId === CLIENT_ID && client.redirectUris.some((uri) => new URL(uri).origin === origin),
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resourceIndicator) => {
        if (resourceIndicator !== RESOURCE) {
          throw new errors.InvalidTarget();
        }
        return {
          scope: RESOURCE_SCOPES,
          audience: RESOURCE,
          accessTokenTTL: ACCESS_TOKEN_TTL,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  extraTokenClaims: async (_ctx, token) => {
    if (token.kind !== 'AccessToken') return undefined;
    const account = ACCOUNTS[token.accountId];
    if (!account) return undefined;
    return {
      azp: token.clientId,
      client_id: token.clientId,
      scp: token.scope ?? '',
      fhirUser: `Patient/${account.patient}`,
      patient: account.patient,
    };
  },
  enabledJWA: { idTokenSigningAlgValues: ['RS256'] },
});

provider.on('server_error', (_ctx, err) => console.error('oidc-provider server_error:', err));

provider.use(async (ctx, next) => {
  if (ctx.method === 'GET' && ctx.path === '/auth') {
    event({ event: 'authorize', query: Object.fromEntries(new URLSearchParams(ctx.querystring)) });
  }
  await next();
  if (ctx.method === 'POST' && ctx.path === '/token') {
    event({ event: 'token', status: ctx.status });
    // SMART's launch context: the patient the token is for, beside the token (the access token
    // is a JWT issued above; its `patient` claim is the logged-in account's patient).
    const token = ctx.body?.access_token;
    if (ctx.status === 200 && typeof token === 'string') {
      const claims = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
      if (claims.patient) ctx.body = { ...ctx.body, patient: claims.patient };
    }
  }
});

// --- The login and consent pages (instead of oidc-provider's devInteractions). ---

const escape = (value) =>
  String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(res, title, body) {
  res.writeHead(200, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
  });
  res.end(`<!doctype html><html><head><meta charset="utf-8"><title>${escape(title)}</title></head>
<body><h1>${escape(title)}</h1>${body}</body></html>`);
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString());
}

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params, session } = details;
  if (req.method === 'GET') {
    if (prompt.name === 'login') {
      const error = new URL(req.url, issuer).searchParams.get('error');
      return page(res, 'Sign in', `${error ? `<p id="error">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${uid}">
  <input type="hidden" name="prompt" value="login">
  <label>Login <input id="login" name="login" required autocomplete="off"></label>
  <label>Password <input id="password" name="password" type="password" required></label>
  <button id="submit" type="submit">Sign in</button>
</form>`);
    }
    if (prompt.name === 'consent') {
      const scopes = [
        ...(prompt.details.missingOIDCScope ?? []),
        ...Object.values(prompt.details.missingResourceScopes ?? {}).flat(),
      ];
      return page(res, 'Authorize', `<p>${escape(params.client_id)} asks for:</p>
<ul id="scopes">${scopes.map((s) => `<li>${escape(s)}</li>`).join('')}</ul>
<form method="post" action="/interaction/${uid}">
  <input type="hidden" name="prompt" value="consent">
  <button id="allow" type="submit">Allow</button>
</form>`);
    }
    res.writeHead(501).end(`prompt ${prompt.name} is not implemented`);
    return undefined;
  }
  const form = await readForm(req);
  if (form.get('prompt') === 'login' && prompt.name === 'login') {
    const login = form.get('login') ?? '';
    const account = ACCOUNTS[login];
    if (!account || account.password !== form.get('password')) {
      res.writeHead(303, { location: `/interaction/${uid}?error=${encodeURIComponent('wrong login or password')}` });
      res.end();
      return undefined;
    }
    return provider.interactionFinished(req, res, { login: { accountId: login } }, {
      mergeWithLastSubmission: false,
    });
  }
  if (form.get('prompt') === 'consent' && prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) {
      grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    }
    if (prompt.details.missingOIDCClaims) {
      grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    }
    for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, {
      mergeWithLastSubmission: true,
    });
  }
  res.writeHead(400).end('unexpected form');
  return undefined;
}

const callback = provider.callback();
server.on('request', (req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((error) => {
      console.error('interaction failed:', error);
      if (!res.headersSent) res.writeHead(500);
      res.end(String(error?.message ?? error));
    });
    return;
  }
  callback(req, res);
});

event({ issuer, port: actualPort });

stopWithParent(server);
