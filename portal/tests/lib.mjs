// Helpers for the portal's browser scenarios: Debian's Chromium through
// playwright-core, the fixture from $PORTAL_FIXTURE, checks that print what
// they verified, screenshots to $PORTAL_ARTIFACTS on failure.

import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

export class CheckFailed extends Error {}

/** The fixture: {"url", "org", "password", "users": {"owner", "admin", "manager", "employee", "auditor"}, "spki" (optional)}. */
export function loadFixture() {
  const raw = process.env.PORTAL_FIXTURE;
  if (!raw) {
    throw new CheckFailed(
      'PORTAL_FIXTURE is not set: give it JSON such as {"url":"http://127.0.0.1:PORT","org":"acme","password":"...","users":{"owner":"olive@acme.test",...}}',
    );
  }
  let fixture;
  try {
    fixture = JSON.parse(raw);
  } catch (e) {
    throw new CheckFailed(`PORTAL_FIXTURE is not valid JSON: ${e.message}`);
  }
  for (const key of ["url", "org", "password", "users"]) {
    if (!fixture[key]) throw new CheckFailed(`PORTAL_FIXTURE has no "${key}"`);
  }
  fixture.url = String(fixture.url).replace(/\/+$/, "");
  return fixture;
}

/** The e-mail of a role's user; `fallbacks` are tried in order when the fixture lacks the role. */
export function userFor(fixture, role, ...fallbacks) {
  for (const r of [role, ...fallbacks]) {
    if (fixture.users[r]) return fixture.users[r];
  }
  throw new CheckFailed(`PORTAL_FIXTURE.users has no "${role}"`);
}

export class Run {
  constructor(scenario, fixture) {
    this.scenario = scenario;
    this.fixture = fixture;
    this.browser = null;
    this.contexts = [];
    this.checks = 0;
    /** Errors the pages logged to their console, or threw. */
    this.consoleErrors = [];
  }

  async start() {
    const executablePath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
    try {
      const args = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"];
      // A gateway served with a private CA's certificate: trust exactly its
      // key (base64 SHA-256 of its SubjectPublicKeyInfo), nothing else.
      if (this.fixture.spki) args.push(`--ignore-certificate-errors-spki-list=${this.fixture.spki}`);
      this.browser = await chromium.launch({ executablePath, headless: true, args });
    } catch (e) {
      throw new CheckFailed(`could not start Chromium at ${executablePath} (apt-get install -y chromium, or set CHROMIUM_PATH): ${e.message.split("\n")[0]}`);
    }
  }

  /** A fresh browser context (own cookies and storage) and a page in it. */
  async newPage(viewport = { width: 1280, height: 800 }) {
    const context = await this.browser.newContext({ viewport });
    context.setDefaultTimeout(15_000);
    this.contexts.push(context);
    const page = await context.newPage();
    page.on("pageerror", (err) => {
      console.log(`  [page error] ${err.message}`);
      this.consoleErrors.push(`page error: ${err.message}`);
    });
    page.on("console", (msg) => {
      if (msg.type() === "error") {
        console.log(`  [console error] ${msg.text()}`);
        this.consoleErrors.push(`${msg.text()} (${msg.location().url || "?"})`);
      }
    });
    return page;
  }

  log(message) {
    console.log(`  ${message}`);
  }

  /** Records a check: prints it when `ok`, else fails the scenario with `message`. */
  check(ok, message, detail) {
    if (!ok) throw new CheckFailed(detail ? `${message}: ${detail}` : message);
    this.checks += 1;
    console.log(`  ok  ${message}`);
  }

  /** Waits for `locator` to be visible; fails with `message`. */
  async expectVisible(locator, message, timeout = 15_000) {
    try {
      await locator.first().waitFor({ state: "visible", timeout });
    } catch {
      throw new CheckFailed(`${message}: not visible within ${timeout / 1000}s`);
    }
    this.check(true, message);
  }

  async expectHidden(locator, message, timeout = 15_000) {
    try {
      await locator.first().waitFor({ state: "hidden", timeout });
    } catch {
      throw new CheckFailed(`${message}: still visible after ${timeout / 1000}s`);
    }
    this.check(true, message);
  }

  /** Polls `fn` until it returns a truthy value; fails with `message`. */
  async until(fn, message, timeout = 15_000) {
    const end = Date.now() + timeout;
    let last;
    for (;;) {
      try {
        last = await fn();
        if (last) return last;
      } catch (e) {
        last = e;
      }
      if (Date.now() > end) throw new CheckFailed(`${message} (waited ${timeout / 1000}s${last instanceof Error ? `; last error: ${last.message}` : ""})`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  /** Saves a full-page screenshot as `$PORTAL_ARTIFACTS/<name>.png` (kept as an artifact); returns its path. */
  async screenshot(page, name) {
    const dir = process.env.PORTAL_ARTIFACTS;
    if (!dir) return null;
    mkdirSync(dir, { recursive: true });
    const path = join(dir, `${name}.png`);
    await page.screenshot({ path, fullPage: true });
    return path;
  }

  /** Runs axe-core on the page; fails on any serious or critical violation. */
  async accessible(page, what) {
    // Evaluated through the DevTools protocol: the portal's CSP rightly
    // refuses an injected <script>.
    await page.evaluate(AXE_SOURCE);
    const result = await page.evaluate(async () => {
      // eslint-disable-next-line no-undef
      const r = await axe.run(document, { resultTypes: ["violations"] });
      return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 3) }));
    });
    const bad = result.filter((v) => v.impact === "serious" || v.impact === "critical");
    const minor = result.filter((v) => !bad.includes(v));
    if (minor.length) this.log(`axe (${what}): minor: ${minor.map((v) => `${v.id} (${v.impact})`).join(", ")}`);
    this.check(bad.length === 0, `axe finds no serious or critical violation on ${what}`, JSON.stringify(bad));
  }

  async screenshots() {
    const dir = process.env.PORTAL_ARTIFACTS;
    if (!dir) return [];
    mkdirSync(dir, { recursive: true });
    const saved = [];
    let n = 0;
    for (const context of this.contexts) {
      for (const page of context.pages()) {
        n += 1;
        const path = join(dir, `${this.scenario}-failure-${n}.png`);
        try {
          await page.screenshot({ path, fullPage: true, timeout: 5_000 });
          saved.push(path);
        } catch {
          // a closed or crashed page
        }
      }
    }
    return saved;
  }

  async close() {
    await this.browser?.close().catch(() => undefined);
  }
}

// --- portal steps ------------------------------------------------------------

/** Opens the portal at `hash` and waits until it knows whether someone is signed in. */
export async function open(page, fixture, hash = "") {
  await page.goto(`${fixture.url}/${hash}`, { waitUntil: "domcontentloaded" });
  await page.locator('[data-testid="signin-form"], [data-testid="session-role"], [data-testid="accept-form"]').first().waitFor({ state: "attached" });
}

/** Signs in through the form; returns when the shell shows the role. */
export async function signIn(run, page, email, password = run.fixture.password) {
  await page.getByTestId("signin-org").fill(run.fixture.org);
  await page.getByTestId("signin-email").fill(email);
  await page.getByTestId("signin-password").fill(password);
  await page.getByTestId("signin-submit").click();
  // The role sits in the nav, which is collapsed on narrow screens.
  try {
    await page.getByTestId("session-role").waitFor({ state: "attached" });
  } catch {
    const alert = await page.getByTestId("signin-error").textContent().catch(() => null);
    throw new CheckFailed(`could not sign in as ${email}${alert ? `: ${alert}` : ""}`);
  }
  run.check(true, `signed in as ${email}`);
}

/** Opens the portal in a new context and signs in as `email`. */
export async function signedInPage(run, email, viewport) {
  const page = await run.newPage(viewport);
  await open(page, run.fixture);
  await signIn(run, page, email);
  return page;
}

export async function text(locator) {
  return ((await locator.first().textContent()) ?? "").trim();
}
