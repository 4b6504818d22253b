#!/usr/bin/env node
// Runs the portal's browser scenarios against a running gateway:
//
//   PORTAL_FIXTURE='{"url":"http://127.0.0.1:PORT","org":"acme","password":"...",
//     "users":{"owner":"olive@acme.test","admin":"...","manager":"...","employee":"...","auditor":"..."}}' \
//   PORTAL_ARTIFACTS=/tmp/shots node tests/run.mjs <scenario>|all
//
// Prints every check; exits 1 with the reason (and screenshots in
// $PORTAL_ARTIFACTS) when one fails, 2 on wrong usage.

import { CheckFailed, loadFixture, Run } from "./lib.mjs";
import { scenarios } from "./scenarios.mjs";

const names = Object.keys(scenarios);
const wanted = process.argv[2];
if (!wanted || (wanted !== "all" && !scenarios[wanted])) {
  console.error(`usage: node tests/run.mjs <${names.join("|")}|all>`);
  process.exit(2);
}

let fixture;
try {
  fixture = loadFixture();
} catch (e) {
  console.error(`FAIL: ${e.message}`);
  process.exit(1);
}

const list = wanted === "all" ? names : [wanted];
let failed = 0;
for (const name of list) {
  const run = new Run(name, fixture);
  const started = Date.now();
  console.log(`scenario ${name} (${fixture.url})`);
  try {
    await run.start();
    await scenarios[name](run);
    run.check(run.consoleErrors.length === 0, "no errors in the browser console", run.consoleErrors.join(" | "));
    console.log(`PASS ${name}: ${run.checks} checks in ${((Date.now() - started) / 1000).toFixed(1)}s`);
  } catch (e) {
    failed += 1;
    const reason = e instanceof CheckFailed ? e.message : e?.stack || String(e);
    console.error(`FAIL ${name}: ${reason}`);
    const shots = await run.screenshots();
    if (shots.length) console.error(`  screenshots: ${shots.join(", ")}`);
    else if (!process.env.PORTAL_ARTIFACTS) console.error("  (set PORTAL_ARTIFACTS to a folder to keep screenshots of failures)");
  } finally {
    await run.close();
  }
}
process.exit(failed ? 1 : 0);
