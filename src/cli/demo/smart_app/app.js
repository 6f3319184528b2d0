// The demo's SMART app (SMART App Launch 2.x, standalone launch): discovery through fhirguard,
// authorization code with PKCE S256 (RFC 7636) at the demo identity provider, then a fixed list
// of requests through fhirguard, each shown with its status, WWW-Authenticate and what came back.
'use strict';

const settings = JSON.parse(document.getElementById('settings').textContent);

document.getElementById('login').addEventListener('click', () => logIn().catch(problem));
resume().catch(problem);

/** Back from the identity provider: exchange the code, then run the requests. */
async function resume() {
  const params = new URLSearchParams(location.search);
  if (!params.has('code') && !params.has('error')) return;
  // The code must not stay in the address bar or the history.
  history.replaceState(null, '', location.pathname);
  if (params.has('error')) {
    throw new Error(`the identity provider refused: ${params.get('error')} (${params.get('error_description') || ''})`);
  }
  const token = await exchange(params);
  showWho(token);
  await run(requests(token));
}

/** fhirguard's SMART discovery document (SMART App Launch 2.x §2.1). */
async function discover() {
  const url = `${settings.fhirBaseUrl}/.well-known/smart-configuration`;
  const answer = await call(url, { headers: { Accept: 'application/json' } });
  if (!answer.ok) throw new Error(`${url} answered ${answer.status}`);
  return answer.json();
}

/** Starts the login: a PKCE verifier kept in this tab, its S256 challenge sent with the request. */
async function logIn() {
  const smart = await discover();
  if (!(smart.code_challenge_methods_supported || []).includes('S256')) {
    throw new Error('the smart-configuration does not offer PKCE S256');
  }
  const verifier = randomString();
  const state = randomString();
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier));
  sessionStorage.setItem('login', JSON.stringify({ verifier, state, tokenEndpoint: smart.token_endpoint }));
  const authorize = new URL(smart.authorization_endpoint);
  const parameters = {
    response_type: 'code',
    client_id: settings.clientId,
    redirect_uri: settings.redirectUri,
    scope: settings.scope,
    state,
    aud: settings.fhirBaseUrl,
    code_challenge: base64url(new Uint8Array(digest)),
    code_challenge_method: 'S256',
  };
  for (const [name, value] of Object.entries(parameters)) authorize.searchParams.set(name, value);
  location.assign(authorize.href);
}

/** The token request (RFC 6749 §4.1.3) with the verifier of this tab's login (RFC 7636 §4.5). */
async function exchange(params) {
  const saved = JSON.parse(sessionStorage.getItem('login') || 'null');
  sessionStorage.removeItem('login');
  if (!saved || params.get('state') !== saved.state) {
    throw new Error('this answer does not belong to a login started in this tab');
  }
  const answer = await call(saved.tokenEndpoint, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code: params.get('code'),
      redirect_uri: settings.redirectUri,
      client_id: settings.clientId,
      code_verifier: saved.verifier,
    }),
  });
  const token = await answer.json();
  if (!answer.ok) throw new Error(`the token endpoint refused: ${token.error} (${token.error_description || ''})`);
  return token;
}

/** The requests, each with the status fhirguard should answer for a patient and a clinician. */
function requests(token) {
  const patient = token.patient || 'example';
  const write = JSON.stringify({
    resourceType: 'Observation', status: 'final', code: { text: 'Heart rate' },
    subject: { reference: `Patient/${patient}` },
  });
  const bearer = token.access_token;
  return [
    { what: 'The patient\'s record', path: `Patient/${patient}`, token: bearer, patient: 200, clinician: 200 },
    { what: 'The patient\'s observations', path: `Observation?subject=Patient/${patient}`, token: bearer, patient: 200, clinician: 200 },
    { what: 'Another patient\'s record', path: 'Patient/other', token: bearer, patient: 404, clinician: 200 },
    { what: 'Another patient\'s observations', path: 'Observation?subject=Patient/other', token: bearer, patient: 403, clinician: 200 },
    { what: 'A write, with an app that may only read', method: 'POST', path: 'Observation', body: write, token: bearer, patient: 403, clinician: 403 },
    { what: 'No token', path: `Patient/${patient}`, token: null, patient: 401, clinician: 401 },
    { what: 'A corrupted token (one character of its signature changed)', path: `Patient/${patient}`, token: corrupt(bearer), patient: 401, clinician: 401 },
  ];
}

/** Sends each request through fhirguard and adds its row to the table. */
async function run(list) {
  const role = document.body.dataset.role;
  const table = document.getElementById('results');
  const rows = table.querySelector('tbody');
  rows.replaceChildren();
  table.hidden = false;
  for (const request of list) {
    const method = request.method || 'GET';
    const url = `${settings.fhirBaseUrl}/${request.path}`;
    const headers = { Accept: 'application/fhir+json' };
    if (request.token) headers.Authorization = `Bearer ${request.token}`;
    if (request.body) headers['Content-Type'] = 'application/fhir+json';
    let status, challenge, said;
    try {
      const answer = await fetch(url, { method, headers, body: request.body });
      status = answer.status;
      challenge = answer.headers.get('WWW-Authenticate') || '';
      said = describe(await answer.text());
    } catch (error) {
      status = 'blocked';
      challenge = '';
      said = `The browser hid the answer (${error.message}): it carried no CORS headers for this origin.`;
    }
    const expected = request[role];
    const row = rows.insertRow();
    row.className = typeof status === 'number' && status < 400 ? 'allowed' : 'refused';
    if (status !== expected) row.classList.add('unexpected');
    for (const [text, name] of [[request.what], [`${method} ${url}`], [expected], [status, 'status'], [challenge], [said]]) {
      const cell = row.insertCell();
      cell.textContent = String(text);
      if (name) cell.className = name;
    }
  }
}

/** What an answer's body says: an OperationOutcome's issues, a Bundle's entries, a resource. */
function describe(text) {
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    return text.slice(0, 300);
  }
  if (body.resourceType === 'OperationOutcome') {
    return 'OperationOutcome: ' + (body.issue || [])
      .map((issue) => `${issue.code}: ${issue.diagnostics || (issue.details && issue.details.text) || ''}`)
      .join('; ');
  }
  if (body.resourceType === 'Bundle') {
    const entries = (body.entry || []).map((entry) => `${entry.resource.resourceType}/${entry.resource.id}`);
    return `Bundle with ${entries.length} ${entries.length === 1 ? 'entry' : 'entries'}: ${entries.join(', ')}`;
  }
  return `${body.resourceType}/${body.id}`;
}

/** Who is logged in, from the ID token and the token response. */
function showWho(token) {
  const identity = JSON.parse(new TextDecoder().decode(unbase64url(token.id_token.split('.')[1])));
  const role = (token.scope || '').split(' ').some((s) => s.startsWith('patient/')) ? 'patient' : 'clinician';
  document.body.dataset.role = role;
  const context = token.patient ? `, patient in context: ${token.patient}` : '';
  document.getElementById('who').textContent =
    `Logged in as a ${role}: ${identity.fhirUser}, with the scopes "${token.scope}"${context}.`;
}

/** A fetch whose network failure (most often a missing CORS header) says which URL it was. */
async function call(url, options) {
  try {
    return await fetch(url, options);
  } catch (error) {
    throw new Error(`${url}: ${error.message} (no answer, or one without CORS headers for this origin)`);
  }
}

function corrupt(token) {
  const [header, payload, signature] = token.split('.');
  const changed = signature[10] === 'A' ? 'B' : 'A';
  return `${header}.${payload}.${signature.slice(0, 10)}${changed}${signature.slice(11)}`;
}

function randomString() {
  return base64url(crypto.getRandomValues(new Uint8Array(32)));
}

function base64url(bytes) {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function unbase64url(text) {
  const binary = atob(text.replace(/-/g, '+').replace(/_/g, '/'));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

function problem(error) {
  document.getElementById('problem').textContent = error.message;
}
