// The portal's browser scenarios. Each gets a Run (checks, pages) and
// throws CheckFailed with a clear message when something is not as expected.

import { readFile } from "node:fs/promises";
import { CheckFailed, open, signIn, signedInPage, text, userFor } from "./lib.mjs";

const TOKENISH = /(thr_|tha_|thi_|thd_|eyJ[A-Za-z0-9_-]{10,})/;

/** Wrong password; sign in; reload keeps the session; nothing readable holds a token; sign out; reload stays out. */
async function signin(run) {
  const { fixture } = run;
  const owner = userFor(fixture, "owner");
  const page = await run.newPage();
  const bearers = new Set();
  page.on("request", (req) => {
    const auth = req.headers()["authorization"];
    if (auth?.startsWith("Bearer ")) bearers.add(auth.slice(7));
  });

  await open(page, fixture);
  await run.expectVisible(page.getByTestId("signin-form"), "a fresh browser shows the sign-in form");

  await page.getByTestId("signin-org").fill(fixture.org);
  await page.getByTestId("signin-email").fill(owner);
  await page.getByTestId("signin-password").fill(`${fixture.password} wrong`);
  await page.getByTestId("signin-submit").click();
  const alert = page.getByTestId("signin-error");
  await run.expectVisible(alert, "a wrong password shows an alert");
  const message = await text(alert);
  run.check(message.length > 0 && (await alert.getAttribute("role")) === "alert", `the alert holds the server's message: "${message}"`);
  run.check((await page.getByTestId("session-role").count()) === 0, "not signed in after the wrong password");

  await page.getByTestId("signin-password").fill(fixture.password);
  await page.getByTestId("signin-submit").click();
  await run.expectVisible(page.getByTestId("session-role"), `signed in as ${owner}`);
  run.check((await text(page.getByTestId("session-role"))) === "Owner", "the shell shows the role Owner");
  await run.expectVisible(page.getByTestId("page-dashboard"), "the dashboard opens after sign-in");

  await page.reload({ waitUntil: "domcontentloaded" });
  await run.expectVisible(page.getByTestId("session-role"), "a reload keeps the session (Refresh with the cookie)");
  run.check((await page.getByTestId("signin-form").count()) === 0, "no sign-in form after the reload");
  await run.until(() => bearers.size > 0, "the portal sent calls with an access token");

  const stored = await page.evaluate(async () => {
    const dump = (s) => Object.keys(s).map((k) => [k, s.getItem(k) ?? ""]);
    const dbs = indexedDB.databases ? (await indexedDB.databases()).map((d) => d.name) : [];
    return { local: dump(localStorage), session: dump(sessionStorage), cookie: document.cookie, dbs };
  });
  const holds = (value) => TOKENISH.test(value) || [...bearers].some((t) => value.includes(t));
  const leaks = [...stored.local, ...stored.session].filter(([k, v]) => holds(k) || holds(v));
  run.check(leaks.length === 0, `localStorage (${stored.local.length} keys) and sessionStorage (${stored.session.length} keys) hold no token`, JSON.stringify(leaks));
  run.check(!holds(stored.cookie), `document.cookie shows no token (it is "${stored.cookie}")`);
  run.check(stored.dbs.length === 0, "no IndexedDB database", JSON.stringify(stored.dbs));
  const cookies = await page.context().cookies();
  const readable = cookies.filter((c) => !c.httpOnly && holds(c.value));
  run.check(readable.length === 0, "no script-readable cookie holds a token");
  const refreshCookie = cookies.find((c) => c.name === "trackhrs_refresh");
  run.check(
    refreshCookie !== undefined &&
      refreshCookie.httpOnly &&
      refreshCookie.sameSite === "Strict" &&
      refreshCookie.path === "/trackhrs.org.v1.Identity/" &&
      refreshCookie.secure === run.fixture.url.startsWith("https://") &&
      refreshCookie.value.length > 20,
    "the refresh token is in an HttpOnly, SameSite=Strict cookie scoped to the identity service, Secure over https",
    JSON.stringify(cookies.map((c) => ({ name: c.name, path: c.path, httpOnly: c.httpOnly, sameSite: c.sameSite, secure: c.secure }))),
  );

  await page.getByTestId("sign-out").click();
  await run.expectVisible(page.getByTestId("signin-form"), "sign out returns to the sign-in form");
  await page.reload({ waitUntil: "domcontentloaded" });
  await run.expectVisible(page.getByTestId("signin-form"), "a reload after sign-out stays signed out");
  run.check((await page.getByTestId("session-role").count()) === 0, "no session after the reload");
}

/** Manager: members' rows and charts, a member's timeline. Employee: only themself, no Members. */
async function dashboard(run) {
  const { fixture } = run;
  const manager = userFor(fixture, "manager");
  const page = await signedInPage(run, manager);
  await run.expectVisible(page.getByTestId("page-dashboard"), "the manager lands on the dashboard");
  await run.expectVisible(page.getByTestId("member-table"), "the dashboard shows the member table");
  const rows = page.getByTestId("member-row");
  const count = await run.until(async () => {
    const n = await rows.count();
    return n >= 2 ? n : 0;
  }, "the manager sees at least two members' rows");
  run.check(true, `the manager sees ${count} member rows: ${(await rows.allTextContents()).map((t) => t.slice(0, 40)).join(" | ")}`);
  await run.expectVisible(page.locator('[data-testid="dashboard"] canvas[data-testid="chart-canvas"]'), "a chart canvas is drawn");
  // The demo's Erin deleted a stretch of her day: the manager sees how long, nothing of what it was.
  const removed = page.locator('[data-testid="member-row"]:not([data-removed-ms="0"])');
  await run.until(async () => (await removed.count()) === 1, "one member's row shows time removed by the employee");
  const removedCell = await text(removed.locator("td").last());
  run.check(/\d/.test(removedCell), `the Removed column shows a duration (${removedCell})`, removedCell);
  const canvases = await page.locator('canvas[data-testid="chart-canvas"]').count();
  run.log(`${canvases} chart canvases on the dashboard`);

  const self = await page.getByTestId("session-name").getAttribute("data-person-id");
  const other = page.locator(`[data-testid="member-row"]:not([data-person-id="${self}"])`).first();
  const otherId = await other.getAttribute("data-person-id");
  await other.getByTestId("member-link").click();
  await run.expectVisible(page.getByTestId("page-timeline"), `clicking the member ${otherId} opens the timeline`);
  run.check(page.url().includes(`person=${encodeURIComponent(otherId)}`), "the timeline is that member's", page.url());
  await run.expectVisible(page.locator('canvas[data-testid="timeline-chart"]'), "the timeline chart is drawn");
  for (const id of ["timeline-no-devices", "timeline-empty"]) {
    if (await page.getByTestId(id).count()) run.log(`note (${id}): ${await text(page.getByTestId(id))}`);
  }
  const errors = page.locator('[data-testid="timeline-card"] ~ [role="alert"], [data-testid="page-timeline"] [role="alert"]');
  if (await errors.count()) run.log(`note: the timeline shows an alert: ${await text(errors)}`);

  const employee = userFor(fixture, "employee");
  const epage = await signedInPage(run, employee);
  run.check((await text(epage.getByTestId("session-role"))) === "Employee", "the employee's shell shows the role Employee");
  await run.expectVisible(epage.getByTestId("member-table"), "the employee's dashboard shows the table");
  const eself = await epage.getByTestId("session-name").getAttribute("data-person-id");
  const erows = epage.getByTestId("member-row");
  await run.until(async () => (await erows.count()) >= 1, "the employee's table has a row");
  const ids = await erows.evaluateAll((els) => els.map((e) => e.getAttribute("data-person-id")));
  run.check(ids.length === 1 && ids[0] === eself, `the employee sees only themself (${eself})`, JSON.stringify(ids));
  run.check((await epage.getByTestId("nav-members").count()) === 0, "the employee has no Members nav");
  await run.expectVisible(epage.locator('canvas[data-testid="chart-canvas"]'), "the employee's dashboard draws a chart");
  await erows.first().getByTestId("member-link").click();
  await run.expectVisible(epage.locator('canvas[data-testid="timeline-chart"]'), "the employee's own timeline chart is drawn");
}

/** Admin invites, the link signs the new member in, admin changes role, deactivates, reactivates; auditor reads only. */
async function members(run) {
  const { fixture } = run;
  const admin = userFor(fixture, "admin", "owner");
  if (!fixture.users.admin) run.log(`note: the fixture has no admin; the owner ${admin} stands in`);
  const page = await signedInPage(run, admin);
  page.on("dialog", (d) => void d.accept());
  await page.getByTestId("nav-members").click();
  await run.expectVisible(page.getByTestId("members-table"), "the admin sees the member table");
  await run.expectVisible(page.getByTestId("invite-form"), "the admin sees the invite form");

  const stamp = Date.now().toString(36);
  const email = `portal-${stamp}@${fixture.org}.test`;
  await page.getByTestId("invite-email").fill(email);
  await page.getByTestId("invite-name").fill(`Portal ${stamp}`);
  await page.getByTestId("invite-role").selectOption({ label: "Employee" });
  await page.getByTestId("invite-submit").click();
  const linkBox = page.getByTestId("invite-link");
  await run.expectVisible(linkBox, `inviting ${email} shows a link`);
  const link = await linkBox.inputValue();
  run.check(link.startsWith(`${fixture.url}/#/accept?`) && link.includes(`org=${encodeURIComponent(fixture.org)}`) && /token=[^&]+/.test(link), `the link is ${link.replace(/token=[^&]+/, "token=…")}`);
  const row = page.locator(`[data-testid="members-row"][data-email="${email}"]`);
  await run.expectVisible(row, "the invited member is listed");
  await run.until(async () => (await text(row.getByTestId("members-status"))).includes("pending"), "the invitation shows as pending");
  run.check(true, "the invitation shows as pending");

  // The invitee, in a browser of their own.
  const invitee = await run.newPage();
  await invitee.goto(link, { waitUntil: "domcontentloaded" });
  await run.expectVisible(invitee.getByTestId("accept-form"), "the link opens the accept page");
  await invitee.getByTestId("accept-password").fill("too short");
  await invitee.getByTestId("accept-confirm").fill("too short");
  await invitee.getByTestId("accept-submit").click();
  await run.expectVisible(invitee.getByTestId("accept-error"), "a short password is refused");
  run.check(true, `the server's message is shown: "${await text(invitee.getByTestId("accept-error"))}"`);
  const password = `portal passphrase ${stamp}`;
  await invitee.getByTestId("accept-password").fill(password);
  await invitee.getByTestId("accept-confirm").fill(password);
  await invitee.getByTestId("accept-submit").click();
  await run.expectVisible(invitee.getByTestId("session-role"), "accepting signs the new member in");
  run.check((await text(invitee.getByTestId("session-role"))) === "Employee", "the new member's role Employee is shown");
  await run.expectVisible(invitee.getByTestId("page-dashboard"), "the new member lands on the dashboard");

  // Back to the admin: role, deactivate, reactivate.
  await page.reload({ waitUntil: "domcontentloaded" });
  await run.expectVisible(row, "the admin's list shows the new member after a reload");
  await run.until(async () => (await text(row.getByTestId("members-status"))) === "Active", "the new member is active");
  run.check(true, "the new member is active, the invitation accepted");

  await row.getByTestId("role-select").selectOption({ label: "Manager" });
  await row.getByTestId("role-apply").click();
  await run.until(async () => (await text(row.getByTestId("members-role"))) === "Manager", "the role changes to Manager");
  run.check(true, "the admin changed the role to Manager");

  await row.getByTestId("member-deactivate").click();
  await run.until(async () => (await text(row.getByTestId("members-status"))) === "Deactivated", "the member shows as deactivated");
  run.check(true, "the admin deactivated the member");
  await row.getByTestId("member-reactivate").click();
  await run.until(async () => (await text(row.getByTestId("members-status"))) === "Active", "the member shows as active again");
  run.check(true, "the admin reactivated the member");
  // Leave the seat free for the next run.
  await row.getByTestId("member-deactivate").click();
  await run.until(async () => (await text(row.getByTestId("members-status"))) === "Deactivated", "the test member is deactivated again at the end");
  run.check(true, "the test member is deactivated again (its seat freed)");

  // The auditor reads only.
  const auditor = userFor(fixture, "auditor");
  const apage = await signedInPage(run, auditor);
  await apage.getByTestId("nav-members").click();
  await run.expectVisible(apage.getByTestId("members-table"), "the auditor sees the member table");
  await run.expectVisible(apage.getByTestId("read-only"), "the auditor's Members page says read-only");
  const actionable = await apage.locator('[data-testid="page-members"] button, [data-testid="page-members"] select, [data-testid="invite-form"]').count();
  run.check(actionable === 0, "the auditor's Members page has no action buttons, selects or invite form", `${actionable} found`);
  run.check((await apage.getByTestId("members-row").count()) >= 5, `the auditor sees ${await apage.getByTestId("members-row").count()} members`);
}

/** 390x844: the nav collapses and the dashboard does not overflow sideways; 1280x800: the nav is open. */
async function layout(run) {
  const { fixture } = run;
  const manager = userFor(fixture, "manager");
  const page = await run.newPage({ width: 390, height: 844 });
  await open(page, fixture);
  await run.until(async () => (await page.evaluate(() => document.documentElement.scrollWidth)) <= 390, "the sign-in page fits 390px");
  run.check(true, "the sign-in page has no horizontal overflow at 390px");
  await signIn(run, page, manager);
  await run.expectVisible(page.getByTestId("nav-toggle"), "at 390x844 the menu button is shown");
  run.check(!(await page.getByTestId("nav-dashboard").isVisible()), "at 390x844 the nav links are collapsed");
  await run.expectVisible(page.getByTestId("member-table"), "the dashboard renders");
  await run.expectVisible(page.locator('canvas[data-testid="chart-canvas"]'), "the charts render");
  await page.waitForTimeout(500);
  const widths = await page.evaluate(() => ({ doc: document.documentElement.scrollWidth, body: document.body.scrollWidth }));
  run.check(widths.doc <= 390, `no horizontal overflow at 390px: document.documentElement.scrollWidth = ${widths.doc}`);
  await page.getByTestId("nav-toggle").click();
  await run.expectVisible(page.getByTestId("nav-dashboard"), "the menu button opens the nav");
  await page.getByTestId("nav-rules").click();
  await run.expectVisible(page.getByTestId("page-rules"), "a nav link navigates");
  await run.expectHidden(page.getByTestId("nav-dashboard"), "the nav collapses again after navigating");
  for (const p of ["timeline", "devices", "rules"]) {
    await page.goto(`${fixture.url}/#/${p}`);
    await page.getByTestId(`page-${p}`).waitFor();
    await page.waitForTimeout(400);
    const w = await page.evaluate(() => document.documentElement.scrollWidth);
    run.check(w <= 390, `the ${p} page has no horizontal overflow at 390px (${w})`);
  }

  const wide = await signedInPage(run, manager, { width: 1280, height: 800 });
  await run.expectVisible(wide.getByTestId("nav-dashboard"), "at 1280x800 the nav links are shown");
  run.check(!(await wide.getByTestId("nav-toggle").isVisible()), "at 1280x800 there is no menu button");
  await run.expectVisible(wide.getByTestId("member-table"), "the dashboard renders at 1280x800");
  const w = await wide.evaluate(() => document.documentElement.scrollWidth);
  run.check(w <= 1280, `no horizontal overflow at 1280px (${w})`);
}


/**
 * An access token refused with UNAUTHENTICATED is refreshed once and the
 * call retried; the session refreshes silently before the token expires
 * (the page's clock fast-forwarded to a minute before the expiry; the
 * fixture's optional "access_ttl_secs" says the gateway's token lifetime,
 * 900 s by default).
 */
async function session(run) {
  const { fixture } = run;
  const owner = userFor(fixture, "owner");
  const page = await run.newPage();
  await page.clock.install();
  const refreshes = [];
  page.on("request", (req) => {
    if (new URL(req.url()).pathname === "/trackhrs.org.v1.Identity/Refresh") refreshes.push(req.headers()["x-trackhrs-client"]);
  });
  await open(page, fixture);
  await signIn(run, page, owner);
  await run.expectVisible(page.getByTestId("member-table"), "the dashboard loads");
  const startRefreshes = refreshes.length;

  let spoiled = 0;
  await page.route("**/trackhrs.activity.v1.Activity/GetDashboardSummary", async (route) => {
    spoiled += 1;
    if (spoiled === 1) await route.continue({ headers: { ...route.request().headers(), authorization: "Bearer spoiled-by-the-test" } });
    else await route.continue();
  });
  await page.getByTestId("range-week").click();
  await run.until(() => spoiled >= 2, "the refused GetDashboardSummary is sent again");
  await run.expectVisible(page.getByTestId("member-table"), "after UNAUTHENTICATED the dashboard still loads");
  run.check((await page.locator('[data-testid="page-dashboard"] [role="alert"]').count()) === 0, "no error is shown for the retried call");
  run.check(refreshes.length === startRefreshes + 1, `exactly one Refresh for the refused call (${refreshes.length - startRefreshes})`);
  run.check((await page.getByTestId("session-role").count()) === 1, "still signed in");
  await page.unrouteAll();

  const ttl = Number(fixture.access_ttl_secs ?? 900);
  const before = refreshes.length;
  await page.clock.fastForward((ttl - 50) * 1000);
  await run.until(() => refreshes.length > before, `a silent Refresh before the access token expires (clock moved ${ttl - 50}s on)`);
  run.check(true, `a silent Refresh happened before the access token expired (page clock moved ${ttl - 50}s on)`);
  run.check(refreshes.every((h) => h === "web"), "every Refresh carries x-trackhrs-client: web");
  await page.getByTestId("range-today").click();
  await run.expectVisible(page.getByTestId("member-table"), "calls work with the refreshed token");
  run.check((await page.getByTestId("signin-form").count()) === 0, "still signed in after the silent refresh");

  // The session expires: the refresh cookie is gone and the access token
  // refused; the next call lands on the sign-in form with a message.
  await page.context().clearCookies();
  await page.route("**/trackhrs.activity.v1.Activity/GetDashboardSummary", (route) =>
    route.continue({ headers: { ...route.request().headers(), authorization: "Bearer expired-by-the-test" } }),
  );
  await page.getByTestId("range-week").click();
  await run.expectVisible(page.getByTestId("signin-form"), "an expired session returns to the sign-in form");
  const reason = page.getByTestId("signin-reason");
  await run.expectVisible(reason, "the sign-in form says why");
  run.check((await text(reason)) === "Your session has ended. Please sign in again.", `the message is "${await text(reason)}"`);
  await page.unrouteAll();
  await signIn(run, page, owner);
  await run.expectVisible(page.getByTestId("member-table"), "signing in again opens the dashboard");
  run.check((await page.getByTestId("signin-reason").count()) === 0, "the message is gone once signed in");
}

/** Every text the rules-status element shows from now on (a MutationObserver in the page). */
async function recordStatuses(page) {
  await page.evaluate(() => {
    const seen = [];
    window.__rulesStatuses = seen;
    const note = () => {
      const el = document.querySelector('[data-testid="rules-status"]');
      const t = el?.textContent?.trim();
      if (t && seen[seen.length - 1] !== t) seen.push(t);
    };
    new MutationObserver(note).observe(document.body, { subtree: true, childList: true, characterData: true });
    note();
  });
}

/** Waits for the rules-status to say version `version` (or any newer than `after`) is in force; returns the version. */
async function rulesInForce(run, page, { version, after }, message) {
  const status = page.getByTestId("rules-status");
  const got = await run.until(async () => {
    if ((await status.count()) === 0) return null;
    if ((await status.getAttribute("data-state")) === "unknown") throw new CheckFailed(`${message}: ${await text(status)} (${await text(page.locator('[data-testid="rules-card"] [data-testid="error"]')).catch(() => "")})`);
    const v = Number(await status.getAttribute("data-version"));
    const ok = (await status.getAttribute("data-state")) === "applied" && (version === undefined ? v > after : v === version);
    return ok ? v : null;
  }, message, 40_000);
  const shown = await text(status);
  run.check(shown === `Rules version ${got} is in force; dashboards are reclassified`, `${message}: "${shown}"`);
  const seen = await page.evaluate(() => window.__rulesStatuses ?? []);
  run.check(seen.includes(`Applying rules version ${got}…`), `before that it showed "Applying rules version ${got}…" (${seen.map((x) => `"${x}"`).join(" → ")})`);
  return got;
}

/** The rules card's version: 0 for the default rules. */
async function rulesVersion(page) {
  const title = await text(page.locator('[data-testid="rules-card"] h2'));
  const m = /version (\d+)/.exec(title);
  return m ? Number(m[1]) : 0;
}

/** The dashboard's categories (from its legend) as {name: ms}. */
async function dashboardCategories(page) {
  return page.getByTestId("category-legend-item").evaluateAll((items) => Object.fromEntries(items.map((i) => [i.getAttribute("data-category"), Number(i.getAttribute("data-ms"))])));
}

/**
 * Owner: a rule the server refuses shows its message (on saving and on
 * previewing); a new category "Demo > Preview" for the demo's Slack is
 * previewed (time moves to it), the preview goes stale on an edit, is saved
 * and followed into force, and shows on the dashboard; an ActivityWatch
 * export is previewed and imported (a bad one refused with the server's
 * message); the default rules are restored at the end and followed into
 * force. Manager: no Preview. Auditor: rules and settings read-only.
 */
async function rules(run) {
  const { fixture } = run;
  const owner = userFor(fixture, "admin", "owner");
  const page = await signedInPage(run, owner);
  page.on("dialog", (d) => void d.accept());
  await page.getByTestId("nav-rules").click();
  await run.expectVisible(page.getByTestId("rules-table"), "the rules are listed");
  await recordStatuses(page);
  const paths = () => page.locator('[data-testid="rule-path"]').evaluateAll((els) => els.map((e) => e.value));
  if ((await paths()).includes("Demo > Preview")) {
    // Left over by an interrupted run: start from the default rules.
    const was = await rulesVersion(page);
    await page.getByTestId("rules-defaults").click();
    await rulesInForce(run, page, { after: was }, "a leftover \"Demo > Preview\" is cleared by restoring the default rules");
    await run.until(async () => !(await paths()).includes("Demo > Preview"), "the default rules are listed");
  }
  const rows = await page.getByTestId("rule-row").count();
  const before = await rulesVersion(page);
  run.check(rows > 0, `${rows} categories in force (${before === 0 ? "the default rules" : `version ${before}`})`);
  await run.expectVisible(page.getByTestId("rules-preview"), "the owner has a Preview button");

  const alert = page.locator('[data-testid="rules-card"] [data-testid="error"]');
  await page.getByTestId("rule-regex").first().fill("(unclosed");
  await page.getByTestId("rules-preview").click();
  await run.expectVisible(alert, "previewing a regex the server cannot compile is refused");
  const previewRefusal = await text(alert);
  run.check(previewRefusal.startsWith("rules"), `the server's message is shown: "${previewRefusal}"`);
  run.check((await page.getByTestId("rules-preview-result").count()) === 0, "no preview is shown for refused rules");
  const refusedSave = page.waitForResponse((r) => r.url().endsWith("/SetCategoryRules"));
  await page.getByTestId("rules-save").click();
  await refusedSave;
  await run.until(async () => (await alert.count()) > 0 && (await text(alert)).length > 0, "saving the regex is refused");
  run.check(true, `saving it is refused with the server's message: "${await text(alert)}"`);
  await page.getByTestId("rules-discard").click();
  await run.until(async () => (await page.getByTestId("rule-regex").first().inputValue()) !== "(unclosed", "Discard changes restores the rules in force");

  // A new category for the demo's Slack (every persona uses the app "slack"):
  // right after the first row, so it comes before the equally deep "Comms > IM".
  await page.getByTestId("rule-row").first().getByRole("button", { name: "Add a category below" }).click();
  const added = page.getByTestId("rule-row").nth(1);
  await added.getByTestId("rule-path").fill("Demo > Preview");
  await added.getByTestId("rule-regex").fill("^slack$");
  await page.getByTestId("rules-preview").click();
  const result = page.getByTestId("rules-preview-result");
  await run.expectVisible(result, "Preview shows a result");
  run.check((await result.getAttribute("data-stale")) === "false", "the preview is not marked stale");
  const period = await text(page.getByTestId("rules-preview-period"));
  const totalMs = Number(await page.getByTestId("rules-preview-total").getAttribute("data-ms"));
  const movedMs = Number(await page.getByTestId("rules-preview-moved").getAttribute("data-ms"));
  run.check(/\d{4}-\d{2}-\d{2} to \d{4}-\d{2}-\d{2}/.test(period), `the period is shown: "${period}"`);
  run.check(totalMs > 0, `time recorded in the period: ${(totalMs / 3_600_000).toFixed(2)} h ("${await text(page.getByTestId("rules-preview-total"))}")`);
  run.check(movedMs > 0 && movedMs <= totalMs, `time that would move: ${(movedMs / 3_600_000).toFixed(2)} h ("${await text(page.getByTestId("rules-preview-moved"))}")`);
  const demoRow = page.locator('[data-testid="rules-preview-row"][data-category="Demo > Preview"]');
  await run.expectVisible(demoRow, 'the preview table has a row "Demo > Preview"');
  const demoNow = Number(await demoRow.getAttribute("data-current-ms"));
  const demoNew = Number(await demoRow.getAttribute("data-proposed-ms"));
  run.check(demoNew > 0 && demoNow === 0, `"Demo > Preview" would get ${(demoNew / 3_600_000).toFixed(2)} h (now ${demoNow}): "${await text(demoRow)}"`);
  run.check((await page.locator('[data-testid="rules-preview-result"] canvas[data-testid="rules-preview-chart"]').count()) === 1, "the preview has its chart");
  const previewRows = await page.getByTestId("rules-preview-row").count();
  run.log(`${previewRows} categories in the preview`);

  await added.getByTestId("rule-score").fill("10");
  await run.until(async () => (await result.getAttribute("data-stale")) === "true", "an edit marks the preview stale");
  await run.expectVisible(page.getByTestId("rules-preview-stale"), `an edit marks the preview stale: "${await text(page.getByTestId("rules-preview-stale"))}"`);
  await page.getByTestId("rules-preview").click();
  await run.until(async () => (await result.getAttribute("data-stale")) === "false", "previewing again clears the mark");
  run.check(true, "previewing again shows a current preview");

  await page.getByTestId("rules-save").click();
  const saved = await rulesInForce(run, page, { after: before }, "the saved rules are followed into force");
  run.check(saved > before, `rules version ${saved} (was ${before})`);
  await run.until(async () => (await rulesVersion(page)) === saved, `the rules card shows version ${saved}`);
  run.check((await paths()).includes("Demo > Preview"), 'the rules in force list "Demo > Preview"');
  run.check((await result.getAttribute("data-stale")) === "true", "the preview is stale once other rules are in force");

  await page.getByTestId("nav-dashboard").click();
  await run.expectVisible(page.getByTestId("category-legend"), "the dashboard lists its categories");
  const cats = await run.until(async () => {
    const c = await dashboardCategories(page);
    return c["Demo > Preview"] > 0 ? c : null;
  }, 'the dashboard shows "Demo > Preview" with time');
  run.check(true, `the dashboard's categories: ${Object.entries(cats).map(([n, ms]) => `${n} ${(ms / 3_600_000).toFixed(2)} h`).join(", ")}`);
  const dashVersion = await text(page.getByTestId("dashboard-rules-version"));
  run.check(dashVersion.includes(`Rules version ${saved}`), `the dashboard reads with the new rules: "${dashVersion}"`);

  // An ActivityWatch export: a malformed one refused; a valid one previewed, then imported.
  await page.getByTestId("nav-rules").click();
  await run.expectVisible(page.getByTestId("rules-table"), "back on the rules");
  const upload = (name, json) => page.getByTestId("rules-import-file").setInputFiles({ name, mimeType: "application/json", buffer: Buffer.from(json) });
  await upload("bad.json", JSON.stringify({ categories: [{ name: "Work", rule: { type: "regex", regex: "code" } }] }));
  await run.expectVisible(page.getByTestId("rules-import-summary"), "the chosen file is summarised");
  await page.getByTestId("rules-import-preview").click();
  await run.expectVisible(alert, "previewing an export with a malformed category is refused");
  run.check((await text(alert)).startsWith("activitywatch_json"), `the server's message is shown: "${await text(alert)}"`);
  const refusedImport = page.waitForResponse((r) => r.url().endsWith("/SetCategoryRules"));
  await page.getByTestId("rules-import-submit").click();
  await refusedImport;
  await run.until(async () => (await alert.count()) > 0, "importing it is refused");
  run.check(true, `importing it is refused: "${await text(alert)}"`);

  const good = {
    categories: [
      { id: 0, name: ["Work"], rule: { type: "regex", regex: "LibreOffice|Jira", ignore_case: true }, data: { score: 100, color: "#0F0" }, depth: 0 },
      { id: 1, name: ["Work", "Programming"], rule: { type: "regex", regex: "^(code|alacritty)$|GitHub", ignore_case: true }, data: {}, depth: 1 },
      { id: 2, name: ["Media"], rule: { type: "regex", regex: "YouTube|reddit" }, data: { score: -50 }, depth: 0 },
    ],
  };
  await upload("aw-categories.json", JSON.stringify(good));
  await page.getByTestId("rules-import-preview").click();
  await run.until(async () => (await result.getAttribute("data-source")) === "import" && (await result.getAttribute("data-stale")) === "false", "the export is previewed");
  const importCats = await page.getByTestId("rules-preview-row").evaluateAll((rs) => rs.map((r) => r.getAttribute("data-category")));
  run.check(importCats.includes("Media") && importCats.includes("Demo > Preview"), `the export's preview compares with the rules in force: ${importCats.join(", ")}`);
  await page.getByTestId("rules-import-submit").click();
  await run.expectVisible(page.getByTestId("rules-saved"), "a valid ActivityWatch export is imported");
  run.check(true, `the answer: "${await text(page.getByTestId("rules-saved"))}"`);
  const imported = await rulesInForce(run, page, { after: saved }, "the imported rules are followed into force");
  await run.until(async () => (await page.getByTestId("rule-row").count()) === 3, "the imported 3 categories are listed");
  run.check(true, `the imported 3 categories are listed (version ${imported})`);

  // Restore the default rules, and wait until they are in force.
  await page.getByTestId("rules-defaults").click();
  const restored = await rulesInForce(run, page, { after: imported }, "the default rules are followed into force");
  await run.until(async () => (await page.getByTestId("rule-row").count()) > 3, "the default rules are restored");
  run.check(true, `the default rules are restored as version ${restored} (${await page.getByTestId("rule-row").count()} categories)`);
  await page.getByTestId("nav-dashboard").click();
  await run.expectVisible(page.getByTestId("category-legend"), "the dashboard lists its categories again");
  await run.until(async () => {
    const c = await dashboardCategories(page);
    return Object.keys(c).length > 0 && !("Demo > Preview" in c);
  }, 'the dashboard no longer shows "Demo > Preview"');
  run.check((await text(page.getByTestId("dashboard-rules-version"))).includes(`Rules version ${restored}`), `after the restore the dashboard reads with version ${restored}; its categories: ${Object.keys(await dashboardCategories(page)).join(", ")}`);

  const manager = userFor(fixture, "manager");
  const mpage = await signedInPage(run, manager);
  await mpage.getByTestId("nav-rules").click();
  await run.expectVisible(mpage.getByTestId("rules-table"), "the manager reads the rules");
  run.check((await mpage.getByTestId("rules-preview").count()) === 0 && (await mpage.getByTestId("rules-import-preview").count()) === 0, "the manager has no Preview button");
  run.check((await mpage.getByTestId("rules-preview-card").count()) === 0, "the manager has no preview section");

  const auditor = userFor(fixture, "auditor");
  const apage = await signedInPage(run, auditor);
  await apage.getByTestId("nav-rules").click();
  await run.expectVisible(apage.getByTestId("rules-table"), "the auditor reads the rules");
  run.check((await apage.locator('[data-testid="page-rules"] input:not([type="checkbox"]), [data-testid="rules-save"], [data-testid="rules-import"], [data-testid="rules-preview"]').count()) === 0, "the auditor cannot edit, import or preview rules");
  await apage.getByTestId("nav-settings").click();
  await run.expectVisible(apage.getByTestId("settings-form"), "the auditor reads the settings");
  run.check((await apage.getByTestId("settings-save").count()) === 0, "the auditor has no Save button on Settings");
  run.check(await apage.getByTestId("settings-timezone").isDisabled(), "the auditor's settings fields are disabled");
}

/** The person id and name of the member with `email`, from the History page's person filter. */
async function memberOption(page, email) {
  const option = page.locator('[data-testid="history-person"] option').filter({ hasText: `<${email}>` });
  if ((await option.count()) !== 1) return null;
  const id = await option.getAttribute("value");
  const label = (await option.textContent()) ?? "";
  return { id, name: label.slice(0, label.indexOf(" <")).trim() };
}

/** The History rows as {type, actor, person, position, who, about}. */
async function historyRows(page) {
  return page.getByTestId("history-row").evaluateAll((rows) =>
    rows.map((r) => ({
      type: r.getAttribute("data-event-type"),
      actor: r.getAttribute("data-actor"),
      person: r.getAttribute("data-person-id"),
      position: Number(r.getAttribute("data-position")),
      who: r.querySelector('[data-testid="history-who"]')?.textContent?.trim() ?? "",
      about: r.querySelector('[data-testid="history-about"]')?.textContent?.trim() ?? "",
    })),
  );
}

/** Positions newest first and never repeated across pages (a commit's events share one). */
function newestFirst(rows) {
  for (let i = 1; i < rows.length; i++) if (rows[i].position > rows[i - 1].position) return false;
  return true;
}

/**
 * Owner invites a member (and deactivates it again, freeing the seat).
 * Auditor: the History lists the org's creation, the seeded invitations and
 * the owner's invitation and deactivation by the owner's name; "Load more"
 * pages back; filters by event type and by person. Manager: no History nav,
 * and the route shows the server's refusal.
 */
async function history(run) {
  const { fixture } = run;
  const auditor = userFor(fixture, "auditor");
  const owner = userFor(fixture, "owner");
  const manager = userFor(fixture, "manager");

  // Something the owner did: invite a member, then deactivate it (its seat freed).
  const opage = await signedInPage(run, owner);
  opage.on("dialog", (d) => void d.accept());
  await opage.getByTestId("nav-members").click();
  await run.expectVisible(opage.getByTestId("invite-form"), "the owner opens Members");
  const stamp = Date.now().toString(36);
  const email = `history-${stamp}@${fixture.org}.test`;
  const invitee = `History ${stamp}`;
  await opage.getByTestId("invite-email").fill(email);
  await opage.getByTestId("invite-name").fill(invitee);
  await opage.getByTestId("invite-role").selectOption({ label: "Employee" });
  await opage.getByTestId("invite-submit").click();
  await run.expectVisible(opage.getByTestId("invite-link"), `the owner invited ${email}`);
  const row = opage.locator(`[data-testid="members-row"][data-email="${email}"]`);
  await run.expectVisible(row, "the invited member is listed");
  const inviteeId = await row.getAttribute("data-person-id");
  await row.getByTestId("member-deactivate").click();
  await run.until(async () => (await text(row.getByTestId("members-status"))).includes("deactivated"), "the invited member is deactivated");
  run.check(true, `the owner deactivated ${inviteeId} again (seat freed)`);

  const page = await signedInPage(run, auditor);
  await run.expectVisible(page.getByTestId("nav-history"), "the auditor has a History nav item");
  await page.getByTestId("nav-history").click();
  await run.expectVisible(page.getByTestId("page-history"), "the History page opens");
  await run.expectVisible(page.getByTestId("history-table"), "the history table is shown");
  await run.expectVisible(page.getByTestId("history-person"), "the person filter is shown");
  await run.expectVisible(page.getByTestId("history-type-MemberInvited"), "the event type filter is shown");
  const olive = await run.until(() => memberOption(page, owner), `the person filter lists ${owner}`);
  const manny = await run.until(() => memberOption(page, manager), `the person filter lists ${manager}`);
  run.check(olive.name.length > 0 && olive.name !== olive.id, `the owner is "${olive.name}" (${olive.id}), the manager "${manny.name}" (${manny.id})`);
  await run.until(async () => {
    const r = await historyRows(page);
    if (r.some((x) => x.type === "MemberDeactivated" && x.person === inviteeId)) return true;
    await page.getByTestId("history-refresh").click();
    await page.waitForTimeout(500);
    return false;
  }, "the owner's deactivation of the invited member is listed (Refresh)");
  run.check(true, "the newest entries include the owner's actions");

  // Page back to the beginning: the org's creation is the oldest entry.
  for (let i = 0; i < 100 && (await page.getByTestId("history-more").count()) > 0; i++) {
    const before = await page.getByTestId("history-row").count();
    await page.getByTestId("history-more").click();
    await run.until(async () => (await page.getByTestId("history-row").count()) > before || (await page.getByTestId("history-more-error").count()) > 0, "Load more adds rows");
    if (await page.getByTestId("history-more-error").count()) throw new CheckFailed(`Load more failed: ${await text(page.getByTestId("history-more-error"))}`);
  }
  await run.expectVisible(page.getByTestId("history-end"), "the history is read to its beginning");
  let rows = await historyRows(page);
  run.check(newestFirst(rows), `${rows.length} entries, newest first`);
  const created = rows.filter((r) => r.type === "OrganizationCreated");
  run.check(created.length === 1 && rows.at(-1).type === "OrganizationCreated", `the oldest entry is OrganizationCreated (by "${created[0]?.who}", about "${created[0]?.about}")`, JSON.stringify(rows.at(-1)));
  const seeded = rows.filter((r) => r.type === "MemberInvited" && ["manny", "erin", "ed", "ada"].some((n) => r.about.toLowerCase().startsWith(n)));
  run.check(seeded.length >= 4, `the demo invitations are listed: ${seeded.map((r) => `"${r.about}" by "${r.who}" (${r.actor})`).join(", ")}`);
  const byOlive = rows.filter((r) => r.type === "MemberInvited" && r.actor === `person:${olive.id}`);
  const mine = byOlive.find((r) => r.person === inviteeId);
  run.check(mine && mine.who === olive.name && mine.about === invitee, `the owner's invitation shows "${mine?.who}" invited "${mine?.about}"`, JSON.stringify(mine));
  run.check(
    byOlive.length > 0 && byOlive.every((r) => r.who === olive.name),
    `${byOlive.length} MemberInvited entries done by person:${olive.id}, each shown by the name "${olive.name}"`,
    JSON.stringify(byOlive.map((r) => r.who)),
  );
  const deactivated = rows.find((r) => r.type === "MemberDeactivated" && r.person === inviteeId);
  run.check(deactivated?.who === olive.name && deactivated?.about === invitee, `the deactivation shows "${deactivated?.who}" about "${deactivated?.about}"`);
  const when = await text(page.getByTestId("history-when"));
  run.check(/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/.test(when), `times are shown in the org's zone: "${when}"`);

  // Filter by event type.
  await page.getByTestId("history-type-MemberInvited").check();
  rows = await run.until(async () => {
    const r = await historyRows(page);
    return r.length > 0 && r.every((x) => x.type === "MemberInvited") ? r : null;
  }, "only MemberInvited entries are listed after filtering");
  run.check(page.url().includes("types=MemberInvited"), `the filter is in the route (${page.url().replace(fixture.url, "")})`);
  run.check(rows.length >= 5, `filtered by MemberInvited: ${rows.length} entries, every one MemberInvited`);

  // And by person: manny's.
  await page.getByTestId("history-person").selectOption(manny.id);
  rows = await run.until(async () => {
    const r = await historyRows(page);
    return r.length > 0 && r.every((x) => x.type === "MemberInvited" && (x.person === manny.id || x.actor === `person:${manny.id}`)) ? r : null;
  }, "only MemberInvited entries by or about manny are listed");
  run.check(rows.some((r) => r.person === manny.id), `filtered by person ${manny.name} and MemberInvited: ${rows.length} entr${rows.length === 1 ? "y" : "ies"} (${rows.map((r) => `${r.who} → ${r.about}`).join(", ")})`);

  // By the owner alone: everything done by or about olive, the test member's entries among them.
  await page.getByTestId("history-type-MemberInvited").uncheck();
  await page.getByTestId("history-person").selectOption(olive.id);
  rows = await run.until(async () => {
    const r = await historyRows(page);
    return !page.url().includes("types=") && r.length > 0 && r.every((x) => x.person === olive.id || x.actor === `person:${olive.id}`) && r.some((x) => x.person === inviteeId) ? r : null;
  }, "the person filter alone lists entries by or about the owner");
  run.check(true, `filtered by person ${olive.name}: ${rows.length} entries (${[...new Set(rows.map((r) => r.type))].join(", ")})`);
  await page.getByTestId("history-clear").click();
  await run.until(async () => !page.url().includes("person=") && (await historyRows(page)).some((r) => r.person !== olive.id && r.actor !== `person:${olive.id}`), "clearing the filters lists everyone's entries again");
  run.check(true, "clearing the filters lists everyone's entries again");

  // Small pages: "Load more" continues where the first page ended.
  await page.goto(`${fixture.url}/#/history?limit=3`);
  await run.until(async () => (await page.getByTestId("history-row").count()) > 0 && (await page.getByTestId("history-row").count()) <= 3, "a page of at most 3 entries");
  const firstPage = await historyRows(page);
  run.check(firstPage.length <= 3 && firstPage.length > 0, `with limit=3 the first page has ${firstPage.length} entries`);
  await run.expectVisible(page.getByTestId("history-more"), "a Load more button follows it");
  await page.getByTestId("history-more").click();
  const twoPages = await run.until(async () => {
    const r = await historyRows(page);
    return r.length > firstPage.length ? r : null;
  }, "Load more appends the next page");
  run.check(newestFirst(twoPages) && twoPages.slice(0, firstPage.length).every((r, i) => r.position === firstPage[i].position), `Load more appended ${twoPages.length - firstPage.length} older entries (positions ${twoPages.map((r) => r.position).join(", ")})`);

  // The manager: no nav item; the route shows the server's refusal.
  const mpage = await signedInPage(run, manager);
  await run.expectVisible(mpage.getByTestId("nav-dashboard"), "the manager's nav is shown");
  run.check((await mpage.getByTestId("nav-history").count()) === 0, "the manager has no History nav item");
  await mpage.goto(`${fixture.url}/#/history`);
  await run.expectVisible(mpage.getByTestId("page-history"), "the manager can open #/history");
  const refusal = mpage.getByTestId("history-error");
  await run.expectVisible(refusal, "the History route shows a refusal to the manager");
  run.check((await refusal.getAttribute("role")) === "alert" && (await text(refusal)).length > 0, `the server's message: "${await text(refusal)}"`);
  run.check((await mpage.getByTestId("history-row").count()) === 0, "the manager sees no entries");
}

/** Waits for the first ListProjections answer (the Operations probe) after signing in as `email`. */
async function signedInProbed(run, email) {
  const page = await run.newPage();
  const probe = page.waitForResponse((r) => new URL(r.url()).pathname === "/trackhrs.ops.v1.Operations/ListProjections", { timeout: 20_000 });
  await open(page, run.fixture);
  await signIn(run, page, email);
  await probe;
  await page.waitForTimeout(300);
  return page;
}

/**
 * Owner of the operator org: the Operations nav, the read models live with
 * their lag, refreshed; Replay on activity shows a report. Auditor and
 * manager: no Operations nav, and the route shows the refusal.
 */
async function operations(run) {
  const { fixture } = run;
  const owner = userFor(fixture, "owner");
  const page = await signedInProbed(run, owner);
  await run.expectVisible(page.getByTestId("nav-operations"), "the owner of the operator org has an Operations nav item");
  await page.getByTestId("nav-operations").click();
  await run.expectVisible(page.getByTestId("page-operations"), "the Operations page opens");
  await run.expectVisible(page.getByTestId("ops-table"), "the read models are listed");
  const readRows = () =>
    page.getByTestId("ops-row").evaluateAll((rows) =>
      rows.map((r) => {
        const cell = (id) => r.querySelector(`[data-testid="${id}"]`)?.textContent?.trim() ?? "";
        return { name: r.getAttribute("data-name"), version: r.getAttribute("data-version"), state: r.getAttribute("data-state"), position: cell("ops-position"), lag: cell("ops-lag"), pending: cell("ops-pending"), events: cell("ops-events"), dead: cell("ops-dead") };
      }),
    );
  const wanted = ["org_directory", "org_history", "activity", "timeline", "revocation"];
  const rows = await run.until(async () => {
    const r = await readRows();
    return wanted.every((n) => r.some((x) => x.name === n && x.state === "live")) ? r : null;
  }, `the read models ${wanted.join(", ")} are live`);
  for (const n of wanted) {
    const v = rows.find((x) => x.name === n && x.state === "live");
    run.check(/^\d+$/.test(v.lag) && /^\d+$/.test(v.position) && /^\d+$/.test(v.events) && /^\d+$/.test(v.dead), `${n} v${v.version} live: position ${v.position}, lag ${v.lag}, pending ${v.pending}, events applied ${v.events}, dead letters ${v.dead}`);
  }
  const others = rows.filter((x) => !(wanted.includes(x.name) && x.state === "live"));
  if (others.length) run.log(`other versions: ${others.map((x) => `${x.name} v${x.version} ${x.state}`).join(", ")}`);

  const usage = await page.getByTestId("ops-usage-row").evaluateAll((rows) =>
    rows.map((r) => ({ org: r.getAttribute("data-org"), bytes: Number(r.getAttribute("data-bytes")), messages: Number(r.getAttribute("data-messages")) })),
  );
  run.check(usage.some((u) => u.org === fixture.org && u.bytes > 0 && u.messages > 0), `the storage table lists ${fixture.org}: ${JSON.stringify(usage.slice(0, 3))}`);
  run.check(usage.every((u, i) => i === 0 || usage[i - 1].bytes >= u.bytes), "organizations are listed largest first");

  const stamp = await text(page.getByTestId("ops-updated"));
  await run.until(async () => (await text(page.getByTestId("ops-updated"))) !== stamp, "the figures are fetched again within 12 s", 12_000);
  run.check(true, `the figures refresh by themselves ("${await text(page.getByTestId("ops-updated"))}")`);

  const model = page.getByTestId("ops-model-activity");
  await run.expectVisible(model, "the activity read model has its dead letters section");
  const letters = await model.getByTestId("ops-letter").count();
  run.log(`activity has ${letters} dead letters listed${letters ? `: ${(await model.getByTestId("ops-letter-reason").allTextContents()).slice(0, 3).join(" | ")}` : ""}`);
  await page.locator('[data-testid="ops-replay"][data-name="activity"]').click();
  await run.until(async () => (await model.getByTestId("ops-report").count()) > 0 || (await model.getByTestId("ops-replay-error").count()) > 0, "Replay on activity answers");
  if (await model.getByTestId("ops-replay-error").count()) {
    throw new CheckFailed(`Replay on activity was refused: ${await text(model.getByTestId("ops-replay-error"))}`);
  }
  const report = await text(model.getByTestId("ops-report-summary"));
  run.check(/\d+ replayed, \d+ already applied, \d+ still failing/.test(report), `Replay on activity shows the report: "${report}"`);

  for (const [role, email] of [
    ["auditor", userFor(fixture, "auditor")],
    ["manager", userFor(fixture, "manager")],
  ]) {
    const other = await signedInProbed(run, email);
    await run.expectVisible(other.getByTestId("nav-dashboard"), `the ${role}'s nav is shown`);
    run.check((await other.getByTestId("nav-operations").count()) === 0, `the ${role} (${email}) has no Operations nav item after the probe`);
    await other.goto(`${fixture.url}/#/operations`);
    const refusal = other.getByTestId("ops-error");
    await run.expectVisible(refusal, `#/operations shows the ${role} a refusal`);
    run.check((await other.getByTestId("ops-table").count()) === 0, `the ${role} sees no read models; the server's message: "${await text(refusal)}"`);
  }
}

/**
 * The manager's week: what the dashboard shows equals the
 * GetDashboardSummary answer it painted. Prints `NUMBERS <json>` with the
 * page's figures and the raw gRPC-Web answer (base64) for the Rust side to
 * decode and compare independently, and `FIGURE first-dashboard-paint-ms`
 * (sign-in submitted to the charts and member rows drawn).
 */
async function numbers(run) {
  const { fixture } = run;
  const manager = userFor(fixture, "manager");
  const page = await run.newPage();
  await open(page, fixture);
  await page.getByTestId("signin-org").fill(fixture.org);
  await page.getByTestId("signin-email").fill(manager);
  await page.getByTestId("signin-password").fill(fixture.password);
  const started = Date.now();
  await page.getByTestId("signin-submit").click();
  await page.locator('[data-testid="dashboard"] canvas[data-testid="chart-canvas"]').first().waitFor({ state: "visible", timeout: 60_000 });
  await page.getByTestId("member-row").first().waitFor({ state: "visible" });
  const paint = Date.now() - started;
  console.log(`FIGURE first-dashboard-paint-ms ${paint} (${await page.getByTestId("member-row").count()} member rows, range ${await text(page.getByTestId("range-label"))})`);
  run.check(true, `the first dashboard painted ${paint} ms after sign-in was submitted`);

  const answer = page.waitForResponse((r) => new URL(r.url()).pathname === "/trackhrs.activity.v1.Activity/GetDashboardSummary", { timeout: 30_000 });
  await page.getByTestId("range-week").click();
  const body = await (await answer).body();
  const dash = page.getByTestId("dashboard");
  await run.until(async () => (await dash.getAttribute("data-loading")) === "false", "the week's dashboard is shown");
  const dom = await page.evaluate(() => {
    const d = document.querySelector('[data-testid="dashboard"]');
    const ms = (el) => Number(el?.getAttribute("data-ms"));
    return {
      from: d.getAttribute("data-from"),
      to: d.getAttribute("data-to"),
      position: d.getAttribute("data-position"),
      active_ms: ms(document.querySelector('[data-testid="total-active"]')),
      idle_ms: ms(document.querySelector('[data-testid="total-idle"]')),
      productivity: document.querySelector('[data-testid="total-productivity"] .stat-value')?.textContent ?? "",
      members: [...document.querySelectorAll('[data-testid="member-row"]')].map((r) => ({
        person_id: r.getAttribute("data-person-id"),
        active_ms: Number(r.getAttribute("data-active-ms")),
        idle_ms: Number(r.getAttribute("data-idle-ms")),
        days: Number(r.getAttribute("data-days")),
      })),
      categories: Object.fromEntries([...document.querySelectorAll('[data-testid="category-legend-item"]')].map((i) => [i.getAttribute("data-category"), Number(i.getAttribute("data-ms"))])),
      apps: Object.fromEntries([...document.querySelectorAll('[data-testid="app-legend-item"]')].map((i) => [i.getAttribute("data-app"), Number(i.getAttribute("data-ms"))])),
    };
  });
  run.check(dom.members.length >= 2 && dom.active_ms > 0, `the week shows ${dom.members.length} members, ${(dom.active_ms / 3_600_000).toFixed(2)} h active`);
  console.log(`NUMBERS ${JSON.stringify({ dom, grpc_web_base64: body.toString("base64") })}`);

  // The per-day details load when opened.
  await page.getByTestId("day-details").locator("summary").click();
  await run.expectVisible(page.getByTestId("day-table"), "opening the details reads each member's days");
  run.check((await page.locator('[data-testid="day-table"] tbody tr').count()) > 0, "the details list member days");
}

/** Waits until a page has loaded what it shows (no "Loading…" left). */
async function settled(run, page, name) {
  await page.getByTestId(`page-${name}`).waitFor({ state: "visible" });
  await run.until(async () => (await page.getByTestId("loading").count()) === 0, `the ${name} page finished loading`, 20_000);
  await page.waitForTimeout(300);
}

/**
 * Every page at 1280x800 and at 390x844, signed out and as the owner of the
 * operator org (who sees every page): a screenshot of each kept in
 * $PORTAL_ARTIFACTS/pages, none wider than the screen, and axe-core finds
 * no serious or critical violation on any of them.
 */
async function pages(run) {
  const { fixture } = run;
  const owner = userFor(fixture, "owner");
  const routes = ["dashboard", "timeline", "devices", "week", "approvals", "leave", "payroll", "projects", "members", "settings", "rules", "history", "operations"];
  for (const [label, viewport] of [
    ["1280x800", { width: 1280, height: 800 }],
    ["390x844", { width: 390, height: 844 }],
  ]) {
    const page = await run.newPage(viewport);
    await open(page, fixture);
    await run.screenshot(page, `pages/${label}-signin`);
    await run.accessible(page, `the sign-in page at ${label}`);
    await page.goto(`${fixture.url}/#/accept?org=${encodeURIComponent(fixture.org)}&token=thi_not-a-real-invitation`);
    await run.expectVisible(page.getByTestId("accept-form"), `the accept page opens at ${label}`);
    await run.screenshot(page, `pages/${label}-accept`);
    await run.accessible(page, `the accept page at ${label}`);
    await page.goto(`${fixture.url}/`);
    await page.getByTestId("signin-form").waitFor();
    await signIn(run, page, owner);
    for (const name of routes) {
      await page.goto(`${fixture.url}/#/${name}`);
      await settled(run, page, name);
      if (name === "dashboard") await page.locator('canvas[data-testid="chart-canvas"]').first().waitFor();
      const width = await page.evaluate(() => document.documentElement.scrollWidth);
      run.check(width <= viewport.width, `${name} at ${label} has no horizontal overflow (${width}px)`);
      const path = await run.screenshot(page, `pages/${label}-${name}`);
      run.log(`screenshot ${path ?? "(PORTAL_ARTIFACTS not set)"}`);
      await run.accessible(page, `${name} at ${label}`);
    }
  }
}


/**
 * Work, through the pages: the owner adds a client, a billable project with
 * a budget and a task; the employee assigns a stretch of her activity, adds
 * a manual hour on the new project and submits her week, which locks it;
 * her team's manager approves it from the approvals queue with a comment;
 * she sees the decision; the owner sees the hour as billable project time.
 */
async function work(run) {
  const { fixture } = run;
  const owner = userFor(fixture, "owner");
  const manager = userFor(fixture, "manager");
  const employee = userFor(fixture, "employee");
  const stamp = Date.now().toString(36);

  // Owner: client, project, task.
  const opage = await signedInPage(run, owner);
  await opage.getByTestId("nav-projects").click();
  await run.expectVisible(opage.getByTestId("projects-table"), "the owner opens Projects and sees the demo projects");
  const seeded = await opage.getByTestId("project-row").evaluateAll((rows) => rows.map((r) => r.dataset.name));
  run.check(seeded.includes("Website") && seeded.includes("Internal"), `the demo projects are listed: ${seeded.join(", ")}`);
  const client = `Initech ${stamp}`;
  await opage.getByTestId("client-name").fill(client);
  await opage.getByTestId("client-submit").click();
  await run.until(async () => (await opage.getByTestId("project-client").locator("option", { hasText: client }).count()) > 0, `the client ${client} can be chosen`);
  const project = `Migration ${stamp}`;
  await opage.getByTestId("project-name").fill(project);
  await opage.getByTestId("project-client").selectOption({ label: client });
  await opage.getByTestId("project-hours").fill("20");
  await opage.getByTestId("project-money").fill("1000");
  await opage.getByTestId("project-rate").fill("50");
  await opage.getByTestId("project-submit").click();
  const row = opage.locator(`[data-testid="project-row"][data-name="${project}"]`);
  await run.expectVisible(row, `the project ${project} is listed`);
  run.check((await text(row.locator("td").nth(1))) === client, `its client is ${client}`);
  await row.getByTestId("task-name").fill("Plan");
  await row.getByTestId("task-add").click();
  await run.until(async () => (await text(row.getByTestId("project-tasks"))).includes("Plan"), "the task Plan is added to it");
  const projectId = await row.getAttribute("data-project-id");

  // Employee: assign a stretch, a manual hour, submit.
  const epage = await signedInPage(run, employee);
  const employeeId = await epage.getByTestId("session-name").getAttribute("data-person-id");
  await epage.getByTestId("nav-week").click();
  await run.expectVisible(epage.getByTestId("week-card"), "the employee opens My week");
  await run.until(async () => (await epage.getByTestId("week-details").count()) > 0, "her week is shown");
  const status = await epage.getByTestId("week-details").getAttribute("data-status");
  run.check(status === "open", `her week is open (${status})`);
  const range = await text(epage.getByTestId("week-range"));
  const weekStart = range.slice(0, 10);
  const today = new Date().toISOString().slice(0, 10);
  // Her simulated agent uploads today's work: a stretch of it to assign.
  await run.until(async () => {
    if ((await epage.getByTestId("stretch-row").count()) > 0) return true;
    await epage.reload({ waitUntil: "domcontentloaded" });
    await epage.getByTestId("week-card").waitFor();
    await epage.waitForTimeout(1000);
    return false;
  }, "her activity shows as stretches to assign", 60_000);
  // Split it: its first minute to Internal / Support.
  const stretch = epage.getByTestId("stretch-row").first();
  const from = await stretch.getByTestId("stretch-from").inputValue();
  const [h, m] = from.split(":").map(Number);
  const next = (h * 60 + m + 1) % (24 * 60);
  await stretch.getByTestId("stretch-to").fill(`${String(Math.floor(next / 60)).padStart(2, "0")}:${String(next % 60).padStart(2, "0")}`);
  await stretch.getByTestId("stretch-task").selectOption({ label: "Internal / Support" });
  await stretch.getByTestId("stretch-assign").click();
  const assigned = epage.locator('[data-testid="week-row"][data-source="assigned"]');
  await run.expectVisible(assigned, `the minute from ${from} of a stretch of her activity is assigned to Internal / Support`);
  const ms = Number(await assigned.first().getAttribute("data-ms"));
  run.check(ms > 0 && ms <= 60_000, `the assigned part counts ${ms} ms, at most the minute`);
  const day = weekStart === today ? addDay(weekStart, 1) : weekStart;
  await epage.getByTestId("manual-day").fill(day);
  await epage.getByTestId("manual-from").fill("09:00");
  await epage.getByTestId("manual-to").fill("10:00");
  await epage.getByTestId("manual-task").selectOption({ label: `${project} / Plan` });
  await epage.getByTestId("manual-note").fill("Kick-off");
  await epage.getByTestId("manual-submit").click();
  const manualRow = epage.locator(`[data-testid="week-row"][data-project-id="${projectId}"][data-source="manual"]`);
  await run.expectVisible(manualRow, `a manual hour on ${day} is in her week`);
  run.check((await manualRow.getAttribute("data-ms")) === "3600000", "it counts one hour");
  await epage.getByTestId("week-submit").click();
  await run.expectVisible(epage.getByTestId("week-locked"), "after submitting, the week is locked");
  run.check((await epage.getByTestId("manual-card").count()) === 0, "no entry can be added to a submitted week");

  // Manager: the approvals queue, approve with a comment.
  const mpage = await signedInPage(run, manager);
  await mpage.getByTestId("nav-approvals").click();
  const queued = mpage.locator(`[data-testid="approval-row"][data-person-id="${employeeId}"][data-week="${weekStart}"]`);
  await run.until(async () => {
    if ((await queued.count()) > 0) return true;
    await mpage.getByTestId("approvals-refresh").click();
    await mpage.waitForTimeout(500);
    return false;
  }, "the submitted week is in the manager's queue");
  const erin = queued.first();
  await erin.getByTestId("approval-open").click();
  await run.expectVisible(erin.getByTestId("week-details"), "the manager opens her week");
  await erin.getByTestId("approval-comment").fill("Looks right");
  await erin.getByTestId("approval-approve").click();
  await run.until(async () => (await queued.count()) === 0, "the approved week leaves the queue");

  // Employee: the decision.
  await epage.reload({ waitUntil: "domcontentloaded" });
  await run.until(async () => (await epage.getByTestId("week-details").getAttribute("data-status").catch(() => null)) === "approved", "she sees her week approved");
  const decision = await text(epage.getByTestId("week-decision"));
  run.check(decision.startsWith("Approved by") && decision.includes("Looks right"), `with the decision: "${decision}"`);

  // Owner: project time.
  await opage.reload({ waitUntil: "domcontentloaded" });
  await run.expectVisible(opage.getByTestId("project-time-card"), "the owner's project time");
  const timeRow = opage.locator(`[data-testid="project-time-row"][data-project-id="${projectId}"]`);
  await run.expectVisible(timeRow, `${project} has project time this week`);
  run.check((await timeRow.getAttribute("data-ms")) === "3600000" && (await text(timeRow.locator("td").nth(1))) === "Yes", "one billable hour");
  const used = opage.locator(`[data-testid="project-row"][data-project-id="${projectId}"]`).getByTestId("project-money-used");
  run.check((await used.getAttribute("data-minor")) === "5000", `its budget in money is used at 50.00 an hour: "${await text(used)}"`);

  // Both CSV exports download what the API streams.
  for (const [button, header, needle] of [
    ["project-time-export", "day,person_id,project_id,task_id,billable,ms,hours", `,${projectId},`],
    ["timesheets-export", "week_start,person_id,status,decision,decided_by,total_ms,late_ms,total_hours", `${weekStart},`],
  ]) {
    const [download] = await Promise.all([opage.waitForEvent("download"), opage.getByTestId(button).click()]);
    const csv = await readFile(await download.path(), "utf8");
    const lines = csv.trim().split("\n");
    run.check(lines[0] === header && lines.slice(1).some((l) => l.includes(needle) && l.includes(",approved,") === (button === "timesheets-export")), `${download.suggestedFilename()}: ${lines.length - 1} lines under its header`, csv);
  }
}

function addDay(day, n) {
  const d = new Date(`${day}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + n);
  return d.toISOString().slice(0, 10);
}

/** A work day at least two weeks ahead that is not one of the demo's holidays. */
function leaveDay() {
  const holidays = new Set(["2026-12-24", "2026-12-25", "2026-12-31", "2027-01-01"]);
  let day = addDay(new Date().toISOString().slice(0, 10), 14);
  for (;;) {
    const weekday = new Date(`${day}T00:00:00Z`).getUTCDay();
    if (weekday >= 1 && weekday <= 5 && !holidays.has(day)) return day;
    day = addDay(day, 1);
  }
}

/**
 * Leave and payroll through the pages: the employee requests a day of
 * vacation and sees her balance before and after it; her team's manager
 * approves it and sees her away that day; the owner drafts May 2026 (only
 * salaries: nothing missing), reviews its lines, finalizes it and downloads
 * its CSV; July is refused until June is finalized; a draft of June lists
 * the weeks not approved, and finalizing it is refused with the reason; the
 * employee sees her own line of May and nobody else's.
 */
async function payroll(run) {
  const { fixture } = run;
  const owner = userFor(fixture, "owner");
  const manager = userFor(fixture, "manager");
  const employee = userFor(fixture, "employee");
  const day = leaveDay();

  // Employee: a day of vacation.
  const epage = await signedInPage(run, employee);
  const employeeId = await epage.getByTestId("session-name").getAttribute("data-person-id");
  await epage.getByTestId("nav-leave").click();
  await run.expectVisible(epage.getByTestId("leave-request-card"), "the employee opens Leave");
  await epage.getByTestId("leave-type").selectOption({ label: "Vacation" });
  await epage.getByTestId("leave-from").fill(day);
  await epage.getByTestId("leave-to").fill(day);
  const preview = epage.getByTestId("leave-preview");
  await run.until(async () => (await preview.getAttribute("data-days")) === "1", `the request takes one work day (${day})`);
  const before = Number((await text(epage.getByTestId("leave-balance-before"))).replace(" h", ""));
  const after = Number((await text(epage.getByTestId("leave-balance-after"))).replace(" h", ""));
  run.check(Math.abs(before - 8 - after) < 0.01, `the balance before (${before} h) and after (${after} h) the request differ by the standard day`);
  await epage.getByTestId("leave-note").fill("Family visit");
  await epage.getByTestId("leave-submit").click();
  const mine = epage.locator('[data-testid="leave-mine-row"]');
  await run.until(async () => (await mine.count()) > 0 && (await mine.first().getAttribute("data-status")) === "pending", "her request is listed as pending");
  const requestId = await mine.first().getAttribute("data-request-id");

  // Manager: approve it, see her away.
  const mpage = await signedInPage(run, manager);
  await mpage.getByTestId("nav-leave").click();
  const row = mpage.locator(`[data-testid="leave-decide-row"][data-request-id="${requestId}"]`);
  await run.expectVisible(row, "the request waits for the manager");
  await row.getByTestId("leave-approve").click();
  await run.until(async () => (await row.count()) === 0, "the approved request leaves the manager's list");
  await mpage.getByTestId("leave-month").fill(day.slice(0, 7));
  const away = mpage.locator(`[data-testid="leave-away-row"][data-person-id="${employeeId}"] td[data-day="${day}"]`);
  await run.until(async () => (await away.count()) > 0 && (await away.getAttribute("data-away")) === "approved", `the manager sees her away on ${day}`);

  await epage.reload({ waitUntil: "domcontentloaded" });
  const approved = epage.locator(`[data-testid="leave-mine-row"][data-request-id="${requestId}"]`);
  await run.until(async () => (await approved.getAttribute("data-status").catch(() => null)) === "approved", "she sees her request approved");

  // Owner: May 2026, salaries only, finalized and exported.
  const opage = await signedInPage(run, owner);
  await opage.getByTestId("nav-payroll").click();
  await run.expectVisible(opage.getByTestId("runs-card"), "the owner opens Payroll");
  await opage.getByTestId("run-period").selectOption("2026-05-01");
  await opage.getByTestId("run-draft").click();
  const may = opage.locator('[data-testid="run-details"][data-first-day="2026-05-01"]');
  await run.expectVisible(may, "the draft of May 2026 opens");
  await run.until(async () => (await opage.getByTestId("run-line").count()) > 0, "its lines are shown");
  run.check((await opage.getByTestId("run-missing").count()) === 0, "nothing is missing from May (salaries only)");
  const erinSalary = opage.locator(`[data-testid="run-line"][data-person-id="${employeeId}"][data-kind="salary"]`);
  run.check((await erinSalary.getAttribute("data-amount-minor")) === "420000", `her salary line pays 4,200.00: "${await text(erinSalary)}"`);
  await opage.getByTestId("run-finalize").click();
  await run.until(async () => (await may.getAttribute("data-status")) === "finalized", "May is finalized");
  const [download] = await Promise.all([opage.waitForEvent("download"), opage.getByTestId("run-export").click()]);
  const csv = await readFile(await download.path(), "utf8");
  const lines = csv.trim().split("\n");
  run.check(
    lines[0] === "period_first,period_last,person_id,kind,leave_type,corrects,hours,days,rate,percent,amount,currency" &&
      lines.some((l) => l.startsWith(`2026-05-01,2026-05-31,${employeeId},salary,`) && l.endsWith(",4200.00,EUR")),
    `${download.suggestedFilename()}: ${lines.length - 1} lines with her salary`,
    csv,
  );

  // Runs go one period after another: July waits for June.
  await opage.getByTestId("run-period").selectOption("2026-07-01");
  await opage.getByTestId("run-draft").click();
  await run.until(async () => (await text(opage.getByTestId("run-draft-error"))).includes("2026-06-01"), "July is refused until June is finalized, naming June");
  // June: Ed is paid by the hour from June on, and his weeks are not approved.
  await opage.getByTestId("run-period").selectOption("2026-06-01");
  await opage.getByTestId("run-draft").click();
  const draft = opage.locator('[data-testid="run-details"][data-first-day="2026-06-01"]');
  await run.expectVisible(draft.getByTestId("run-missing"), "the draft of June lists the weeks not approved");
  await draft.getByTestId("run-finalize").click();
  await run.until(async () => (await text(draft.getByTestId("run-action-error"))).includes("missing"), "finalizing it is refused, naming what is missing");

  // Employee: her own line of May only; no draft.
  await epage.getByTestId("nav-payroll").click();
  const rows = epage.getByTestId("run-row");
  await run.until(async () => (await rows.count()) > 0, "she sees the finalized run");
  const firsts = await rows.evaluateAll((rs) => rs.map((r) => r.dataset.firstDay));
  run.check(firsts.length === 1 && firsts[0] === "2026-05-01", `only May is listed for her (${firsts.join(", ")})`);
  await rows.first().getByTestId("run-open").click();
  await run.until(async () => (await epage.getByTestId("run-line").count()) > 0, "she opens it");
  const people = await epage.getByTestId("run-line").evaluateAll((ls) => [...new Set(ls.map((l) => l.dataset.personId))]);
  run.check(people.length === 1 && people[0] === employeeId, `she sees only her own lines (${people.join(", ")})`);
  run.check((await epage.getByTestId("run-draft").count()) === 0, "she cannot draft a run");
}

export const scenarios = { signin, dashboard, members, layout, session, rules, history, operations, numbers, pages, work, payroll };
