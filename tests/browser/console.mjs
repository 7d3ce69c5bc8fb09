// A realm admin runs its realm from the web console in headless Chromium:
// signs in, uploads a plugin version (a broken one first, refused), activates
// it, sees a token request served by it in the audit, rolls back, disables
// an agent; tries another realm through the pages and by forging requests,
// and a change without the CSRF token or from another site. Then the
// operator lists, creates and deletes realms.
//
//   node console.mjs PLAN_JSON
//
// PLAN_JSON: {"base", "tokenUrl", "realm", "otherRealm", "realmAdminToken",
// "operatorToken", "plugin", "component", "junk", "agent": {"client_id",
// "client_secret"}, "screenshots"}. Prints {"tokenFromNewVersion",
// "afterDisable": status} on stdout and exits 0; on anything unexpected,
// prints why on stderr and exits 1. Screenshots of each page go to
// `screenshots` as console-*.png.

import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js');

const CHROMIUM = process.env.AGENTAUTH_CHROMIUM || '/usr/bin/chromium';
const STEP_TIMEOUT_MS = 20_000;

class Unexpected extends Error {}

function check(condition, why) {
  if (!condition) throw new Unexpected(why);
}

const plan = JSON.parse(process.argv[2] ?? '{}');
mkdirSync(plan.screenshots, { recursive: true });

async function shot(page, name) {
  await page.screenshot({ path: join(plan.screenshots, `console-${name}.png`), fullPage: true });
}

/** The agent's client credentials request: its status and body. */
async function clientCredentials() {
  const basic = Buffer.from(
    `${encodeURIComponent(plan.agent.client_id)}:${encodeURIComponent(plan.agent.client_secret)}`,
  ).toString('base64');
  const response = await fetch(plan.tokenUrl, {
    method: 'POST',
    headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: 'grant_type=client_credentials&scope=read',
  });
  return { status: response.status, body: await response.json() };
}

/** What the live region says, once it says `expected`. */
async function status(page, expected) {
  const region = page.locator('#status');
  await region.getByText(expected).waitFor();
  return region.textContent();
}

async function signIn(page, token) {
  await page.getByLabel('Admin token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

/** A request made by the console's page itself, with what it chooses. */
function fromThePage(page, path, { method = 'GET', csrf = false } = {}) {
  return page.evaluate(
    async ({ path, method, csrf }) => {
      const headers = {};
      if (csrf) {
        const session = await (await fetch('/console/api/session')).json();
        headers['x-agentauth-csrf'] = session.csrf;
      }
      const response = await fetch(path, { method, headers });
      return { status: response.status, body: await response.text() };
    },
    { path, method, csrf },
  );
}

async function asRealmAdmin(browser) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  const page = await context.newPage();
  const realmApi = `/console/api/v1/realms/${plan.realm}`;

  // Signing in: a wrong token is told so; the right one opens the realm.
  await page.goto(`${plan.base}/console/`);
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await shot(page, 'sign-in');
  await signIn(page, 'certainly-not-an-admin-token');
  await page.getByRole('alert').getByText('not an admin token').waitFor();
  // With the keyboard alone: the token field has the focus, Enter submits.
  await page.getByLabel('Admin token').fill('');
  check(
    await page.getByLabel('Admin token').evaluate((el) => el === document.activeElement),
    'the token field does not have the focus',
  );
  await page.keyboard.type(plan.realmAdminToken);
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'Agents and clients' }).waitFor();
  const kept = await page.evaluate(() => ({
    storage: localStorage.length + sessionStorage.length,
    cookies: document.cookie,
  }));
  check(kept.storage === 0, 'the console kept something in web storage');
  check(!kept.cookies.includes('agentauth_console'), 'the session cookie is readable by scripts');

  // The agent is listed; the search box narrows the list.
  const agentRow = page.getByRole('row').filter({ hasText: plan.agent.client_id });
  await agentRow.waitFor();
  await page.getByLabel('Search').fill(plan.agent.client_id.slice(0, 12));
  await agentRow.waitFor();
  await shot(page, 'clients');

  // Plugins: a broken component is refused with the server's reason; the
  // real one is accepted, not yet active, then activated.
  await page.getByRole('link', { name: 'Plugins' }).click();
  await page.getByRole('heading', { name: 'Upload a version' }).waitFor();
  await page.getByLabel('Component (.wasm)').setInputFiles(plan.junk);
  await page.getByLabel('Plugin name').fill(plan.plugin);
  await page.getByLabel('Activate it').uncheck();
  await page.getByRole('button', { name: 'Upload' }).click();
  const refusal = await page.getByRole('alert').filter({ hasText: 'Refused:' }).textContent();
  check(/component|wasm|magic|invalid/i.test(refusal), `the refusal does not say why: ${refusal}`);
  await page.getByLabel('Component (.wasm)').setInputFiles(plan.component);
  await page.getByLabel('Plugin name').fill(plan.plugin);
  await page.getByLabel('Activate it').uncheck();
  await page.getByRole('button', { name: 'Upload' }).click();
  await status(page, `Accepted: ${plan.plugin} version 2`);
  // Tried on a case before it is activated.
  const section = page.locator('section').filter({ has: page.getByRole('heading', { name: plan.plugin }) });
  await section.getByText(`Test a version of ${plan.plugin} on a case`).click();
  check((await section.getByLabel('Version').inputValue()) === '2', 'the test panel does not offer the new version');
  await section.getByRole('button', { name: 'Run test' }).click();
  const tried = await section
    .getByRole('status', { name: `Test result of ${plan.plugin}` })
    .filter({ hasText: 'Allowed' });
  await tried.waitFor();
  check((await tried.textContent()).includes('"may_act"'), 'the test result does not show the decision');
  await page.getByRole('button', { name: 'Activate v2' }).click();
  await status(page, `${plan.plugin}: version 2 active.`);

  // A token request is served by version 2, and the audit shows it.
  const served = await clientCredentials();
  check(served.status === 200, `the token request failed: ${JSON.stringify(served)}`);
  await page.getByRole('link', { name: 'Audit' }).click();
  await page.getByLabel('Plugin').fill(plan.plugin);
  await page.getByLabel('Version').fill('2');
  // Decisions are written in batches a moment after the request: filter
  // again, as a user would, until it is there.
  const servedRow = page
    .getByRole('row')
    .filter({ hasText: `${plan.plugin} v2 (allowed)` })
    .filter({ hasText: plan.agent.client_id })
    .first();
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  for (;;) {
    await page.getByRole('button', { name: 'Filter' }).click();
    try {
      await servedRow.waitFor({ timeout: 1000 });
      break;
    } catch (e) {
      if (Date.now() > deadline) throw e;
    }
  }
  await shot(page, 'audit');

  // Rolling back makes version 1 active again.
  await page.getByRole('link', { name: 'Plugins' }).click();
  const v2 = section.getByRole('row').filter({ has: page.getByRole('cell', { name: '2', exact: true }) });
  await v2.getByText('1 call').waitFor();
  const v2text = await v2.textContent();
  check(
    v2text.includes('realm-admin:ops') && v2text.includes('Rust'),
    `the uploader or language is not shown: ${v2text}`,
  );
  await shot(page, 'plugins');
  await section.getByRole('button', { name: 'Roll back' }).click();
  await status(page, `${plan.plugin}: version 1 active again.`);

  // Disabling the agent, confirmed, stops it at once.
  await page.getByRole('link', { name: 'Agents and clients' }).click();
  await agentRow.getByRole('button', { name: 'Disable' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Disable' }).click();
  await status(page, 'disabled; its tokens are inactive.');
  await agentRow.getByText('disabled', { exact: true }).waitFor();
  const afterDisable = await clientCredentials();
  await agentRow.getByRole('link').first().click();
  await page.getByRole('heading', { name: 'Registration' }).waitFor();
  await shot(page, 'client');

  // Keys, and settings the server refuses with its reason.
  await page.getByRole('link', { name: 'Keys' }).click();
  await page.getByRole('button', { name: 'Rotate now' }).waitFor();
  await shot(page, 'keys');
  await page.getByRole('link', { name: 'Settings' }).click();
  const editor = page.getByLabel('Realm settings (JSON)');
  const settings = JSON.parse(await editor.inputValue());
  await editor.fill(JSON.stringify({ ...settings, plugin_memory_bytes: settings.plugin_memory_bytes * 2 }, null, 2));
  await page.getByRole('button', { name: 'Save settings' }).click();
  await page.getByRole('alert').getByText('only the operator admin may change plugin_memory_bytes').waitFor();
  await shot(page, 'settings');

  // Another realm: not through the pages...
  await page.goto(`${plan.base}/console/#/realms/${plan.otherRealm}/clients`);
  await page.getByText(`administers realm ${plan.realm} only`).waitFor();
  // ...nor by requests forged from the console's own page, CSRF token and all.
  const forged = await fromThePage(page, `/console/api/v1/realms/${plan.otherRealm}/keys/rotate`, {
    method: 'POST',
    csrf: true,
  });
  check(forged.status === 403, `a forged request reached another realm: ${JSON.stringify(forged)}`);
  // A change without the CSRF token is refused.
  const keysBefore = (await fromThePage(page, `${realmApi}/keys`)).body;
  const noCsrf = await fromThePage(page, `${realmApi}/keys/rotate`, { method: 'POST' });
  check(
    noCsrf.status === 403 && noCsrf.body.includes('CSRF'),
    `a change without the CSRF token: ${JSON.stringify(noCsrf)}`,
  );
  // So is one from another site (localhost is another site than 127.0.0.1):
  // the browser does not send the session cookie there.
  const elsewhere = await context.newPage();
  await elsewhere.goto(plan.base.replace('127.0.0.1', 'localhost') + '/console/');
  await elsewhere.evaluate(
    (url) => fetch(url, { method: 'POST', mode: 'no-cors', credentials: 'include' }).catch(() => null),
    `${plan.base}${realmApi}/keys/rotate`,
  );
  await elsewhere.close();
  const keysAfter = (await fromThePage(page, `${realmApi}/keys`)).body;
  check(keysBefore === keysAfter, 'a refused change rotated the keys');

  // Signing out ends the session.
  await page.goto(`${plan.base}/console/`);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  check((await fromThePage(page, '/console/api/session')).status === 401, 'still signed in after signing out');
  await context.close();
  return { tokenFromNewVersion: served.body.access_token, afterDisable: afterDisable.status };
}

/**
 * Every page, checked by axe-core against WCAG 2.1 A and AA (contrast,
 * labels, names, landmarks, ...), at a laptop's width without sideways
 * scrolling. In a context of its own that lets axe's script in past the
 * console's CSP (the other runs keep the CSP in force).
 */
async function accessibility(browser) {
  const context = await browser.newContext({ viewport: { width: 1024, height: 700 }, bypassCSP: true });
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  const page = await context.newPage();
  const problems = [];
  const examine = async (what) => {
    await page.addScriptTag({ path: AXE });
    const result = await page.evaluate(() =>
      window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } }),
    );
    if (result.passes.length < 10) problems.push(`${what}: axe checked only ${result.passes.length} rules`);
    for (const v of result.violations) {
      problems.push(
        `${what}: ${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`,
      );
    }
    const wide = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (wide > 0) problems.push(`${what}: ${wide}px wider than a 1024px window`);
  };
  await page.goto(`${plan.base}/console/`);
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await examine('sign-in');
  await signIn(page, plan.operatorToken);
  await page.getByRole('heading', { name: 'Realms' }).waitFor();
  await examine('realms');
  for (const [section, heading] of [
    ['clients', 'Agents and clients'],
    ['plugins', 'Plugins'],
    ['keys', 'Signing keys'],
    ['audit', 'Audit'],
    ['settings', `Settings of ${plan.realm}`],
  ]) {
    await page.goto(`${plan.base}/console/#/realms/${plan.realm}/${section}`);
    await page.getByRole('heading', { name: heading, exact: true }).waitFor();
    if (section === 'plugins')
      await page
        .getByText(/^Test a version of/)
        .first()
        .click();
    if (section === 'audit') await page.getByRole('table').first().waitFor();
    await examine(section);
  }
  await page.goto(`${plan.base}/console/#/realms/${plan.realm}/client/${encodeURIComponent(plan.agent.client_id)}`);
  await page.getByRole('heading', { name: 'Registration' }).waitFor();
  await examine('client');
  await context.close();
  check(problems.length === 0, `accessibility:\n${problems.join('\n')}`);
}

async function asOperator(browser) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  const page = await context.newPage();
  await page.goto(`${plan.base}/console/`);
  await signIn(page, plan.operatorToken);
  await page.getByRole('heading', { name: 'Realms' }).waitFor();
  await page.getByRole('link', { name: plan.otherRealm, exact: true }).waitFor();
  await page.getByLabel('Name').fill('gamma');
  await page.getByLabel('Settings (JSON; empty for the defaults)').fill('{"access_token_lifetime": -1}');
  await page.getByRole('button', { name: 'Create realm' }).click();
  await page.locator('#status .error').waitFor();
  await page.getByLabel('Settings (JSON; empty for the defaults)').fill('{}');
  await page.getByRole('button', { name: 'Create realm' }).click();
  await status(page, 'Realm gamma created.');
  const gamma = page.getByRole('row').filter({ has: page.getByRole('link', { name: 'gamma', exact: true }) });
  await gamma.waitFor();
  await shot(page, 'realms');
  await gamma.getByRole('button', { name: 'Delete' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Delete gamma' }).click();
  await status(page, 'Realm gamma deleted.');
  await gamma.waitFor({ state: 'detached' });
  await context.close();
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
try {
  const answer = await asRealmAdmin(browser);
  await asOperator(browser);
  await accessibility(browser);
  process.stdout.write(JSON.stringify(answer));
} catch (e) {
  process.stderr.write(`${e instanceof Unexpected ? '' : 'unexpected: '}${e.stack || e}\n`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
