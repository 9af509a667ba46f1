// Browser test of the dashboard's Models page and of the fleet view's figures, run by
// crates/coordinator/tests/dashboard_browser.rs:
//
//   node models.test.mjs http://127.0.0.1:PORT
//
// against a coordinator with the three demo nodes online, and one more mock server in
// $OPENAI_SERVER (not registered: the script adds it by URL as an OpenAI-style node).
// Pulls slowly enough to be watched: the mock nodes' `POST /mock/config` knobs
// `pull_bytes_per_sec` and `pull_size_bytes`. Prints one line per scenario and exits
// non-zero if any failed. Waits are polls with deadlines, never sleeps.

import { rmSync } from 'node:fs';
import {
  assert, baseUrl, checkAccessibility as axeCheck, equal, finish, httpClient, launch,
  scenario, screenshot, until, whenFailed,
} from './lib.mjs';

const base = baseUrl('models.test.mjs');
const openaiServer = (process.env.OPENAI_SERVER || '').replace(/\/$/, '');
assert(openaiServer.startsWith('http'), 'OPENAI_SERVER must be set to a mock server URL');
const http = httpClient(base);
const agents = async () => (await http('GET', '/api/agents')).json;
const canonical = (name) => (name.includes(':') ? name : `${name}:latest`);

/** Turns a mock node's knobs (`POST <api_url>/mock/config`). */
async function mockConfig(node, knobs) {
  const res = await fetch(`${node.api_url.replace(/\/$/, '')}/mock/config`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(knobs),
  });
  equal(res.status, 200, `POST /mock/config on ${node.machine_name} answered ${await res.text()}`);
}

const { context, userDataDir } = await launch({ viewport: { width: 1280, height: 860 } });
const consoleErrors = [];
const page = await context.newPage();
page.on('console', (msg) => {
  if (msg.type() === 'error' || msg.type() === 'warning') consoleErrors.push(`[${msg.type()}] ${msg.text()} (${page.url()})`);
});
page.on('pageerror', (error) => consoleErrors.push(`[pageerror] ${error.message}`));
whenFailed((name) => screenshot(page, `models-failed-${name}`));
const checkAccessibility = (where) => axeCheck(page, where);

const MODEL = 'smollm2:135m';
const SLOW_MODEL = 'tinyllama:1.1b';
const chosen = ['demo-gpu-1', 'demo-mac-2'];
const matrixRow = (model) => page.locator(`#matrix-body tr[data-model="${model}"]`);
/** The matrix cell of `model` on node `name` (its column header names the node). */
async function cellText(model, name) {
  return page.evaluate(([m, n]) => {
    const heads = [...document.querySelectorAll('#matrix-head th')].map((th) => th.textContent);
    const column = heads.findIndex((text) => text.startsWith(n));
    const row = document.querySelector(`#matrix-body tr[data-model="${m}"]`);
    return row && column >= 0 ? row.children[column].textContent : null;
  }, [model, name]);
}
/** The task item of the newest task of `kind` on `model`. */
const taskItem = (kind, model) => page.locator(`#task-list > li[data-kind="${kind}"][data-model="${model}"]`).first();

let openaiNode = null;
try {
  await scenario('the Models page shows every node and the models they hold', async () => {
    await page.goto(`${base}/dashboard#/models`);
    await page.locator('#view-models:not([hidden])').waitFor();
    equal(await page.title(), 'Models · llm-router', 'title');
    equal(await page.locator('#nav-models').getAttribute('aria-current'), 'page', 'the nav link is current');
    await until('a row per demo model', async () => (await page.locator('#matrix-body tr[data-model]').count()) >= 4);
    const heads = await page.locator('#matrix-head th').allInnerTexts();
    for (const name of ['demo-cpu-3', 'demo-gpu-1', 'demo-mac-2']) {
      assert(heads.some((text) => text.startsWith(name) && text.includes('Ollama')), `no column for ${name}: ${heads.join(' | ')}`);
    }
    // Every demo node holds llama3.2 and has it in memory.
    for (const name of ['demo-cpu-3', 'demo-gpu-1', 'demo-mac-2']) {
      const text = await cellText('llama3.2:latest', name);
      assert(text && text.includes('in memory'), `llama3.2 on ${name}: ${text}`);
    }
    // mistral is on demo-mac-2 only.
    assert((await cellText('mistral:latest', 'demo-mac-2')).includes('on disk'), 'mistral on demo-mac-2');
    assert((await cellText('mistral:latest', 'demo-gpu-1')).includes('not there'), 'mistral on demo-gpu-1');
    assert(!(await matrixRow(MODEL).count()), `${MODEL} is there before the pull`);
    await checkAccessibility('the models view');
  });

  await scenario('a pull to two chosen nodes shows its progress and lands in the matrix without a reload', async () => {
    for (const node of await agents()) await mockConfig(node, { pull_bytes_per_sec: 50000000, pull_size_bytes: 200000000 });
    await page.evaluate(() => { window.notReloaded = true; });
    await page.getByRole('button', { name: 'Pull a model…' }).click();
    equal(await page.evaluate(() => document.activeElement.id), 'p-model', 'the form opens with the focus on the model');
    await page.getByRole('combobox', { name: 'Model', exact: true }).fill(MODEL);
    for (const name of chosen) await page.getByRole('checkbox', { name: new RegExp(`^${name}`) }).check();
    assert(await page.getByRole('radio', { name: /Only the nodes chosen here/ }).isChecked(), 'choosing a node picks "only these nodes"');
    await checkAccessibility('the pull form');
    await page.getByRole('button', { name: 'Pull', exact: true }).click();
    await until('the start to be acknowledged', async () => (await page.locator('#pull-status').innerText()).startsWith('Pulling'));

    const item = taskItem('pull', MODEL);
    await item.waitFor();
    const bars = item.locator('progress');
    const seen = [];
    let inMatrix = null;
    await until('both bars at 100% and the task succeeded', async () => {
      const values = await bars.evaluateAll((list) => list.map((p) => (p.hasAttribute('value') ? Number(p.getAttribute('value')) : null)));
      seen.push(...values.filter((v) => v !== null));
      const cellNow = await cellText(MODEL, chosen[0]);
      if (cellNow && /pulling \d+%/.test(cellNow)) inMatrix = cellNow;
      const state = await item.getAttribute('data-state');
      return values.length === 2 && values.every((v) => v === 100) && state === 'succeeded';
    }, 30000);
    const between = seen.filter((v) => v > 0 && v < 100);
    assert(between.length > 0, `no value strictly between 0 and 100 among ${seen.length} readings: ${[...new Set(seen)].join(', ')}`);
    console.log(`  read ${seen.length} bar values, ${between.length} in between (e.g. ${between[Math.floor(between.length / 2)]}%)`);
    assert(inMatrix, 'the matrix never showed the pull in progress');
    const names = await item.locator('.tn-name').allInnerTexts();
    equal(names.sort().join(','), chosen.join(','), 'the task ran on the chosen nodes');
    assert((await item.innerText()).includes('2 of 2 nodes done'), `task summary: ${await item.innerText()}`);

    await matrixRow(MODEL).waitFor({ timeout: 10000 });
    await until('the model in the matrix on the two nodes', async () => {
      const on = await Promise.all(chosen.map((name) => cellText(MODEL, name)));
      return on.every((text) => text && text.includes('on disk'));
    });
    assert((await cellText(MODEL, 'demo-cpu-3')).includes('not there'), 'the model is on demo-cpu-3 too');
    assert(await page.evaluate(() => window.notReloaded === true), 'the page reloaded');
    const holders = (await agents()).filter((a) => a.models.some((m) => canonical(m.name) === MODEL)).map((a) => a.machine_name);
    equal(holders.sort().join(','), chosen.join(','), 'holders in the API');
    await checkAccessibility('the models view with a finished pull');
    await screenshot(page, 'models-after-pull');
  });

  await scenario('a running pull can be cancelled', async () => {
    const cpu = (await agents()).find((a) => a.machine_name === 'demo-cpu-3');
    await mockConfig(cpu, { pull_bytes_per_sec: 1000000, pull_size_bytes: 2000000000 });
    await page.getByRole('combobox', { name: 'Model', exact: true }).fill(SLOW_MODEL);
    for (const name of chosen) await page.getByRole('checkbox', { name: new RegExp(`^${name}`) }).uncheck();
    await page.getByRole('checkbox', { name: /^demo-cpu-3/ }).check();
    await page.getByRole('button', { name: 'Pull', exact: true }).click();
    const item = taskItem('pull', SLOW_MODEL);
    await item.locator('progress[value]').waitFor();
    await item.getByRole('button', { name: `Cancel Pull ${SLOW_MODEL}` }).click();
    await until('the task cancelled', async () => (await item.getAttribute('data-state')) === 'cancelled');
    assert(!(await matrixRow(SLOW_MODEL).count()), 'a cancelled pull shows as held');
    await until('the announcement', async () => (await page.locator('#tasks-announce').innerText()).includes(`Pull of ${SLOW_MODEL}: Cancelled`));
  });

  await scenario('deleting a model asks first, then it leaves the matrix', async () => {
    const button = matrixRow(MODEL).getByRole('button', { name: `Delete ${MODEL} from every node` });
    await button.click();
    const dialog = page.locator('#confirm-dialog');
    await dialog.waitFor({ state: 'visible' });
    assert(await dialog.evaluate((d) => d.open && d.matches(':modal')), 'the dialog is not modal');
    const text = await dialog.innerText();
    assert(text.includes(MODEL) && chosen.every((name) => text.includes(name)), `the dialog does not name the model and nodes: ${text}`);
    equal(await page.evaluate(() => document.activeElement.id), 'confirm-cancel', 'focus on Cancel');
    await checkAccessibility('the delete confirmation');
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'hidden' });
    assert(await matrixRow(MODEL).count(), 'cancelled, yet the model left');

    await button.click();
    await dialog.waitFor({ state: 'visible' });
    await page.locator('#confirm-ok').click();
    await matrixRow(MODEL).waitFor({ state: 'detached', timeout: 10000 });
    const item = taskItem('delete', MODEL);
    await until('the delete task succeeded', async () => (await item.getAttribute('data-state')) === 'succeeded');
    const holders = (await agents()).filter((a) => a.models.some((m) => canonical(m.name) === MODEL));
    equal(holders.length, 0, 'holders in the API after the delete');
  });

  await scenario('a pull the fleet cannot take shows the coordinator\'s reason', async () => {
    await page.getByRole('combobox', { name: 'Model', exact: true }).fill('');
    await page.getByRole('button', { name: 'Pull', exact: true }).click();
    equal(await page.evaluate(() => document.activeElement.id), 'p-model', 'an empty name keeps the focus on it');
    assert((await page.locator('#pull-status').innerText()).includes('Name the model'), 'no message for an empty name');
    await page.getByRole('combobox', { name: 'Model', exact: true }).fill('bad name with spaces');
    const before = consoleErrors.length;
    await page.getByRole('button', { name: 'Pull', exact: true }).click();
    await until('the refusal', async () => (await page.locator('#pull-status').innerText()).startsWith('Not started:'));
    assert(await page.locator('#pull-status.error').count(), 'the refusal is not marked as an error');
    // The browser itself logs the refused request (422); the page logs nothing more.
    await until('the browser\'s note of the 422', async () => consoleErrors.length > before);
    const logged = consoleErrors.splice(before);
    assert(logged.length === 1 && logged[0].includes('422'), `console: ${logged.join(' | ')}`);
  });

  await scenario('the latency chart shows a minute with data between two empty ones', async () => {
    // Minutes with requests: the first, the third (alone between two empty ones), and
    // the last two (a line).
    const busy = [true, false, true, false, true, true];
    const now = Date.now() - (Date.now() % 60000);
    const minutes = busy.map((on, i) => ({
      minute: new Date(now - (busy.length - 1 - i) * 60000).toISOString(),
      requests: on ? 3 : 0,
      errors: 0,
      avg_latency_ms: on ? 300 + 40 * i : 0,
      tokens: on ? 60 : 0,
      tokens_per_second: on ? 1 : 0,
    }));
    await page.route('**/api/history/timeseries*', (route) => route.fulfill({ json: minutes }));
    await page.goto(`${base}/dashboard#/`);
    await page.locator('#chart-latency svg').waitFor();
    await until('a dot for each lone minute', async () => (await page.locator('#chart-latency svg circle').count()) === 2);
    equal(await page.locator('#chart-latency svg path[fill="none"]').count(), 1, 'the line of the last two minutes');
    await page.unroute('**/api/history/timeseries*');
  });

  await scenario('the request tiles count refused requests alike; throughput says it is the fleet\'s', async () => {
    const ok = await http('POST', '/api/chat', { model: 'llama3.2', messages: [{ role: 'user', content: 'hi' }], stream: false });
    equal(ok.status, 200, `chat answered ${ok.text}`);
    const refused = await http('POST', '/api/chat', { model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }], stream: false });
    equal(refused.status, 404, `the unknown model answered ${refused.text}`);
    const totals = (await http('GET', '/api/stats')).json;
    assert(totals.requests >= 2 && totals.rejected >= 1, `totals: ${JSON.stringify(totals)}`);
    await page.goto(`${base}/dashboard#/`);
    // The fleet figures refresh every 10 s; the history writes in batches.
    let polls = 0;
    await until('the two tiles to agree', async () => {
      // The page fetches its figures again when it becomes visible: once a second here.
      polls += 1;
      if (polls % 10 === 0) await page.evaluate(() => document.dispatchEvent(new Event('visibilitychange')));
      const value = Number((await page.locator('#t-requests').innerText()).replace(/,/g, ''));
      const sub = await page.locator('#t-requests-sub').innerText();
      const match = /^([\d,]+) since the coordinator started, ([\d,]+) of them refused/.exec(sub);
      return match && Number(match[1].replace(/,/g, '')) === value && Number(match[2]) >= 1;
    }, 20000);
    const label = await page.locator('#t-tps').locator('xpath=..').innerText();
    assert(label.includes('Fleet throughput') && label.includes('all nodes together') && label.includes('per node'), `throughput tile: ${label}`);
  });

  await scenario('a node added by URL shows its kind and that it has no agent', async () => {
    const res = await http('POST', '/api/nodes', { api_url: openaiServer, name: 'openai-box', kind: 'openai' });
    assert(res.status === 201 || res.status === 200, `adding the node answered ${res.status} ${res.text}`);
    openaiNode = res.json.id;
    await page.goto(`${base}/dashboard#/`);
    const row = page.locator(`#nodes-body tr[data-id="${openaiNode}"]`);
    await row.waitFor();
    const server = await row.locator('td[data-label="Server"]').innerText();
    assert(server.includes('OpenAI-style') && server.includes('agentless'), `server cell: ${server}`);
    const demo = await page.locator('#nodes-body tr', { has: page.locator('a.node-link:text-is("demo-gpu-1")') }).locator('td[data-label="Server"]').innerText();
    assert(demo.includes('Ollama') && !demo.includes('agentless'), `server cell of an agent's node: ${demo}`);
    await row.locator('a.node-link').click();
    await page.locator('#view-node:not([hidden])').waitFor();
    const badge = await page.locator('#node-status-badge').innerText();
    assert(badge.includes('OpenAI-style') && badge.includes('agentless'), `node header: ${badge}`);
    const facts = await page.locator('#node-facts').innerText();
    assert(facts.includes('OpenAI-style') && facts.includes('added by URL'), `node facts: ${facts}`);
    await checkAccessibility('the node view of an agentless node');
    await page.goto(`${base}/dashboard#/models`);
    await until('its column in the matrix', async () => (await page.locator('#matrix-head').innerText()).includes('OpenAI-style · agentless'));
    await page.getByRole('button', { name: 'Pull a model…' }).waitFor();
    if (await page.locator('#pull-card').isHidden()) await page.getByRole('button', { name: 'Pull a model…' }).click();
    assert(await page.getByRole('checkbox', { name: /^openai-box/ }).isDisabled(), 'an OpenAI-style node can be chosen for a pull');
  });

  await scenario('no console errors or warnings', async () => {
    equal(consoleErrors.length, 0, `console errors:\n    ${consoleErrors.join('\n    ')}`);
  });
} finally {
  if (openaiNode) await http('DELETE', `/api/agents/${openaiNode}`).catch(() => {});
  await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}

finish();
