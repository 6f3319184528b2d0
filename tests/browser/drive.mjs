// The browser driver of the real-browser suite (tests/it/browser.rs): Debian's chromium, headless,
// under npm `puppeteer-core` (over a pipe, no debugging port).
//
// It launches the SMART app (app/launch.html) against the FHIR server FHIR_BASE (fhirguard), signs
// in at the identity provider's login page as LOGIN / PASSWORD, allows the consent page, and
// waits for the app's result (app/app.js). Then, with the app's still valid access token, it
// sends the same request from a page on FOREIGN_ORIGIN (not allowed by fhirguard's CORS
// configuration) and from the app's page, and finally asks the app to wait for the token's
// expiry and read again.
//
// Environment: CHROMIUM (the browser's executable), APP_ORIGIN, FOREIGN_ORIGIN, FHIR_BASE,
// CLIENT_ID, LOGIN, PASSWORD, DEADLINE_SECONDS (default 150: the whole run; each step also has
// its own timeout).
//
// Output: exactly one line of JSON on stdout, {"launch":…, "network":…, "app":…, "foreign":…,
// "expired":…}, or with "error" set (and what was seen until then) when a step failed; then it
// closes the browser and exits (status 0, or 1 with "error"). It also closes the browser and
// exits when its stdin closes or on SIGTERM / SIGINT, so a crashed parent never leaves it (or
// chromium) running.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import puppeteer from 'puppeteer-core';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) {
    console.error(`drive.mjs: ${name} is required`);
    process.exit(2);
  }
  return value;
};
const CHROMIUM = env('CHROMIUM', '/usr/bin/chromium');
const APP_ORIGIN = env('APP_ORIGIN');
const FOREIGN_ORIGIN = env('FOREIGN_ORIGIN');
const FHIR_BASE = env('FHIR_BASE');
const CLIENT_ID = env('CLIENT_ID');
const LOGIN = env('LOGIN');
const PASSWORD = env('PASSWORD');
const DEADLINE_SECONDS = Number.parseInt(env('DEADLINE_SECONDS', '150'), 10);
const STEP_TIMEOUT_MS = 30_000;

const report = { launch: {}, network: [], console: [] };
let browser;
let userDataDir;
let finished = false;

async function finish(code) {
  if (finished) return;
  finished = true;
  process.stdout.write(`${JSON.stringify(report)}\n`);
  // Closing the browser is bounded too; a browser that does not close is killed.
  const closing = browser?.close().catch(() => {});
  await Promise.race([closing, new Promise((resolve) => setTimeout(resolve, 5000))]);
  try {
    browser?.process()?.kill('SIGKILL');
  } catch {
    // already gone
  }
  if (userDataDir) await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
  process.exit(code);
}

function fail(message) {
  report.error ??= message;
  return finish(1);
}

setTimeout(() => fail(`the whole run took longer than ${DEADLINE_SECONDS} s`), DEADLINE_SECONDS * 1000);
process.on('SIGTERM', () => fail('SIGTERM'));
process.on('SIGINT', () => fail('SIGINT'));
process.stdin.on('end', () => fail('stdin closed'));
process.stdin.on('close', () => fail('stdin closed'));
process.stdin.on('error', () => fail('stdin closed'));
process.stdin.resume();

// Whether the request is one the test looks at: discovery at the FHIR server, and the
// identity provider's authorization and token endpoints.
function interesting(url) {
  const { pathname } = new URL(url);
  return (
    url.startsWith(FHIR_BASE)
    && (pathname.endsWith('/.well-known/smart-configuration') || pathname.endsWith('/metadata'))
  ) || pathname === '/auth' || pathname === '/token';
}

// Records what the browser did on `page`: interesting requests with their answers or failures,
// and console messages (chromium explains blocked CORS requests there).
function watch(page, name) {
  page.on('console', (message) => report.console.push({ page: name, type: message.type(), text: message.text() }));
  page.on('pageerror', (error) => report.console.push({ page: name, type: 'pageerror', text: String(error) }));
  page.on('requestfinished', (request) => {
    if (!interesting(request.url())) return;
    const response = request.response();
    report.network.push({
      page: name,
      method: request.method(),
      url: request.url(),
      status: response?.status() ?? null,
      accessControlAllowOrigin: response?.headers()['access-control-allow-origin'] ?? null,
    });
  });
  page.on('requestfailed', (request) => {
    if (!interesting(request.url())) return;
    report.network.push({
      page: name,
      method: request.method(),
      url: request.url(),
      failure: request.failure()?.errorText ?? 'failed',
    });
  });
}

// Runs in a page: a GET with the bearer token, as any app would send it (the Authorization
// header makes it a CORS request that needs a preflight).
async function probe(url, token) {
  try {
    const response = await fetch(url, {
      headers: { authorization: `Bearer ${token}`, accept: 'application/fhir+json' },
    });
    return { status: response.status };
  } catch (error) {
    return { status: null, error: `${error.name}: ${error.message}` };
  }
}

async function main() {
  userDataDir = await mkdtemp(join(tmpdir(), 'fhirguard-chromium-'));
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    pipe: true,
    userDataDir,
    timeout: STEP_TIMEOUT_MS,
    protocolTimeout: (DEADLINE_SECONDS + 10) * 1000,
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  report.browser = await browser.version();

  const page = await browser.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  watch(page, 'app');
  const launch = `${APP_ORIGIN}/launch.html?iss=${encodeURIComponent(FHIR_BASE)}&clientId=${encodeURIComponent(CLIENT_ID)}`;
  await page.goto(launch);

  // The identity provider's login page, or the app's own report that the launch failed.
  await page.waitForFunction(() => document.querySelector('#login') || window.appResult);
  const early = await page.evaluate(() => window.appResult);
  if (early) {
    report.app = early;
    return fail(early.error ?? 'the launch ended before the login page');
  }
  report.launch.loginPage = page.url();
  await page.type('#login', LOGIN);
  await page.type('#password', PASSWORD);
  await Promise.all([page.waitForNavigation(), page.click('#submit')]);

  await page.waitForSelector('#allow');
  report.launch.consentPage = page.url();
  report.launch.consentScopes = await page.$$eval('#scopes li', (items) => items.map((li) => li.textContent));
  await Promise.all([page.waitForNavigation(), page.click('#allow')]);
  report.launch.appPage = page.url().split('?')[0];

  await page.waitForFunction(() => window.appResult);
  report.app = await page.evaluate(() => window.appResult);
  if (report.app.error) return fail(report.app.error);

  // The same request with the same valid token, from an origin that is not allowed and from the
  // app's own origin.
  const token = await page.evaluate(() => window.smartAccessToken);
  const url = `${FHIR_BASE}/Observation/o1`;
  const other = await browser.newPage();
  other.setDefaultTimeout(STEP_TIMEOUT_MS);
  watch(other, 'foreign');
  await other.goto(`${FOREIGN_ORIGIN}/foreign.html`);
  report.foreign = {
    fromForeignOrigin: await other.evaluate(probe, url, token),
    fromAppOrigin: await page.evaluate(probe, url, token),
    at: Date.now() / 1000,
  };
  await other.close();

  // The app waits (bounded, in app.js) until its token has expired, and reads again.
  report.expired = await page.evaluate(() => window.checkExpired());
  return finish(0);
}

main().catch((error) => fail(`${error.name}: ${error.message}`));
