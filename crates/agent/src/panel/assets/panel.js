// The agent's settings panel: shows the settings with their sources, tests and saves an
// edit. Every call carries the token of this start, read from the page's own link.
'use strict';

const token = new URLSearchParams(location.search).get('token') || '';
const $ = (id) => document.getElementById(id);
let fields = [];

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: Object.assign({ 'X-Settings-Token': token }, body ? { 'Content-Type': 'application/json' } : {}),
    body: body ? JSON.stringify(body) : undefined,
    cache: 'no-store',
  });
  let data = null;
  try { data = await response.json(); } catch (_) { /* no body */ }
  if (!response.ok) {
    const error = new Error((data && data.error) || `the agent answered ${response.status}`);
    error.field = data && data.field;
    throw error;
  }
  return data;
}

function element(tag, attributes, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value === true ? '' : value);
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

function renderFields(list) {
  fields = list;
  const box = $('fields');
  box.replaceChildren();
  for (const field of list) {
    const id = `f-${field.key}`;
    const wrap = element('div', { class: 'field' });
    const label = element('label', { for: id }, field.label + ' ');
    const source = field.locked
      ? `set by ${field.source}; change it there`
      : field.source === 'not set' ? 'not set' : `from ${field.source}`;
    label.append(element('span', { class: field.locked ? 'source locked' : 'source', id: `${id}-source` }, `(${source})`));
    const input = element('input', {
      id,
      name: field.key,
      type: field.secret ? 'password' : field.key === 'heartbeat_interval_secs' ? 'number' : 'text',
      min: field.key === 'heartbeat_interval_secs' ? '1' : undefined,
      step: field.key === 'heartbeat_interval_secs' ? '1' : undefined,
      autocomplete: 'off',
      spellcheck: 'false',
      readonly: field.locked,
      'aria-describedby': `${id}-source ${id}-hint`,
      placeholder: field.secret ? (field.set ? 'set (type a new one to replace it)' : 'not set') : undefined,
    });
    input.value = field.secret ? '' : (field.value || '');
    wrap.append(label, input, element('span', { class: 'hint', id: `${id}-hint` }, field.hint));
    if (field.secret && field.set && !field.locked) {
      const remove = element('label', { class: 'field inline' });
      remove.append(element('input', { type: 'checkbox', id: `${id}-remove` }), ' Remove the saved token');
      wrap.append(remove);
    }
    box.append(wrap);
  }
}

/** What the user changed: only unlocked fields that differ from what the agent runs with. */
function edit() {
  const changes = {};
  for (const field of fields) {
    if (field.locked) continue;
    const value = $(`f-${field.key}`).value.trim();
    if (field.secret) {
      const remove = $(`f-${field.key}-remove`);
      if (remove && remove.checked) changes[field.key] = null;
      else if (value) changes[field.key] = value;
    } else if (value !== (field.value || '')) {
      changes[field.key] = value === '' ? null : value;
    }
  }
  return changes;
}

function showStatus(status) {
  $('status-line').textContent = status.line;
  const link = $('dashboard-link');
  link.href = status.dashboard;
  link.hidden = false;
  const live = $('live');
  live.className = `live ${status.link === 'connected' ? 'on' : 'off'}`;
  $('live-text').textContent = status.link === 'connected' ? 'Connected' : status.link === 'starting' ? 'Connecting' : 'Not connected';
}

function clearMessages() {
  $('form-error').textContent = '';
  $('form-status').textContent = '';
  for (const input of document.querySelectorAll('#fields input[aria-invalid]')) input.removeAttribute('aria-invalid');
}

function fail(error) {
  $('form-error').textContent = error.message;
  const input = error.field && $(`f-${error.field}`);
  if (input) { input.setAttribute('aria-invalid', 'true'); input.focus(); }
}

async function load() {
  const data = await api('GET', '/api/settings');
  renderFields(data.fields);
  showStatus(data.status);
  $('file-note').textContent = `Saved settings go to ${data.settings_file}. Settings set by a flag or an environment variable are shown locked.`;
}

async function test() {
  clearMessages();
  const list = $('verdicts');
  list.replaceChildren(element('li', {}, 'Testing…'));
  try {
    const result = await api('POST', '/api/test', edit());
    list.replaceChildren(
      ...[['Coordinator', result.coordinator], ['Ollama', result.ollama]].map(([name, verdict]) =>
        element('li', { class: verdict.ok ? 'ok' : 'bad' }, `${verdict.ok ? '✓' : '✗'} ${name}: ${verdict.message}`)),
    );
  } catch (error) {
    list.replaceChildren();
    fail(error);
  }
}

async function save(event) {
  event.preventDefault();
  clearMessages();
  const changes = edit();
  if (!Object.keys(changes).length) {
    $('form-status').textContent = 'Nothing changed.';
    return;
  }
  $('save').disabled = true;
  $('verdicts').replaceChildren();
  try {
    const result = await api('PUT', '/api/settings', changes);
    await load();
    $('form-status').textContent = result.restarted
      ? `Saved to ${result.saved}. The agent reconnects with the new settings.`
      : `Saved to ${result.saved}.`;
  } catch (error) {
    fail(error);
  } finally {
    $('save').disabled = false;
  }
}

async function poll() {
  try { showStatus(await api('GET', '/api/status')); } catch (_) {
    $('live').className = 'live off';
    $('live-text').textContent = 'Agent not answering';
  }
}

document.addEventListener('DOMContentLoaded', () => {
  $('settings-form').addEventListener('submit', save);
  $('test').addEventListener('click', test);
  load().catch(fail);
  setInterval(poll, 1000);
});
