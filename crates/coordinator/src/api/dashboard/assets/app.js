// llm-router dashboard: one script, no dependencies, no build step.
// Data: the `nodes` and `tasks` events of /api/events (server push), /api/agents for
// edits, /api/history* for requests, /api/stats for the totals since the start, and
// /api/models/* and /api/tasks for pulls and deletes. Text from the API is only ever set
// as textContent.
'use strict';
(() => {
  const MAX_SAMPLES = 180;          // load samples kept per node (client side)
  const FLEET_REFRESH_MS = 10000;   // timeseries and history totals
  const HISTORY_REFRESH_MS = 5000;  // the history list and a node's recent requests
  const PAGE_SIZE = 50;
  const SVGNS = 'http://www.w3.org/2000/svg';
  const COLORS = ['#0b5cad', '#c2410c', '#6d28d9'];
  const STATUS_ORDER = { online: 0, draining: 1, offline: 2 };
  const STATUS_TEXT = { online: 'Online', draining: 'Draining', offline: 'Offline' };

  const $ = (id) => document.getElementById(id);

  /** Builds an element: h('td', {class: 'num', text: '3', data: {label: 'CPU'}}, child...). */
  function h(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = value;
      else if (key === 'data') Object.assign(node.dataset, value);
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? '' : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }
  /** A table cell labelled with its column, which the phone layout shows beside the value. */
  const cell = (label, content, cls) => h('td', { class: cls, data: { label } }, content);
  /**
   * Puts `desired` into `parent`, keeping the elements already there that are equal (by
   * key), and within changed ones the children that did not change: the live stream
   * redraws every second, and a redraw must not take away a text selection, the focus
   * or a hover.
   */
  function patchChildren(parent, desired, keyOf = (el, i) => i) {
    const previous = new Map();
    [...parent.children].forEach((el, i) => previous.set(keyOf(el, i), el));
    const result = desired.map((el, i) => {
      const key = keyOf(el, i);
      const prev = previous.get(key);
      if (!prev || prev.tagName !== el.tagName) return el;
      previous.delete(key);
      if (prev.isEqualNode(el)) return prev;
      for (const name of prev.getAttributeNames()) if (!el.hasAttribute(name)) prev.removeAttribute(name);
      for (const name of el.getAttributeNames()) {
        if (prev.getAttribute(name) !== el.getAttribute(name)) prev.setAttribute(name, el.getAttribute(name));
      }
      const before = [...prev.childNodes];
      const after = [...el.childNodes];
      if (before.length === after.length && before.every((n, j) => n.nodeType === 1 && after[j].nodeType === 1)) {
        after.forEach((n, j) => { if (!before[j].isEqualNode(n)) before[j].replaceWith(n); });
      } else {
        prev.replaceChildren(...after);
      }
      return prev;
    });
    result.forEach((el, i) => { if (parent.children[i] !== el) parent.insertBefore(el, parent.children[i] || null); });
    while (parent.children.length > result.length) parent.lastElementChild.remove();
  }
  const byId = (el) => el.dataset.id || el;

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVGNS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // ---------- formatting ----------
  const nf0 = new Intl.NumberFormat('en', { maximumFractionDigits: 0 });
  const nf1 = new Intl.NumberFormat('en', { maximumFractionDigits: 1 });
  const num = (n) => (n === null || n === undefined || Number.isNaN(n) ? '–' : nf0.format(n));
  const pct = (n) => (n === null || n === undefined ? '–' : `${nf0.format(n)}%`);
  function ms(n) {
    if (n === null || n === undefined || Number.isNaN(n)) return '–';
    if (n < 1000) return `${nf0.format(n)} ms`;
    if (n < 60000) return `${nf1.format(n / 1000)} s`;
    return `${nf1.format(n / 60000)} min`;
  }
  function bytes(n) {
    if (!n && n !== 0) return '–';
    const units = ['B', 'KB', 'MB', 'GB', 'TB'];
    let i = 0;
    let v = n;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return `${i ? nf1.format(v) : v} ${units[i]}`;
  }
  function duration(secs) {
    if (!secs || secs < 0) return '–';
    const d = Math.floor(secs / 86400);
    const hr = Math.floor((secs % 86400) / 3600);
    const m = Math.floor((secs % 3600) / 60);
    const s = Math.floor(secs % 60);
    if (d) return `${d} d ${hr} h`;
    if (hr) return `${hr} h ${m} min`;
    if (m) return `${m} min ${s} s`;
    return `${s} s`;
  }
  function ago(iso) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return '–';
    const secs = Math.max(0, Math.round((Date.now() - t) / 1000));
    if (secs < 2) return 'just now';
    return `${duration(secs)} ago`;
  }
  const pad = (n) => String(n).padStart(2, '0');
  function clock(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return '–';
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    const today = new Date();
    if (d.toDateString() === today.toDateString()) return time;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
  }
  const fullTime = (iso) => {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? '–' : d.toLocaleString('en-GB');
  };
  /** ISO (UTC) → the value of an <input type=datetime-local> (local time). */
  function toLocalInput(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return '';
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function fromLocalInput(value) {
    if (!value) return '';
    const d = new Date(value);
    return Number.isNaN(d.getTime()) ? '' : d.toISOString();
  }
  /** `llama3.2` and `llama3.2:latest` are one model. */
  const canonicalModel = (name) => (name.includes(':') ? name : `${name}:latest`);

  // ---------- node helpers ----------
  const nodeName = (n) => n.display_name || n.machine_name;
  function gpuUtil(n) {
    const gpus = (n.metrics && n.metrics.gpus) || [];
    const values = gpus.map((g) => g.utilization_percent).filter((v) => typeof v === 'number');
    if (!values.length) return null;
    return values.reduce((a, b) => a + b, 0) / values.length;
  }
  const cpuOf = (n) => (n.metrics ? n.metrics.cpu_percent : null);
  const memOf = (n) => (n.metrics ? n.metrics.memory_percent : null);
  const stats = (n) => n.stats || null;
  function loadedSet(n) {
    return new Set((n.loaded_models || []).map((m) => canonicalModel(m.name)));
  }
  /** The API a node's server speaks, as the dashboard names it. */
  const kindText = (n) => (n.api_kind === 'openai' ? 'OpenAI-style' : 'Ollama');
  /** "Ollama 0.11.4", "OpenAI-style": what serves the node's requests. */
  const serverText = (n) => (n.api_kind === 'openai' ? 'OpenAI-style' : `Ollama${n.ollama_version ? ` ${n.ollama_version}` : ''}`);
  const AGENTLESS_TITLE = 'Added by URL: no agent runs beside it; the coordinator probes its server itself.';
  function agentlessChip(n) {
    return n.agentless ? h('span', { class: 'chip agentless', title: AGENTLESS_TITLE, text: 'agentless' }) : null;
  }
  function statusBadge(status) {
    return h('span', { class: `status ${status}`, text: STATUS_TEXT[status] || status });
  }

  // ---------- state ----------
  const state = {
    nodes: [],
    byId: new Map(),
    loaded: false,
    samples: new Map(),
    sort: { key: 'name', dir: 1 },
    filter: { q: '', status: '' },
    route: { view: 'fleet' },
    timeseries: null,
    totals: null,
    tasks: { list: [], loaded: false, received: 0, mine: new Set(), announced: new Set(), expanded: new Map() },
    historyMeta: null,
    historyAvailable: true,
    auth: null,
    keys: null,
    history: { params: new URLSearchParams(), offset: 0, total: 0, items: [], selected: null },
    form: { nodeId: null, dirty: false },
    recent: [],
    lastEvent: 0,
    window: 60,
  };
  const WINDOWS = { 15: 'last 15 min', 60: 'last hour', 360: 'last 6 hours', 1440: 'last 24 hours' };
  const windowText = () => WINDOWS[state.window] || `last ${state.window} min`;
  try {
    const saved = Number(localStorage.getItem('llm-router.window'));
    if (WINDOWS[saved]) state.window = saved;
  } catch (_) { /* storage may be off */ }

  // ---------- API ----------
  async function api(method, path, body) {
    // The custom header marks the request as the dashboard's own: a form on another site cannot send it.
    const init = { method, headers: { accept: 'application/json', 'x-requested-with': 'llm-router-dashboard' } };
    if (body !== undefined) {
      init.headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    if (res.status === 401) {
      // The session ended (logout elsewhere, coordinator restarted): log in again.
      window.location.assign('/login');
    }
    if (!res.ok) {
      let message = `${res.status} ${res.statusText}`;
      try {
        const json = await res.json();
        if (json && json.error) message = typeof json.error === 'string' ? json.error : json.error.message || message;
      } catch (_) { /* not JSON */ }
      const error = new Error(message);
      error.status = res.status;
      throw error;
    }
    if (res.status === 204) return null;
    const type = res.headers.get('content-type') || '';
    return type.includes('json') ? res.json() : res.text();
  }

  let toastTimer = 0;
  function toast(message, isError) {
    const el = $('toast');
    el.textContent = message;
    el.classList.toggle('error', Boolean(isError));
    el.classList.add('show');
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => el.classList.remove('show'), 4000);
  }

  // ---------- live stream ----------
  let source = null;
  function setLive(on, text) {
    const live = $('live');
    live.classList.toggle('on', on);
    live.classList.toggle('off', !on);
    $('live-text').textContent = text;
  }
  function connect() {
    source = new EventSource('/api/events');
    source.addEventListener('open', () => setLive(true, 'Live'));
    source.addEventListener('nodes', (event) => {
      let nodes;
      try { nodes = JSON.parse(event.data); } catch (_) { return; }
      setLive(true, 'Live');
      onNodes(nodes);
    });
    source.addEventListener('tasks', (event) => {
      let data;
      try { data = JSON.parse(event.data); } catch (_) { return; }
      onTasks(Array.isArray(data.tasks) ? data.tasks : []);
    });
    source.addEventListener('error', () => {
      setLive(false, 'Reconnecting…');
      // The browser retries by itself unless the stream was refused outright.
      if (source.readyState === EventSource.CLOSED) {
        source = null;
        setTimeout(connect, 3000);
      }
    });
  }

  function onNodes(nodes) {
    state.nodes = nodes;
    state.byId = new Map(nodes.map((n) => [n.id, n]));
    state.lastEvent = Date.now();
    recordSamples(nodes);
    const first = !state.loaded;
    state.loaded = true;
    renderCurrent({ fromStream: true });
    updateNodeOptions();
    if (first) {
      performance.mark('dashboard-nodes-rendered');
      if (state.route.view === 'node') refreshRecent();
    }
  }

  function recordSamples(nodes) {
    for (const n of nodes) {
      if (!n.metrics) continue;
      let list = state.samples.get(n.id);
      if (!list) { list = []; state.samples.set(n.id, list); }
      const at = Date.parse(n.last_seen) || Date.now();
      if (list.length && list[list.length - 1].at === at) continue;
      list.push({ at, cpu: cpuOf(n), mem: memOf(n), gpu: gpuUtil(n) });
      if (list.length > MAX_SAMPLES) list.splice(0, list.length - MAX_SAMPLES);
    }
    for (const id of state.samples.keys()) if (!state.byId.has(id)) state.samples.delete(id);
  }

  // ---------- routing ----------
  function parseRoute() {
    const raw = location.hash.replace(/^#/, '') || '/';
    const [path, query] = raw.split('?');
    if (path.startsWith('/nodes/')) return { view: 'node', id: decodeURIComponent(path.slice('/nodes/'.length)) };
    if (path === '/history') return { view: 'history', params: new URLSearchParams(query || '') };
    if (path === '/keys') return { view: 'keys' };
    if (path === '/models') return { view: 'models' };
    return { view: 'fleet' };
  }
  function onRoute(initial) {
    const route = parseRoute();
    const changedView = route.view !== state.route.view || route.id !== state.route.id;
    state.route = route;
    for (const view of ['fleet', 'node', 'models', 'history', 'keys']) $(`view-${view}`).hidden = view !== route.view;
    const current = (el, on) => (on ? el.setAttribute('aria-current', 'page') : el.removeAttribute('aria-current'));
    current($('nav-fleet'), route.view === 'fleet' || route.view === 'node');
    current($('nav-history'), route.view === 'history');
    current($('nav-keys'), route.view === 'keys');
    current($('nav-models'), route.view === 'models');
    if (route.view === 'node') {
      if (state.form.nodeId !== route.id) { state.form = { nodeId: route.id, dirty: false }; }
      state.recent = null;
      renderNode();
      refreshRecent();
    } else if (route.view === 'history') {
      loadHistoryRoute(route.params);
    } else if (route.view === 'keys') {
      refreshKeys();
    } else if (route.view === 'models') {
      renderModelsView();
      refreshTasks();
    } else {
      renderFleet();
      refreshFleetData();
    }
    if (changedView && !initial) {
      const heading = document.querySelector(`#view-${route.view} h1`);
      if (heading) { heading.setAttribute('tabindex', '-1'); heading.focus(); }
      window.scrollTo(0, 0);
    }
    document.title = {
      fleet: 'Fleet · llm-router',
      node: `${state.byId.get(route.id) ? nodeName(state.byId.get(route.id)) : 'Node'} · llm-router`,
      history: 'Request history · llm-router',
      keys: 'API keys · llm-router',
      models: 'Models · llm-router',
    }[route.view];
  }

  function renderCurrent(opts) {
    if (state.route.view === 'fleet') renderFleet();
    else if (state.route.view === 'node') renderNode(opts);
    else if (state.route.view === 'models') { renderMatrix(); renderPullNodes(); }
  }

  // ---------- fleet view ----------
  function renderFleet() {
    for (const el of document.querySelectorAll('.win')) el.textContent = windowText();
    $('window').value = String(state.window);
    renderTiles();
    renderNodesTable();
  }

  function setTile(id, value, sub, bad) {
    $(`t-${id}`).textContent = value;
    $(`t-${id}-sub`).textContent = sub || '';
    $(`t-${id}`).parentElement.classList.toggle('bad', Boolean(bad));
  }

  /**
   * How fast one node generates, tokens per second while it generates: the mean over the
   * nodes that measured it, each weighted alike (a node's speed, not the fleet's).
   */
  function nodeSpeed(nodes) {
    const speeds = nodes.map((n) => stats(n) && stats(n).tokens_per_second).filter((v) => typeof v === 'number');
    return speeds.length ? speeds.reduce((a, b) => a + b, 0) / speeds.length : null;
  }

  function renderTiles() {
    const nodes = state.nodes;
    const count = (s) => nodes.filter((n) => n.status === s).length;
    const inFlight = nodes.reduce((a, n) => a + (n.in_flight || 0), 0);
    setTile('nodes', state.loaded ? num(nodes.length) : '–', state.loaded ? `${num(inFlight)} requests in flight` : '');
    const online = count('online');
    setTile('online', state.loaded ? num(online) : '–',
      state.loaded ? `${count('draining')} draining · ${count('offline')} offline` : '', state.loaded && nodes.length > 0 && online === 0);
    const ts = state.timeseries;
    // Both request tiles count what the history records: every inference request the
    // coordinator received, refused ones (admission, no node for the model) included.
    // The nodes' own statistics count attempts on each node instead (a retried request
    // counts on every node it tried), so they are not summed here.
    const totals = state.totals;
    const sinceStart = totals
      ? `${num(totals.requests)} since the coordinator started${totals.rejected ? `, ${num(totals.rejected)} of them refused` : ''}`
      : null;
    const speed = nodeSpeed(nodes);
    const speedText = speed === null ? 'per node: not measured yet' : `per node: ${nf1.format(speed)} while generating`;
    if (ts) {
      const requests = ts.reduce((a, b) => a + (b.requests || 0), 0);
      const errors = ts.reduce((a, b) => a + (b.errors || 0), 0);
      const weighted = ts.reduce((a, b) => a + (b.requests ? b.avg_latency_ms * b.requests : 0), 0);
      const latency = requests ? weighted / requests : null;
      setTile('requests', num(requests), sinceStart || 'refused ones included');
      setTile('latency', ms(latency), `mean, ${windowText()}`);
      setTile('errors', num(errors), requests ? `${nf1.format((100 * errors) / requests)}% of requests` : 'none', errors > 0);
      // Fleet throughput: tokens generated by all nodes together over the last five
      // minutes, the current (partial) minute included.
      const recent = ts.slice(-5);
      const tokens = recent.reduce((a, b) => a + (b.tokens !== undefined ? b.tokens : (b.tokens_per_second || 0) * 60), 0);
      const elapsed = (recent.length - 1) * 60 + (new Date().getSeconds() || 1);
      setTile('tps', nf1.format(tokens / elapsed), `all nodes together, last 5 min · ${speedText}`);
    } else if (totals) {
      setTile('requests', num(totals.requests), `since the coordinator started${totals.rejected ? `, ${num(totals.rejected)} of them refused` : ''}`);
      const lat = nodes.map((n) => stats(n) && stats(n).avg_latency_ms).filter((v) => typeof v === 'number');
      setTile('latency', lat.length ? ms(lat.reduce((a, b) => a + b, 0) / lat.length) : '–', 'mean of nodes');
      setTile('errors', num(totals.errors), 'since the coordinator started', totals.errors > 0);
      setTile('tps', '–', `needs the request history · ${speedText}`);
    }
    if (state.historyMeta) {
      const dropped = state.historyMeta.dropped || 0;
      setTile('drops', num(dropped), dropped ? 'entries not recorded' : 'every request recorded', dropped > 0);
    } else if (!state.historyAvailable) {
      setTile('drops', '–', 'history unavailable');
    }
  }

  const SORT_VALUE = {
    name: (n) => nodeName(n).toLowerCase(),
    ip: (n) => n.ip_address.split(/[.:]/).map((p) => p.padStart(5, '0')).join('.'),
    version: (n) => `${n.api_kind || 'ollama'} ${n.agentless ? 1 : 0} ${n.ollama_version || ''}`,
    status: (n) => STATUS_ORDER[n.status] ?? 9,
    uptime: (n) => n.uptime_secs || 0,
    last_seen: (n) => Date.parse(n.last_seen) || 0,
    models: (n) => (n.models || []).length,
    cpu: cpuOf,
    memory: memOf,
    gpu: gpuUtil,
    in_flight: (n) => n.in_flight || 0,
    requests: (n) => (stats(n) ? stats(n).requests_total : null),
    latency: (n) => (stats(n) ? stats(n).avg_latency_ms : null),
  };

  function matches(n, q) {
    if (!q) return true;
    const hay = [n.machine_name, n.display_name, n.ip_address, n.api_url, n.ollama_version, n.status, n.notes,
      kindText(n), n.agentless ? 'agentless' : null,
      ...(n.tags || []), ...(n.models || []).map((m) => m.name)].filter(Boolean).join(' ').toLowerCase();
    return q.toLowerCase().split(/\s+/).filter(Boolean).every((word) => hay.includes(word));
  }

  function visibleNodes() {
    const { key, dir } = state.sort;
    const value = SORT_VALUE[key];
    return state.nodes
      .filter((n) => (!state.filter.status || n.status === state.filter.status) && matches(n, state.filter.q))
      .sort((a, b) => {
        const va = value(a);
        const vb = value(b);
        if (va === vb) return nodeName(a).localeCompare(nodeName(b));
        if (va === null || va === undefined) return 1;
        if (vb === null || vb === undefined) return -1;
        return (va < vb ? -1 : 1) * dir;
      });
  }

  function meter(value) {
    if (value === null || value === undefined) return h('span', { class: 'muted', text: '–' });
    const fill = h('span');
    fill.style.width = `${Math.max(0, Math.min(100, value))}%`;
    return h('span', { class: 'load' }, h('span', { class: `meter${value >= 80 ? ' hot' : ''}`, 'aria-hidden': 'true' }, fill), pct(value));
  }

  const MAX_CHIPS = 4;
  function modelChips(n) {
    const loaded = loadedSet(n);
    const names = (n.models || []).map((m) => m.name);
    for (const m of n.loaded_models || []) if (!names.some((x) => canonicalModel(x) === canonicalModel(m.name))) names.push(m.name);
    // Models in memory first: they answer at once.
    names.sort((a, b) => Number(loaded.has(canonicalModel(b))) - Number(loaded.has(canonicalModel(a))) || a.localeCompare(b));
    const shown = names.length > MAX_CHIPS ? names.slice(0, MAX_CHIPS - 1) : names;
    const chips = shown.map((name) => {
      const isLoaded = loaded.has(canonicalModel(name));
      return h('span', { class: `chip${isLoaded ? ' loaded' : ''}`, title: isLoaded ? 'loaded in memory' : 'on disk' },
        isLoaded ? '● ' : '', name, isLoaded ? h('span', { class: 'sr-only', text: ' (loaded)' }) : null);
    });
    if (shown.length < names.length) {
      const rest = names.slice(shown.length);
      chips.push(h('span', { class: 'chip more', title: rest.join(', ') }, `+${rest.length} more`));
    }
    return h('span', { class: 'chips' }, chips);
  }

  function renderNodesTable() {
    const body = $('nodes-body');
    const focusKey = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.focusKey : null;
    const rows = visibleNodes();
    patchChildren(body, rows.map((n) => {
      const s = stats(n);
      const nameCell = h('td', { data: { label: 'Name' } },
        h('a', { class: 'node-link', href: `#/nodes/${encodeURIComponent(n.id)}`, data: { focusKey: `node-${n.id}` }, text: nodeName(n) }),
        n.display_name ? h('span', { class: 'sub', text: n.machine_name }) : null,
        (n.tags || []).length ? h('span', { class: 'chips' }, n.tags.map((t) => h('span', { class: 'chip tag', text: t }))) : null);
      return h('tr', { data: { id: n.id, status: n.status } },
        nameCell,
        cell('IP address', n.ip_address),
        cell('Server', h('span', { class: 'server' }, h('span', { class: 'nowrap', text: serverText(n) }), agentlessChip(n))),
        cell('Status', [statusBadge(n.status), n.status_reason ? h('span', { class: 'sub', text: n.status_reason }) : null]),
        cell('Uptime', n.status === 'offline' ? '–' : duration(n.uptime_secs)),
        cell('Last seen', h('time', { datetime: n.last_seen, title: fullTime(n.last_seen), text: ago(n.last_seen) })),
        cell('Models', modelChips(n)),
        cell('CPU', meter(cpuOf(n)), 'num'),
        cell('Memory', meter(memOf(n)), 'num'),
        cell('GPU', meter(gpuUtil(n)), 'num'),
        cell('In flight', num(n.in_flight || 0), 'num'),
        cell('Requests', s ? `${num(s.requests_total)}${s.requests_failed ? ` (${num(s.requests_failed)} failed)` : ''}` : '–', 'num'),
        cell('Latency', s ? ms(s.avg_latency_ms) : '–', 'num'));
    }), byId);
    if (focusKey) {
      const again = body.querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`);
      if (again) again.focus();
    }
    const total = state.nodes.length;
    $('nodes-empty').hidden = !state.loaded || total > 0;
    $('node-count').textContent = !state.loaded ? 'Loading…'
      : rows.length === total ? `${total} node${total === 1 ? '' : 's'}` : `${rows.length} of ${total} nodes shown`;
    for (const th of document.querySelectorAll('#nodes-table th[data-sort]')) {
      if (th.dataset.sort === state.sort.key) th.setAttribute('aria-sort', state.sort.dir > 0 ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
    }
    $('node-sort').value = state.sort.key in SORT_VALUE ? state.sort.key : 'name';
    $('node-sort-dir').textContent = state.sort.dir > 0 ? 'Ascending' : 'Descending';
  }

  // ---------- charts (hand-written SVG) ----------
  // At least 2, so that the half-way tick is a whole number (0, 1, 2) even with no data.
  function niceMax(v) {
    if (!v || v <= 2) return 2;
    const exp = 10 ** Math.floor(Math.log10(v));
    for (const step of [1, 2, 2.5, 5, 10]) if (step * exp >= v) return step * exp;
    return 10 * exp;
  }

  /**
   * A line chart: xs are times (ms), each series {name, values (null = no data)}.
   * The container gets role=img and a label that says what a sighted user sees.
   */
  function lineChart(container, { xs, series, max, format, summary, empty, seconds }) {
    const width = Math.max(160, container.clientWidth || 300);
    const height = Math.max(80, container.clientHeight || 160);
    const m = { l: 52, r: 10, t: 10, b: 22 };
    const w = width - m.l - m.r;
    const hgt = height - m.t - m.b;
    const all = series.flatMap((s) => s.values).filter((v) => typeof v === 'number');
    const top = max || niceMax(Math.max(0, ...all));
    const x = (i) => m.l + (xs.length > 1 ? (i / (xs.length - 1)) * w : w / 2);
    const y = (v) => m.t + hgt - (Math.max(0, Math.min(top, v)) / top) * hgt;
    const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, width, height, 'aria-hidden': 'true', focusable: 'false' });
    for (const frac of [0, 0.5, 1]) {
      const yy = y(top * frac);
      root.append(svg('line', { class: frac ? 'grid' : 'axis', x1: m.l, x2: m.l + w, y1: yy, y2: yy }));
      root.append(svg('text', { x: m.l - 6, y: yy + 4, 'text-anchor': 'end' }, format(top * frac)));
    }
    if (xs.length) {
      const label = (t) => {
        const d = new Date(t);
        return `${pad(d.getHours())}:${pad(d.getMinutes())}${seconds ? `:${pad(d.getSeconds())}` : ''}`;
      };
      const ticks = xs.length > 2 ? [0, Math.floor((xs.length - 1) / 2), xs.length - 1] : [0, xs.length - 1];
      for (const i of new Set(ticks)) {
        const anchor = i === 0 ? 'start' : i === xs.length - 1 ? 'end' : 'middle';
        root.append(svg('text', { x: x(i), y: height - 6, 'text-anchor': anchor }, label(xs[i])));
      }
    }
    series.forEach((s, index) => {
      let d = '';
      let pen = false;
      s.values.forEach((v, i) => {
        if (typeof v !== 'number') { pen = false; return; }
        d += `${pen ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
        pen = true;
      });
      if (!d) return;
      if (index === 0) {
        // A light area under the first series, drawn only where it is continuous.
        const area = d.replace(/M([\d.]+),([\d.]+)/g, (_, px, py) => `M${px},${y(0)}L${px},${py}`);
        const closed = area.split('M').filter(Boolean).map((seg) => {
          const pts = seg.split('L');
          const lastX = pts[pts.length - 1].split(',')[0];
          return `M${seg}L${lastX},${y(0)}Z`;
        }).join('');
        root.append(svg('path', { d: closed, fill: COLORS[0], 'fill-opacity': '0.12', stroke: 'none' }));
      }
      root.append(svg('path', { d, fill: 'none', stroke: COLORS[index % COLORS.length], 'stroke-width': 2, 'stroke-linejoin': 'round' }));
      // A point with no data on either side is a path of one "M" and draws nothing: a
      // dot shows it (a minute with requests between two without).
      const has = (i) => typeof s.values[i] === 'number';
      s.values.forEach((v, i) => {
        if (!has(i) || has(i - 1) || has(i + 1)) return;
        root.append(svg('circle', { cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 3, fill: COLORS[index % COLORS.length] }));
      });
    });
    if (!all.length && empty) {
      root.append(svg('text', { class: 'empty-note', x: m.l + w / 2, y: m.t + hgt / 2, 'text-anchor': 'middle' }, empty));
    }
    container.setAttribute('role', 'img');
    container.setAttribute('aria-label', summary);
    container.replaceChildren(root);
    if (series.length > 1) {
      let legend = container.nextElementSibling;
      if (!legend || !legend.classList.contains('legend')) {
        legend = h('div', { class: 'legend', 'aria-hidden': 'true' });
        container.after(legend);
      }
      legend.replaceChildren(...series.map((s, i) => h('span', {}, h('span', { class: `swatch s${i}` }), s.name)));
    }
  }

  function renderFleetCharts() {
    const ts = state.timeseries || [];
    const xs = ts.map((b) => Date.parse(b.minute));
    const requests = ts.map((b) => b.requests || 0);
    const errors = ts.map((b) => b.errors || 0);
    const latency = ts.map((b) => (b.requests ? b.avg_latency_ms : null));
    const peak = Math.max(0, ...requests);
    const lastLatency = [...latency].reverse().find((v) => typeof v === 'number');
    lineChart($('chart-rate'), {
      xs,
      series: [{ name: 'Requests', values: requests }, { name: 'Errors', values: errors }],
      format: (v) => nf0.format(v),
      summary: state.historyAvailable
        ? `Requests per minute over the last ${ts.length} minutes: ${requests.reduce((a, b) => a + b, 0)} in all, peak ${peak}, ${errors.reduce((a, b) => a + b, 0)} errors.`
        : 'Requests per minute: the request history is not available.',
      empty: state.historyAvailable ? null : 'history unavailable',
    });
    lineChart($('chart-latency'), {
      xs,
      series: [{ name: 'Latency', values: latency }],
      format: (v) => ms(v),
      summary: lastLatency === undefined ? `Average latency per minute: no requests, ${windowText()}.`
        : `Average latency per minute, ${windowText()}; latest ${ms(lastLatency)}.`,
      empty: `no requests, ${windowText()}`,
    });
  }

  /** Shows what /api/health says is wrong (the history cannot be written), or nothing. */
  async function refreshHealth() {
    const notice = $('health-notice');
    try {
      const health = await api('GET', '/api/health');
      const problem = health && health.status === 'degraded' ? health.history || 'a store is failing' : '';
      notice.textContent = problem ? `The coordinator is degraded: ${problem}. Requests are still served.` : '';
      notice.hidden = !problem;
    } catch (_) { /* the live indicator already says when the coordinator is away */ }
  }

  /** The placement plan: per model, demand against the capacity of the nodes planned for it. */
  async function refreshPlacement() {
    let plan;
    try {
      plan = await api('GET', '/api/placement');
    } catch (_) { return; }
    const summary = $('placement-summary');
    const table = $('placement-table');
    const rate = (v) => (typeof v === 'number' ? v.toFixed(2) : '–');
    if (!plan || !plan.enabled) {
      summary.textContent = 'Placement is off (--placement off): the balancer alone picks a node for each request.';
      table.hidden = true;
      return;
    }
    const demand = Array.isArray(plan.demand) ? plan.demand : [];
    const nodes = Array.isArray(plan.nodes) ? plan.nodes : [];
    const changed = plan.changed_at
      ? `Last change ${new Date(plan.changed_at).toLocaleTimeString()}: ${plan.change_reason || ''}`
      : 'No change yet.';
    if (plan.measuring) {
      summary.textContent = `No model is placed yet: ${plan.reason}. Until then the balancer alone routes.`;
    } else {
      summary.textContent = demand.length
        ? `${plan.changes || 0} plan change(s). ${changed} Latest round: ${plan.reason}.`
        : `No demand seen yet: the plan forms once requests arrive. ${plan.reason || ''}`;
    }
    table.hidden = demand.length === 0;
    $('placement-body').replaceChildren(...demand.map((d) => {
      const planned = nodes.filter((n) => (n.models || []).includes(d.model));
      const on = planned.length
        ? planned.map((n) => `${n.name}${(n.warm || []).includes(d.model) ? ' ●' : ''}`).join(', ')
        : 'none';
      let headroom = 'no node holds it';
      if (plan.measuring) headroom = '–';
      else if (typeof d.headroom === 'number') headroom = `${d.headroom.toFixed(2)}×${d.headroom < 1 ? ' (short)' : ''}`;
      return h('tr', {},
        cell('Model', d.model),
        cell('Demand, requests/s', rate(d.requests_per_sec), 'num'),
        cell('Capacity, requests/s', rate(d.capacity_per_sec), 'num'),
        cell('Headroom', headroom, 'num'),
        cell('Planned on', on));
    }));
  }

  async function refreshTotals() {
    try {
      state.totals = await api('GET', '/api/stats');
    } catch (_) { return; }
    if (state.route.view === 'fleet') renderTiles();
  }

  async function refreshFleetData() {
    refreshHealth();
    refreshPlacement();
    refreshTotals();
    try {
      const [ts, page] = await Promise.all([
        api('GET', `/api/history/timeseries?minutes=${state.window}`),
        api('GET', '/api/history?limit=1'),
      ]);
      state.timeseries = Array.isArray(ts) ? ts : null;
      state.historyMeta = page;
      state.historyAvailable = true;
    } catch (error) {
      if (error.status === 404 || error.status === 503) state.historyAvailable = false;
    }
    if (state.route.view === 'fleet') {
      renderTiles();
      renderFleetCharts();
    }
  }

  // ---------- node view ----------
  function fact(label, value) {
    if (value === null || value === undefined || value === '') return [];
    return [h('dt', { text: label }), h('dd', {}, value)];
  }

  // What an OpenAI-style server says of its own load (slots, queue, KV cache),
  // other clients included; null when it reports nothing.
  function serverLoadText(load) {
    if (!load) return null;
    const running = load.requests_running;
    const parts = [];
    if (typeof load.slots_total === 'number') {
      parts.push(`${num(running || 0)} of ${num(load.slots_total)} ${load.slots_total === 1 ? 'slot' : 'slots'} busy`);
    } else if (typeof running === 'number') {
      parts.push(`${num(running)} running`);
    }
    if (typeof load.requests_waiting === 'number') parts.push(`${num(load.requests_waiting)} waiting`);
    if (typeof load.kv_cache_usage === 'number') parts.push(`KV cache ${pct(load.kv_cache_usage * 100)}`);
    if (!parts.length) return null;
    return `${parts.join(', ')}${load.source ? ` (from ${load.source})` : ''}`;
  }

  function renderNode(opts) {
    const id = state.route.id;
    const n = state.byId.get(id);
    $('node-missing').hidden = Boolean(n) || !state.loaded;
    $('node-body').hidden = !n;
    for (const b of ['btn-drain', 'btn-disconnect', 'btn-delete']) $(b).disabled = !n;
    if (!n) {
      $('node-title').textContent = state.loaded ? 'Unknown node' : 'Loading…';
      $('node-status-badge').replaceChildren();
      $('node-reason').textContent = '';
      return;
    }
    document.title = `${nodeName(n)} · llm-router`;
    $('node-title').textContent = nodeName(n);
    patchChildren($('node-status-badge'), [statusBadge(n.status), h('span', { class: 'chip kind', text: kindText(n) }), agentlessChip(n)].filter(Boolean));
    $('node-reason').textContent = [n.display_name ? n.machine_name : null, n.status_reason].filter(Boolean).join(' · ');
    $('btn-drain').setAttribute('aria-pressed', String(Boolean(n.draining)));
    $('btn-disconnect').disabled = n.status === 'offline';
    const sys = n.system_info || {};
    const gpus = (sys.gpus || []).map((g) => `${g.name}${g.memory_total_bytes ? ` (${bytes(g.memory_total_bytes)})` : ''}`).join(', ');
    const m = n.metrics;
    patchChildren($('node-facts'), [
      ...fact('Machine name', n.machine_name),
      ...fact('Node id', h('code', { text: n.id })),
      ...fact('IP address', n.ip_address),
      ...fact('API URL', n.api_url),
      ...fact('Server', n.api_kind === 'openai' ? 'OpenAI-style API (/v1)' : `Ollama ${n.ollama_version || '(version unknown)'}`),
      ...fact('Ollama supervision', n.ollama_supervision),
      ...fact('Agent', n.agentless ? 'none: added by URL, the coordinator probes its server itself' : n.agent_version || 'version unknown'),
      ...fact('Operating system', [sys.os, sys.os_version, sys.arch].filter(Boolean).join(' · ')),
      ...fact('CPU', [sys.cpu_model, sys.cpu_cores ? `${sys.cpu_cores} cores` : null].filter(Boolean).join(', ')),
      ...fact('Memory', sys.total_memory_bytes ? `${m ? `${bytes(m.memory_used_bytes)} used of ` : ''}${bytes(sys.total_memory_bytes)}` : null),
      ...fact('GPUs', gpus || 'none reported'),
      ...fact('Registered', fullTime(n.registered_at)),
      ...fact('Last seen', `${ago(n.last_seen)} (${fullTime(n.last_seen)})`),
      ...fact('Uptime', n.status === 'offline' ? 'offline' : duration(n.uptime_secs)),
      ...fact('In flight', num(n.in_flight || 0)),
      ...fact('Server load', serverLoadText(n.server_load)),
      ...fact('Tags', (n.tags || []).length ? h('span', { class: 'chips' }, n.tags.map((t) => h('span', { class: 'chip tag', text: t }))) : 'none'),
      ...fact('Notes', n.notes || 'none'),
    ]);
    fillForm(n);
    renderNodeCharts(n);
    renderModels(n);
    if (!opts || !opts.fromStream) renderRecent(n);
    $('node-history-link').href = `#/history?${new URLSearchParams({ node: n.machine_name })}`;
  }

  function fillForm(n) {
    if (state.form.dirty && state.form.nodeId === n.id) return;
    state.form.nodeId = n.id;
    const set = (id, value) => { if (document.activeElement !== $(id)) $(id).value = value; };
    set('f-display-name', n.display_name || '');
    set('f-tags', (n.tags || []).join(', '));
    set('f-notes', n.notes || '');
  }

  function renderNodeCharts(n) {
    const list = state.samples.get(n.id) || [];
    const xs = list.map((s) => s.at);
    const chart = (id, key, label) => {
      const values = list.map((s) => s[key]);
      const last = [...values].reverse().find((v) => typeof v === 'number');
      $(`now-${key}`).textContent = last === undefined ? '' : `· ${pct(last)}`;
      lineChart($(id), {
        xs,
        series: [{ name: label, values }],
        max: 100,
        seconds: true,
        format: (v) => `${nf0.format(v)}%`,
        summary: last === undefined ? `${label}: no samples yet.` : `${label} over the last ${list.length} samples; now ${pct(last)}.`,
        empty: last === undefined ? (key === 'gpu' ? 'no GPU readings' : 'waiting for a heartbeat') : null,
      });
    };
    chart('chart-cpu', 'cpu', 'CPU usage');
    chart('chart-mem', 'mem', 'Memory usage');
    chart('chart-gpu', 'gpu', 'GPU usage');
    $('load-hint').textContent = `${list.length} sample${list.length === 1 ? '' : 's'} from the live stream since this page opened (up to ${MAX_SAMPLES} kept).`;
  }

  function renderModels(n) {
    const perModel = (stats(n) && stats(n).models) || {};
    const loaded = new Map((n.loaded_models || []).map((m) => [canonicalModel(m.name), m]));
    const names = new Map();
    for (const m of n.models || []) names.set(canonicalModel(m.name), m);
    for (const [key, m] of loaded) if (!names.has(key)) names.set(key, m);
    for (const key of Object.keys(perModel)) if (!names.has(canonicalModel(key))) names.set(canonicalModel(key), { name: key });
    const rows = [...names.entries()].sort((a, b) => a[0].localeCompare(b[0])).map(([key, m]) => {
      const s = perModel[key] || perModel[m.name] || null;
      const inMemory = loaded.get(key);
      return h('tr', {},
        cell('Model', m.name),
        cell('Size', m.size ? bytes(m.size) : '–', 'num'),
        cell('In memory', inMemory ? `yes${inMemory.size_vram ? ` (${bytes(inMemory.size_vram)} VRAM)` : ''}` : 'no'),
        cell('Requests', s ? num(s.requests_total) : '–', 'num'),
        cell('Failed', s ? num(s.requests_failed) : '–', 'num'),
        cell('Avg latency', s ? ms(s.avg_latency_ms) : '–', 'num'),
        cell('Avg TTFT', s ? ms(s.avg_ttft_ms) : '–', 'num'),
        cell('Tokens/s', s && typeof s.tokens_per_second === 'number' ? nf1.format(s.tokens_per_second) : '–', 'num'));
    });
    if (!rows.length) rows.push(h('tr', {}, h('td', { colspan: 8, class: 'empty-row', text: 'No models reported.' })));
    patchChildren($('models-body'), rows);
    const s = stats(n);
    patchChildren($('node-stats'), (s ? [
      ...fact('Requests', num(s.requests_total)),
      ...fact('OK', num(s.requests_ok)),
      ...fact('Failed', num(s.requests_failed)),
      ...fact('Avg latency', ms(s.avg_latency_ms)),
      ...fact('Recent latency', ms(s.recent_latency_ms)),
      ...fact('Avg TTFT', ms(s.avg_ttft_ms)),
      ...fact('Tokens/s', typeof s.tokens_per_second === 'number' ? nf1.format(s.tokens_per_second) : '–'),
    ] : []));
  }

  async function refreshRecent() {
    if (state.route.view !== 'node') return;
    const n = state.byId.get(state.route.id);
    if (!n) return;
    try {
      const page = await api('GET', `/api/history?${new URLSearchParams({ node: n.machine_name, limit: '50' })}`);
      state.recent = page.items || [];
      state.historyAvailable = true;
    } catch (error) {
      if (error.status === 404 || error.status === 503) state.historyAvailable = false;
      state.recent = [];
    }
    if (state.route.view === 'node' && state.byId.get(state.route.id) === n) renderRecent(state.byId.get(state.route.id));
  }

  const isError = (item) => item.status >= 400 || item.outcome !== 'completed' || Boolean(item.error);

  function renderRecent() {
    const loading = state.recent === null;
    const recent = state.recent || [];
    const items = recent.slice(0, 10);
    const rows = items.map((item) => h('tr', {},
      cell('Time', h('a', {
        href: `#/history?${new URLSearchParams({ node: item.node || '', open: String(item.id) })}`,
        text: clock(item.time),
        'aria-label': `${fullTime(item.time)}, open request ${item.request_id} in the history`,
      })),
      cell('Endpoint', item.endpoint),
      cell('Model', item.model || '–'),
      cell('Status', statusCode(item)),
      cell('Duration', ms(item.duration_ms), 'num'),
      cell('Tokens', tokens(item), 'num')));
    if (!rows.length) {
      rows.push(h('tr', {}, h('td', { colspan: 6, class: 'empty-row', text: loading ? 'Loading…' : state.historyAvailable ? 'No requests recorded for this node yet.' : 'The request history is not available.' })));
    }
    patchChildren($('recent-body'), rows);
    const errors = recent.filter(isError).slice(0, 10);
    patchChildren($('recent-errors'), (errors.length ? errors.map((item) => h('li', {},
      h('time', { datetime: item.time, text: clock(item.time) }), ` ${item.endpoint} · ${item.model || '–'} · ${item.status} ${item.outcome}`,
      item.error ? `: ${item.error}` : '')) : [h('li', { text: loading ? 'Loading…' : 'None among the latest requests.' })]));
  }

  async function patchNode(id, body, done) {
    try {
      await api('PATCH', `/api/agents/${encodeURIComponent(id)}`, body);
      if (done) toast(done);
      return true;
    } catch (error) {
      toast(`Could not update the node: ${error.message}`, true);
      return false;
    }
  }

  // ---------- dialog ----------
  let dialogOpener = null;
  function confirmDialog(title, text, okLabel) {
    const dialog = $('confirm-dialog');
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = okLabel;
    dialogOpener = document.activeElement;
    dialog.returnValue = '';
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => {
        resolve(dialog.returnValue === 'confirm');
        if (dialogOpener && document.contains(dialogOpener)) dialogOpener.focus();
      }, { once: true });
      dialog.showModal();
      $('confirm-cancel').focus();
    });
  }
  // Keep Tab inside the open dialog (the page behind it is inert, but the browser's own
  // controls are not).
  $('confirm-dialog').addEventListener('keydown', (event) => {
    if (event.key !== 'Tab') return;
    const focusable = [...event.currentTarget.querySelectorAll('button, [href], input, select, textarea, [tabindex]:not([tabindex="-1"])')]
      .filter((el) => !el.disabled);
    if (!focusable.length) return;
    const first = focusable[0];
    const last = focusable[focusable.length - 1];
    if (event.shiftKey && document.activeElement === first) { event.preventDefault(); last.focus(); }
    else if (!event.shiftKey && document.activeElement === last) { event.preventDefault(); first.focus(); }
    else if (!focusable.includes(document.activeElement)) { event.preventDefault(); first.focus(); }
  });

  // ---------- history view ----------
  const FILTERS = ['model', 'node', 'key', 'status', 'endpoint', 'outcome', 'since', 'until', 'q'];

  function statusCode(item) {
    return h('span', { class: item.status >= 400 || item.outcome !== 'completed' ? 'code-bad' : 'code-ok' },
      String(item.status), item.outcome !== 'completed' ? ` ${item.outcome}` : '');
  }
  function tokens(item) {
    if (item.prompt_tokens === null && item.completion_tokens === null) return '–';
    const show = (v) => (v === null || v === undefined ? '–' : num(v));
    return `${show(item.prompt_tokens)} / ${show(item.completion_tokens)}`;
  }

  function filterParams() {
    const params = new URLSearchParams();
    for (const name of FILTERS) {
      const value = state.history.params.get(name);
      if (value) params.set(name, value);
    }
    return params;
  }

  function loadHistoryRoute(params) {
    const form = $('history-filters');
    const filters = new URLSearchParams();
    for (const name of FILTERS) {
      const value = (params.get(name) || '').trim();
      if (value) filters.set(name, value);
      const input = form.elements[name];
      if (!input) continue;
      if (name === 'since' || name === 'until') input.value = value ? toLocalInput(value) : '';
      else if (input.tagName === 'SELECT' && value && ![...input.options].some((o) => o.value === value)) {
        input.append(h('option', { value, text: value }));
        input.value = value;
      } else input.value = value;
    }
    const changed = filters.toString() !== filterParams().toString();
    state.history.params = filters;
    state.history.offset = Math.max(0, Number(params.get('offset')) || 0);
    if (changed) state.history.selected = null;
    const query = filters.toString();
    $('export-csv').href = `/api/history/export?format=csv${query ? `&${query}` : ''}`;
    $('export-json').href = `/api/history/export?format=json${query ? `&${query}` : ''}`;
    refreshHistory();
    const open = Number(params.get('open'));
    if (open) openDetail(open, false);
    else renderDetail();
  }

  function historyHash(filters, offset) {
    const params = new URLSearchParams(filters);
    if (offset) params.set('offset', String(offset));
    const query = params.toString();
    return `#/history${query ? `?${query}` : ''}`;
  }

  async function refreshHistory() {
    const params = filterParams();
    params.set('limit', String(PAGE_SIZE));
    params.set('offset', String(state.history.offset));
    const asked = params.toString();
    try {
      const page = await api('GET', `/api/history?${asked}`);
      if (state.route.view !== 'history') return;
      const now = filterParams();
      now.set('limit', String(PAGE_SIZE));
      now.set('offset', String(state.history.offset));
      if (now.toString() !== asked) return; // a newer query is on its way
      state.history.items = page.items || [];
      state.history.total = page.total || 0;
      state.historyMeta = page;
      state.historyAvailable = true;
      renderHistory();
    } catch (error) {
      state.history.items = [];
      state.history.total = 0;
      if (error.status === 404 || error.status === 503) state.historyAvailable = false;
      renderHistory(error.status === 404 ? 'The request history is not available on this coordinator.'
        : error.status === 503 ? `The request history is not available: ${error.message}` : `Could not load the history: ${error.message}`);
    }
  }

  function renderHistory(problem) {
    const { items, total, offset, selected } = state.history;
    const focusKey = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.focusKey : null;
    const rows = items.map((item) => h('tr', { class: selected === item.id ? 'selected' : null, data: { id: String(item.id) } },
      cell('Time', h('button', {
        type: 'button', class: 'row-open', title: `Open request ${item.request_id}`,
        'aria-label': `${fullTime(item.time)}, open request ${item.request_id}`,
        data: { focusKey: `req-${item.id}` }, onclick: () => openDetail(item.id), text: clock(item.time),
      })),
      cell('Endpoint', item.endpoint),
      cell('Model', item.model || '–'),
      cell('Node', item.node || '–'),
      cell('Key', item.api_key || '–'),
      cell('Status', statusCode(item)),
      cell('Duration', ms(item.duration_ms), 'num'),
      cell('TTFT', ms(item.ttft_ms), 'num'),
      cell('Tokens in/out', tokens(item), 'num')));
    if (!rows.length) {
      rows.push(h('tr', {}, h('td', { colspan: 9, class: 'empty-row', text: problem || 'No request matches these filters.' })));
    }
    patchChildren($('history-body'), rows, byId);
    if (focusKey) {
      const again = $('history-body').querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`);
      if (again) again.focus();
    }
    const dropped = state.historyMeta && state.historyMeta.dropped ? ` · ${num(state.historyMeta.dropped)} dropped` : '';
    $('history-count').textContent = problem ? '' : total
      ? `Requests ${num(offset + 1)}–${num(offset + items.length)} of ${num(total)}${dropped}` : `No requests${dropped}`;
    const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
    $('page-info').textContent = `Page ${Math.floor(offset / PAGE_SIZE) + 1} of ${pages}`;
    $('page-prev').disabled = offset <= 0;
    $('page-next').disabled = offset + PAGE_SIZE >= total;
  }

  function pretty(text) {
    if (!text) return '';
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch (_) { return text; }
  }

  async function openDetail(id, focus = true) {
    state.history.selected = id;
    if (!state.history.detail || state.history.detail.id !== id) {
      state.history.detail = null;
      renderDetail();
    }
    for (const tr of $('history-body').children) tr.classList.toggle('selected', tr.dataset.id === String(id));
    try {
      const detail = await api('GET', `/api/history/${encodeURIComponent(id)}`);
      if (state.history.selected !== id) return;
      state.history.detail = detail;
      renderDetail();
      if (focus) $('history-detail').focus();
    } catch (error) {
      toast(`Could not load the request: ${error.message}`, true);
    }
  }

  function renderDetail() {
    const detail = state.history.detail;
    const open = Boolean(detail && state.history.selected === detail.id && state.route.view === 'history');
    $('history-detail').hidden = !open;
    $('history-detail').parentElement.classList.toggle('with-detail', open);
    if (!open) return;
    $('detail-title').textContent = `Request ${detail.request_id}`;
    patchChildren($('detail-facts'), [
      ...fact('Time', fullTime(detail.time)),
      ...fact('Endpoint', detail.endpoint),
      ...fact('Model', detail.model || '–'),
      ...fact('Node', detail.node || '–'),
      ...fact('Nodes tried', (detail.nodes_tried || []).join(' → ') || '–'),
      ...fact('Status', statusCode(detail)),
      ...fact('Duration', ms(detail.duration_ms)),
      ...fact('Time to first token', ms(detail.ttft_ms)),
      ...fact('Tokens (prompt / completion)', tokens(detail)),
      ...fact('Client', detail.client_ip),
      ...fact('API key', detail.api_key || 'none'),
      ...fact('Error', detail.error),
    ]);
    $('req-trunc').textContent = detail.request_truncated ? `(cut at ${bytes(state.historyMeta && state.historyMeta.body_limit_bytes)} of ${bytes(detail.request_bytes)})` : '';
    $('resp-trunc').textContent = detail.response_bytes_dropped ? `(${bytes(detail.response_bytes_dropped)} more not stored)` : '';
    $('detail-request').textContent = pretty(detail.request_body) || '(empty)';
    $('detail-text').textContent = detail.response_text || '(none)';
    $('detail-response').textContent = pretty(detail.response_body) || '(empty)';
  }

  function updateNodeOptions() {
    const select = $('h-node');
    const current = select.value;
    const names = [...new Set(state.nodes.map((n) => n.machine_name))].sort();
    if (current && !names.includes(current)) names.push(current);
    const have = [...select.options].slice(1).map((o) => o.value).join('\n');
    if (have !== names.join('\n')) {
      select.replaceChildren(h('option', { value: '', text: 'Any' }), ...names.map((name) => h('option', { value: name, text: name })));
      select.value = current;
    }
    const models = [...new Set(state.nodes.flatMap((n) => (n.models || []).map((m) => m.name)))].sort();
    const list = $('model-list');
    if ([...list.options].map((o) => o.value).join('\n') !== models.join('\n')) {
      list.replaceChildren(...models.map((name) => h('option', { value: name })));
    }
  }

  // ---------- models view ----------
  // The matrix comes from the `nodes` events (what each node reports holding and
  // having loaded); the tasks from the `tasks` events and GET /api/tasks.
  const TASK_STATE_TEXT = { running: 'Running', succeeded: 'Succeeded', failed: 'Failed', cancelled: 'Cancelled', skipped: 'Skipped' };
  const KIND_TEXT = { pull: 'Pull', create: 'Create', copy: 'Copy', delete: 'Delete' };
  const KIND_DOING = { pull: 'pulling', create: 'creating', copy: 'copying', delete: 'deleting' };
  const shortDigest = (d) => (d ? d.replace(/^sha256:/, '').slice(0, 12) : '');
  /** Whether the coordinator can pull to, or delete on, the node now. */
  const manageable = (n) => n.api_kind !== 'openai' && n.status !== 'offline';
  const sortedNodes = () => [...state.nodes].sort((a, b) => nodeName(a).localeCompare(nodeName(b)));

  function taskState(status) {
    return h('span', { class: `status task-${status}`, text: TASK_STATE_TEXT[status] || status });
  }
  function perSecond(v) {
    return typeof v === 'number' && v > 0 ? `${bytes(v)}/s` : null;
  }
  function eta(v) {
    return typeof v === 'number' && v >= 0.5 ? `about ${duration(Math.ceil(v))} left` : null;
  }
  const percentOf = (done, total) => (total > 0 ? Math.min(100, Math.floor((100 * done) / total)) : null);

  /** The models of the fleet: canonical name → {name, cells: node id → {model, loaded}}. */
  function modelMatrix(nodes) {
    const rows = new Map();
    const row = (key) => {
      if (!rows.has(key)) rows.set(key, { key, cells: new Map() });
      return rows.get(key);
    };
    for (const n of nodes) {
      const loaded = new Map((n.loaded_models || []).map((m) => [canonicalModel(m.name), m]));
      for (const m of n.models || []) {
        const key = canonicalModel(m.name);
        row(key).cells.set(n.id, { model: m, loaded: loaded.get(key) || null });
      }
      for (const [key, m] of loaded) {
        const r = row(key);
        if (!r.cells.has(n.id)) r.cells.set(n.id, { model: { name: m.name, size: m.size }, loaded: m });
      }
    }
    // A model being pulled has its row at once, with the progress in its cells.
    for (const t of state.tasks.list) {
      if (t.state === 'running' && (t.kind === 'pull' || t.kind === 'create')) row(canonicalModel(t.model));
    }
    return [...rows.values()].sort((a, b) => a.key.localeCompare(b.key));
  }

  /** Running parts of tasks, by model and node: shown in the matrix while they run. */
  function runningParts() {
    const parts = new Map();
    for (const t of state.tasks.list) {
      if (t.state !== 'running') continue;
      for (const p of t.nodes || []) {
        if (p.state === 'running') parts.set(`${canonicalModel(t.model)}\n${p.node_id}`, { task: t, part: p });
      }
    }
    return parts;
  }

  function diskText(n) {
    const m = n.metrics;
    if (!m || typeof m.models_disk_free_bytes !== 'number') return null;
    return `${bytes(m.models_disk_free_bytes)} free${typeof m.models_disk_total_bytes === 'number' ? ` of ${bytes(m.models_disk_total_bytes)}` : ''}`;
  }

  function renderModelsView() {
    renderMatrix();
    renderPullNodes();
    renderTasks();
  }

  function renderMatrix() {
    const nodes = sortedNodes();
    const rows = modelMatrix(nodes);
    const running = runningParts();
    const focusKey = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.focusKey : null;
    patchChildren($('matrix-head'), [
      h('th', { scope: 'col', data: { id: 'model' }, text: 'Model' }),
      ...nodes.map((n) => h('th', { scope: 'col', class: 'node-col', data: { id: n.id } },
        h('a', { href: `#/nodes/${encodeURIComponent(n.id)}`, class: 'node-link', text: nodeName(n) }),
        h('span', { class: 'sub' }, kindText(n), n.agentless ? ' · agentless' : '', n.status !== 'online' ? ` · ${STATUS_TEXT[n.status] || n.status}` : ''),
        diskText(n) ? h('span', { class: 'sub', text: diskText(n) }) : null)),
      h('th', { scope: 'col', data: { id: 'actions' } }, h('span', { class: 'sr-only', text: 'Actions' })),
    ], byId);
    const body = rows.map((r) => {
      const digests = new Map();
      for (const [id, c] of r.cells) if (c.model.digest) digests.set(id, c.model.digest);
      const differ = new Set(digests.values()).size > 1;
      const holders = nodes.filter((n) => r.cells.has(n.id));
      const deletable = holders.filter(manageable);
      const inMemory = holders.filter((n) => r.cells.get(n.id).loaded).length;
      const head = h('th', { scope: 'row', data: { label: 'Model' } },
        h('span', { class: 'model-name', text: r.key }),
        h('span', { class: 'sub', text: `on ${holders.length} of ${nodes.length} node${nodes.length === 1 ? '' : 's'}${inMemory ? `, in memory on ${inMemory}` : ''}` }),
        differ ? h('span', {
          class: 'chip warn', title: 'Nodes hold different versions of this model: compare the digests in its cells, and pull it again where it is old.',
          text: 'digests differ',
        }) : null);
      const cells = nodes.map((n) => {
        const c = r.cells.get(n.id);
        const busy = running.get(`${r.key}\n${n.id}`);
        const label = nodeName(n);
        if (!c) {
          if (busy && busy.task.kind !== 'delete') {
            const pct = percentOf(busy.part.completed_bytes, busy.part.total_bytes);
            return cell(label, h('span', {}, h('span', { class: 'held busy', text: `${KIND_DOING[busy.task.kind] || busy.task.kind}${pct === null ? '…' : ` ${pct}%`}` })), 'm-cell');
          }
          return cell(label, h('span', {}, h('span', { class: 'absent', 'aria-hidden': 'true', text: '–' }), h('span', { class: 'sr-only', text: 'not there' })), 'm-cell');
        }
        const size = c.loaded && c.loaded.size_vram ? `${bytes(c.model.size || c.loaded.size)} · ${bytes(c.loaded.size_vram)} VRAM` : c.model.size ? bytes(c.model.size) : null;
        return cell(label, h('span', {},
          h('span', { class: `held${c.loaded ? ' loaded' : ''}`, title: c.model.digest ? `digest ${c.model.digest}` : null },
            c.loaded ? '● in memory' : 'on disk'),
          manageable(n) && !busy ? h('button', {
            type: 'button', class: 'btn-icon', title: `Delete from ${label}`, 'aria-label': `Delete ${r.key} from ${label}`,
            data: { focusKey: `del-${r.key}-${n.id}` }, onclick: () => deleteModel(r.key, n.id), text: '×',
          }) : null,
          size ? h('span', { class: 'sub', text: size }) : null,
          differ && c.model.digest ? h('code', { class: 'sub digest', text: shortDigest(c.model.digest) }) : null,
          busy ? h('span', { class: 'sub', text: `${KIND_DOING[busy.task.kind] || busy.task.kind}…` }) : null), 'm-cell');
      });
      const actions = cell('Actions', h('span', {}, deletable.length ? h('button', {
        type: 'button', class: 'btn danger small', 'aria-label': `Delete ${r.key} from every node`,
        data: { focusKey: `del-${r.key}` }, onclick: () => deleteModel(r.key, null), text: 'Delete…',
      }) : null));
      return h('tr', { data: { id: r.key, model: r.key } }, head, ...cells, actions);
    });
    if (!body.length) {
      body.push(h('tr', {}, h('td', {
        colspan: nodes.length + 2, class: 'empty-row',
        text: !state.loaded ? 'Loading…' : nodes.length ? 'No node reports a model yet. Pull one above.' : 'No node has registered yet.',
      })));
    }
    patchChildren($('matrix-body'), body, byId);
    if (focusKey) {
      const again = $('matrix-body').querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`);
      if (again && again !== document.activeElement) again.focus();
    }
    $('matrix-summary').textContent = !state.loaded ? 'Loading…'
      : `${rows.length} model${rows.length === 1 ? '' : 's'} on ${nodes.length} node${nodes.length === 1 ? '' : 's'}`;
  }

  /** The checkboxes of the pull form: kept in place (focus, checked) as nodes change. */
  function renderPullNodes() {
    const box = $('pull-nodes');
    const nodes = sortedNodes();
    const present = new Set(nodes.map((n) => n.id));
    for (const label of [...box.children]) if (!present.has(label.dataset.id)) label.remove();
    nodes.forEach((n, i) => {
      let label = box.querySelector(`label[data-id="${CSS.escape(n.id)}"]`);
      if (!label) {
        const input = h('input', { type: 'checkbox', name: 'node', value: n.id });
        input.addEventListener('change', () => {
          if (input.checked) $('p-target-chosen').checked = true;
        });
        label = h('label', { class: 'choice', data: { id: n.id } }, input, h('span', { class: 'node-choice' }), h('span', { class: 'sub' }));
      }
      if (box.children[i] !== label) box.insertBefore(label, box.children[i] || null);
      const input = label.querySelector('input');
      const why = n.api_kind === 'openai' ? 'OpenAI-style: its models are not managed here'
        : n.status === 'offline' ? 'offline' : n.status === 'draining' ? 'draining' : null;
      input.disabled = manageable(n) === false;
      if (input.disabled) input.checked = false;
      const name = nodeName(n);
      if (label.children[1].textContent !== name) label.children[1].textContent = name;
      const sub = [why, diskText(n)].filter(Boolean).join(' · ');
      if (label.children[2].textContent !== sub) label.children[2].textContent = sub;
    });
    if (!nodes.length && !box.querySelector('.empty')) box.append(h('span', { class: 'empty', text: 'No node yet.' }));
    else if (nodes.length) for (const el of box.querySelectorAll('.empty')) el.remove();
  }

  function openPull(open) {
    $('pull-card').hidden = !open;
    $('btn-pull-open').setAttribute('aria-expanded', String(open));
    if (open) $('p-model').focus();
    else $('btn-pull-open').focus();
  }

  async function startPull(event) {
    event.preventDefault();
    const status = $('pull-status');
    status.classList.remove('error');
    const model = $('p-model').value.trim();
    const problem = (text, focus) => {
      status.classList.add('error');
      status.textContent = text;
      focus.focus();
    };
    if (!model) { problem('Name the model to pull.', $('p-model')); return; }
    const body = { model };
    if ($('p-target-chosen').checked) {
      const chosen = [...$('pull-nodes').querySelectorAll('input:checked')].map((i) => i.value);
      if (!chosen.length) {
        problem('Choose at least one node, or every node with room.', $('pull-nodes').querySelector('input:not(:disabled)') || $('p-target-default'));
        return;
      }
      body.nodes = chosen;
    }
    $('btn-pull').disabled = true;
    status.textContent = 'Starting…';
    try {
      const task = await api('POST', '/api/models/pull', body);
      const started = (task.nodes || []).filter((p) => p.state !== 'skipped').length;
      status.textContent = `Pulling ${task.model} to ${started} node${started === 1 ? '' : 's'}: progress below.`;
      adoptTask(task);
    } catch (error) {
      status.classList.add('error');
      status.textContent = `Not started: ${error.message}`;
    } finally {
      $('btn-pull').disabled = false;
    }
  }

  /** Deletes `model` from every node that holds it, or from node `onlyId`, after asking. */
  async function deleteModel(model, onlyId) {
    const holds = (n) => (n.models || []).some((m) => canonicalModel(m.name) === model);
    const holders = sortedNodes().filter(holds);
    const targets = onlyId ? holders.filter((n) => n.id === onlyId) : holders;
    if (!targets.length) return;
    const names = targets.map(nodeName);
    const kept = holders.length - targets.length;
    const offline = targets.filter((n) => n.status === 'offline').map(nodeName);
    const foreign = targets.filter((n) => n.api_kind === 'openai').map(nodeName);
    const keeps = (list, why) => (list.length ? ` ${list.join(', ')} ${list.length === 1 ? 'is' : 'are'} ${why} and keep${list.length === 1 ? 's' : ''} it.` : '');
    const ok = await confirmDialog(onlyId ? `Delete ${model} from ${names[0]}?` : `Delete ${model} from every node?`,
      `${model} is removed from the disk of ${names.join(', ')}.${keeps(offline, 'offline')}${keeps(foreign, 'OpenAI-style (its models are not managed here)')} ${kept
        ? 'Requests for it go to the nodes that still hold it.'
        : 'Requests for it are answered 404 once no node holds it, until it is pulled again.'}`, 'Delete model');
    if (!ok) return;
    try {
      const body = { model };
      if (onlyId) body.nodes = [onlyId];
      const task = await api('POST', '/api/models/delete', body);
      toast(`Deleting ${model} from ${names.join(', ')}.`);
      adoptTask(task);
    } catch (error) {
      toast(`Could not delete: ${error.message}`, true);
    }
  }

  async function cancelTask(id) {
    try {
      const task = await api('DELETE', `/api/tasks/${encodeURIComponent(id)}`);
      if (task && task.id) mergeTask(task);
    } catch (error) {
      toast(`Could not cancel: ${error.message}`, true);
    }
  }

  /** A task this page started: shown open, and announced when it ends. */
  function adoptTask(task) {
    state.tasks.mine.add(task.id);
    mergeTask(task);
  }

  function mergeTask(task) {
    const list = state.tasks.list.filter((t) => t.id !== task.id);
    const old = state.tasks.list.find((t) => t.id === task.id);
    // The stream may have sent a newer view already: keep whichever saw more.
    if (old && old.state !== 'running' && task.state === 'running') return;
    state.tasks.list = [task, ...list].sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at));
    onTasksChanged();
  }

  function onTasks(tasks) {
    state.tasks.list = tasks;
    state.tasks.loaded = true;
    state.tasks.received = Date.now();
    onTasksChanged();
  }

  function onTasksChanged() {
    announceEnded();
    if (state.route.view === 'models') {
      renderTasks();
      renderMatrix();
    }
  }

  /** Says once, in the live region, when a task of this page ended. */
  function announceEnded() {
    for (const t of state.tasks.list) {
      if (!state.tasks.mine.has(t.id) || t.state === 'running' || state.tasks.announced.has(t.id)) continue;
      state.tasks.announced.add(t.id);
      const done = (t.nodes || []).filter((p) => p.state === 'succeeded').length;
      $('tasks-announce').textContent = `${KIND_TEXT[t.kind] || t.kind} of ${t.model}: ${TASK_STATE_TEXT[t.state] || t.state}, ${done} of ${(t.nodes || []).length} nodes done.`;
    }
  }

  async function refreshTasks() {
    try {
      const answer = await api('GET', '/api/tasks');
      // A stream event that came meanwhile is newer than this answer.
      if (state.tasks.loaded && state.tasks.received > Date.now() - 1000) return;
      onTasks((answer && answer.tasks) || []);
    } catch (_) { /* the list stays as the stream last sent it */ }
  }

  function taskSummary(t) {
    const parts = t.nodes || [];
    const count = (s) => parts.filter((p) => p.state === s).length;
    const bits = [`${count('succeeded')} of ${parts.length} node${parts.length === 1 ? '' : 's'} done`];
    if (count('failed')) bits.push(`${count('failed')} failed`);
    if (count('skipped')) bits.push(`${count('skipped')} skipped`);
    if (count('cancelled')) bits.push(`${count('cancelled')} cancelled`);
    let elapsed = t.elapsed_secs;
    if (t.state === 'running' && state.tasks.received) elapsed += (Date.now() - state.tasks.received) / 1000;
    bits.push(duration(Math.max(1, Math.round(elapsed))));
    if (t.state === 'running' && t.total_bytes > 0) {
      bits.push(`${percentOf(t.completed_bytes, t.total_bytes)}% of ${bytes(t.total_bytes)}`);
      const speed = perSecond(t.bytes_per_sec);
      if (speed) bits.push(speed);
      const left = eta(t.eta_secs);
      if (left) bits.push(left);
    }
    return bits.join(' · ');
  }

  function partRow(t, p, i) {
    const nameId = `tn-${t.id}-${i}`;
    const pct = p.state === 'succeeded' && t.kind !== 'delete' ? 100 : percentOf(p.completed_bytes, p.total_bytes);
    const showBar = (t.kind === 'pull' || t.kind === 'create') && p.state !== 'skipped';
    const details = [];
    if (p.total_bytes > 0) details.push(`${bytes(p.completed_bytes)} of ${bytes(p.total_bytes)}`);
    if (p.state === 'running') {
      const speed = perSecond(p.bytes_per_sec);
      if (speed) details.push(speed);
      const left = eta(p.eta_secs);
      if (left) details.push(left);
    }
    if (p.status && !p.error) details.push(p.status);
    return h('li', { class: `task-node part-${p.state}`, data: { id: p.node_id } },
      h('span', { class: 'tn-name', id: nameId, text: p.name }),
      taskState(p.state),
      showBar ? h('progress', {
        max: '100', value: pct === null ? null : String(pct), 'aria-labelledby': nameId,
        'aria-valuetext': pct === null ? 'starting' : `${pct}%`,
      }, pct === null ? '' : `${pct}%`) : h('span', { class: 'tn-nobar', 'aria-hidden': 'true' }),
      h('span', { class: 'tn-pct', 'aria-hidden': 'true', text: showBar && pct !== null ? `${pct}%` : '' }),
      h('span', { class: 'tn-detail', text: details.join(' · ') }),
      p.error ? h('span', { class: 'tn-error', text: p.error }) : null);
  }

  function renderTasks() {
    const tasks = state.tasks.list;
    const focusKey = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.focusKey : null;
    const items = tasks.map((t) => {
      const open = state.tasks.expanded.has(t.id) ? state.tasks.expanded.get(t.id)
        : t.state === 'running' || t.state === 'failed' || state.tasks.mine.has(t.id);
      const listId = `task-nodes-${t.id}`;
      const what = t.kind === 'copy' && t.destination ? `${t.model} → ${t.destination}` : t.model;
      const title = `${KIND_TEXT[t.kind] || t.kind} ${what}`;
      return h('li', { class: `task task-${t.state}`, data: { id: t.id, state: t.state, kind: t.kind, model: t.model } },
        h('div', { class: 'task-head' },
          h('span', { class: 'task-title' }, h('strong', { text: KIND_TEXT[t.kind] || t.kind }), ` ${what}`),
          taskState(t.state),
          h('span', { class: 'task-sum', text: taskSummary(t) }),
          h('time', { class: 'sub', datetime: t.created_at, title: fullTime(t.created_at), text: `started ${clock(t.created_at)}` })),
        h('div', { class: 'task-actions' },
          h('button', {
            type: 'button', class: 'btn small', 'aria-expanded': String(open), 'aria-controls': listId,
            'aria-label': `${open ? 'Hide' : 'Show'} nodes of ${title}`, data: { focusKey: `toggle-${t.id}` },
            onclick: () => { state.tasks.expanded.set(t.id, !open); renderTasks(); }, text: open ? 'Hide nodes' : 'Show nodes',
          }),
          t.state === 'running' ? h('button', {
            type: 'button', class: 'btn small', 'aria-label': `Cancel ${title}`, data: { focusKey: `cancel-${t.id}` },
            onclick: () => cancelTask(t.id), text: 'Cancel',
          }) : null),
        h('ul', { class: 'task-nodes', id: listId, hidden: !open }, (t.nodes || []).map((p, i) => partRow(t, p, i))));
    });
    patchChildren($('task-list'), items, byId);
    if (focusKey) {
      const again = $('task-list').querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`);
      if (again && again !== document.activeElement) again.focus();
    }
    $('tasks-empty').hidden = tasks.length > 0;
    $('tasks-empty').textContent = state.tasks.loaded ? 'No task in the last hour.' : 'Loading…';
  }

  // ---------- API keys view ----------
  const dateTime = (iso) => {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? '–' : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
  };
  const limitText = (v) => (v ? num(v) : 'no limit');

  async function refreshKeys() {
    try {
      state.keys = await api('GET', '/api/keys');
      renderKeys();
    } catch (error) {
      state.keys = [];
      renderKeys(`Could not load the keys: ${error.message}`);
    }
  }

  function renderKeys(problem) {
    const auth = state.auth;
    $('keys-policy').textContent = !auth ? ''
      : auth.require_api_key ? 'This coordinator requires a key on every inference request.'
        : 'Keys are optional here: requests without a valid one are served too (start the coordinator with --require-api-key to require them). Requests with a key are named in the history and held to its limits.';
    const rows = (state.keys || []).map((key) => h('tr', { data: { id: key.name } },
      cell('Name', key.name),
      cell('Starts with', h('code', { text: `${key.prefix}…` })),
      cell('Created', h('time', { datetime: key.created_at, text: dateTime(key.created_at) })),
      cell('Requests per minute', limitText(key.requests_per_minute), 'num'),
      cell('Concurrent', limitText(key.max_concurrent), 'num'),
      cell('Actions', h('button', {
        type: 'button', class: 'btn danger', 'aria-label': `Revoke ${key.name}`, text: 'Revoke…',
        onclick: () => revokeKey(key.name),
      }))));
    if (!rows.length) {
      rows.push(h('tr', {}, h('td', { colspan: 6, class: 'empty-row', text: problem || 'No key yet. Create one above and give it to a client.' })));
    }
    patchChildren($('keys-body'), rows, byId);
  }

  async function createKey(event) {
    event.preventDefault();
    const status = $('key-status');
    status.classList.remove('error');
    const name = $('k-name').value.trim();
    const body = { name };
    for (const [id, field] of [['k-rpm', 'requests_per_minute'], ['k-conc', 'max_concurrent']]) {
      const raw = $(id).value.trim();
      if (!raw) continue;
      const value = Number(raw);
      if (!Number.isInteger(value) || value < 1) {
        status.classList.add('error');
        status.textContent = 'Limits are whole numbers of at least 1, or empty for no limit.';
        $(id).focus();
        return;
      }
      body[field] = value;
    }
    if (!name) {
      status.classList.add('error');
      status.textContent = 'Give the key a name.';
      $('k-name').focus();
      return;
    }
    $('btn-create-key').disabled = true;
    status.textContent = 'Creating…';
    try {
      const created = await api('POST', '/api/keys', body);
      status.textContent = `Key ${created.name} created.`;
      $('key-form').reset();
      $('new-key-value').textContent = created.key;
      $('new-key').hidden = false;
      $('new-key-value').focus();
      await refreshKeys();
    } catch (error) {
      status.classList.add('error');
      status.textContent = `Not created: ${error.message}`;
    } finally {
      $('btn-create-key').disabled = false;
    }
  }

  async function copyKey() {
    const value = $('new-key-value').textContent;
    try {
      await navigator.clipboard.writeText(value);
      toast('The key is on the clipboard.');
    } catch (_) {
      // No clipboard access (plain HTTP on another host): select it for Ctrl+C.
      const range = document.createRange();
      range.selectNodeContents($('new-key-value'));
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      toast('Press Ctrl+C (⌘C) to copy the selected key.');
    }
  }

  async function revokeKey(name) {
    const ok = await confirmDialog(`Revoke ${name}?`,
      `Clients that use the key ${name} are refused from now on. The history keeps its name on past requests.`, 'Revoke key');
    if (!ok) return;
    try {
      await api('DELETE', `/api/keys/${encodeURIComponent(name)}`);
      toast(`${name} was revoked.`);
    } catch (error) {
      toast(`Could not revoke: ${error.message}`, true);
    }
    await refreshKeys();
  }

  // ---------- session ----------
  async function loadAuth() {
    try {
      state.auth = await api('GET', '/api/auth/status');
    } catch (_) {
      return;
    }
    $('btn-logout').hidden = state.auth.admin !== 'auth';
    if (state.route.view === 'keys') renderKeys();
  }

  async function logout() {
    try {
      await api('POST', '/api/auth/logout');
    } catch (_) { /* the session is gone either way */ }
    window.location.assign('/login');
  }

  // ---------- wiring ----------
  function wire() {
    window.addEventListener('hashchange', () => onRoute(false));
    $('key-form').addEventListener('submit', createKey);
    $('btn-copy-key').addEventListener('click', copyKey);
    $('btn-hide-key').addEventListener('click', () => {
      $('new-key').hidden = true;
      $('new-key-value').textContent = '';
      $('k-name').focus();
    });
    $('btn-logout').addEventListener('click', logout);
    $('btn-pull-open').addEventListener('click', () => openPull($('pull-card').hidden));
    $('btn-pull-close').addEventListener('click', () => openPull(false));
    $('pull-form').addEventListener('submit', startPull);
    $('pull-form').addEventListener('input', () => { $('pull-status').textContent = ''; $('pull-status').classList.remove('error'); });
    $('p-target-default').addEventListener('change', () => {
      for (const input of $('pull-nodes').querySelectorAll('input')) input.checked = false;
    });
    $('node-search').addEventListener('input', (e) => { state.filter.q = e.target.value; renderNodesTable(); });
    $('node-status').addEventListener('change', (e) => { state.filter.status = e.target.value; renderNodesTable(); });
    $('node-filters').addEventListener('submit', (e) => e.preventDefault());
    $('window').addEventListener('change', (e) => {
      state.window = Number(e.target.value) || 60;
      try { localStorage.setItem('llm-router.window', String(state.window)); } catch (_) { /* storage may be off */ }
      state.timeseries = null;
      renderFleet();
      refreshFleetData();
    });
    for (const th of document.querySelectorAll('#nodes-table th[data-sort]')) {
      th.querySelector('button').addEventListener('click', () => {
        const key = th.dataset.sort;
        state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 };
        renderNodesTable();
      });
    }
    $('node-sort').addEventListener('change', (e) => { state.sort = { key: e.target.value, dir: 1 }; renderNodesTable(); });
    $('node-sort-dir').addEventListener('click', () => { state.sort.dir = -state.sort.dir; renderNodesTable(); });

    const form = $('node-form');
    form.addEventListener('input', () => { state.form.dirty = true; $('form-status').textContent = ''; });
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const id = state.route.id;
      const tags = $('f-tags').value.split(',').map((t) => t.trim()).filter(Boolean);
      const body = { display_name: $('f-display-name').value.trim(), tags, notes: $('f-notes').value };
      const status = $('form-status');
      status.classList.remove('error');
      status.textContent = 'Saving…';
      $('btn-save').disabled = true;
      try {
        const node = await api('PATCH', `/api/agents/${encodeURIComponent(id)}`, body);
        state.form.dirty = false;
        if (node && node.id) {
          state.byId.set(node.id, node);
          state.nodes = state.nodes.map((n) => (n.id === node.id ? node : n));
          renderNode();
        }
        status.textContent = 'Saved.';
      } catch (error) {
        status.classList.add('error');
        status.textContent = `Not saved: ${error.message}`;
      } finally {
        $('btn-save').disabled = false;
      }
    });

    $('btn-drain').addEventListener('click', async () => {
      const n = state.byId.get(state.route.id);
      if (!n) return;
      const draining = !n.draining;
      if (await patchNode(n.id, { draining }, draining ? `${nodeName(n)} is draining: it takes no new requests.` : `${nodeName(n)} takes requests again.`)) {
        n.draining = draining;
        $('btn-drain').setAttribute('aria-pressed', String(draining));
      }
    });
    $('btn-disconnect').addEventListener('click', async () => {
      const n = state.byId.get(state.route.id);
      if (!n) return;
      try {
        await api('POST', `/api/agents/${encodeURIComponent(n.id)}/disconnect`);
        toast(`${nodeName(n)} was disconnected. A live agent brings it back with its next heartbeat; drain it to keep it out.`);
      } catch (error) {
        toast(`Could not disconnect: ${error.message}`, true);
      }
    });
    $('btn-delete').addEventListener('click', async () => {
      const n = state.byId.get(state.route.id);
      if (!n) return;
      const ok = await confirmDialog(`Delete ${nodeName(n)}?`,
        `The coordinator forgets ${n.machine_name} (${n.ip_address}), with its name, tags and notes. A running agent registers it again as a new node.`, 'Delete node');
      if (!ok) return;
      try {
        await api('DELETE', `/api/agents/${encodeURIComponent(n.id)}`);
        toast(`${nodeName(n)} was deleted.`);
        location.hash = '#/';
      } catch (error) {
        toast(`Could not delete: ${error.message}`, true);
      }
    });

    const filters = $('history-filters');
    filters.addEventListener('submit', (event) => {
      event.preventDefault();
      const params = new URLSearchParams();
      for (const name of FILTERS) {
        let value = (filters.elements[name].value || '').trim();
        if (name === 'since' || name === 'until') value = fromLocalInput(value);
        if (value) params.set(name, value);
      }
      const hash = historyHash(params, 0);
      if (location.hash === hash) loadHistoryRoute(params);
      else location.hash = hash;
    });
    filters.addEventListener('reset', () => {
      setTimeout(() => {
        if (location.hash === '#/history') loadHistoryRoute(new URLSearchParams());
        else location.hash = '#/history';
      }, 0);
    });
    $('page-prev').addEventListener('click', () => { location.hash = historyHash(filterParams(), Math.max(0, state.history.offset - PAGE_SIZE)); });
    $('page-next').addEventListener('click', () => { location.hash = historyHash(filterParams(), state.history.offset + PAGE_SIZE); });
    $('detail-close').addEventListener('click', () => {
      const id = state.history.selected;
      state.history.selected = null;
      renderDetail();
      for (const tr of $('history-body').children) tr.classList.remove('selected');
      const button = $('history-body').querySelector(`[data-focus-key="req-${id}"]`);
      if (button) button.focus();
    });

    // Charts are drawn for their box: draw again when a box changes size.
    const sizes = new Map();
    const resized = new ResizeObserver((entries) => {
      let fleet = false;
      let node = false;
      for (const entry of entries) {
        const width = Math.round(entry.contentRect.width);
        if (!width || sizes.get(entry.target) === width) continue;
        const first = !sizes.has(entry.target);
        sizes.set(entry.target, width);
        if (first) continue;
        if (entry.target.closest('#view-fleet')) fleet = true; else node = true;
      }
      if (fleet && state.route.view === 'fleet') renderFleetCharts();
      const n = state.byId.get(state.route.id);
      if (node && state.route.view === 'node' && n) renderNodeCharts(n);
    });
    for (const chart of document.querySelectorAll('.chart')) resized.observe(chart);

    // Periodic work: relative times keep moving even when no event arrives, and the
    // history-based figures are fetched again.
    setInterval(() => {
      if (document.hidden) return;
      if (state.loaded && Date.now() - state.lastEvent > 4000) renderCurrent({ fromStream: true });
    }, 5000);
    setInterval(() => { if (!document.hidden && state.route.view === 'fleet') refreshFleetData(); }, FLEET_REFRESH_MS);
    // Running tasks: their elapsed time moves on between progress events.
    setInterval(() => {
      if (!document.hidden && state.route.view === 'models' && state.tasks.list.some((t) => t.state === 'running')) renderTasks();
    }, 1000);
    setInterval(() => {
      if (document.hidden) return;
      if (state.route.view === 'history') refreshHistory();
      else if (state.route.view === 'node') refreshRecent();
    }, HISTORY_REFRESH_MS);
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden && state.route.view === 'fleet') refreshFleetData();
    });
  }

  wire();
  onRoute(true);
  connect();
  loadAuth();
})();
