// A person in a real browser: headless Chromium opens an authorization
// request, signs in with the keyboard alone, allows the request on the
// consent page, and is sent back to the client's loopback redirect URI.
//
//   node authorize.mjs AUTHORIZE_URL USERNAME PASSWORD [SCREENSHOTS_DIR]
//
// Prints {"redirect": URL, "consent": bool} on stdout and exits 0; on
// anything unexpected, prints why on stderr and exits 1. Nothing listens
// at the redirect URI: the browser's request to it is answered here, and
// its URL is the answer. With SCREENSHOTS_DIR, the login and consent pages
// are saved there as login.png and consent.png.
//
// The browser is Debian's /usr/bin/chromium (scripts/install-browser);
// playwright-core never downloads one of its own.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.AGENTAUTH_CHROMIUM || '/usr/bin/chromium';
const STEP_TIMEOUT_MS = 20_000;

class Unexpected extends Error {}

function check(condition, why) {
  if (!condition) throw new Unexpected(why);
}

// `promise`, or a failure saying `why` when it takes too long.
async function within(promise, why) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Unexpected(why)), STEP_TIMEOUT_MS);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

async function run(authorizeUrl, username, password, screenshots) {
  const request = new URL(authorizeUrl);
  const redirectUri = new URL(request.searchParams.get('redirect_uri') ?? '');
  check(
    ['127.0.0.1', '[::1]', 'localhost'].includes(redirectUri.hostname),
    `the redirect URI ${redirectUri} is not loopback: this script answers only loopback ones`,
  );
  if (screenshots) mkdirSync(screenshots, { recursive: true });

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 640, height: 560 }, javaScriptEnabled: false });
    context.setDefaultTimeout(STEP_TIMEOUT_MS);
    const page = await context.newPage();

    // The pages load nothing from elsewhere; the only other origin the
    // browser may reach is the client's, once, at the end.
    const elsewhere = [];
    let answered;
    const back = new Promise((resolve) => {
      answered = resolve;
    });
    await context.route('**/*', async (route) => {
      const url = new URL(route.request().url());
      if (url.origin === request.origin) return route.continue();
      if (url.origin === redirectUri.origin && url.pathname === redirectUri.pathname) {
        answered(url.href);
        return route.fulfill({ status: 200, contentType: 'text/plain', body: 'back at the client' });
      }
      elsewhere.push(url.href);
      return route.abort();
    });

    // The login page: its fields are found by their labels, the first
    // has the focus, and the form goes with Tab, typing and Enter.
    const opened = await page.goto(authorizeUrl);
    check(opened && opened.status() === 200, `the authorize URL answered ${opened?.status()}, not the login page`);
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    const usernameField = page.getByLabel('Username', { exact: true });
    const passwordField = page.getByLabel('Password', { exact: true });
    check(await usernameField.evaluate((e) => e === document.activeElement), 'the username field has not the focus');
    await page.keyboard.type(username);
    await page.keyboard.press('Tab');
    check(await passwordField.evaluate((e) => e === document.activeElement), 'Tab does not lead to the password');
    await page.keyboard.type(password);
    check((await usernameField.inputValue()) === username, 'the username field did not take the typing');
    if (screenshots) await page.screenshot({ path: join(screenshots, 'login.png') });
    const [signedIn] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST' && r.url().startsWith(request.origin)),
      page.keyboard.press('Enter'),
    ]);
    if (signedIn.status() !== 200 && signedIn.status() !== 303) {
      const alert = await page
        .getByRole('alert')
        .first()
        .textContent({ timeout: 5_000 })
        .catch(() => 'no message');
      throw new Unexpected(`signing in answered ${signedIn.status()}: ${alert}`);
    }

    // Consent, unless the user allowed this client before.
    const consent = page.getByRole('heading', { name: 'Allow access?' });
    const next = await Promise.race([back.then(() => 'back'), consent.waitFor().then(() => 'consent')]);
    let consented = false;
    if (next === 'consent') {
      check(await page.getByRole('button', { name: 'Deny' }).isVisible(), 'the consent page offers no Deny');
      if (screenshots) await page.screenshot({ path: join(screenshots, 'consent.png') });
      await page.getByRole('button', { name: 'Allow' }).click();
      consented = true;
    }
    const redirect = await within(back, 'the browser was not sent back to the client');
    check(elsewhere.length === 0, `the pages reached other origins: ${elsewhere.join(', ')}`);
    return { redirect, consent: consented };
  } finally {
    await browser.close();
  }
}

const [authorizeUrl, username, password, screenshots] = process.argv.slice(2);
if (!authorizeUrl || !username || password === undefined) {
  console.error('usage: node authorize.mjs AUTHORIZE_URL USERNAME PASSWORD [SCREENSHOTS_DIR]');
  process.exit(2);
}
try {
  const answer = await run(authorizeUrl, username, password, screenshots);
  console.log(JSON.stringify(answer));
} catch (error) {
  console.error(error instanceof Unexpected ? error.message : error.stack ?? String(error));
  process.exit(1);
}
