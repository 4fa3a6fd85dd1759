// The operator console in a real browser: Debian's Chromium driven by playwright-core, against a live
// `insider-messaging demo` started here on a free port and a fresh SQLite file. The steps run in order,
// as an operator would: look, cancel one message, start, look again, stop, retry the dead letter; a page
// of another site tries to start sending and to enqueue from the same browser, and is refused; then a
// second server with API_KEY set checks that the page asks for the key and acts with it. Run it with
// `bash .ci/console-test`, which installs what it needs; by hand (after `cargo build`):
// `node --test --test-reporter=spec tests/console/`. Cancel and Retry are skipped when the API lacks them.
//
// Environment: INSIDER_BIN (default target/debug/insider-messaging), CHROMIUM (default /usr/bin/chromium),
// PLAYWRIGHT_PREFIX (the npm prefix holding playwright-core, default .ci/.node/playwright) and
// CONSOLE_SCREENSHOT_DIR (default docs/, where the README's screenshots live).

import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
// Paths given in the environment are relative to where node runs; the defaults to the checkout.
const fromEnv = (name, fallback) => resolve(process.env[name] ?? join(ROOT, fallback));
const BIN = fromEnv('INSIDER_BIN', 'target/debug/insider-messaging');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const PLAYWRIGHT_PREFIX = fromEnv('PLAYWRIGHT_PREFIX', '.ci/.node/playwright');
const SCREENSHOT_DIR = fromEnv('CONSOLE_SCREENSHOT_DIR', 'docs');
/** Generous: a wait that runs out is a failure, and CI machines are slow. */
const WAIT_MS = 30_000;
/** The page refreshes every 3 s; an age it shows may lag the API's by that much, plus the request. */
const REFRESH_SLACK_SECONDS = 5;

const require = createRequire(import.meta.url);
const { chromium } = require(require.resolve('playwright-core', { paths: [PLAYWRIGHT_PREFIX, ROOT] }));

// The demo's six samples, as the page must show them; the full numbers must never appear.
const SAMPLE_NUMBERS = ['905551111111', '905551111112', '905551111113', '447700900123', '12025550143', '4915112345678'];
const SAMPLES_MASKED = ['+90555****11', '+90555****12', '+90555****13', '+44770****23', '+12025****43', '+49151****78'];
// A row another system inserts with plain SQL and no country code: failed when claimed, a dead letter.
const DEAD_LETTER = { to: '0555 111 22 33', masked: '0555 1****33', content: 'Missing its country code' };

/** The main server, and the browser page that watches it through every step. */
let server;
let base;
let browser;
let page;
/** Which per-message actions the API documents; the page must offer exactly those. */
let documented;
/** Everything the browser reports as wrong on the main server's pages: console errors, page errors, failed or 4xx/5xx requests. */
const problems = [];

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** Polls `check` until it returns something truthy; fails naming `what` after `timeoutMs`. */
async function eventually(what, check, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      if (error.fatal) throw error;
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 150));
  }
}

/**
 * `insider-messaging demo` on a free port in a temporary directory, its working directory: no `.env` or
 * ./data of the checkout is read, and the demo's own database, ./data/demo.db, is a fresh file there. The
 * environment is clean: the caller's WEBHOOK_URL must not leak in. AUTOSTART=false keeps the queue still until the test
 * presses Start, so the page and the API can be compared exactly.
 */
async function startDemo(extraEnv = {}, command = 'demo') {
  const workdir = mkdtempSync(join(tmpdir(), 'console-test-'));
  const port = await freePort();
  const database = join(workdir, 'data', 'demo.db');
  let log = '';
  const child = spawn(BIN, [command], {
    cwd: workdir,
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME ?? workdir,
      RUST_LOG: 'info',
      HTTP_ADDR: `127.0.0.1:${port}`,
      AUTOSTART: 'false',
      ...(command === 'serve' ? { DATABASE_URL: `sqlite://${database}` } : {}),
      ...extraEnv,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.on('data', (chunk) => { log += chunk; });
  child.stderr.on('data', (chunk) => { log += chunk; });
  child.on('error', (error) => { log += `spawn failed: ${error.message}\n`; });
  const demo = {
    base: `http://127.0.0.1:${port}`,
    database,
    log: () => `---- server log (last 40 lines) ----\n${log.split('\n').slice(-40).join('\n')}`,
    /** SIGTERM, then the exit status: the demo drains and exits 0. */
    async stop() {
      let result = null;
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
        child.kill('SIGTERM');
        const timeout = new Promise((resolve) => setTimeout(() => resolve(null), 30_000).unref());
        result = await Promise.race([exited, timeout]);
        if (!result) child.kill('SIGKILL');
      } else {
        result = { code: child.exitCode, signal: child.signalCode };
      }
      rmSync(workdir, { recursive: true, force: true });
      assert.deepEqual(result, { code: 0, signal: null }, `the demo must drain and exit 0 on SIGTERM\n${demo.log()}`);
    },
  };
  await eventually(`${demo.base}/readyz`, async () => {
    if (child.exitCode !== null) {
      throw Object.assign(new Error(`the server exited with ${child.exitCode}\n${demo.log()}`), { fatal: true });
    }
    return (await fetch(`${demo.base}/readyz`)).ok;
  }, 60_000);
  return demo;
}

async function getJson(path, { origin = base, key } = {}) {
  const response = await fetch(`${origin}${path}`, { headers: key ? { 'X-API-Key': key } : {} });
  assert.equal(response.status, 200, `GET ${path}`);
  return response.json();
}

function watch(target, into) {
  target.on('console', (message) => {
    if (message.type() === 'error') into.push(`console error: ${message.text()}`);
  });
  target.on('pageerror', (error) => into.push(`page error: ${error.message}`));
  target.on('requestfailed', (request) => into.push(`request failed: ${request.url()} ${request.failure()?.errorText}`));
  target.on('response', (response) => {
    if (response.status() >= 400) into.push(`HTTP ${response.status()}: ${response.request().method()} ${response.url()}`);
  });
}

const text = (selector) => page.locator(selector).innerText();
const value = (selector) => page.locator(selector).getAttribute('data-value');
const rowCount = (selector) => page.locator(`${selector} tr`).count();
/** The id on the action button of the row whose content is `content`. */
const actionId = (rows, content) => page.locator(`${rows} tr`, { hasText: content }).locator('button[data-action]').getAttribute('data-id');

before(async () => {
  server = await startDemo();
  base = server.base;
  await eventually('the six demo samples', async () => (await getJson('/stats')).pending === 6);
  // The documented way another system enqueues: a plain INSERT, which the API's checks never see.
  execFileSync('python3', [
    '-c',
    'import sqlite3, sys\n'
      + 'db = sqlite3.connect(sys.argv[1], timeout=10)\n'
      + 'db.execute("INSERT INTO messages (phone_number, content) VALUES (?, ?)", sys.argv[2:4])\n'
      + 'db.commit()',
    server.database, DEAD_LETTER.to, DEAD_LETTER.content,
  ]);
  const paths = (await getJson('/api-docs/openapi.json')).paths;
  documented = {
    retry: Boolean(paths['/messages/{id}/retry']?.post),
    cancel: Boolean(paths['/messages/{id}/cancel']?.post),
  };

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-gpu'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  page = await context.newPage();
  watch(page, problems);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** The sample cancelled in the Cancel step, when the API has Cancel: it is never sent. */
const CANCELLED = { content: 'Flash sale', masked: '+12025****43' };

test('the page loads with no console errors and shows the queue that GET /stats reports', async () => {
  await page.goto(`${base}/`);
  assert.match(await page.title(), /operator console/);
  await page.waitForFunction(() => document.querySelector('#pending').dataset.value !== ''
    && document.querySelector('#scheduler-state').dataset.running !== '');

  const stats = await getJson('/stats');
  assert.equal(stats.pending, 7, 'six samples and one raw row wait');
  assert.equal(Number(await value('#pending')), stats.pending);
  assert.equal(await text('#pending'), String(stats.pending));
  const shownAge = Number(await value('#oldest-age'));
  assert.ok(
    shownAge >= 0 && shownAge <= stats.oldest_pending_age_seconds
      && stats.oldest_pending_age_seconds - shownAge <= REFRESH_SLACK_SECONDS,
    `oldest pending age: page ${shownAge} s, API ${stats.oldest_pending_age_seconds} s`,
  );
  assert.notEqual(await text('#oldest-age'), '—');

  assert.equal(await text('#scheduler-state'), 'Stopped');
  assert.equal(await text('#interval'), '1 s');
  assert.equal(await text('#batch-size'), '2');
  assert.equal(await page.locator('#start-button').isEnabled(), true);
  assert.equal(await page.locator('#stop-button').isEnabled(), false);
  // Per-message actions appear exactly when the OpenAPI document lists them.
  assert.equal(await page.locator('#pending-card').isVisible(), documented.cancel);
  if (documented.cancel) {
    await page.waitForFunction(() => document.querySelectorAll('#pending-rows tr').length === 7);
    assert.equal(await page.locator('#pending-rows button[data-action=cancel]').count(), 7);
  }
  assert.deepEqual(problems, []);
});

test('Cancel on a pending message: the API says cancelled and the queue shrinks', async (t) => {
  if (!documented.cancel) return t.skip('the API has no POST /messages/{id}/cancel');
  const id = await actionId('#pending-rows', CANCELLED.content);
  await page.locator('#pending-rows tr', { hasText: CANCELLED.content }).locator('button[data-action=cancel]').click();
  await eventually('the page to show six pending', async () => await value('#pending') === '6' && await rowCount('#pending-rows') === 6);
  assert.equal((await getJson(`/messages/${id}`)).status, 'cancelled');
  assert.equal((await getJson('/stats')).pending, 6);
  assert.match(await text('#action-status'), /^Cancelled: /);
  assert.deepEqual(problems, []);
});

test('Start sends the queue; the page lists the sent messages masked with provider ids, and the dead letter', async () => {
  const expectedSent = SAMPLES_MASKED.filter((masked) => !documented.cancel || masked !== CANCELLED.masked);
  await page.click('#start-button');
  await page.waitForFunction(() => document.querySelector('#scheduler-state').dataset.running === 'true');
  assert.equal((await getJson('/scheduler')).running, true);

  await eventually('the page to show everything sent', async () => await value('#pending') === '0'
    && await rowCount('#sent-rows') === expectedSent.length && await rowCount('#dead-rows') === 1);
  const stats = await getJson('/stats');
  assert.equal(Number(await value('#pending')), stats.pending);
  assert.equal(await value('#oldest-age'), '', 'no pending message, no age');
  assert.equal(await text('#sent-hour'), String(expectedSent.length));
  assert.equal(await text('#failed-hour'), '1');
  const chart = page.locator('#chart svg');
  assert.equal(await chart.getAttribute('data-sent'), String(expectedSent.length));
  assert.equal(await chart.getAttribute('data-failed'), '1');
  assert.ok(await page.locator('#chart rect.bar.sent').count() >= 1);

  const sentRows = await page.locator('#sent-rows tr').evaluateAll((rows) => rows.map((row) => ({
    to: row.cells[1].textContent,
    provider: row.cells[3].textContent,
  })));
  assert.deepEqual(sentRows.map((row) => row.to).sort(), [...expectedSent].sort());
  const sent = await getJson('/messages/sent?limit=8');
  assert.deepEqual(
    sentRows.map((row) => row.provider).sort(),
    sent.items.map((item) => item.provider_message_id).sort(),
  );

  const dead = page.locator('#dead-rows tr').first();
  assert.equal(await dead.locator('td').nth(1).innerText(), DEAD_LETTER.masked);
  assert.equal(await dead.locator('td').nth(2).innerText(), DEAD_LETTER.content);
  assert.match(await dead.locator('td').nth(4).innerText(), /phone_number/);
  assert.equal(await dead.locator('button[data-action=retry]').count(), documented.retry ? 1 : 0);

  const html = await page.content();
  for (const digits of [...SAMPLE_NUMBERS, DEAD_LETTER.to]) assert.ok(!html.includes(digits), `${digits} shown unmasked`);
  assert.deepEqual(problems, []);
});

test('at 1280×800 and at phone width the page fits the screen; screenshots are saved', async () => {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  await page.waitForTimeout(300); // Let the chart settle after the last refresh.
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), 'no sideways scroll at 1280');
  // Every card shown spans at least a fifth of the row: none is left to shrink around its heading.
  for (const card of await page.locator('.layout > .card:not([hidden])').all()) {
    const box = await card.boundingBox();
    assert.ok(box && box.width >= 1280 / 5, `${await card.getAttribute('class')} is ${box && box.width}px wide`);
  }
  await page.screenshot({ path: join(SCREENSHOT_DIR, 'console.png') });

  const phone = await browser.newContext({
    viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
  });
  const small = await phone.newPage();
  watch(small, problems);
  await small.goto(`${base}/console`);
  await small.waitForFunction(() => document.querySelectorAll('#dead-rows tr').length === 1
    && document.querySelector('#chart svg'));
  assert.ok(await small.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), 'no sideways scroll at 390');
  for (const button of ['#start-button', '#stop-button']) {
    const box = await small.locator(button).boundingBox();
    assert.ok(box && box.x >= 0 && box.x + box.width <= 390 && box.height >= 36, `${button} fits and is tappable`);
  }
  await small.screenshot({ path: join(SCREENSHOT_DIR, 'console-phone.png'), fullPage: true });
  await phone.close();
  assert.deepEqual(problems, []);
});

test('Stop: the page shows stopped and GET /scheduler agrees; a key the operator gave goes along as X-API-Key', async () => {
  await page.click('#api-key-button');
  await page.locator('#api-key-dialog').waitFor({ state: 'visible' });
  await page.fill('#api-key-input', 'a-key-this-server-ignores');
  await page.click('#api-key-form button[type=submit]');
  await page.locator('#api-key-dialog').waitFor({ state: 'hidden' });

  const stopRequest = page.waitForRequest((request) => request.method() === 'POST' && request.url().endsWith('/scheduler/stop'));
  await page.click('#stop-button');
  assert.equal((await stopRequest).headers()['x-api-key'], 'a-key-this-server-ignores');
  await page.waitForFunction(() => document.querySelector('#scheduler-state').dataset.running === 'false');
  assert.equal(await text('#scheduler-state'), 'Stopped');
  assert.equal((await getJson('/scheduler')).running, false);
  assert.equal(await page.locator('#start-button').isEnabled(), true);
  assert.equal(await page.locator('#stop-button').isEnabled(), false);
  assert.match(await text('#action-status'), /^Stopped at /);
  assert.deepEqual(problems, []);
});

test('Retry on a dead letter puts it back in the queue', async (t) => {
  if (!documented.retry) return t.skip('the API has no POST /messages/{id}/retry');
  const id = await actionId('#dead-rows', DEAD_LETTER.content);
  await page.locator('#dead-rows button[data-action=retry]').click();
  // Stopped, so it stays pending instead of failing again at the next tick.
  await eventually('the page to show it pending again', async () => await value('#pending') === '1'
    && await rowCount('#dead-rows') === 0);
  assert.equal((await getJson(`/messages/${id}`)).status, 'pending');
  assert.equal((await getJson('/stats')).pending, 1);
  assert.match(await text('#action-status'), /^Queued again: /);
  assert.deepEqual(problems, []);
});

/** One series of the main server's GET /metrics, 0 when it has none yet. */
async function metric(series) {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

test('a page of another site open in the same browser cannot start sending or enqueue', async () => {
  assert.equal((await getJson('/scheduler')).running, false);
  const pending = (await getJson('/stats')).pending;
  const refused = {
    start: 'http_requests_total{method="POST",route="/scheduler/start",status="403"}',
    enqueue: 'http_requests_total{method="POST",route="/messages",status="403"}',
  };
  const refusedBefore = { start: await metric(refused.start), enqueue: await metric(refused.enqueue) };

  // Any page will do: what matters is where it comes from. Another port of the same host is the same
  // site for the browser (Sec-Fetch-Site: same-site); another host name is another site.
  const port = await freePort();
  const elsewhere = createHttpServer((request, response) => {
    response.writeHead(200, { 'content-type': 'text/html' });
    response.end('<!doctype html><title>another site</title>');
  });
  await new Promise((resolve) => elsewhere.listen(port, '127.0.0.1', resolve));
  const context = await browser.newContext();
  try {
    for (const origin of [`http://127.0.0.1:${port}`, `http://localhost:${port}`]) {
      const other = await context.newPage();
      await other.goto(`${origin}/`);
      // no-cors: the page may not read the answers, but the browser sends the requests without asking.
      const sent = await other.evaluate(async (target) => {
        const message = JSON.stringify({ to: '+905559999999', content: 'from another site' });
        const outcomes = [];
        for (const [path, body] of [['/scheduler/start', undefined], ['/messages', message]]) {
          try {
            await fetch(`${target}${path}`, { method: 'POST', mode: 'no-cors', body });
            outcomes.push('sent');
          } catch (error) {
            outcomes.push(`not sent: ${error.message}`);
          }
        }
        return outcomes;
      }, base);
      assert.deepEqual(sent, ['sent', 'sent'], `${origin}: the browser sent both requests`);
      await other.close();
    }
  } finally {
    await context.close();
    elsewhere.close();
  }

  assert.equal((await getJson('/scheduler')).running, false, 'sending was not started from another site');
  assert.equal((await getJson('/stats')).pending, pending, 'nothing was enqueued from another site');
  // The server saw the requests and refused them (the browser did not simply block them).
  assert.equal(await metric(refused.start), refusedBefore.start + 2);
  assert.equal(await metric(refused.enqueue), refusedBefore.enqueue + 2);
});

test('nothing went wrong in the browser the whole time', async () => {
  await page.waitForTimeout(3500); // One more refresh cycle after the last action.
  assert.deepEqual(problems, []);
});

test('with API_KEY set, the page asks for the key once, then shows the queue and acts with it', async () => {
  const key = 'console-test-key';
  const guarded = await startDemo({ API_KEY: key });
  const seen = [];
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  try {
    await eventually('the six demo samples', async () => (await getJson('/stats', { origin: guarded.base, key })).pending === 6);
    const keyed = await context.newPage();
    watch(keyed, seen);
    await keyed.goto(`${guarded.base}/console`);
    await keyed.locator('#api-key-dialog').waitFor({ state: 'visible' });
    assert.match(await keyed.locator('#api-key-reason').innerText(), /needs an API key/);
    assert.match(await keyed.locator('#problem').innerText(), /API key/);
    await keyed.fill('#api-key-input', key);
    await keyed.click('#api-key-form button[type=submit]');
    await keyed.waitForFunction(() => document.querySelector('#pending').dataset.value === '6');
    assert.equal(await keyed.locator('#problem').isHidden(), true);

    await keyed.click('#start-button');
    await keyed.waitForFunction(() => document.querySelector('#scheduler-state').dataset.running === 'true');
    assert.equal((await getJson('/scheduler', { origin: guarded.base, key })).running, true);
    assert.equal(await keyed.locator('#api-key-dialog').isHidden(), true, 'asked once only');
    // The only complaints: the first round of reads, made before the key was given, refused with 401.
    assert.ok(seen.length > 0, 'the server refused the reads without the key');
    for (const complaint of seen) assert.match(complaint, /\b401\b/, complaint);
  } finally {
    await context.close();
    await guarded.stop();
  }
});

test('a provider that refuses our key: the page says the instance is paused, and Resume sends once the key works', async () => {
  // A provider of our own: 401 until the key is right, then 202 with a messageId.
  let accepting = false;
  const posts = [];
  const provider = createHttpServer((request, response) => {
    request.resume();
    request.on('end', () => {
      posts.push(request.headers['x-ins-auth-key']);
      response.writeHead(accepting ? 202 : 401, { 'content-type': 'application/json' });
      response.end(JSON.stringify(accepting ? { message: 'Accepted', messageId: `id-${posts.length}` } : { message: 'bad key' }));
    });
  });
  await new Promise((resolve) => provider.listen(0, '127.0.0.1', resolve));
  const refused = await startDemo({
    WEBHOOK_URL: `http://127.0.0.1:${provider.address().port}/sms`,
    WEBHOOK_AUTH_KEY: 'an-old-key',
    AUTOSTART: 'true',
    INTERVAL: '200ms',
  }, 'serve');
  const seen = [];
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  try {
    const enqueued = await fetch(`${refused.base}/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ to: '+905551111111', content: 'Refused, then resumed' }),
    });
    assert.equal(enqueued.status, 201, await enqueued.text());
    await eventually('the provider to refuse our key', async () => (await getJson('/scheduler', { origin: refused.base })).flow?.credentials_refused);
    const watched = await context.newPage();
    watch(watched, seen);
    await watched.goto(`${refused.base}/console`);
    await watched.waitForFunction(() => document.querySelector('#scheduler-state').textContent.includes('key refused'));
    assert.match(await watched.locator('#flow-state').innerText(), /refused our key \(401\)/);
    assert.equal(await watched.locator('#start-button').innerText(), 'Resume');
    assert.equal(await watched.locator('#start-button').isEnabled(), true, 'Resume must be offered while paused');
    assert.equal((await getJson('/stats', { origin: refused.base })).pending, 1, 'the refused message waits, not failed');

    accepting = true;
    await watched.click('#start-button');
    await eventually('the message sent after Resume', async () => (await getJson('/messages/sent', { origin: refused.base })).items.length === 1);
    await watched.waitForFunction(() => document.querySelector('#scheduler-state').textContent === 'Running');
    assert.equal(await watched.locator('#start-button').isDisabled(), true);
    assert.equal(await watched.locator('#flow-state').innerText(), 'sending');
    assert.deepEqual(seen, []);
  } finally {
    await context.close();
    await refused.stop();
    provider.close();
  }
});
