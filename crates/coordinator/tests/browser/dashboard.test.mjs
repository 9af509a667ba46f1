// Browser test of the llm-router dashboard, run by crates/coordinator/tests/dashboard_browser.rs:
//
//   node dashboard.test.mjs http://127.0.0.1:PORT
//
// against a coordinator with the three demo nodes online. Drives Debian's Chromium
// ($LLM_ROUTER_TEST_CHROMIUM, else /usr/bin/chromium) headless with playwright-core, prints
// one line per scenario and exits non-zero if any failed. Lines that start with "@@" ask
// the harness for something (a coordinator restart) and wait for its answer on stdin.
// Screenshots go to $SCREENSHOT_DIR; with $LLM_ROUTER_DASHBOARD_SCREENSHOT set, the README's
// picture of the fleet view is written there as well.

import { copyFileSync, readFileSync, rmSync } from 'node:fs';
import {
  ask, assert, baseUrl, checkAccessibility as axeCheck, equal, finish, httpClient, launch,
  scenario, screenshot, shotsDir, until, whenFailed,
} from './lib.mjs';

const base = baseUrl('dashboard.test.mjs');
const readmeShot = process.env.LLM_ROUTER_DASHBOARD_SCREENSHOT;
const DESKTOP = { width: 1280, height: 860 };
const PHONE = { width: 390, height: 844 };
const FIRST_LOAD_BUDGET_MS = 1000;
const NEW_NODE_BUDGET_MS = 1000;

const http = httpClient(base);
async function agents() {
  return (await http('GET', '/api/agents')).json;
}
async function agentByName(name) {
  return (await agents()).find((a) => a.machine_name === name);
}

// ---------- browser ----------
const { context, userDataDir } = await launch({ viewport: DESKTOP });
const consoleErrors = [];
let page = null;
async function openPage(path = '/dashboard') {
  if (page) await page.close();
  page = await context.newPage();
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') consoleErrors.push(`[${msg.type()}] ${msg.text()} (${page.url()})`);
  });
  page.on('pageerror', (error) => consoleErrors.push(`[pageerror] ${error.message}`));
  await page.goto(base + path, { waitUntil: 'load' });
  return page;
}
const shot = (name, target = page) => screenshot(target, name);
whenFailed((name) => shot(`failed-${name}`));
const checkAccessibility = (where) => axeCheck(page, where);
const rowCount = () => page.locator('#nodes-body tr').count();
const row = (name) => page.locator('#nodes-body tr', { has: page.locator(`a.node-link:text-is("${name}")`) });

const demoNames = ['demo-cpu-3', 'demo-gpu-1', 'demo-mac-2'];
const renamed = { display_name: 'GPU box (browser test)', tags: ['gpu', 'rack-3'], notes: 'Changed by the browser test.' };
const marker = `browser-test-${Date.now().toString(36)}`;
let extraNode = null;
let chatRequestId = null;

try {
  await scenario('the dashboard loads within the budget, with no console errors', async () => {
    await openPage('/dashboard');
    await page.waitForFunction((n) => document.querySelectorAll('#nodes-body tr').length >= n, demoNames.length);
    const timing = await page.evaluate(() => {
      const nav = performance.getEntriesByType('navigation')[0];
      const nodes = performance.getEntriesByName('dashboard-nodes-rendered')[0];
      const resources = performance.getEntriesByType('resource');
      return {
        ttfb: nav.responseStart,
        domContentLoaded: nav.domContentLoadedEventEnd,
        load: nav.loadEventEnd,
        nodes: nodes ? nodes.startTime : null,
        bytes: nav.transferSize + resources.filter((r) => !r.name.includes('/api/')).reduce((a, r) => a + (r.transferSize || 0), 0),
      };
    });
    console.log(`  first load: first byte ${timing.ttfb.toFixed(0)} ms, DOMContentLoaded ${timing.domContentLoaded.toFixed(0)} ms, `
      + `load ${timing.load.toFixed(0)} ms, nodes shown ${timing.nodes === null ? '?' : timing.nodes.toFixed(0)} ms, `
      + `${(timing.bytes / 1024).toFixed(1)} KiB transferred`);
    assert(timing.load < FIRST_LOAD_BUDGET_MS, `load event after ${timing.load} ms`);
    assert(timing.nodes !== null && timing.nodes < FIRST_LOAD_BUDGET_MS, `nodes shown after ${timing.nodes} ms`);
    equal(await page.title(), 'Fleet · llm-router', 'title');
    equal(consoleErrors.length, 0, `console errors: ${consoleErrors.join(' | ')}`);
  });

  await scenario('the demo nodes are in the table, online, with their models', async () => {
    for (const name of demoNames) {
      const r = row(name);
      await r.waitFor();
      const text = await r.innerText();
      assert(text.includes('Online'), `${name} is not shown online: ${text}`);
      assert(text.includes('127.0.0.1'), `${name} lacks its IP: ${text}`);
      assert(text.includes('llama3.2'), `${name} lacks its model: ${text}`);
    }
    assert(await page.locator('#nodes-body .chip.loaded').count() >= 3, 'loaded models are not marked');
    equal((await page.locator('#t-nodes').innerText()).trim(), '3', 'nodes tile');
    equal((await page.locator('#t-online').innerText()).trim(), '3', 'online tile');
    equal(await page.locator('#live').getAttribute('class'), 'live on', 'live indicator');
    // Live updates change cells in place: rows, and the name cells that did not change,
    // stay the same elements (a text selection or the focus survives an update).
    await page.evaluate(() => {
      window.keptRow = document.querySelector('#nodes-body tr');
      window.keptName = window.keptRow.querySelector('td');
      window.uptime = window.keptRow.children[4].textContent;
    });
    await page.waitForFunction(() => window.keptRow.children[4].textContent !== window.uptime, null, { timeout: 5000 });
    assert(await page.evaluate(() => document.contains(window.keptRow) && window.keptRow.querySelector('td') === window.keptName),
      'a live update replaced the row instead of changing its cells');
    await checkAccessibility('the fleet view');
  });

  await scenario('keyboard: skip link first, every control reachable, focus visible', async () => {
    await page.goto(`${base}/dashboard#/`);
    await page.waitForFunction(() => document.querySelectorAll('#nodes-body tr').length >= 3);
    await page.keyboard.press('Tab');
    const focused = () => page.evaluate(() => {
      const el = document.activeElement;
      const style = getComputedStyle(el);
      return { id: el.id, cls: el.className, text: el.textContent.trim().slice(0, 40), tag: el.tagName, outline: style.outlineStyle, width: parseFloat(style.outlineWidth) };
    });
    const skip = await focused();
    equal(skip.cls, 'skip-link', 'the first Tab');
    assert(skip.outline !== 'none' && skip.width >= 2, `no visible focus on the skip link: ${JSON.stringify(skip)}`);
    await page.keyboard.press('Enter');
    equal((await focused()).id, 'main', 'the skip link moves the focus to the content');
    const seen = [];
    for (let i = 0; i < 40; i += 1) {
      await page.keyboard.press('Tab');
      const f = await focused();
      if (f.tag === 'BODY') break; // past the last control of the page
      assert(f.outline !== 'none' && f.width >= 2, `no visible focus on ${JSON.stringify(f)}`);
      seen.push(f.id || f.text);
    }
    for (const wanted of ['window', 'node-search', 'node-status', 'Name', 'CPU', 'demo-cpu-3', 'demo-gpu-1', 'demo-mac-2']) {
      assert(seen.includes(wanted), `${wanted} is not reachable with Tab; reached ${seen.join(', ')}`);
    }
    // Live updates keep the focus where it is.
    await page.locator('a.node-link:text-is("demo-gpu-1")').focus();
    await page.waitForTimeout(1500);
    equal((await focused()).text, 'demo-gpu-1', 'the focus after live updates');
  });

  await scenario('sorting, the status filter and the search box', async () => {
    const names = async () => page.locator('#nodes-body a.node-link').allInnerTexts();
    await page.locator('th[data-sort="name"] button').click();
    equal(await page.locator('th[data-sort="name"]').getAttribute('aria-sort'), 'descending', 'second click on Name');
    equal((await names()).join(','), [...demoNames].reverse().join(','), 'descending order');
    await page.locator('th[data-sort="name"] button').press('Enter');
    equal((await names()).join(','), demoNames.join(','), 'ascending order (keyboard)');
    await page.locator('#node-search').fill('mac');
    equal((await names()).join(','), 'demo-mac-2', 'search for "mac"');
    await page.locator('#node-search').fill('');
    await page.locator('#node-status').selectOption('offline');
    equal(await rowCount(), 0, 'no offline node');
    await page.locator('#node-status').selectOption('');
    equal(await rowCount(), 3, 'all nodes again');
  });

  await scenario('a node registered now appears without a reload', async () => {
    await page.evaluate(() => { window.notReloaded = true; });
    const started = Date.now();
    const res = await http('POST', '/api/agents/register', {
      machine_name: 'browser-test-node',
      ip_address: '127.0.0.1',
      ollama_port: 9,
      ollama_version: '0.11.4',
      system_info: { os: 'Linux', arch: 'x86_64', cpu_cores: 8, total_memory_bytes: 17179869184 },
      models: [{ name: 'tinyllama:latest', size: 637700138 }],
    });
    const acknowledged = Date.now();
    equal(res.status, 201, `registration answered ${res.text}`);
    extraNode = res.json.node_id;
    await page.locator(`#nodes-body tr[data-id="${extraNode}"]`).waitFor({ timeout: 5000 });
    const elapsed = Date.now() - acknowledged;
    console.log(`  the new node appeared ${elapsed} ms after its registration was answered (${Date.now() - started} ms after it was sent)`);
    assert(await page.evaluate(() => window.notReloaded === true), 'the page reloaded');
    assert(elapsed <= NEW_NODE_BUDGET_MS, `the new node took ${elapsed} ms to appear`);
    equal((await page.locator('#t-nodes').innerText()).trim(), '4', 'nodes tile after the registration');
  });

  await scenario('force-disconnect turns a node offline', async () => {
    await page.locator(`#nodes-body tr[data-id="${extraNode}"] a.node-link`).click();
    await page.locator('#view-node:not([hidden])').waitFor();
    equal(await page.locator('#node-title').innerText(), 'browser-test-node', 'node title');
    await page.locator('#node-status-badge .status.online').waitFor();
    await page.locator('#btn-disconnect').click();
    await page.locator('#node-status-badge .status.offline').waitFor({ timeout: 3000 });
    assert((await page.locator('#node-reason').innerText()).includes('disconnect'), 'no reason given');
    equal((await agentByName('browser-test-node')).status, 'offline', 'status in the API');
    await checkAccessibility('the node view');
  });

  await scenario('delete asks for confirmation in a dialog that keeps the focus', async () => {
    await page.locator('#btn-delete').click();
    const dialog = page.locator('#confirm-dialog');
    await dialog.waitFor({ state: 'visible' });
    assert(await dialog.evaluate((d) => d.open && d.matches(':modal')), 'the dialog is not modal');
    assert((await dialog.innerText()).includes('browser-test-node'), 'the dialog does not name the node');
    equal(await page.evaluate(() => document.activeElement.id), 'confirm-cancel', 'focus on Cancel');
    for (let i = 0; i < 5; i += 1) {
      await page.keyboard.press(i % 2 ? 'Shift+Tab' : 'Tab');
      assert(await page.evaluate(() => document.getElementById('confirm-dialog').contains(document.activeElement)), 'focus left the dialog');
    }
    await page.keyboard.press('Tab');
    await page.keyboard.press('Tab');
    assert(await page.evaluate(() => document.getElementById('confirm-dialog').contains(document.activeElement)), 'focus left the dialog');
    await checkAccessibility('the confirmation dialog');
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'hidden' });
    equal(await page.evaluate(() => document.activeElement.id), 'btn-delete', 'focus back on Delete');
    equal((await http('GET', `/api/agents/${extraNode}`)).status, 200, 'cancelled: the node is still there');

    await page.locator('#btn-delete').click();
    await dialog.waitFor({ state: 'visible' });
    await page.locator('#confirm-ok').click();
    await page.waitForFunction(() => location.hash === '#/');
    await page.locator(`#nodes-body tr[data-id="${extraNode}"]`).waitFor({ state: 'detached', timeout: 3000 });
    equal((await http('GET', `/api/agents/${extraNode}`)).status, 404, 'confirmed: the node is gone');
  });

  await scenario('rename, tags and notes are saved from the node view', async () => {
    const link = row('demo-gpu-1').locator('a.node-link');
    await link.focus();
    await page.keyboard.press('Enter');
    await page.locator('#view-node:not([hidden])').waitFor();
    equal(await page.locator('#node-title').innerText(), 'demo-gpu-1', 'node title');
    assert((await page.locator('#node-facts').innerText()).includes('127.0.0.1'), 'system facts');
    await page.getByRole('textbox', { name: 'Display name', exact: true }).fill(renamed.display_name);
    await page.getByRole('textbox', { name: 'Tags', exact: true }).fill(renamed.tags.join(', '));
    await page.getByRole('textbox', { name: 'Notes', exact: true }).fill(renamed.notes);
    await page.getByRole('button', { name: 'Save' }).click();
    await page.locator('#form-status:text-is("Saved.")').waitFor();
    equal(await page.locator('#node-title').innerText(), renamed.display_name, 'title after saving');
    const node = await agentByName('demo-gpu-1');
    equal(node.display_name, renamed.display_name, 'display name in the API');
    equal(JSON.stringify(node.tags), JSON.stringify(renamed.tags), 'tags in the API');
    equal(node.notes, renamed.notes, 'notes in the API');
  });

  await scenario('drain and undrain change the status', async () => {
    await page.locator('#btn-drain').click();
    await page.locator('#node-status-badge .status.draining').waitFor({ timeout: 3000 });
    equal(await page.locator('#btn-drain').getAttribute('aria-pressed'), 'true', 'drain button pressed');
    equal((await agentByName('demo-gpu-1')).status, 'draining', 'status in the API');
    await page.locator('#btn-drain').click();
    await page.locator('#node-status-badge .status.online').waitFor({ timeout: 3000 });
    equal(await page.locator('#btn-drain').getAttribute('aria-pressed'), 'false', 'drain button released');
  });

  await scenario('a chat request through the proxy shows in the history with its bodies', async () => {
    const res = await http('POST', '/api/chat', {
      model: 'llama3.2',
      messages: [{ role: 'user', content: `Hello from ${marker}` }],
      stream: false,
    });
    equal(res.status, 200, `the chat request answered ${res.text}`);
    chatRequestId = res.headers.get('x-request-id');
    // A few more, so that the charts have something to show.
    await Promise.all([1, 2, 3].map((i) => http('POST', '/api/generate', { model: 'llama3.2', prompt: `warm-up ${i}`, stream: false })));
    await page.locator('#nav-history').click();
    await page.locator('#view-history:not([hidden])').waitFor();
    await page.getByRole('searchbox', { name: 'Search bodies and errors', exact: true }).fill(marker);
    await page.getByRole('button', { name: 'Apply filters' }).click();
    await page.waitForFunction((m) => location.hash.includes(encodeURIComponent(m)) || location.hash.includes(m), marker);
    const first = page.locator('#history-body tr').first();
    await until('the request in the history list', async () => (await first.innerText()).includes('/api/chat'), 8000);
    const text = await first.innerText();
    assert(text.includes('llama3.2') && text.includes('200'), `history row: ${text}`);
    await first.locator('button.row-open').click();
    await page.locator('#history-detail:not([hidden])').waitFor();
    const body = await page.locator('#detail-request').innerText();
    assert(body.includes(marker), `the request body lacks the marker: ${body}`);
    assert((await page.locator('#detail-text').innerText()).trim().length > 0, 'no response text');
    assert((await page.locator('#detail-response').innerText()).includes('"done"'), 'the response body lacks Ollama\'s done field');
    if (chatRequestId) assert((await page.locator('#detail-title').innerText()).includes(chatRequestId), 'the request id');
    await checkAccessibility('the history view');
    await shot('history');
  });

  await scenario('CSV export downloads the filtered requests', async () => {
    const href = await page.locator('#export-csv').getAttribute('href');
    assert(href.includes('format=csv') && href.includes(`q=${marker}`), `export link ${href}`);
    const json = await page.locator('#export-json').getAttribute('href');
    assert(json.includes('format=json') && json.includes(`q=${marker}`), `JSON export link ${json}`);
    const [download] = await Promise.all([page.waitForEvent('download'), page.locator('#export-csv').click()]);
    const csv = readFileSync(await download.path(), 'utf8');
    const lines = csv.trim().split(/\r?\n/);
    assert(lines.length >= 2, `the CSV has no data row:\n${csv}`);
    assert(/request_id/.test(lines[0]) && /model/.test(lines[0]), `CSV header: ${lines[0]}`);
    assert(csv.includes('/api/chat') && csv.includes('llama3.2'), `the CSV lacks the request:\n${csv.slice(0, 500)}`);
    if (chatRequestId) assert(csv.includes(chatRequestId), 'the CSV lacks the request id');
    console.log(`  downloaded ${download.suggestedFilename()} (${lines.length - 1} row${lines.length === 2 ? '' : 's'})`);
    // A status that is neither a code nor a class is refused by the form itself.
    const status = page.getByRole('textbox', { name: 'Status', exact: true });
    await status.fill('abc');
    const hash = await page.evaluate(() => location.hash);
    await page.getByRole('button', { name: 'Apply filters' }).click();
    assert(!(await status.evaluate((el) => el.validity.valid)), 'the form took the status "abc"');
    equal(await page.evaluate(() => location.hash), hash, 'an invalid filter was applied');
    await status.fill('2xx');
    assert(await status.evaluate((el) => el.validity.valid), 'the form refused the class 2xx');
    await status.fill('');
  });

  await scenario('the node view shows the node\'s recent requests and model statistics', async () => {
    const served = (await agents()).filter((a) => a.stats && a.stats.requests_total > 0);
    assert(served.length > 0, 'no node has statistics');
    const target = served[0];
    await page.goto(`${base}/dashboard#/nodes/${target.id}`);
    await page.locator('#view-node:not([hidden])').waitFor();
    await until('recent requests of the node', async () => (await page.locator('#recent-body').innerText()).includes('llama3.2'), 8000);
    const models = await page.locator('#models-body').innerText();
    assert(/llama3\.2/.test(models), `models table: ${models}`);
    await until('per-model statistics', async () => (await page.locator('#node-stats').innerText()).includes('Requests'), 5000);
    // A recent request opens in the history view.
    const link = page.locator('#recent-body a').first();
    const opened = new URLSearchParams((await link.getAttribute('href')).split('?')[1]).get('open');
    const detail = await http('GET', `/api/history/${opened}`);
    equal(detail.json.node, target.machine_name, 'the linked request was served by the node');
    await link.click();
    await page.locator('#view-history:not([hidden]) #history-detail:not([hidden])').waitFor();
    await until('the opened request', async () => (await page.locator('#detail-title').innerText()).includes(detail.json.request_id), 5000);
    assert((await page.locator('#detail-facts').innerText()).includes(target.machine_name), 'the opened request names the node');
  });

  await scenario('names, tags and notes survive a coordinator restart', async () => {
    await page.close();
    page = null;
    equal(await ask('restart'), 'restarted', 'harness answer');
    await openPage('/dashboard');
    const r = row(renamed.display_name);
    await r.waitFor({ timeout: 5000 });
    const text = await r.innerText();
    assert(text.includes('demo-gpu-1') && text.includes('gpu') && text.includes('rack-3'), `renamed row: ${text}`);
    await r.locator('a.node-link').click();
    await page.locator('#view-node:not([hidden])').waitFor();
    equal(await page.getByRole('textbox', { name: 'Display name', exact: true }).inputValue(), renamed.display_name, 'display name field');
    equal(await page.getByRole('textbox', { name: 'Tags', exact: true }).inputValue(), renamed.tags.join(', '), 'tags field');
    equal(await page.getByRole('textbox', { name: 'Notes', exact: true }).inputValue(), renamed.notes, 'notes field');
  });

  await scenario('the live stream reconnects after a restart without a reload', async () => {
    await page.goto(`${base}/dashboard#/`);
    await page.locator('#live.on').waitFor();
    await page.evaluate(() => { window.notReloaded = true; });
    // The page stays open across this restart; the browser reconnects by itself.
    const before = consoleErrors.length;
    equal(await ask('restart'), 'restarted', 'harness answer');
    await page.locator('#live.on').waitFor({ timeout: 10000 });
    const res = await http('POST', '/api/agents/register', {
      machine_name: 'browser-test-late', ip_address: '127.0.0.1', ollama_port: 9, models: [],
    });
    equal(res.status, 201, 'registration');
    await row('browser-test-late').waitFor({ timeout: 3000 });
    assert(await page.evaluate(() => window.notReloaded === true), 'the page reloaded');
    await http('DELETE', `/api/agents/${res.json.node_id}`);
    // The browser itself logs the refused reconnection attempts while the coordinator is away.
    consoleErrors.splice(before);
  });

  await scenario('phone-sized screen: no sideways scrolling, rows as cards', async () => {
    await page.setViewportSize(PHONE);
    await page.goto(`${base}/dashboard#/`);
    await page.waitForFunction(() => document.querySelectorAll('#nodes-body tr').length >= 3);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert(overflow <= 0, `the fleet view is ${overflow} px wider than the screen`);
    // One evaluation: the table is drawn again with every event of the live stream.
    equal(await page.evaluate(() => getComputedStyle(document.querySelector('#nodes-body td')).display), 'grid', 'cells as labelled lines');
    await shot('phone-fleet');
    await page.locator('#nav-history').click();
    await page.locator('#view-history:not([hidden])').waitFor();
    await page.locator('#history-body tr').first().waitFor();
    const overflowHistory = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert(overflowHistory <= 0, `the history view is ${overflowHistory} px wider than the screen`);
    await shot('phone-history');
    await page.setViewportSize(DESKTOP);
  });

  await scenario('the time window of the charts and totals', async () => {
    await page.goto(`${base}/dashboard#/`);
    await page.waitForFunction(() => document.querySelectorAll('#nodes-body tr').length >= 3);
    const asked = page.waitForRequest((r) => r.url().includes('/api/history/timeseries?minutes=15'));
    await page.getByLabel('Time window').selectOption('15');
    await asked;
    await until('the 15-minute window', async () => (await page.locator('#t-requests').locator('xpath=..').innerText()).includes('last 15 min'), 3000);
    await page.reload();
    equal(await page.getByLabel('Time window').inputValue(), '15', 'the window is remembered');
  });

  await scenario('screenshot of the fleet view', async () => {
    await page.goto(`${base}/dashboard#/`);
    await page.waitForFunction(() => document.querySelectorAll('#nodes-body tr').length >= 3);
    await page.locator('#chart-rate svg').waitFor();
    await page.waitForTimeout(300);
    const path = await shot('fleet');
    if (readmeShot) {
      copyFileSync(path, readmeShot);
      console.log(`  wrote ${readmeShot}`);
    }
  });

  await scenario('no console errors or warnings on any page', async () => {
    equal(consoleErrors.length, 0, `console errors:\n    ${consoleErrors.join('\n    ')}`);
  });
} finally {
  await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}

console.log(`screenshots in ${shotsDir}`);
finish();
