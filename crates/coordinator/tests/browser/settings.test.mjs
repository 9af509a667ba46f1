// Browser test of the agent's settings panel, run by crates/coordinator/tests/dashboard_browser.rs:
//
//   node settings.test.mjs 'http://127.0.0.1:PORT/?token=…'
//
// The argument is the link the agent printed. $COORDINATOR is the coordinator the agent
// should end up with (its settings file starts out pointing elsewhere), $OLLAMA the mock
// Ollama, set through the agent's environment (so it is locked in the panel), and
// $SETTINGS_FILE the file the panel writes; $FOREIGN_SITE is a page of another origin. Prints one line per scenario and exits
// non-zero if any failed.

import { readFileSync, rmSync } from 'node:fs';
import {
  assert, checkAccessibility, equal, finish, httpClient, launch, scenario, screenshot, until,
  whenFailed,
} from './lib.mjs';

const link = process.argv[2] || '';
const coordinator = (process.env.COORDINATOR || '').replace(/\/$/, '');
const ollama = process.env.OLLAMA || '';
const settingsFile = process.env.SETTINGS_FILE || '';
const foreignSite = process.env.FOREIGN_SITE || '';
assert(link.includes('?token=') && coordinator && ollama && settingsFile && foreignSite,
  'usage: COORDINATOR=… OLLAMA=… SETTINGS_FILE=… FOREIGN_SITE=… node settings.test.mjs PANEL_LINK');
const panel = new URL(link).origin;
const token = new URL(link).searchParams.get('token');
const fleet = httpClient(coordinator);
const readSettings = () => JSON.parse(readFileSync(settingsFile, 'utf8'));

const { context, userDataDir } = await launch({ viewport: { width: 1100, height: 900 } });
const page = await context.newPage();
const consoleErrors = [];
page.on('console', (message) => {
  if (message.type() === 'error' || message.type() === 'warning') consoleErrors.push(message.text());
});
whenFailed((name) => screenshot(page, `settings-failed-${name}`));

try {
  await scenario('the panel opens only with the token of this start', async () => {
    for (const url of [`${panel}/`, `${panel}/?token=${'0'.repeat(64)}`]) {
      const response = await page.goto(url);
      equal(response.status(), 403, `GET ${url}`);
    }
    const noHeader = await httpClient(panel)('GET', '/api/settings');
    equal(noHeader.status, 403, 'the API without the token header');
    const wrong = await httpClient(panel, { 'x-settings-token': 'guess' })('GET', '/api/settings');
    equal(wrong.status, 403, 'the API with a wrong token');
  });

  await scenario('each setting shows its value and source; one set by the environment is locked', async () => {
    await page.goto(link);
    await until('the settings', async () => (await page.inputValue('#f-machine_name')) !== '');
    const ollamaField = page.locator('#f-ollama_api_base');
    equal(await ollamaField.inputValue(), ollama, 'the Ollama URL the agent runs with');
    assert(await ollamaField.getAttribute('readonly') !== null, 'the Ollama URL set by the environment is read-only');
    const source = await page.textContent('#f-ollama_api_base-source');
    assert(source.includes('environment variable OLLAMA_API_BASE'), `its source reads ${JSON.stringify(source)}`);
    assert((await page.textContent('#f-coordinator_url-source')).includes('settings file'), 'the coordinator URL comes from the file');
    equal(await page.inputValue('#f-node_token'), '', 'a secret is never put in the page');
    await until('the status line to say the coordinator is not reached', async () =>
      /Retrying/.test(await page.textContent('#status-line')));
  });

  await scenario('the panel passes axe-core (WCAG 2.1 AA)', async () => {
    await checkAccessibility(page, 'the settings panel');
  });

  await scenario('Test connection says what failed, then that both answer', async () => {
    await page.click('#test');
    await until('a verdict on the coordinator', async () => (await page.locator('#verdicts li.bad').count()) > 0);
    const bad = await page.textContent('#verdicts li.bad');
    assert(/Coordinator/.test(bad) && /404|reach/.test(bad), `the failure reads ${JSON.stringify(bad)}`);
    await page.fill('#f-coordinator_url', coordinator);
    await page.click('#test');
    await until('both verdicts to be good', async () => (await page.locator('#verdicts li.ok').count()) === 2);
    const text = await page.textContent('#verdicts');
    assert(text.includes('Ollama') && text.includes('answers'), `the verdicts read ${JSON.stringify(text)}`);
    equal(readSettings().coordinator_url, 'http://127.0.0.1:1/unused', 'a test saves nothing');
  });

  await scenario('a bad value is refused by name and nothing is saved', async () => {
    await page.fill('#f-heartbeat_interval_secs', '0');
    await page.click('#save');
    await until('the error', async () => /heartbeat_interval_secs/.test(await page.textContent('#form-error')));
    equal(await page.getAttribute('#f-heartbeat_interval_secs', 'aria-invalid'), 'true', 'the field is marked');
    equal(readSettings().coordinator_url, 'http://127.0.0.1:1/unused', 'the file after a refused save');
    await page.fill('#f-heartbeat_interval_secs', '2');
  });

  await scenario('Save writes the file and the agent joins the coordinator under the new name, without a restart', async () => {
    await page.fill('#f-machine_name', 'panel-desk');
    await page.click('#save');
    await until('the saved note', async () => /Saved to/.test(await page.textContent('#form-status')));
    const saved = readSettings();
    equal(saved.coordinator_url, coordinator, 'the coordinator URL in the file');
    equal(saved.machine_name, 'panel-desk', 'the machine name in the file');
    equal(saved.heartbeat_interval_secs, 2, 'the interval in the file');
    equal(saved.keep_this, 'unknown keys are kept', 'a key the panel does not edit');
    const node = await until('the node online under its new name', async () => {
      const agents = (await fleet('GET', '/api/agents')).json || [];
      return agents.find((a) => a.machine_name === 'panel-desk' && a.status === 'online');
    }, 20000);
    assert(node.id, 'the node has an id');
    await until('the status line to say connected', async () =>
      /Connected to .* as panel-desk/.test(await page.textContent('#status-line')), 15000);
    assert((await page.textContent('#f-coordinator_url-source')).includes('settings file'), 'the source after saving');
    await screenshot(page, 'settings-panel');
  });

  await scenario('renaming again keeps the same node', async () => {
    const before = ((await fleet('GET', '/api/agents')).json || []).find((a) => a.machine_name === 'panel-desk');
    await page.fill('#f-machine_name', 'panel-desk-2');
    await page.click('#save');
    await until('the renamed node online', async () => {
      const agents = (await fleet('GET', '/api/agents')).json || [];
      return agents.some((a) => a.id === before.id && a.machine_name === 'panel-desk-2' && a.status === 'online');
    }, 20000);
    const agents = (await fleet('GET', '/api/agents')).json;
    equal(agents.length, 1, 'nodes on the coordinator after the rename');
  });

  await scenario('a page of another site cannot read or change the settings', async () => {
    // A page of its own, so that its refused calls are not counted as the panel's errors.
    const foreign = await context.newPage();
    await foreign.goto(foreignSite);
    const outcome = await foreign.evaluate(async ({ panel, token }) => {
      const tries = {};
      try {
        const r = await fetch(`${panel}/api/settings`, { headers: { 'X-Settings-Token': token } });
        tries.read = r.status;
      } catch (e) { tries.read = 'blocked'; }
      try {
        await fetch(`${panel}/api/settings`, {
          method: 'PUT', headers: { 'X-Settings-Token': token, 'Content-Type': 'application/json' },
          body: JSON.stringify({ machine_name: 'evil' }),
        });
        tries.write = 'sent';
      } catch (e) { tries.write = 'blocked'; }
      try {
        await fetch(`${panel}/api/test`, { method: 'POST', mode: 'no-cors', body: '{}' });
        tries.simple = 'sent';
      } catch (e) { tries.simple = 'blocked'; }
      return tries;
    }, { panel, token });
    await foreign.close();
    equal(outcome.read, 'blocked', 'reading the settings from another origin');
    equal(outcome.write, 'blocked', 'saving from another origin');
    equal(readSettings().machine_name, 'panel-desk-2', 'the machine name after the foreign page tried');
  });

  await scenario('no console errors on the panel', async () => {
    // The refused links, Test connection's failure and the refused save are on purpose.
    const unexpected = consoleErrors.filter((line) => !/403 \(Forbidden\)|422 \(Unprocessable Entity\)/.test(line));
    equal(unexpected.length, 0, `console errors:\n    ${unexpected.join('\n    ')}`);
  });
} finally {
  await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}

finish();
