// A real OpenID provider (npm `oidc-provider`) for fhirguard's interop test
// (tests/interop_oidc.rs). Loopback only.
//
// Usage: node oidc-provider.mjs [PORT]      (or env PORT; 0 or absent = ephemeral)
//
// - issuer: http://127.0.0.1:<port> (discovery at /.well-known/openid-configuration, keys at /jwks)
// - one confidential client: client_id `fhir-app`, secret `fhir-app-secret` (env CLIENT_SECRET
//   overrides), grant `client_credentials`, client_secret_basic or client_secret_post
// - one resource server (RFC 8707 resource indicator) `https://fhir.example.test` (env RESOURCE
//   overrides): access tokens are RS256 JWTs (`typ: at+jwt`, header `kid`) with
//   `aud` = the resource, and the extra claims fhirguard needs from a SMART provider:
//   `azp` (= client id), `scp` (= the granted scope string), `fhirUser` (env FHIR_USER overrides,
//   default https://fhir.example.test/Patient/123)
// - three more clients, each with the claim shape a kind of SMART client gets (secret: the client
//   id followed by `-secret`):
//   - `backend-app`: SMART Backend Services — only RFC 9068's own claims (`client_id`, `scope`,
//     `sub`), no `azp`, no `scp`, no `fhirUser`;
//   - `patient-app`: `scp` and a relative `fhirUser` (env PATIENT_FHIR_USER, default Patient/123);
//   - `ehr-app`: an EHR launch — `scp`, `fhirUser` the practitioner (env PRACTITIONER, default
//     Practitioner/doc) and the chosen patient as a `patient` claim (env LAUNCH_PATIENT, default 123)
// - env ACCESS_TOKEN_FORMAT=opaque: the resource server's access tokens are opaque (RFC 7662
//   introspection is their only check) instead of JWTs; revocation (RFC 7009) is enabled, and a
//   client `fhirguard` (secret `fhirguard-secret`) stands for the resource server introspecting
//   them (client_secret_basic). Each introspection request prints {"event":"introspection"} on
//   stdout, so a test can count them.
// - `mtls-app` (secret `mtls-app-secret`): like `fhir-app`, but its access tokens are bound to
//   the client certificate (RFC 8705 §3, `cnf.x5t#S256`), which the token request carries in
//   the `x-test-client-cert` header (URL-encoded PEM) since this provider serves plain HTTP
// - DPoP (RFC 9449) is on, as in oidc-provider's defaults: a token request with a `DPoP` proof
//   gets a DPoP-bound access token (`cnf.jkt`), for any client
// - the signing key is an RSA key generated at start (stable for the life of the process, so two
//   instances never share a key)
//
// When listening it prints one line of JSON to stdout: {"issuer": "...", "port": N} (then only
// the introspection events above).
// It exits on SIGTERM / SIGINT and when its stdin closes, so a crashed parent never leaves it running.

import { once } from 'node:events';
import { createServer } from 'node:http';

import Provider, { errors } from 'oidc-provider';

import { signingKeys } from './signing-keys.mjs';
import { stopWithParent } from './lifetime.mjs';

const HOST = '127.0.0.1';
const port = Number.parseInt(process.argv[2] ?? process.env.PORT ?? '0', 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`invalid port: ${process.argv[2] ?? process.env.PORT}`);
  process.exit(2);
}

const CLIENT_ID = 'fhir-app';
const MTLS_CLIENT_ID = 'mtls-app';
const CLIENT_SECRET = process.env.CLIENT_SECRET ?? 'fhir-app-secret';
const RESOURCE = process.env.RESOURCE ?? 'https://fhir.example.test';
const ACCESS_TOKEN_FORMAT = process.env.ACCESS_TOKEN_FORMAT ?? 'jwt';
const FHIR_USER = process.env.FHIR_USER ?? 'https://fhir.example.test/Patient/123';
// SMART scopes (v1 and v2 syntax) this resource server grants. A token request's scope is
// filtered to this set (oidc-provider's client_credentials grant keeps only the resource's scopes).
const RESOURCE_SCOPES = [
  'patient/Observation.read',
  'patient/Observation.rs',
  'patient/Observation.r',
  'patient/Patient.rs',
  'patient/Patient.read',
  'patient/*.read',
  'user/*.read',
  'system/Observation.read',
  'system/*.read',
  'system/*.rs',
  'system/*.*',
].join(' ');

// The extra claims of the other clients, by client id (see the header).
const SMART_CLIENTS = {
  'backend-app': () => ({}),
  'patient-app': (token) => ({
    scp: token.scope ?? '',
    fhirUser: process.env.PATIENT_FHIR_USER ?? 'Patient/123',
  }),
  'ehr-app': (token) => ({
    scp: token.scope ?? '',
    fhirUser: process.env.PRACTITIONER ?? 'Practitioner/doc',
    patient: process.env.LAUNCH_PATIENT ?? '123',
  }),
};

// The listener is bound first, so an ephemeral port is known before the issuer is fixed.
const server = createServer();
server.listen(port, HOST);
await once(server, 'listening');
const actualPort = server.address().port;
const issuer = `http://${HOST}:${actualPort}`;

const provider = new Provider(issuer, {
  jwks: signingKeys(),
  // Every scope a client may be registered with must be known to the provider.
  scopes: ['openid', 'offline_access', ...RESOURCE_SCOPES.split(' ')],
  clients: [CLIENT_ID, MTLS_CLIENT_ID, ...Object.keys(SMART_CLIENTS), 'fhirguard'].map((clientId) => ({
    client_id: clientId,
    client_secret: clientId === CLIENT_ID ? CLIENT_SECRET : `${clientId}-secret`,
    ...(clientId === MTLS_CLIENT_ID ? { tls_client_certificate_bound_access_tokens: true } : {}),
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: RESOURCE_SCOPES,
  })),
  clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    dPoP: { enabled: true },
    mTLS: {
      enabled: true,
      certificateBoundAccessTokens: true,
      getCertificate: (ctx) => {
        const pem = ctx.get('x-test-client-cert');
        return pem ? decodeURIComponent(pem) : undefined;
      },
    },
    resourceIndicators: {
      enabled: true,
      // A token request without `resource` gets the FHIR resource server too.
      defaultResource: async () => RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resourceIndicator) => {
        if (resourceIndicator !== RESOURCE) {
          throw new errors.InvalidTarget();
        }
        return {
          scope: RESOURCE_SCOPES,
          audience: RESOURCE,
          accessTokenTTL: 300,
          accessTokenFormat: ACCESS_TOKEN_FORMAT,
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  extraTokenClaims: async (_ctx, token) => {
    if (token.kind !== 'ClientCredentials') return undefined;
    if (token.clientId in SMART_CLIENTS) return SMART_CLIENTS[token.clientId](token);
    return {
      azp: token.clientId,
      scp: token.scope ?? '',
      fhirUser: FHIR_USER,
    };
  },
  enabledJWA: { idTokenSigningAlgValues: ['RS256'] },
});

provider.on('server_error', (_ctx, err) => console.error('oidc-provider server_error:', err));

provider.use(async (ctx, next) => {
  if (ctx.method === 'POST' && ctx.path === '/token/introspection') {
    process.stdout.write(`${JSON.stringify({ event: 'introspection' })}\n`);
  }
  await next();
});

server.on('request', provider.callback());

process.stdout.write(`${JSON.stringify({ issuer, port: actualPort })}\n`);

stopWithParent(server);
