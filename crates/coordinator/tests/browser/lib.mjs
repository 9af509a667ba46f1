// What the browser scripts share: a tiny test runner, the harness protocol, HTTP straight
// to the coordinator, Chromium with playwright-core, and the accessibility check.

import { mkdtempSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);

/** The coordinator's URL, the script's first argument. */
export function baseUrl(script) {
  const base = (process.argv[2] || '').replace(/\/$/, '');
  if (!base.startsWith('http')) {
    console.error(`usage: node ${script} http://HOST:PORT`);
    process.exit(2);
  }
  return base;
}

export const shotsDir = process.env.SCREENSHOT_DIR || mkdtempSync(join(tmpdir(), 'dashboard-shots-'));

// ---------- harness protocol: "@@command" on stdout, the answer on stdin ----------
const answers = [];
let input = null;
export function ask(command) {
  if (!input) {
    input = createInterface({ input: process.stdin });
    input.on('line', (line) => { const next = answers.shift(); if (next) next(line); });
  }
  return new Promise((resolve) => {
    answers.push(resolve);
    process.stdout.write(`@@${command}\n`);
  });
}

// ---------- tiny test runner ----------
const results = { passed: 0, failed: 0 };
let onFailure = async () => {};
/** What to do when a scenario fails (a screenshot), set by the script. */
export function whenFailed(fn) { onFailure = fn; }
export async function scenario(name, fn) {
  const started = Date.now();
  try {
    await fn();
    results.passed += 1;
    console.log(`ok - ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    results.failed += 1;
    console.log(`not ok - ${name}\n  ${String(error && error.stack ? error.stack : error).split('\n').join('\n  ')}`);
    await onFailure(name.replace(/[^a-z0-9]+/gi, '-').toLowerCase()).catch(() => {});
  }
}
/** Prints the totals and exits: 0 only when every scenario passed. */
export function finish() {
  console.log(`# ${results.passed} passed, ${results.failed} failed`);
  process.exit(results.failed ? 1 : 0);
}
export function assert(condition, message) {
  if (!condition) throw new Error(message);
}
export function equal(actual, expected, message) {
  if (actual !== expected) throw new Error(`${message}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}
/** Polls `fn` every 100 ms until it returns something truthy, or fails after the deadline. */
export async function until(what, fn, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ---------- HTTP straight to the coordinator (what an agent or client would do) ----------
export function httpClient(base, defaultHeaders = {}) {
  return async function http(method, path, body, headers = {}) {
    const res = await fetch(base + path, {
      method,
      headers: { ...defaultHeaders, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
    return { status: res.status, json, text, headers: res.headers };
  };
}

// ---------- browser ----------
/** Debian's Chromium, headless, in a fresh profile; `args` are added to the defaults. */
export async function launch({ viewport, args = [] }) {
  const userDataDir = mkdtempSync(join(tmpdir(), 'llm-router-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.LLM_ROUTER_TEST_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync', ...args],
    viewport,
    acceptDownloads: true,
    timezoneId: 'UTC',
    locale: 'en-GB',
  });
  context.setDefaultTimeout(10000);
  return { context, userDataDir };
}

export async function screenshot(page, name) {
  if (!page) return null;
  const path = join(shotsDir, `${name}.png`);
  await page.screenshot({ path, fullPage: false });
  return path;
}

const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
/** Fails with the list of WCAG 2.1 AA violations axe-core finds on the page. */
export async function checkAccessibility(page, where) {
  // Evaluated through the DevTools protocol, so the page's content security policy
  // (which refuses inline scripts) does not stop it.
  await page.evaluate(axeSource);
  const result = await page.evaluate(() => window.axe.run(document, {
    runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] },
  }));
  const problems = result.violations.map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join('; ')}`);
  assert(problems.length === 0, `WCAG 2.1 AA violations on ${where}:\n    ${problems.join('\n    ')}`);
}
