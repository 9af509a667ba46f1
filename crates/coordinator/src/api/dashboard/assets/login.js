// The login and setup page: posts the password as JSON and goes to the dashboard.
(() => {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const showError = (message) => { $('login-error').textContent = message || ''; };

  async function post(path, body) {
    const res = await fetch(path, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify(body),
    });
    if (res.ok) return null;
    let message = `${res.status} ${res.statusText}`;
    try {
      const json = await res.json();
      if (json && json.error) message = json.error;
    } catch (_) { /* not JSON */ }
    return message;
  }

  function note(text) {
    const el = $('login-note');
    el.textContent = text;
    el.hidden = !text;
  }

  async function start() {
    const token = new URLSearchParams(window.location.search).get('token');
    let status = { admin: 'auth', logged_in: false, password_set: true };
    try {
      const res = await fetch('/api/auth/status', { headers: { accept: 'application/json' } });
      if (res.ok) status = await res.json();
    } catch (_) { /* offline: show the form anyway */ }
    if (status.logged_in) {
      window.location.replace('/dashboard');
      return;
    }
    if (token && !status.password_set) {
      $('setup-form').hidden = false;
      $('setup-password').focus();
    } else {
      $('login-form').hidden = false;
      if (!status.password_set) {
        note('No admin password is set yet. Open the setup link the coordinator printed when it started, or run `llm-router admin set-password` on its machine.');
      }
    }

    $('login-form').addEventListener('submit', async (event) => {
      event.preventDefault();
      showError('');
      $('login-submit').disabled = true;
      const error = await post('/api/auth/login', { password: $('login-password').value });
      $('login-submit').disabled = false;
      if (error) {
        showError(error);
        $('login-password').select();
      } else {
        window.location.replace('/dashboard');
      }
    });

    $('setup-form').addEventListener('submit', async (event) => {
      event.preventDefault();
      showError('');
      if ($('setup-password').value !== $('setup-repeat').value) {
        showError('The two passwords differ.');
        return;
      }
      $('setup-submit').disabled = true;
      const error = await post('/api/auth/setup', { token, password: $('setup-password').value });
      $('setup-submit').disabled = false;
      if (error) showError(error);
      else window.location.replace('/dashboard');
    });
  }

  start();
})();
