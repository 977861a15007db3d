// app.js - the jobwire page: sign in, start a job, watch my jobs live, one job in detail,
// answer its OTP prompts. Talks HTTP (docs/api.md) for lists and actions and the
// jobwire.v1 WebSocket (through jobwire-client.js) for everything live.
// No innerHTML with data, no inline styles (the server's CSP forbids them).

import { JobwireClient } from './jobwire-client.js';

const TOKEN_KEY = 'jobwire.token';
const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
const VALIDATION_STEPS = ['gyftr_login', 'amazon_login', 'availability_check'];
const TX_STEPS = ['generate_payment_link', 'process_payment', 'wait_for_vouchers', 'redeem_amazon_vouchers'];
const STEP_LABEL = {
  gyftr_login: 'Gyftr login',
  amazon_login: 'Amazon login',
  availability_check: 'Voucher availability',
  generate_payment_link: 'Payment link',
  process_payment: 'Payment',
  wait_for_vouchers: 'Vouchers',
  redeem_amazon_vouchers: 'Redeem on Amazon',
};
const STEP_STATUS = {
  not_started: 'Not started',
  pending: 'Pending',
  in_progress: 'Running',
  waiting_otp: 'Waiting for code',
  retrying: 'Retrying',
  completed: 'Done',
  failed: 'Failed',
  cancelled: 'Cancelled',
};
const JOB_STATUS = {
  initiated: 'Starting',
  validating: 'Validating',
  processing: 'Processing',
  completed: 'Completed',
  failed: 'Failed',
  cancelled: 'Cancelled',
};
const PHASE = { validation: 'Validation', payment_processing: 'Payments', complete: 'Complete' };
const OTP_LABEL = {
  gyftr_login: 'Gyftr login code',
  amazon_login: 'Amazon login code',
  payment: 'Payment code',
};

// --- small DOM helpers -------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// ISO timestamps with up to 6 fractional digits and Z or +00:00 (docs/api.md).
function ms(ts) {
  if (!ts) return null;
  const m = /(\.\d{3})(\d+)/.exec(String(ts));
  const t = Date.parse(String(ts).replace(/(\.\d{3})\d+/, '$1'));
  if (Number.isNaN(t)) return null;
  // Keep the microseconds as a fraction, so events of the same millisecond stay in order.
  return m ? t + Number(`0.${m[2]}`) : t;
}

const fmtInt = (n) => Number(n).toLocaleString('en');

function fmtDuration(msec) {
  if (msec < 0) msec = 0;
  if (msec < 10_000) return `${(msec / 1000).toFixed(1)} s`;
  const s = Math.round(msec / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function fmtAge(msec) {
  const s = Math.max(0, Math.round(msec / 1000));
  if (s < 5) return 'just now';
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return `${hrs} h ago`;
  return `${Math.floor(hrs / 24)} days ago`;
}

function fmtCountdown(msec) {
  const s = Math.max(0, Math.ceil(msec / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

const fmtTime = (t) => new Date(t).toLocaleTimeString('en-GB', { hour12: false });
const shortId = (id) => String(id).slice(0, 8);

function announce(text) {
  const el = $('announce');
  el.textContent = '';
  // A fresh text node after a tick makes screen readers announce repeated texts too.
  setTimeout(() => {
    el.textContent = text;
  }, 50);
}

// --- the token ---------------------------------------------------------------------

// The sign-in link is http://HOST:PORT/#token=<jwt>: keep the token for this tab only and
// take it out of the address bar (and so out of history and bookmarks) at once.
function takeTokenFromUrl() {
  const m = /^#(?:.*&)?token=([^&]+)/.exec(location.hash);
  if (!m) return;
  try {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
  } catch {
    /* storage refused: the token is still used for this page */
    memoryToken = decodeURIComponent(m[1]);
  }
  history.replaceState(null, '', location.pathname + location.search);
}

let memoryToken = null;
const getToken = () => {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || memoryToken;
  } catch {
    return memoryToken;
  }
};
function setToken(t) {
  memoryToken = t;
  try {
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    /* memory only */
  }
}

// The token's claims, for display only (the server verifies it).
function claims(token) {
  try {
    const p = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(p + '='.repeat((4 - (p.length % 4)) % 4)));
  } catch {
    return {};
  }
}

// --- HTTP --------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${getToken()}` };
  const init = { method, headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, init);
  } catch {
    throw new ApiError(0, 'network', 'The server cannot be reached right now. Try again in a moment.');
  }
  let json = null;
  try {
    json = await r.json();
  } catch {
    /* not JSON */
  }
  if (r.status === 401) {
    signOut('Your sign-in was refused or has expired. Sign in again.');
    throw new ApiError(401, 'unauthorized', 'Not signed in.');
  }
  if (!r.ok) {
    const e = (json && json.error) || {};
    throw new ApiError(r.status, e.code || `http_${r.status}`, e.message || `The server answered ${r.status}.`);
  }
  return json;
}

// --- state -------------------------------------------------------------------------

let client = null;
let route = { view: 'home' };
const listed = new Map(); // job id -> job row (the list, newest first by created_at)
let nextBefore = null;
let detailId = null;
const otpForms = new Map(); // otp request id -> {root, input, msg, ...}
const seenOtps = new Set(); // otp request ids already announced
let backInSyncTimer = null;

// --- connection status -------------------------------------------------------------

function showConnection(state, text) {
  const el = $('conn');
  el.dataset.state = state;
  el.textContent = text;
}

function onConnection(e) {
  const d = e.detail;
  clearTimeout(backInSyncTimer);
  switch (d.state) {
    case 'connecting':
      showConnection('connecting', 'Connecting…');
      break;
    case 'reconnecting':
      showConnection('reconnecting', d.delayMs !== undefined
        ? `Reconnecting… (connection lost; next try in ${Math.max(1, Math.round(d.delayMs / 1000))} s)`
        : 'Reconnecting…');
      break;
    case 'resyncing':
      showConnection('resyncing', 'Reconnecting… (catching up)');
      break;
    case 'live':
      if (d.resumed) {
        showConnection('in-sync', 'Live: back in sync');
        backInSyncTimer = setTimeout(() => showConnection('live', 'Live'), 8000);
        loadJobs(); // jobs created elsewhere meanwhile
      } else {
        showConnection('live', 'Live');
      }
      break;
    case 'closed':
      showConnection('closed', 'Disconnected');
      if (d.code === 4401) signOut('Your sign-in was refused or has expired. Sign in again.');
      break;
    default:
      showConnection(d.state, d.state);
  }
}

// --- sign in / out -----------------------------------------------------------------

function showSignIn(message) {
  $('app').hidden = true;
  $('who').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = message || '';
  showConnection('closed', 'Not signed in');
}

function signOut(message) {
  setToken(null);
  if (client) {
    client.close();
    client = null;
  }
  listed.clear();
  $('job-list').replaceChildren();
  showSignIn(message);
}

function start() {
  const token = getToken();
  if (!token) {
    showSignIn('');
    return;
  }
  $('signin').hidden = true;
  $('app').hidden = false;
  $('who').hidden = false;
  const c = claims(token);
  $('who-name').textContent = c.sub ? `Signed in as user ${shortId(c.sub)}` : 'Signed in';
  client = new JobwireClient({ token });
  client.addEventListener('connection', onConnection);
  client.addEventListener('job', onJob);
  client.addEventListener('auth', () => signOut('Your sign-in was refused or has expired. Sign in again.'));
  client.connect();
  loadJobs();
  onRoute();
}

$('signin-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const t = $('signin-token').value.trim();
  if (!/^[A-Za-z0-9._~+/=-]+$/.test(t)) {
    $('signin-error').textContent = 'Paste the whole token: it is one long line of letters, digits, dots and dashes.';
    $('signin-token').focus();
    return;
  }
  setToken(t);
  $('signin-token').value = '';
  start();
});

$('signout').addEventListener('click', () => signOut('You signed out.'));

// --- the list ----------------------------------------------------------------------

async function loadJobs({ more = false } = {}) {
  if (!client) return;
  const status = $('jobs-status');
  try {
    const q = more && nextBefore ? `?limit=20&before=${encodeURIComponent(nextBefore)}` : '?limit=20';
    const r = await api('GET', `/api/jobs${q}`);
    if (!more) {
      // Forget jobs that fell off the first page (unless open in the detail view).
      const keep = new Set(r.jobs.map((j) => j.id));
      for (const id of listed.keys()) {
        if (!keep.has(id)) {
          listed.delete(id);
          if (id !== detailId && client) client.unsubscribe(id);
        }
      }
    }
    for (const j of r.jobs) {
      const known = client && client.job(j.id);
      listed.set(j.id, known && known.job ? known.job : j);
      if (client) client.subscribe(j.id);
    }
    nextBefore = r.next_before;
    $('jobs-more').hidden = !nextBefore;
    status.textContent = listed.size ? '' : 'No jobs yet. Start one above.';
    renderList();
  } catch (err) {
    if (err.status !== 401) status.textContent = `Could not load your jobs: ${err.message}`;
  }
}

$('jobs-refresh').addEventListener('click', () => loadJobs());
$('jobs-more').addEventListener('click', () => loadJobs({ more: true }));

function renderList() {
  const rows = [...listed.values()].sort((a, b) => (ms(b.created_at) ?? 0) - (ms(a.created_at) ?? 0));
  $('job-list').replaceChildren(...rows.map((j) => listItem(j)));
}

function listItem(j) {
  const li = h('li', { class: 'job-item', 'data-job-id': j.id, 'data-status': j.status });
  const current = detailId === j.id;
  li.append(
    h('a', { href: `#/job/${j.id}`, 'aria-current': current ? 'page' : null },
      h('span', { class: 'job-line' },
        h('span', { class: 'job-name' }, `Job ${shortId(j.id)}`),
        h('span', { class: `badge s-${j.status}` }, JOB_STATUS[j.status] || j.status)),
      h('span', { class: 'job-line muted' },
        `${fmtInt(j.transaction_amount)} × ${j.transaction_count} · ${j.completed_transactions} of ${j.transaction_count} done · `,
        h('span', { 'data-age': j.created_at }, fmtAge(Date.now() - ms(j.created_at)))),
      h('progress', { max: '100', value: String(j.progress_percentage ?? 0), 'aria-label': `Progress of job ${shortId(j.id)}` }),
      h('span', { class: 'sr-only' }, ` ${j.progress_percentage ?? 0} percent`)),
  );
  return li;
}

// --- starting a job ----------------------------------------------------------------

function checkInt(input, min, max, what) {
  const errEl = $(`${input.id}-error`);
  const raw = input.value.trim();
  let msg = '';
  if (!/^\d+$/.test(raw)) msg = `${what} must be a whole number.`;
  else if (Number(raw) < min || Number(raw) > max) msg = `${what} must be from ${fmtInt(min)} to ${fmtInt(max)}.`;
  errEl.textContent = msg;
  input.setAttribute('aria-invalid', msg ? 'true' : 'false');
  return msg ? null : Number(raw);
}

$('start-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const amountEl = $('start-amount');
  const countEl = $('start-count');
  const amount = checkInt(amountEl, 1, 1_000_000, 'The amount');
  const count = checkInt(countEl, 1, 50, 'The number of transactions');
  $('start-error').textContent = '';
  if (amount === null) return amountEl.focus();
  if (count === null) return countEl.focus();
  const btn = $('start-submit');
  btn.disabled = true;
  btn.textContent = 'Starting…';
  try {
    const r = await api('POST', '/api/jobs', { transaction_amount: amount, transaction_count: count });
    listed.set(r.job_id, r.job);
    client.subscribe(r.job_id);
    renderList();
    $('jobs-status').textContent = '';
    location.hash = `#/job/${r.job_id}`;
  } catch (err) {
    if (err.status !== 401) $('start-error').textContent = `The job was not started: ${err.message}`;
  } finally {
    btn.disabled = false;
    btn.textContent = 'Start job';
  }
});

// --- routing -----------------------------------------------------------------------

function parseRoute() {
  const m = /^#\/job\/([0-9A-Za-z-]{1,64})$/.exec(location.hash);
  return m ? { view: 'job', id: m[1].toLowerCase() } : { view: 'home' };
}

function onRoute() {
  if (!client) return;
  const prev = detailId;
  route = parseRoute();
  if (route.view !== 'job') {
    detailId = null;
    $('detail').hidden = true;
    if (prev && !listed.has(prev)) client.unsubscribe(prev);
    renderList();
    return;
  }
  if (prev && prev !== route.id && !listed.has(prev)) client.unsubscribe(prev);
  detailId = route.id;
  otpForms.clear();
  $('d-otps').replaceChildren();
  $('d-action-msg').textContent = '';
  $('detail').hidden = false;
  const js = client.subscribe(detailId);
  renderDetail(js);
  renderList();
  $('detail-title').focus();
}

window.addEventListener('hashchange', () => {
  if (/token=/.test(location.hash)) {
    takeTokenFromUrl();
    if (client) client.close();
    client = null;
    start();
    return;
  }
  onRoute();
});

// --- live updates ------------------------------------------------------------------

function onJob(e) {
  const { jobId, job } = e.detail;
  if (job.job && listed.has(jobId)) {
    listed.set(jobId, job.job);
    const old = document.querySelector(`#job-list li[data-job-id="${CSS.escape(jobId)}"]`);
    if (old) old.replaceWith(listItem(job.job));
  }
  if (jobId === detailId) renderDetail(job);
}

// --- one job -----------------------------------------------------------------------

// What the "missing" view says, by the server's error code: each view sets its own text,
// so one shown earlier (another job's) never stays behind.
const MISSING_TEXT = {
  not_found: 'There is no job with this id, or it is not yours. Check the link, or pick one of your jobs from the list.',
  invalid_job_id: 'This link does not name a job (a job id is a UUID, such as 3f2b9c1e-…). Check the link, or pick one of your jobs from the list.',
};

function renderDetail(js) {
  const missing = js.sync === 'error';
  $('d-missing').hidden = !missing;
  $('d-body').hidden = missing;
  if (missing) {
    const code = js.error && js.error.code;
    const known = code && Object.hasOwn(MISSING_TEXT, code) ? MISSING_TEXT[code] : null;
    $('detail-title').textContent = known ? 'Job not found' : 'Job unavailable';
    $('d-missing').firstElementChild.textContent = known ||
      `The server could not show this job: ${js.error ? js.error.message : 'no answer'}. Try again in a moment.`;
    return;
  }
  $('detail-title').textContent = `Job ${shortId(js.jobId)}`;
  const j = js.job;
  if (!j) {
    $('d-summary').replaceChildren(h('p', { class: 'muted' }, 'Loading the job…'));
    $('d-steps').replaceChildren();
    $('d-timeline').replaceChildren();
    $('d-retry').hidden = true;
    $('d-cancel').hidden = true;
    return;
  }
  const steps = js.stepList();
  const otps = js.otpList();
  renderSummary(j);
  renderActions(j);
  renderOtps(j, steps, otps);
  renderSteps(j, steps);
  renderTimeline(j, steps, otps);
}

function renderSummary(j) {
  const pct = j.progress_percentage ?? 0;
  const done = `${j.completed_transactions} of ${j.transaction_count} transaction${j.transaction_count === 1 ? '' : 's'} done`;
  const parts = [
    h('p', { class: 'status-line' },
      h('span', { class: `badge big s-${j.status}`, id: 'd-status', 'data-status': j.status }, JOB_STATUS[j.status] || j.status),
      h('span', { class: 'muted' }, ` Phase: ${PHASE[j.current_phase] || j.current_phase || '—'}`),
      j.cancel_requested && !TERMINAL.has(j.status) ? h('span', { class: 'badge s-retrying' }, 'Cancelling at the next safe point') : null),
    h('div', { class: 'progress-row' },
      h('progress', { id: 'd-progress', max: '100', value: String(pct), 'aria-labelledby': 'd-progress-label' }),
      h('span', { id: 'd-progress-label' }, `${pct} % · `, h('span', { id: 'd-done' }, done))),
    h('dl', { class: 'facts' },
      h('dt', {}, 'Amount'), h('dd', {}, `${fmtInt(j.transaction_amount)} per transaction`),
      h('dt', {}, 'Transactions'), h('dd', {}, String(j.transaction_count)),
      h('dt', {}, 'Started'), h('dd', {}, h('span', { 'data-age': j.created_at }, fmtAge(Date.now() - ms(j.created_at)))),
      j.retry_count ? [h('dt', {}, 'Retries'), h('dd', {}, String(j.retry_count))] : null,
      h('dt', {}, 'Id'), h('dd', { class: 'mono' }, j.id)),
  ];
  if (j.error_message) {
    parts.push(h('p', { class: 'job-error', id: 'd-error', role: 'alert' },
      h('strong', {}, j.status === 'failed' ? 'The job failed: ' : 'Error: '), j.error_message,
      j.status === 'failed'
        ? `${/[.!?]$/.test(j.error_message) ? '' : '.'} ${done[0].toUpperCase()}${done.slice(1)}; Retry resumes at the first unfinished step and never repeats a finished transaction.`
        : ''));
  }
  $('d-summary').replaceChildren(...parts);
}

function renderActions(j) {
  $('d-retry').hidden = j.status !== 'failed';
  $('d-cancel').hidden = TERMINAL.has(j.status) || j.cancel_requested;
}

async function jobAction(kind) {
  const id = detailId;
  const btn = $(kind === 'retry' ? 'd-retry' : 'd-cancel');
  $('d-action-msg').textContent = '';
  btn.disabled = true;
  try {
    await api('POST', `/api/jobs/${id}/${kind}`, {});
    announce(kind === 'retry' ? 'Retrying the job.' : 'Cancelling the job.');
  } catch (err) {
    if (err.status !== 401) $('d-action-msg').textContent = `${kind === 'retry' ? 'Retry' : 'Cancel'} failed: ${err.message}`;
  } finally {
    btn.disabled = false;
  }
}
$('d-retry').addEventListener('click', () => jobAction('retry'));
$('d-cancel').addEventListener('click', () => jobAction('cancel'));

// --- OTP prompts -------------------------------------------------------------------

function otpTitle(o, steps) {
  const step = steps.find((s) => s.id === o.job_step_id);
  const base = OTP_LABEL[o.otp_type] || `${o.otp_type} code`;
  return step && step.transaction_index ? `${base} (transaction ${step.transaction_index})` : base;
}

function attemptsLeft(o) {
  return Math.max(0, (o.max_attempts ?? 3) - (o.attempts_count ?? 0));
}

const plural = (n, w) => `${n} ${w}${n === 1 ? '' : 's'}`;

function renderOtps(j, steps, otps) {
  const box = $('d-otps');
  const open = TERMINAL.has(j.status) ? [] : otps.filter((o) => o.status === 'requested' || o.status === 'received');
  const openIds = new Set(open.map((o) => o.id));
  for (const [id, f] of otpForms) {
    if (!openIds.has(id)) {
      f.root.remove();
      otpForms.delete(id);
    }
  }
  // Per step, the last OTP that ended without being accepted: shown while it is the step's
  // newest, or while a newer one waits (then "a new code has been sent"). One per step, so
  // a step asked again and again (or retried) does not stack its history. A code that was
  // never tried (0 attempts) was not wrong: its step stopped with the job, or the provider
  // asked for a fresh one; it is shown only in the second case.
  const lastEnded = new Map();
  for (const o of otps) {
    if (o.status !== 'expired' && o.status !== 'failed') continue;
    const prev = lastEnded.get(o.job_step_id);
    if (!prev || ms(o.requested_at) > ms(prev.requested_at)) lastEnded.set(o.job_step_id, o);
  }
  const notices = [];
  for (const o of lastEnded.values()) {
    const waiting = open.some((x) => x.job_step_id === o.job_step_id);
    const newer = otps.some((x) => x.job_step_id === o.job_step_id && ms(x.requested_at) > ms(o.requested_at));
    if (newer && !waiting) continue;
    if (o.status === 'failed' && !o.attempts_count && !waiting) continue;
    notices.push(o);
  }
  notices.sort((a, b) => ms(a.requested_at) - ms(b.requested_at));
  let noticeEl = box.querySelector('.otp-notices');
  if (!noticeEl) {
    noticeEl = h('div', { class: 'otp-notices', id: 'd-otp-notices' });
    box.prepend(noticeEl);
  }
  noticeEl.replaceChildren(...notices.slice(-3).map((o) => h('p', { class: 'notice', 'data-otp-notice': o.status },
    `${otpTitle(o, steps)}: `,
    o.status === 'expired'
      ? `the code expired before it was entered (it was valid until ${fmtTime(ms(o.timeout_at))}).`
      : o.attempts_count
        ? `the code was not accepted (${plural(o.attempts_count, 'attempt')} used).`
        : 'the earlier code can no longer be used.',
    open.some((x) => x.job_step_id === o.job_step_id) ? ' A new code has been sent.' : '',
  )));

  let focusTarget = null;
  for (const o of open) {
    let f = otpForms.get(o.id);
    if (!f) {
      f = otpForm(o, steps);
      otpForms.set(o.id, f);
      box.append(f.root);
      if (!seenOtps.has(o.id)) {
        seenOtps.add(o.id);
        announce(`${otpTitle(o, steps)} needed. Enter the code sent to ${o.phone_number || 'your phone'}.`);
        if (!focusTarget) focusTarget = f.input;
      }
    }
    f.update(o);
  }
  const active = document.activeElement;
  const typing = active && active.tagName === 'INPUT' && active.closest('.otp') && active !== focusTarget;
  if (focusTarget && !typing) focusTarget.focus();
}

function otpForm(o, steps) {
  const id = `otp-${o.id}`;
  const input = h('input', {
    id: `${id}-input`, name: 'otp', type: 'text', inputmode: 'numeric', autocomplete: 'one-time-code',
    pattern: '[0-9]{4,10}', maxlength: '24', required: true, spellcheck: 'false',
    'aria-describedby': `${id}-hint ${id}-msg`,
  });
  const msg = h('p', { id: `${id}-msg`, class: 'otp-msg', role: 'status', 'aria-live': 'polite' });
  const hint = h('p', { id: `${id}-hint`, class: 'hint' });
  const countdown = h('span', { class: 'countdown' });
  const attempts = h('span', { class: 'attempts' });
  const button = h('button', { type: 'submit' }, 'Submit code');
  const root = h('form', { class: 'otp', 'data-otp-id': o.id, 'aria-labelledby': `${id}-title`, novalidate: true },
    h('h3', { id: `${id}-title` }, otpTitle(o, steps)),
    h('p', { class: 'otp-meta' }, 'Sent to ', h('span', { class: 'mono' }, o.phone_number || 'your phone'), ' · ', countdown, ' · ', attempts),
    h('label', { for: input.id }, 'Code from the SMS'),
    h('div', { class: 'otp-row' }, input, button),
    hint, msg);
  hint.textContent = '4 to 10 digits. You can paste the whole SMS text.';
  let busy = false;
  let row = o;

  // Keep only digits: pasted text like "Your code is 482 913." becomes 482913.
  input.addEventListener('paste', (e) => {
    const text = (e.clipboardData || window.clipboardData)?.getData('text') || '';
    const digits = (text.match(/\d{4,10}/) || [text.replace(/\D/g, '')])[0].slice(0, 10);
    e.preventDefault();
    input.value = digits;
  });
  input.addEventListener('input', () => {
    const d = input.value.replace(/\D/g, '');
    if (d !== input.value) input.value = d;
  });

  root.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (busy) return;
    const value = input.value.replace(/\D/g, '');
    if (!/^\d{4,10}$/.test(value)) {
      msg.dataset.kind = 'error';
      msg.textContent = 'Enter the 4 to 10 digits of the code.';
      input.setAttribute('aria-invalid', 'true');
      input.focus();
      return;
    }
    input.removeAttribute('aria-invalid');
    busy = true;
    button.disabled = true;
    msg.dataset.kind = 'info';
    msg.textContent = 'Checking the code…';
    try {
      const r = await client.submitOtp(row.id, value);
      if (r.ok) {
        msg.dataset.kind = 'ok';
        msg.textContent = 'Code accepted.';
        announce(`${otpTitle(row, steps)} accepted.`);
      } else {
        msg.dataset.kind = 'error';
        const left = r.attempts_left;
        if (r.error === 'invalid_otp') {
          msg.textContent = left > 0
            ? `Wrong code. ${plural(left, 'attempt')} left.`
            : 'Wrong code. No attempts left: this code request has failed.';
        } else if (r.error === 'otp_not_accepted') {
          msg.textContent = 'That code is no longer valid. A new code is being sent.';
        } else {
          msg.textContent = r.message ? `Not accepted: ${r.message}` : 'The code was not accepted.';
        }
        announce(msg.textContent);
        input.value = '';
        input.focus();
      }
    } catch (err) {
      msg.dataset.kind = 'error';
      const texts = {
        not_connected: 'Not connected right now. Try again once the status says Live.',
        disconnected: 'The connection dropped before the answer arrived. The steps below show whether the code was accepted.',
        timeout: 'No answer from the server yet. The steps below show whether the code was accepted.',
        otp_not_waiting: 'This code request is no longer waiting for a code (it was answered, expired or the job stopped).',
        invalid_otp: 'Enter the 4 to 10 digits of the code.',
        not_found: 'This code request does not exist (any more).',
      };
      msg.textContent = texts[err.code] || `Could not send the code: ${err.message}`;
      announce(msg.textContent);
    } finally {
      busy = false;
      button.disabled = row.status !== 'requested';
    }
  });

  function update(o2) {
    row = o2;
    root.dataset.status = o2.status;
    countdown.dataset.countdown = o2.timeout_at || '';
    tickCountdown(countdown);
    attempts.textContent = `${plural(attemptsLeft(o2), 'attempt')} left`;
    if (!busy) button.disabled = o2.status !== 'requested';
    if (o2.status === 'received' && !busy) {
      msg.dataset.kind = 'info';
      msg.textContent = 'A code is being checked…';
    }
  }
  return { root, input, msg, update };
}

function tickCountdown(el) {
  const t = ms(el.dataset.countdown);
  if (t === null) {
    el.textContent = 'no time limit';
    return;
  }
  const left = t - Date.now();
  el.textContent = left > 0 ? `expires in ${fmtCountdown(left)}` : 'expired';
  el.dataset.urgent = left < 30_000 ? 'true' : 'false';
}

// --- steps -------------------------------------------------------------------------

// The newest row per (transaction, step name).
function stepIndex(steps) {
  const m = new Map();
  for (const s of steps) m.set(`${s.transaction_index ?? 0}/${s.step_name}`, s);
  return m;
}

function stepItem(name, s, tx) {
  const status = s ? s.status : 'not_started';
  const started = s && ms(s.started_at);
  const ended = s && ms(s.completed_at);
  let dur = null;
  if (started && ended) dur = h('span', { class: 'dur' }, fmtDuration(ended - started));
  else if (started && !TERMINAL.has(status)) dur = h('span', { class: 'dur', 'data-since': s.started_at }, `running ${fmtDuration(Date.now() - started)}`);
  return h('li', { class: 'step', 'data-step': name, 'data-tx': tx ?? '', 'data-status': status },
    h('span', { class: 'step-name' }, STEP_LABEL[name] || name),
    h('span', { class: `badge s-${status}` }, STEP_STATUS[status] || status),
    h('span', { class: 'step-meta muted' },
      s && s.attempt ? `attempt ${s.attempt}` : '',
      s && s.step_data && s.step_data.reused_session ? ' · session reused' : '',
      dur ? ' · ' : '', dur),
    s && s.error_message ? h('span', { class: 'step-error' }, s.error_message) : null);
}

function txStatus(list) {
  const st = list.map((x) => (x ? x.status : 'not_started'));
  if (st.every((x) => x === 'completed')) return 'completed';
  if (st.some((x) => x === 'failed')) return 'failed';
  if (st.some((x) => x === 'cancelled')) return 'cancelled';
  if (st.some((x) => x === 'waiting_otp')) return 'waiting_otp';
  if (st.some((x) => x === 'in_progress' || x === 'retrying' || x === 'completed')) return 'in_progress';
  return 'not_started';
}

function renderSteps(j, steps) {
  const idx = stepIndex(steps);
  const out = [];
  const val = VALIDATION_STEPS.map((n) => idx.get(`0/${n}`));
  const extraVal = steps.filter((s) => s.transaction_index == null && !VALIDATION_STEPS.includes(s.step_name));
  out.push(h('section', { class: 'group', 'data-group': 'validation', 'aria-label': 'Validation' },
    h('h4', {}, 'Validation ', h('span', { class: `badge s-${txStatus(val)}` }, STEP_STATUS[txStatus(val)])),
    h('ol', { class: 'steps' },
      VALIDATION_STEPS.map((n, i) => stepItem(n, val[i], null)),
      extraVal.map((s) => stepItem(s.step_name, s, null)))));
  const n = j.transaction_count;
  for (let i = 1; i <= n; i++) {
    const list = TX_STEPS.map((name) => idx.get(`${i}/${name}`));
    const extra = steps.filter((s) => s.transaction_index === i && !TX_STEPS.includes(s.step_name));
    const st = txStatus(list);
    out.push(h('section', { class: 'group tx', 'data-tx': i, 'data-status': st, 'aria-label': `Transaction ${i} of ${n}` },
      h('h4', {}, `Transaction ${i} of ${n} `, h('span', { class: `badge s-${st}` }, STEP_STATUS[st])),
      h('ol', { class: 'steps' },
        TX_STEPS.map((name, k) => stepItem(name, list[k], i)),
        extra.map((s) => stepItem(s.step_name, s, i)))));
  }
  $('d-steps').replaceChildren(...out);
}

// --- timeline ----------------------------------------------------------------------

function renderTimeline(j, steps, otps) {
  const ev = [];
  const add = (ts, text, kind = '') => {
    const t = ms(ts);
    if (t !== null) ev.push({ t, text, kind });
  };
  add(j.created_at, `Job started: ${j.transaction_count} × ${fmtInt(j.transaction_amount)}`);
  for (const s of steps) {
    const name = `${STEP_LABEL[s.step_name] || s.step_name}${s.transaction_index ? ` (transaction ${s.transaction_index})` : ''}`;
    add(s.started_at, `${name} started${s.attempt > 1 ? ` (attempt ${s.attempt})` : ''}`);
    if (s.status === 'completed') add(s.completed_at, `${name} done`, 'ok');
    else if (s.status === 'failed') add(s.completed_at || s.updated_at, `${name} failed${s.error_message ? `: ${s.error_message}` : ''}`, 'bad');
    else if (s.status === 'cancelled') add(s.completed_at || s.updated_at, `${name} cancelled`, 'bad');
    else if (s.status === 'retrying') add(s.updated_at, `${name} will retry${s.error_message ? ` after: ${s.error_message}` : ''}`, 'warn');
  }
  for (const o of otps) {
    const name = otpTitle(o, steps);
    add(o.requested_at, `${name} sent to ${o.phone_number || 'the phone'}`);
    if (o.verified_at) add(o.verified_at, `${name} accepted`, 'ok');
    if (o.status === 'expired') add(o.timeout_at, `${name} expired`, 'bad');
    if (o.status === 'failed') add(o.received_at || o.requested_at, `${name} not accepted`, 'bad');
  }
  if (TERMINAL.has(j.status)) {
    add(j.completed_at || j.updated_at, `Job ${JOB_STATUS[j.status].toLowerCase()}${j.error_message ? `: ${j.error_message}` : ''}`,
      j.status === 'completed' ? 'ok' : 'bad');
  }
  ev.sort((a, b) => b.t - a.t);
  const shown = ev.slice(0, 150);
  $('d-timeline-count').textContent = `(${ev.length} events${ev.length > shown.length ? `, newest ${shown.length} shown` : ''})`;
  $('d-timeline').replaceChildren(...shown.map((e) => h('li', { 'data-kind': e.kind },
    h('time', { datetime: new Date(e.t).toISOString() }, fmtTime(e.t)), ' ', e.text)));
}

// --- clocks: ages, countdowns, running durations ----------------------------------------

setInterval(() => {
  const now = Date.now();
  for (const el of document.querySelectorAll('[data-age]')) el.textContent = fmtAge(now - ms(el.dataset.age));
  for (const el of document.querySelectorAll('[data-countdown]')) tickCountdown(el);
  for (const el of document.querySelectorAll('[data-since]')) el.textContent = `running ${fmtDuration(now - ms(el.dataset.since))}`;
}, 1000);

// --- go ----------------------------------------------------------------------------

// On a phone the timeline starts folded (one tap opens it); on a desktop it is open.
if (window.matchMedia && window.matchMedia('(max-width: 520px)').matches) $('d-timeline-box').open = false;
takeTokenFromUrl();
start();
