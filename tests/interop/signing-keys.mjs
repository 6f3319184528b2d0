// The RSA signing key of a test OpenID provider (tests/interop/oidc-provider.mjs,
// tests/browser/oidc-provider.mjs): generated at start, so two instances never share a key.

import { createPrivateKey, generateKeyPairSync, randomUUID } from 'node:crypto';

export function signingKeys() {
  // The key leaves the generator as PKCS#8 PEM and is re-imported before the JWK export:
  // Node 20 can deadlock when a garbage collection destroys the key-generation job while
  // `export({ format: 'jwk' })` runs on the very KeyObject that job produced (seen here:
  // about one start in six hung in KeyGenJob::~KeyGenJob).
  const { privateKey: pem } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const jwk = createPrivateKey(pem).export({ format: 'jwk' });
  return { keys: [{ ...jwk, kid: `rs256-${randomUUID()}`, alg: 'RS256', use: 'sig' }] };
}
