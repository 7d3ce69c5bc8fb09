// A person signing in at their company's identity provider, in a real
// browser: headless Chromium opens an authorization request, chooses the
// provider on the realm's login page with the keyboard, signs in and
// consents on the provider's pages (oidc-provider's development pages,
// tests/browser/upstream-op.mjs), allows the request on the realm's
// consent page, and is sent back to the client's loopback redirect URI.
//
//   node upstream-login.mjs AUTHORIZE_URL PROVIDER_ORIGIN PROVIDER_LABEL LOGIN [SCREENSHOTS_DIR]
//
// Prints {"redirect": URL, "password_form": bool} on stdout and exits 0;
// `password_form` tells whether the realm's login page had a password
// field. On anything unexpected, prints why on stderr and exits 1. The
// browser reaches only the realm, the provider and, once at the end, the
// client's redirect URI (answered here); the realm's pages load nothing
// from elsewhere.
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

async function run(authorizeUrl, provider, label, login, screenshots) {
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

    // Other origins than the realm's, the provider's and the client's are
    // refused, and one asked for by a realm page is a failure.
    const elsewhere = [];
    let answered;
    const back = new Promise((resolve) => {
      answered = resolve;
    });
    await context.route('**/*', async (route) => {
      const url = new URL(route.request().url());
      if (url.origin === request.origin || url.origin === provider) return route.continue();
      if (url.origin === redirectUri.origin && url.pathname === redirectUri.pathname) {
        answered(url.href);
        return route.fulfill({ status: 200, contentType: 'text/plain', body: 'back at the client' });
      }
      if (new URL(route.request().frame().url()).origin === request.origin) elsewhere.push(url.href);
      return route.abort();
    });

    // The realm's login page: the provider's button, reached and pressed
    // with the keyboard.
    const opened = await page.goto(authorizeUrl);
    check(opened && opened.status() === 200, `the authorize URL answered ${opened?.status()}, not the login page`);
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    const passwordForm = (await page.getByLabel('Password', { exact: true }).count()) > 0;
    const button = page.getByRole('button', { name: `Sign in with ${label}` });
    if (!passwordForm) {
      check(await button.evaluate((e) => e === document.activeElement), 'the provider button has not the focus');
    } else {
      await button.focus();
    }
    if (screenshots) await page.screenshot({ path: join(screenshots, 'login.png') });
    await page.keyboard.press('Enter');

    // The provider's sign-in page, then its consent page if it asks.
    const loginField = page.locator('input[name="login"]');
    await loginField.waitFor();
    check(new URL(page.url()).origin === provider, `not at the provider: ${page.url()}`);
    await loginField.fill(login);
    await page.locator('input[name="password"]').fill('any password');
    await page.getByRole('button', { name: 'Sign-in' }).click();
    const realmConsent = page.getByRole('heading', { name: 'Allow access?' });
    const providerConsent = page.getByRole('button', { name: 'Continue' });
    // The losers of the race time out later: caught, so that is no crash.
    const next = await Promise.race([
      realmConsent.waitFor().then(() => 'realm', () => 'none'),
      providerConsent.waitFor().then(() => 'provider', () => 'none'),
      back.then(() => 'back'),
    ]);
    if (next === 'provider') await providerConsent.click();

    // Back at the realm, signed in: its consent page.
    if (next !== 'back') {
      await realmConsent.waitFor();
      check(new URL(page.url()).origin === request.origin, `consent not at the realm: ${page.url()}`);
      if (screenshots) await page.screenshot({ path: join(screenshots, 'consent.png') });
      await page.getByRole('button', { name: 'Allow' }).click();
    }
    const redirect = await within(back, 'the browser was not sent back to the client');
    check(elsewhere.length === 0, `the realm's pages reached other origins: ${elsewhere.join(', ')}`);
    return { redirect, password_form: passwordForm };
  } finally {
    await browser.close();
  }
}

const [authorizeUrl, provider, label, login, screenshots] = process.argv.slice(2);
if (!authorizeUrl || !provider || !label || !login) {
  console.error('usage: node upstream-login.mjs AUTHORIZE_URL PROVIDER_ORIGIN PROVIDER_LABEL LOGIN [SCREENSHOTS_DIR]');
  process.exit(2);
}
try {
  const answer = await run(authorizeUrl, new URL(provider).origin, label, login, screenshots);
  console.log(JSON.stringify(answer));
} catch (error) {
  console.error(error instanceof Unexpected ? error.message : error.stack ?? String(error));
  process.exit(1);
}
