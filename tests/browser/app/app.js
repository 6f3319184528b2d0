// The SMART app (runs in the browser, on the app's own origin, after the authorization redirect).
//
// Every request goes through fhirclient's `client.request` (which sends the bearer token) to the
// FHIR server the app was launched with (fhirguard). What each answer was — the status the page
// could read, the `WWW-Authenticate` header when there was one, the ids of a search, or the
// error when the browser gave the page no answer at all — is shown on the page and left in
// `window.appResult` for the driver (drive.mjs). `window.checkExpired()` is the second part: it
// waits until the access token has expired and reads again.

/* global FHIR */

const WAIT_FOR_EXPIRY_AT_MOST_SECONDS = 120;

function claimsOf(token) {
  const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
  return JSON.parse(atob(payload));
}

// A copy of the token whose signature no longer verifies: one character in the middle of the
// signature changed (not the last one, whose low bits may be padding).
function corrupted(token) {
  const [header, payload, signature] = token.split('.');
  const at = Math.floor(signature.length / 2);
  const changed = signature[at] === 'A' ? 'B' : 'A';
  return [header, payload, signature.slice(0, at) + changed + signature.slice(at + 1)].join('.');
}

function idsOf(bundle) {
  return (bundle.entry ?? [])
    .map(({ resource }) => `${resource.resourceType}/${resource.id}`)
    .sort();
}

// One request through fhirclient; what the page could read of the answer.
async function read(client, url) {
  try {
    const { body, response } = await client.request({ url, includeResponse: true });
    const seen = { status: response.status };
    if (body?.resourceType === 'Bundle') {
      seen.ids = idsOf(body);
      seen.subjects = (body.entry ?? []).map(({ resource }) => resource.subject?.reference ?? null);
    } else if (body?.resourceType) {
      seen.id = `${body.resourceType}/${body.id}`;
    }
    return seen;
  } catch (error) {
    if (error.name === 'HttpError') {
      // fhirclient read the answer: its status, its headers and (in the message) its body.
      return {
        status: error.status,
        wwwAuthenticate: error.response.headers.get('www-authenticate'),
        exposedHeaders: [...error.response.headers.keys()].sort(),
        message: error.message,
      };
    }
    // No answer the page may read (a CORS failure is a TypeError, "Failed to fetch").
    return { status: null, error: `${error.name}: ${error.message}` };
  }
}

function show(result) {
  document.getElementById('result').textContent = JSON.stringify(result, null, 2);
}

async function main() {
  const client = await FHIR.oauth2.ready();
  const { state } = client;
  const token = state.tokenResponse.access_token;
  // For the driver's request from another origin (a valid token, so that only CORS can stop it).
  window.smartAccessToken = token;
  const claims = claimsOf(token);
  const result = {
    // Where fhirclient found the endpoints, and whether it used PKCE.
    discovery: {
      serverUrl: state.serverUrl,
      authorizeUri: state.authorizeUri,
      tokenUri: state.tokenUri,
      codeChallengeMethods: state.codeChallengeMethods ?? [],
      codeVerifier: Boolean(state.codeVerifier),
    },
    context: {
      patient: client.patient.id,
      tokenResponsePatient: state.tokenResponse.patient ?? null,
      scope: state.tokenResponse.scope ?? null,
      tokenType: state.tokenResponse.token_type ?? null,
    },
    claims: {
      iss: claims.iss,
      aud: claims.aud,
      azp: claims.azp,
      client_id: claims.client_id,
      scp: claims.scp,
      fhirUser: claims.fhirUser,
      patient: claims.patient,
      exp: claims.exp,
    },
  };
  result.ownSearch = await read(client, 'Observation');
  result.ownRead = await read(client, 'Observation/o1');
  result.otherSearch = await read(client, 'Observation?subject=Patient/p2');
  result.otherRead = await read(client, 'Observation/o2');
  const forged = FHIR.client({
    serverUrl: state.serverUrl,
    tokenResponse: { access_token: corrupted(token), token_type: 'Bearer' },
  });
  result.corrupted = await read(forged, 'Observation/o1');
  // When the reads above were done, to compare with the token's `exp`.
  result.readsDoneAt = Date.now() / 1000;
  show(result);
  window.checkExpired = async () => {
    const waitSeconds = claims.exp + 1 - Date.now() / 1000;
    if (waitSeconds > WAIT_FOR_EXPIRY_AT_MOST_SECONDS) {
      return { error: `the token expires only in ${waitSeconds} s` };
    }
    if (waitSeconds > 0) {
      await new Promise((resolve) => setTimeout(resolve, waitSeconds * 1000));
    }
    const expired = await read(client, 'Observation/o1');
    expired.at = Date.now() / 1000;
    result.expired = expired;
    show(result);
    return expired;
  };
  return result;
}

main().then(
  (result) => {
    window.appResult = result;
  },
  (error) => {
    window.appResult = { error: `${error.name}: ${error.message}` };
    show(window.appResult);
  },
);
