// Browser test of who may do what, run by crates/coordinator/tests/dashboard_browser.rs:
//
//   node access.test.mjs http://127.0.0.1:PORT
//
// against a coordinator that asks operators to log in (admin password in
// $LLM_ROUTER_TEST_PASSWORD, admin token for the harness's own calls in
// $LLM_ROUTER_TEST_ADMIN_TOKEN), requires API keys, and allows the browser origin
// http://allowed.test:$FOREIGN_PORT. A small foreign site listens on $FOREIGN_PORT; Chromium
// resolves allowed.test and evil.test to 127.0.0.1, so both names are other origins on
// loopback. Prints one line per scenario and exits non-zero if any failed.

import { rmSync } from 'node:fs';
import {
  assert, baseUrl, checkAccessibility, equal, finish, httpClient, launch, scenario,
  screenshot, until, whenFailed,
} from './lib.mjs';

const base = baseUrl('access.test.mjs');
const password = process.env.LLM_ROUTER_TEST_PASSWORD;
const adminToken = process.env.LLM_ROUTER_TEST_ADMIN_TOKEN;
const foreignPort = process.env.FOREIGN_PORT;
assert(password && adminToken && foreignPort, 'LLM_ROUTER_TEST_PASSWORD, LLM_ROUTER_TEST_ADMIN_TOKEN and FOREIGN_PORT must be set');
const allowedSite = `http://allowed.test:${foreignPort}`;
const evilSite = `http://evil.test:${foreignPort}`;

/** The harness's own calls, as an operator with the admin token. */
const admin = httpClient(base, { authorization: `Bearer ${adminToken}` });
const anonymous = httpClient(base);
const chat = (content) => ({ model: 'llama3.2', messages: [{ role: 'user', content }], stream: false });

const { context, userDataDir } = await launch({
  viewport: { width: 1280, height: 860 },
  args: ['--host-resolver-rules=MAP allowed.test 127.0.0.1, MAP evil.test 127.0.0.1'],
});
const consoleErrors = [];
const page = await context.newPage();
// Only the coordinator's own pages must stay free of errors; the foreign pages below are
// expected to log the requests their browser refused.
page.on('console', (msg) => {
  if (msg.type() === 'error' || msg.type() === 'warning') consoleErrors.push(`[${msg.type()}] ${msg.text()} (${page.url()})`);
});
page.on('pageerror', (error) => consoleErrors.push(`[pageerror] ${error.message}`));
whenFailed((name) => screenshot(page, `access-failed-${name}`));

/** Runs `fetch(url, init)` inside `site`'s page; answers {status, body} or {error}. */
async function fetchFrom(foreign, url, init) {
  return foreign.evaluate(async ([target, options]) => {
    try {
      const res = await fetch(target, options);
      return { status: res.status, body: await res.text() };
    } catch (error) {
      return { error: String(error) };
    }
  }, [url, init]);
}
async function openForeign(site) {
  const foreign = await context.newPage();
  await foreign.goto(`${site}/`);
  equal(await foreign.evaluate(() => document.title), 'foreign site', `the page of ${site}`);
  return foreign;
}

async function nodeStatus(id) {
  return (await admin('GET', `/api/agents/${id}`)).json.status;
}

let clientKey = null;
try {
  await scenario('without a session, the dashboard sends the browser to the login page', async () => {
    await page.goto(`${base}/dashboard`);
    await page.waitForURL(`${base}/login`);
    await page.getByLabel('Admin password').waitFor();
    equal((await anonymous('GET', '/api/agents')).status, 401, 'the management API without a session');
    equal((await anonymous('GET', '/api/history')).status, 401, 'the history without a session');
    await checkAccessibility(page, 'the login page');
  });

  await scenario('a wrong password is refused with a message; the right one opens the dashboard', async () => {
    await page.getByLabel('Admin password').fill(`${password}-wrong`);
    await page.getByRole('button', { name: 'Log in' }).click();
    await until('the error message', async () => (await page.locator('#login-error').innerText()).trim().length > 0, 5000);
    equal(page.url(), `${base}/login`, 'still on the login page');
    await page.getByLabel('Admin password').fill(password);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.waitForURL(`${base}/dashboard`);
    await page.waitForFunction(() => document.querySelectorAll('#nodes-body tr').length >= 1);
    const cookies = await context.cookies(base);
    assert(cookies.length === 1, `one session cookie, got ${JSON.stringify(cookies)}`);
    assert(cookies[0].httpOnly, 'the session cookie is HttpOnly');
    equal(cookies[0].sameSite, 'Strict', 'the session cookie\'s SameSite');
    assert(!(await page.evaluate(() => document.cookie)).includes(cookies[0].value), 'the page script can read the session');
    await page.locator('#btn-logout:not([hidden])').waitFor();
  });

  await scenario('API keys: created and shown once, named in the history, revoked after a confirmation', async () => {
    await page.goto(`${base}/dashboard#/keys`);
    await page.locator('#view-keys:not([hidden])').waitFor();
    await until('the policy line', async () => (await page.locator('#keys-policy').innerText()).includes('requires a key'), 5000);
    await page.getByRole('textbox', { name: 'Name', exact: true }).fill('browser-key');
    await page.getByRole('spinbutton', { name: 'Requests per minute' }).fill('600');
    await page.getByRole('button', { name: 'Create key' }).click();
    await page.locator('#new-key:not([hidden])').waitFor();
    const key = (await page.locator('#new-key-value').innerText()).trim();
    assert(key.length >= 20, `the new key: ${JSON.stringify(key)}`);
    const row = page.locator('#keys-body tr', { hasText: 'browser-key' });
    await row.waitFor();
    const rowText = await row.innerText();
    assert(rowText.includes('600') && rowText.includes(key.slice(0, 6)), `the key's row: ${rowText}`);
    assert(!rowText.includes(key), 'the list shows the whole key');
    await checkAccessibility(page, 'the keys view with a new key');
    await screenshot(page, 'keys');

    const served = await anonymous('POST', '/api/chat', chat('asked with the browser key'), { authorization: `Bearer ${key}` });
    equal(served.status, 200, `a chat request with the new key: ${served.text}`);
    equal((await anonymous('POST', '/api/chat', chat('no key'))).status, 401, 'a chat request without a key');

    await page.getByRole('button', { name: 'Done' }).click();
    assert(!(await page.content()).includes(key), 'the key is still on the page after Done');
    await page.reload();
    await row.waitFor();
    assert(!(await page.content()).includes(key), 'the key is shown again after a reload');

    await page.goto(`${base}/dashboard#/history?key=browser-key`);
    await page.locator('#view-history:not([hidden])').waitFor();
    await until('the keyed request in the history', async () => (await page.locator('#history-body').innerText()).includes('browser-key'), 8000);
    equal(await page.getByRole('textbox', { name: 'API key' }).inputValue(), 'browser-key', 'the key filter');
    const rows = await page.locator('#history-body tr').allInnerTexts();
    assert(rows.length >= 1 && rows.every((text) => text.includes('browser-key')), `filtered rows: ${rows.join(' | ')}`);

    await page.goto(`${base}/dashboard#/keys`);
    await row.getByRole('button', { name: 'Revoke browser-key' }).click();
    await page.locator('#confirm-dialog[open]').waitFor();
    await page.getByRole('button', { name: 'Cancel' }).click();
    equal((await admin('GET', '/api/keys')).json.filter((k) => k.name === 'browser-key').length, 1, 'cancelled: the key is kept');
    await row.getByRole('button', { name: 'Revoke browser-key' }).click();
    await page.getByRole('button', { name: 'Revoke key' }).click();
    await row.waitFor({ state: 'detached' });
    const refused = await anonymous('POST', '/api/chat', chat('revoked'), { authorization: `Bearer ${key}` });
    equal(refused.status, 401, 'a chat request with the revoked key');
  });

  await scenario('a page on an allowed origin can call /api/chat, and never the management API', async () => {
    const created = await admin('POST', '/api/keys', { name: 'web-client' });
    equal(created.status, 201, `creating a key: ${created.text}`);
    clientKey = created.json.key;
    const foreign = await openForeign(allowedSite);
    const answer = await fetchFrom(foreign, `${base}/api/chat`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${clientKey}` },
      body: JSON.stringify(chat('from an allowed web page')),
    });
    equal(answer.status, 200, `the chat request from ${allowedSite}: ${JSON.stringify(answer)}`);
    assert(JSON.parse(answer.body).message, `the chat answer: ${answer.body}`);
    for (const path of ['/api/agents', '/api/history', '/api/keys']) {
      const read = await fetchFrom(foreign, `${base}${path}`, { credentials: 'include' });
      assert(read.error, `${allowedSite} read ${path}: ${JSON.stringify(read)}`);
    }
    await foreign.close();
  });

  await scenario('a page on an origin not allowed cannot call the inference API', async () => {
    const foreign = await openForeign(evilSite);
    const answer = await fetchFrom(foreign, `${base}/api/chat`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${clientKey}` },
      body: JSON.stringify(chat('from a hostile web page')),
    });
    assert(answer.error, `${evilSite} called /api/chat: ${JSON.stringify(answer)}`);
    await foreign.close();
  });

  await scenario('a form posted from another site changes nothing, even with a logged-in operator', async () => {
    const [node] = (await admin('GET', '/api/agents')).json;
    equal(node.status, 'online', 'the node before the attack');
    const keysBefore = (await admin('GET', '/api/keys')).json.length;
    for (const [path, enctype, field] of [
      [`/api/agents/${node.id}/disconnect`, 'application/x-www-form-urlencoded', 'x'],
      ['/api/keys', 'text/plain', '{"name":"planted","x":"'],
    ]) {
      const foreign = await openForeign(evilSite);
      await foreign.evaluate(([action, type, name]) => {
        const form = document.createElement('form');
        form.method = 'POST';
        form.action = action;
        form.enctype = type;
        const input = document.createElement('input');
        input.name = name;
        input.value = '"}';
        form.append(input);
        document.body.append(form);
        form.submit();
      }, [`${base}${path}`, enctype, field]);
      await foreign.waitForURL(`${base}${path}`);
      const shown = await foreign.locator('body').innerText();
      assert(/refused|forbidden|origin|not allowed|log in/i.test(shown), `the answer to the form POST to ${path}: ${shown}`);
      await foreign.close();
    }
    equal(await nodeStatus(node.id), 'online', 'the node after the cross-site form');
    equal((await admin('GET', '/api/keys')).json.length, keysBefore, 'keys after the cross-site form');
  });

  await scenario('log out ends the session', async () => {
    await page.goto(`${base}/dashboard#/`);
    await page.locator('#btn-logout:not([hidden])').click();
    await page.waitForURL(`${base}/login`);
    const after = await page.evaluate(async () => (await fetch('/api/agents', { headers: { accept: 'application/json' } })).status);
    equal(after, 401, 'the management API after logging out');
    await page.goto(`${base}/dashboard`);
    await page.waitForURL(`${base}/login`);
  });

  await scenario('no console errors or warnings on the coordinator\'s pages', async () => {
    // The one refused call made on purpose after logging out.
    const unexpected = consoleErrors.filter((line) => !/401 \(Unauthorized\)/.test(line));
    equal(unexpected.length, 0, `console errors:\n    ${unexpected.join('\n    ')}`);
  });
} finally {
  await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}

finish();
