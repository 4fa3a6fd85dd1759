// The operator console. It reads the JSON API every few seconds and draws what it finds; it keeps no
// state of its own beyond the last answers. Every value from the API reaches the page through textContent
// or an SVG attribute, never as markup, so a message's content cannot inject anything. Phone numbers are
// masked before they reach the page, by the rule the service's logs use.
//
// Features the API may grow later show up by themselves: the `breaker` and `replicas` fields of
// GET /scheduler, and Retry/Cancel buttons once the OpenAPI document lists POST /messages/{id}/retry and
// /cancel. When the server wants an API key (a 401), the page asks for it once and sends it as X-API-Key.

const REFRESH_MS = 3000;
const CAMPAIGNS_REFRESH_MS = 15_000;
const LIST_LIMIT = 8;
const WINDOW_MINUTES = 60;
const MINUTE_MS = 60_000;
const KEY_STORAGE = 'insider-messaging.api-key';
const SPEC_PATH = '/api-docs/openapi.json';

const $ = (selector) => document.querySelector(selector);

const state = {
  stats: null,
  running: null,
  busy: false,
  /** Bumped by every start/stop, so a refresh that began before it cannot paint the old state back. */
  actionEpoch: 0,
  lastSuccessAt: null,
  /** Set once the key dialog was shown for a 401 on a refresh: asked once, not every few seconds. */
  keyAsked: false,
  capabilities: { retry: false, cancel: false },
  /** The provider refused our key: the instance is paused although its scheduler runs; Start resumes it. */
  credentialsRefused: false,
  /** When the campaigns were last read: their counts go over every campaign row, so less often. */
  campaignsReadAt: 0,
};

// ---- Masking -----------------------------------------------------------------------------------------

/**
 * `+905551111111` → `+90555****11`: the rule of `PhoneNumber::masked` in src/domain/phone_number.rs. At most
 * 5 leading digits are shown, never more than (digits − 6), then `****`, then the last 2 characters when the
 * number has at least 6 digits; what precedes the first digit (the `+`) is kept.
 *
 * The head is counted in digits, not characters. For every parsed number (`+` and digits only) this gives
 * exactly what the Rust method gives. The console also sees raw strings, which dead letters inserted by plain
 * SQL can hold, separators included: `0555 111 22 33` shows `0555 1****33`, not 9 of its 11 digits.
 */
export function mask(number) {
  const chars = Array.from(String(number ?? ''));
  const isDigit = (c) => c >= '0' && c <= '9';
  const digits = chars.filter(isDigit).length;
  const shownDigits = Math.min(Math.max(digits - 6, 0), 5);
  let head = 0;
  while (head < chars.length && !isDigit(chars[head])) head += 1;
  for (let shown = 0; head < chars.length && shown < shownDigits; head += 1) {
    if (isDigit(chars[head])) shown += 1;
  }
  const tail = digits >= 6 ? chars.slice(-2).join('') : '';
  return `${chars.slice(0, head).join('')}****${tail}`;
}

// ---- The API -----------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(body?.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = body?.error ?? null;
  }
}

function storedKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || '';
  } catch {
    return '';
  }
}

function storeKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    // Storage refused (a locked-down browser): the key then lives only as long as this page.
  }
  memoryKey = key;
}

let memoryKey = storedKey();

async function api(path, { method = 'GET' } = {}) {
  const headers = { Accept: 'application/json' };
  if (memoryKey) headers['X-API-Key'] = memoryKey;
  let response;
  try {
    response = await fetch(path, { method, headers, cache: 'no-store' });
  } catch {
    throw new ApiError(0, { message: 'the service does not answer' });
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body);
  // A 2xx that is not JSON is not this API's (a proxy's login page, say): an error, not an empty card.
  if (body === null) throw new ApiError(response.status, { message: `the answer (HTTP ${response.status}) is not this API's JSON` });
  return body;
}

/** Runs an action; on a 401 asks for the key once and tries again with it. */
async function withKey(action) {
  try {
    return await action();
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 401) throw error;
    const key = await askForKey(memoryKey ? 'The server refused this key.' : 'This server needs an API key.');
    if (!key) throw error;
    return action();
  }
}

// ---- Formatting --------------------------------------------------------------------------------------

const clock = new Intl.DateTimeFormat(undefined, {
  hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false,
});
const dayAndClock = new Intl.DateTimeFormat(undefined, {
  month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', hour12: false,
});
const hourMinute = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', hour12: false });
const count = new Intl.NumberFormat();

/** Seconds as people say them: `500 ms`, `1.5 s`, `42 s`, `3 min 12 s`, `2 h 5 min`, `3 d 4 h`. */
function formatDuration(seconds) {
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 10) return `${Number(seconds.toFixed(1))} s`;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const s = Math.round(seconds);
  const pair = (big, bigUnit, small, smallUnit) => (small ? `${big} ${bigUnit} ${small} ${smallUnit}` : `${big} ${bigUnit}`);
  if (s < 3600) return pair(Math.floor(s / 60), 'min', s % 60, 's');
  if (s < 86400) return pair(Math.floor(s / 3600), 'h', Math.floor((s % 3600) / 60), 'min');
  return pair(Math.floor(s / 86400), 'd', Math.floor((s % 86400) / 3600), 'h');
}

function formatRelative(iso) {
  const seconds = (Date.parse(iso) - Date.now()) / 1000;
  if (Math.abs(seconds) < 1) return 'now';
  return seconds > 0 ? `in ${formatDuration(seconds)}` : `${formatDuration(-seconds)} ago`;
}

/** A time of today as 14:03:07, an older one with its date. */
function formatWhen(iso) {
  const at = new Date(iso);
  return at.toDateString() === new Date().toDateString() ? clock.format(at) : dayAndClock.format(at);
}

/** Shows a time with how long ago (or how soon) it is; the clock below keeps the second part current. */
function setTime(element, iso, absent) {
  if (!iso) {
    delete element.dataset.at;
    element.textContent = absent;
    element.removeAttribute('title');
    return;
  }
  element.dataset.at = iso;
  element.title = new Date(iso).toISOString();
  element.textContent = `${formatWhen(iso)} · ${formatRelative(iso)}`;
}

function tickClock() {
  for (const element of document.querySelectorAll('[data-at]')) {
    element.textContent = `${formatWhen(element.dataset.at)} · ${formatRelative(element.dataset.at)}`;
  }
  renderFreshness();
}

// ---- Scheduler ---------------------------------------------------------------------------------------

function renderScheduler(scheduler) {
  state.running = Boolean(scheduler.running);
  state.credentialsRefused = Boolean(scheduler.flow?.credentials_refused);
  const pill = $('#scheduler-state');
  const paused = state.running && state.credentialsRefused;
  pill.textContent = paused ? 'Paused: key refused' : state.running ? 'Running' : 'Stopped';
  pill.dataset.running = String(state.running);
  pill.className = `pill ${paused ? 'bad' : state.running ? 'ok' : 'warn'}`;
  $('#interval').textContent = formatDuration(scheduler.interval_seconds);
  $('#batch-size').textContent = count.format(scheduler.batch_size);
  $('#in-flight').textContent = count.format(scheduler.in_flight);
  setTime($('#last-tick'), scheduler.last_tick_at, 'never');
  setTime($('#next-tick'), scheduler.next_tick_at, state.running ? 'now' : '— (stopped)');
  renderFlow(scheduler.flow);
  renderBreaker(scheduler.breaker);
  renderReplicas(scheduler.replicas);
  renderButtons();
}

/** Send slots, the run-ahead buffer and the cluster's pace, once GET /scheduler reports them. */
function renderFlow(flow) {
  for (const id of ['#slots-row', '#run-ahead-row', '#rate-row']) $(id).hidden = !flow;
  if (!flow) return;
  $('#slots').textContent = `${count.format(flow.send_slots_in_use)} of ${count.format(flow.send_slots)}`;
  $('#run-ahead').textContent = `${count.format(flow.run_ahead)} of ${count.format(flow.run_ahead_capacity)}`;
  const value = $('#rate');
  value.replaceChildren();
  const perSecond = (rate) => `${count.format(Math.round(rate * 10) / 10)}/s`;
  const refused = flow.credentials_refused;
  const throttled = typeof flow.throttled_for_seconds === 'number';
  const pill = document.createElement('span');
  pill.id = 'flow-state';
  pill.className = `pill ${refused || throttled ? 'bad' : 'ok'}`;
  if (refused) {
    pill.textContent = `paused: the provider refused our key (${refused.status}) since ${formatWhen(refused.since)}; fix the key, then Resume`;
  } else {
    pill.textContent = throttled ? `paused by a 429 for ${formatDuration(flow.throttled_for_seconds)}` : 'sending';
  }
  value.append(pill);
  const rate = flow.rate_per_second == null ? 'no cap' : perSecond(flow.rate_per_second);
  const limit = flow.rate_limit_per_second == null ? 'RATE_LIMIT unset' : `RATE_LIMIT ${perSecond(flow.rate_limit_per_second)}`;
  value.append(` ${rate} · ${limit}`);
}

/** The provider circuit breaker, once GET /scheduler reports one: a state name, or an object with `state`. */
function renderBreaker(breaker) {
  const row = $('#breaker-row');
  row.hidden = breaker === undefined || breaker === null;
  if (row.hidden) return;
  const name = typeof breaker === 'object' ? String(breaker.state ?? 'unknown') : String(breaker);
  const details = typeof breaker === 'object'
    ? Object.entries(breaker)
      .filter(([key, value]) => key !== 'state' && value !== null && value !== undefined)
      .map(([key, value]) => (typeof value === 'number' && key.endsWith('_seconds')
        ? `${key.replace(/_in_seconds$/, ' in').replace(/_/g, ' ')} ${formatDuration(value)}`
        : `${key.replace(/_/g, ' ')}: ${describe(key, value)}`))
    : [];
  const value = $('#breaker');
  value.replaceChildren();
  const pill = document.createElement('span');
  const tone = { closed: 'ok', open: 'bad' }[name.toLowerCase()] ?? 'warn';
  pill.className = `pill ${tone}`;
  pill.textContent = name.replace(/_/g, ' ');
  value.append(pill);
  if (details.length) value.append(` ${details.join(' · ')}`);
}

/** The replicas, once GET /scheduler lists them: one row each, one column per field they carry. */
function renderReplicas(replicas) {
  const card = $('#replicas-card');
  card.hidden = !Array.isArray(replicas);
  if (card.hidden) return;
  const columns = [...new Set(replicas.flatMap((replica) => Object.keys(replica ?? {})))];
  const head = document.createElement('tr');
  for (const column of columns) {
    const th = document.createElement('th');
    th.textContent = column.replace(/_/g, ' ');
    head.append(th);
  }
  $('#replicas-table thead').replaceChildren(head);
  $('#replicas-table tbody').replaceChildren(...replicas.map((replica) => row(
    columns.map((column) => cell(describe(column, replica?.[column]), { label: column.replace(/_/g, ' ') })),
  )));
}

/** A field of unknown shape as text; fields named like times read as times. */
function describe(key, value) {
  if (value === null || value === undefined) return '—';
  if (typeof value === 'string' && /(_at|_seen)$/.test(key) && !Number.isNaN(Date.parse(value))) {
    return `${formatWhen(value)} (${formatRelative(value)})`;
  }
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

function renderButtons() {
  // Start while running is what resumes an instance the provider's refusal of our key paused.
  const start = $('#start-button');
  start.textContent = state.credentialsRefused ? 'Resume' : 'Start';
  start.disabled = state.busy || !(state.running === false || state.credentialsRefused);
  $('#stop-button').disabled = state.busy || state.running !== true;
}

function showActionStatus(text, isError = false) {
  const status = $('#action-status');
  status.textContent = text;
  status.classList.toggle('error', isError);
}

async function setSending(run) {
  state.busy = true;
  renderButtons();
  showActionStatus(run ? 'Starting…' : 'Stopping…');
  try {
    const scheduler = await withKey(() => api(run ? '/scheduler/start' : '/scheduler/stop', { method: 'POST' }));
    state.actionEpoch += 1;
    renderScheduler(scheduler);
    showActionStatus(`${run ? 'Started' : 'Stopped'} at ${clock.format(new Date())}`);
  } catch (error) {
    showActionStatus(`Could not ${run ? 'start' : 'stop'}: ${error.message}`, true);
  } finally {
    state.busy = false;
    renderButtons();
  }
  refresh();
}

// ---- Queue and chart ---------------------------------------------------------------------------------

function renderStats(stats) {
  state.stats = stats;
  const pending = $('#pending');
  pending.textContent = count.format(stats.pending);
  pending.dataset.value = String(stats.pending);
  const oldest = $('#oldest-age');
  const age = stats.oldest_pending_age_seconds;
  oldest.textContent = age === null || age === undefined ? '—' : formatDuration(age);
  oldest.dataset.value = age === null || age === undefined ? '' : String(age);
  const sum = (field) => stats.per_minute.reduce((total, minute) => total + minute[field], 0);
  $('#sent-hour').textContent = count.format(sum('sent'));
  $('#failed-hour').textContent = count.format(sum('failed'));
  renderDeliveryRates(stats.delivery);
  renderOutbox(stats.status_outbox);
  renderChart();
}

/** Delivered / (delivered + undelivered) of the last hour and day, when receipts are tracked. */
function renderDeliveryRates(delivery) {
  $('#delivery-rates').hidden = !delivery;
  if (!delivery) return;
  const percent = (window) => (window.rate === null ? '—' : `${Math.round(window.rate * 1000) / 10}%`);
  const rate = $('#delivery-rate');
  rate.textContent = `${percent(delivery.last_hour)} · ${percent(delivery.last_day)}`;
  rate.dataset.value = delivery.last_hour.rate === null ? '' : String(delivery.last_hour.rate);
  rate.title = `Last hour: ${delivery.last_hour.delivered} delivered, ${delivery.last_hour.undelivered} undelivered; `
    + `last day: ${delivery.last_day.delivered} delivered, ${delivery.last_day.undelivered} undelivered`;
}

/** The status events outbox: events waiting (with the oldest one's age) and failed. */
function renderOutbox(outbox) {
  $('#status-outbox').hidden = !outbox;
  if (!outbox) return;
  const depth = $('#outbox-depth');
  depth.textContent = `${count.format(outbox.pending)} · ${count.format(outbox.failed)}`;
  depth.dataset.value = String(outbox.pending);
  depth.className = outbox.failed > 0 ? 'bad-text' : '';
  depth.title = outbox.oldest_pending_age_seconds === null
    ? 'Nothing waits' : `The oldest has waited ${formatDuration(outbox.oldest_pending_age_seconds)}`;
}

/** A sent message's delivery state, with the carrier's error when undelivered. */
function deliveryCell(item) {
  const status = item.delivery_status ?? 'not_tracked';
  const text = status.replaceAll('_', ' ');
  const className = status === 'delivered' ? 'ok-text' : status === 'undelivered' || status === 'no_receipt' ? 'bad-text' : '';
  const td = cell(item.delivery_error ? `${text}: ${item.delivery_error}` : text, { label: 'Delivery', className });
  td.dataset.value = status;
  return td;
}

const SVG = 'http://www.w3.org/2000/svg';

function svg(name, attributes = {}, text = null) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== null) element.textContent = text;
  return element;
}

/** The smallest of 2, 4, 10, 20, 40, 100… at or above `value`: an even top, so the midline is whole. */
function niceTop(value) {
  for (let scale = 1; ; scale *= 10) {
    for (const step of [2, 4, 10]) if (step * scale >= value) return step * scale;
  }
}

/** Stacked bars, one per minute of the last hour: sent below, failed on top. */
function renderChart() {
  const box = $('#chart');
  const perMinute = state.stats?.per_minute ?? [];
  const width = Math.max(box.clientWidth, 200);
  const height = Math.max(box.clientHeight, 120);
  const pad = { left: 32, right: 8, top: 8, bottom: 22 };
  const plotWidth = width - pad.left - pad.right;
  const plotHeight = height - pad.top - pad.bottom;

  // Anchored on the newest minute the server reports when the browser's clock runs behind it.
  const latest = Math.max(...perMinute.map((minute) => Date.parse(minute.minute)), 0);
  const end = Math.max(Math.floor(Date.now() / MINUTE_MS) * MINUTE_MS, latest);
  const slots = Array.from({ length: WINDOW_MINUTES }, (_, i) => ({
    at: end - (WINDOW_MINUTES - 1 - i) * MINUTE_MS, sent: 0, failed: 0,
  }));
  for (const minute of perMinute) {
    const index = WINDOW_MINUTES - 1 - Math.round((end - Date.parse(minute.minute)) / MINUTE_MS);
    if (index < 0 || index >= WINDOW_MINUTES) continue;
    slots[index].sent += minute.sent;
    slots[index].failed += minute.failed;
  }
  const totalSent = slots.reduce((total, slot) => total + slot.sent, 0);
  const totalFailed = slots.reduce((total, slot) => total + slot.failed, 0);
  const top = niceTop(Math.max(...slots.map((slot) => slot.sent + slot.failed), 1));
  const y = (value) => pad.top + plotHeight - (value / top) * plotHeight;

  const chart = svg('svg', {
    viewBox: `0 0 ${width} ${height}`,
    role: 'img',
    'aria-label': `Last hour: ${totalSent} sent, ${totalFailed} failed`,
    'data-sent': totalSent,
    'data-failed': totalFailed,
  });
  for (const value of [0, top / 2, top]) {
    chart.append(svg('line', { class: 'gridline', x1: pad.left, x2: width - pad.right, y1: y(value), y2: y(value) }));
    chart.append(svg('text', { class: 'axis-label', x: pad.left - 6, y: y(value) + 4, 'text-anchor': 'end' }, count.format(value)));
  }
  const slotWidth = plotWidth / WINDOW_MINUTES;
  const barWidth = Math.max(slotWidth * 0.72, 1);
  slots.forEach((slot, i) => {
    if (slot.sent + slot.failed === 0) return;
    const x = pad.left + i * slotWidth + (slotWidth - barWidth) / 2;
    const group = svg('g', { class: 'slot' });
    group.append(svg('title', {}, `${hourMinute.format(new Date(slot.at))}: ${slot.sent} sent, ${slot.failed} failed`));
    if (slot.sent) {
      group.append(svg('rect', { class: 'bar sent', x, width: barWidth, y: y(slot.sent), height: y(0) - y(slot.sent) }));
    }
    if (slot.failed) {
      const topOfStack = slot.sent + slot.failed;
      group.append(svg('rect', { class: 'bar failed', x, width: barWidth, y: y(topOfStack), height: y(slot.sent) - y(topOfStack) }));
    }
    chart.append(group);
  });
  for (const i of [0, 15, 30, 45, WINDOW_MINUTES - 1]) {
    const last = i === WINDOW_MINUTES - 1;
    const anchor = i === 0 ? 'start' : last ? 'end' : 'middle';
    const x = pad.left + (last ? plotWidth : i * slotWidth + slotWidth / 2);
    const label = last ? 'now' : hourMinute.format(new Date(slots[i].at));
    chart.append(svg('text', { class: 'axis-label', x, y: height - 6, 'text-anchor': anchor }, label));
  }
  if (totalSent + totalFailed === 0) {
    chart.append(svg('text', { class: 'empty-label', x: pad.left + plotWidth / 2, y: pad.top + plotHeight / 2, 'text-anchor': 'middle' },
      'Nothing sent or failed in the last hour'));
  }
  box.replaceChildren(chart);
}

// ---- Message lists -----------------------------------------------------------------------------------

function cell(text, { label, className, title } = {}) {
  const td = document.createElement('td');
  td.textContent = text;
  if (label) td.dataset.label = label;
  if (className) td.className = className;
  if (title) td.title = title;
  return td;
}

function timeCell(iso, label) {
  return cell(iso ? formatWhen(iso) : '—', { label, className: 'time', title: iso ? new Date(iso).toISOString() : undefined });
}

function row(cells) {
  const tr = document.createElement('tr');
  tr.append(...cells);
  return tr;
}

function actionCell(label, id, action, hidden) {
  const td = cell('', { className: 'action-col' });
  td.hidden = hidden;
  if (hidden) return td;
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'button small';
  button.textContent = label;
  button.dataset.id = id;
  button.dataset.action = action;
  td.append(button);
  return td;
}

function renderList(rowsSelector, emptySelector, items, toRow) {
  const rows = $(rowsSelector);
  rows.replaceChildren(...items.map(toRow));
  rows.closest('.table-wrap').hidden = items.length === 0;
  $(emptySelector).hidden = items.length > 0;
}

function renderSent(page) {
  renderList('#sent-rows', '#sent-empty', page.items, (item) => row([
    timeCell(item.sent_at, 'Sent'),
    cell(mask(item.to), { label: 'To', className: 'mono' }),
    cell(item.content, { label: 'Content', title: item.content }),
    cell(item.provider_message_id ?? '—', { label: 'Provider id', className: 'mono', title: item.provider_message_id ?? undefined }),
    deliveryCell(item),
  ]));
}

function renderDead(page) {
  const noRetry = !state.capabilities.retry;
  document.querySelector('.dead th.action-col').hidden = noRetry;
  renderList('#dead-rows', '#dead-empty', page.items, (item) => row([
    // `failed` is final, so the row's last update is when it failed.
    timeCell(item.updated_at, 'Failed'),
    cell(mask(item.to), { label: 'To', className: 'mono' }),
    cell(item.content, { label: 'Content', title: item.content }),
    cell(count.format(item.attempts), { label: 'Tries', className: 'number' }),
    cell(item.last_error ?? '—', { label: 'Last error', className: 'wrap error-text' }),
    actionCell('Retry', item.id, 'retry', noRetry),
  ]));
}

function renderPending(page) {
  $('#pending-card').hidden = false;
  renderList('#pending-rows', '#pending-empty', page.items, (item) => row([
    timeCell(item.next_attempt_at, 'Due'),
    cell(mask(item.to), { label: 'To', className: 'mono' }),
    cell(item.content, { label: 'Content', title: item.content }),
    cell(count.format(item.attempts), { label: 'Tries', className: 'number' }),
    actionCell('Cancel', item.id, 'cancel', false),
  ]));
}

function renderCampaigns(list) {
  renderList('#campaign-rows', '#campaigns-empty', list.items, (item) => {
    const counts = item.counts ?? {};
    const other = Object.entries(counts)
      .filter(([status]) => status !== 'pending' && status !== 'sent')
      .reduce((sum, [, n]) => sum + n, 0);
    return row([
      cell(item.campaign, { label: 'Campaign', title: item.campaign }),
      cell(item.paused ? 'paused' : 'running', { label: 'State' }),
      cell(count.format(counts.pending ?? 0), { label: 'Pending', className: 'number' }),
      cell(count.format(counts.sent ?? 0), { label: 'Sent', className: 'number' }),
      cell(count.format(other), { label: 'Other', className: 'number' }),
    ]);
  });
}

/** Replies (STOP opts out, START opts back in), newest first; numbers masked like every other. */
function renderReplies(page) {
  renderList('#reply-rows', '#replies-empty', page.items, (item) => row([
    timeCell(item.received_at, 'Received'),
    cell(mask(item.from), { label: 'From', className: 'mono' }),
    cell(item.content, { label: 'Content', title: item.content }),
    cell(item.action.replace('_', '-'), { label: 'Action' }),
  ]));
}

/** Retry (dead letter → pending) or Cancel (pending → cancelled); shown only when the API has them. */
async function messageAction(button) {
  const { id, action } = button.dataset;
  button.disabled = true;
  try {
    await withKey(() => api(`/messages/${encodeURIComponent(id)}/${action}`, { method: 'POST' }));
    showActionStatus(`${action === 'retry' ? 'Queued again' : 'Cancelled'}: ${id.slice(0, 8)}…`);
  } catch (error) {
    showActionStatus(`Could not ${action} ${id.slice(0, 8)}…: ${error.message}`, true);
    button.disabled = false;
  }
  refresh();
}

// ---- Refreshing --------------------------------------------------------------------------------------

function renderFreshness() {
  const freshness = $('#freshness');
  if (!state.lastSuccessAt) return;
  const stale = Date.now() - state.lastSuccessAt > 3 * REFRESH_MS;
  freshness.classList.toggle('stale', stale);
  freshness.textContent = stale
    ? `No answer since ${clock.format(state.lastSuccessAt)}`
    : `Updated ${clock.format(state.lastSuccessAt)} · every ${REFRESH_MS / 1000} s`;
}

function showProblems(problems) {
  const banner = $('#problem');
  banner.hidden = problems.length === 0;
  banner.textContent = problems.length ? `Could not read ${problems.join('; ')}` : '';
}

async function load() {
  const epoch = state.actionEpoch;
  const sources = [
    ['the scheduler', api('/scheduler'), (scheduler) => epoch === state.actionEpoch && renderScheduler(scheduler)],
    ['the queue', api('/stats'), renderStats],
    ['the sent list', api(`/messages/sent?limit=${LIST_LIMIT}`), renderSent],
    ['the dead letters', api(`/messages?status=failed&limit=${LIST_LIMIT}`), renderDead],
    ['the replies', api(`/inbound?limit=${LIST_LIMIT}`), renderReplies],
  ];
  if (Date.now() - state.campaignsReadAt >= CAMPAIGNS_REFRESH_MS) {
    sources.push(['the campaigns', api('/campaigns'), (list) => {
      state.campaignsReadAt = Date.now();
      renderCampaigns(list);
    }]);
  }
  if (state.capabilities.cancel) {
    sources.push(['the pending messages', api(`/messages?status=pending&limit=${LIST_LIMIT}`), renderPending]);
  }
  const results = await Promise.allSettled(sources.map(([, request]) => request));
  const problems = [];
  let unauthorized = false;
  results.forEach((result, i) => {
    const [name, , render] = sources[i];
    if (result.status === 'fulfilled') {
      // One card that cannot show its answer says so; the others are still painted.
      try {
        render(result.value);
      } catch (error) {
        problems.push(`${name}: its answer could not be shown (${error.message})`);
      }
      return;
    }
    unauthorized ||= result.reason?.status === 401;
    problems.push(`${name}: ${result.reason?.message ?? result.reason}`);
  });
  if (problems.length < sources.length) state.lastSuccessAt = Date.now();
  showProblems(unauthorized ? [`this server's data without its API key (${memoryKey ? 'the key given was refused' : 'none given'}): press API key at the top`] : problems);
  renderFreshness();
  if (unauthorized && !state.keyAsked) {
    state.keyAsked = true;
    askForKey('This server needs an API key to show this page.').then((key) => key && refresh());
  }
}

let loading = null;
let reloadAfter = false;
let timer = null;

/** Loads everything now; a call while a load runs queues one more, so loads never overlap. */
function refresh() {
  if (loading) {
    reloadAfter = true;
    return loading;
  }
  clearTimeout(timer);
  loading = load().finally(() => {
    loading = null;
    if (reloadAfter) {
      reloadAfter = false;
      refresh();
    } else if (!document.hidden) {
      timer = setTimeout(refresh, REFRESH_MS);
    }
  });
  return loading;
}

/** The OpenAPI document tells which per-message actions this server has; without it, none are shown. */
async function detectCapabilities() {
  try {
    const paths = (await api(SPEC_PATH))?.paths ?? {};
    state.capabilities.retry = Boolean(paths['/messages/{id}/retry']?.post);
    state.capabilities.cancel = Boolean(paths['/messages/{id}/cancel']?.post);
  } catch {
    // No spec: the page works without the per-message actions.
  }
}

// ---- The API key -------------------------------------------------------------------------------------

let keyRequest = null;

/** Opens the key dialog; resolves with the key saved, or '' when dismissed. One dialog at a time. */
function askForKey(reason) {
  if (keyRequest) return keyRequest;
  const dialog = $('#api-key-dialog');
  $('#api-key-reason').textContent = `${reason ?? ''} Sent as X-API-Key with every request from this tab, and kept only until the tab closes.`.trim();
  $('#api-key-input').value = memoryKey;
  keyRequest = new Promise((resolve) => {
    const finish = (key) => {
      dialog.removeEventListener('close', onClose);
      $('#api-key-form').removeEventListener('submit', onSubmit);
      if (dialog.open) dialog.close();
      keyRequest = null;
      resolve(key);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      storeKey($('#api-key-input').value.trim());
      finish(memoryKey);
    };
    const onClose = () => finish('');
    dialog.addEventListener('close', onClose);
    $('#api-key-form').addEventListener('submit', onSubmit);
  });
  dialog.showModal();
  $('#api-key-input').focus();
  return keyRequest;
}

// ---- Start -------------------------------------------------------------------------------------------

function start() {
  $('#start-button').addEventListener('click', () => setSending(true));
  $('#stop-button').addEventListener('click', () => setSending(false));
  for (const rows of ['#dead-rows', '#pending-rows']) {
    $(rows).addEventListener('click', (event) => {
      const button = event.target.closest('button[data-action]');
      if (button) messageAction(button);
    });
  }
  $('#api-key-button').addEventListener('click', () => askForKey('').then((key) => key && refresh()));
  $('#api-key-cancel').addEventListener('click', () => $('#api-key-dialog').close());
  $('#api-key-forget').addEventListener('click', () => {
    storeKey('');
    $('#api-key-dialog').close();
    refresh();
  });
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) clearTimeout(timer);
    else refresh();
  });
  let resizeFrame = 0;
  new ResizeObserver(() => {
    cancelAnimationFrame(resizeFrame);
    resizeFrame = requestAnimationFrame(renderChart);
  }).observe($('#chart'));
  setInterval(tickClock, 1000);
  detectCapabilities().finally(refresh);
}

start();
