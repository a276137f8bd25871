// The dashboard (GET /) in Chromium against witty-bff on its embedded simulator. The tests run in
// order on one page, as a user would: load, watch a car arrive and leave, read the chart and the
// sessions, switch the charge mode, download the CSV; then the page at phone width.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { INSTALLATION_ID, STATION_ID, graphql, simulate, startServer, tokenFor } from './server.mjs';
import { isLocal, launch } from './browser.mjs';

const TARGET = fileURLToPath(new URL('../../target/', import.meta.url));
const STATION = `article.station[data-station-id="${STATION_ID}"]`;
const LONG = { timeout: 30_000 };

let server;
let browser;
let context;
let page;
let navigations = 0;
let requested;
let problems;

/** Every URL a page asks for (requests and WebSockets), and what goes wrong in it. */
function watch(p) {
  const seen = { requested: [], problems: [] };
  p.on('request', (r) => seen.requested.push(r.url()));
  p.on('websocket', (ws) => seen.requested.push(ws.url()));
  p.on('pageerror', (e) => seen.problems.push(`page error: ${e.message}`));
  p.on('console', (m) => {
    if (m.type() === 'error') seen.problems.push(`console: ${m.text()}`);
  });
  return seen;
}

/** The ranges the page shows: this UTC month. */
function month(now = new Date()) {
  const iso = (ms) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
  return {
    monthFrom: iso(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)),
    monthTo: iso(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1)),
  };
}

async function sessionsOfTheMonth() {
  const data = await graphql(
    server,
    `query($id: ID!, $monthFrom: DateTime!, $monthTo: DateTime!) {
      installation(id: $id) { chargingStations { id sessions(from: $monthFrom, to: $monthTo) {
        startDate endDate durationSeconds energy cost currency } } } }`,
    { id: INSTALLATION_ID, ...month() },
  );
  return data.installation.chargingStations.flatMap((s) => s.sessions ?? []);
}

/**
 * Waits for `selector` on the page while making it happen through the simulator: the first event
 * may come before witty-bff watches the installation upstream, so `cause` runs again every 5 s.
 */
async function causeAndWait(selector, cause, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  await cause(true);
  for (;;) {
    try {
      await page.waitForSelector(selector, { timeout: 5_000 });
      return;
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await cause(false);
    }
  }
}

/** A station name that would run a script if the page put it in as HTML. */
const HOSTILE_NAME = 'Garage <img src=x onerror="window.pwned=1"> & "co"';

before(async () => {
  server = await startServer();
  // Set before anything reads the station, so that every answer carries it.
  const named = await fetch(`${server.simulator}/_sim/stations/${STATION_ID}/properties`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ friendlyName: HOSTILE_NAME }),
  });
  assert.equal(named.status, 200, await named.text());
  browser = await launch();
  context = await browser.newContext({ acceptDownloads: true });
  page = await context.newPage();
  ({ requested, problems } = watch(page));
  page.on('framenavigated', (frame) => {
    if (frame === page.mainFrame()) navigations += 1;
  });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('the page loads from this machine alone, under its content security policy', async () => {
  const response = await page.goto(`${server.base}/`);
  assert.equal(response.status(), 200);
  const csp = response.headers()['content-security-policy'];
  assert.match(csp, /script-src 'self'/);
  assert.match(csp, /connect-src 'self'/);
  assert.equal(response.headers()['cache-control'], 'no-store');
  await page.waitForSelector(STATION, LONG);
  await page.waitForSelector('body[data-live="live"]', LONG);
  assert.ok(requested.length >= 3, `requests: ${requested.join(', ')}`);
  const elsewhere = requested.filter((url) => !isLocal(url));
  assert.deepEqual(elsewhere, [], 'every request stays on this machine');
  assert.ok(requested.some((url) => url.startsWith('ws://127.0.0.1')), 'the live events come over a WebSocket');
  assert.deepEqual(problems, [], 'no script error and no policy violation');
});

test('the installations and their stations appear, with their state', async () => {
  const data = await graphql(server, `{ installations { id name chargingStations { id friendlyName chargeMode } } }`);
  const shown = await page.$$eval('section.installation', (sections) =>
    sections.map((s) => ({
      id: s.dataset.installationId,
      name: s.querySelector('h2').textContent,
      stations: [...s.querySelectorAll('article.station')].map((a) => a.dataset.stationId),
    })),
  );
  assert.deepEqual(
    shown,
    data.installations.map((i) => ({ id: i.id, name: i.name, stations: i.chargingStations.map((c) => c.id) })),
  );
  const station = data.installations.find((i) => i.id === INSTALLATION_ID).chargingStations[0];
  assert.equal(await page.textContent(`${STATION} [data-field="name"]`), station.friendlyName);
  assert.equal(await page.getAttribute(`${STATION} [data-field="chargeMode"]`, 'data-value'), station.chargeMode);
  assert.ok(await page.getAttribute(`${STATION} [data-field="availability"]`, 'data-value'));
});

test('what the API answers is shown as text, never run as HTML', async () => {
  assert.equal(await page.textContent(`${STATION} [data-field="name"]`), HOSTILE_NAME);
  assert.equal(await page.$$eval('img', (imgs) => imgs.length), 0);
  assert.equal(await page.evaluate(() => window.pwned), undefined);
});

test('a car plugged in and out through the simulator shows without a reload', async () => {
  const before = navigations;
  await causeAndWait(`${STATION} [data-field="plug"][data-value="MODE_3"]`, async (first) => {
    if (!first) await simulate(server, 'unplug');
    await simulate(server, 'plug');
  });
  await causeAndWait(`${STATION} [data-field="plug"][data-value="UNPLUGGED"]`, async (first) => {
    if (!first) await simulate(server, 'plug');
    await simulate(server, 'unplug');
  });
  assert.equal(navigations, before, 'the page was not reloaded');
});

test('the energy chart has drawn a bar per day for the last 30 days', async () => {
  const canvas = `${STATION} canvas.chart`;
  await page.waitForSelector(`${canvas}[data-days="30"]`, LONG);
  const painted = await page.$eval(canvas, (c) => {
    const { data } = c.getContext('2d').getImageData(0, 0, c.width, c.height);
    let n = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n += 1;
    return { n, all: c.width * c.height };
  });
  assert.ok(painted.n > 0 && painted.n < painted.all, `painted pixels: ${painted.n} of ${painted.all}`);
  assert.match(await page.textContent(`${STATION} [data-field="energy-total"]`), /^\d+\.\d (kWh|Wh) in 30 days$/);
  // The bars are the measure's points summed per UTC day, as GraphQL answers them.
  const iso = (ms) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
  const now = new Date();
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  const from = today - 29 * 86_400_000;
  const data = await graphql(
    server,
    `query($id: ID!, $cs: ID!, $from: DateTime!, $to: DateTime!) { installation(id: $id) { chargingStation(id: $cs) {
      measure(id: "1") { values(operator: SUM, from: $from, to: $to, step: DAY) { date value } } } } }`,
    { id: INSTALLATION_ID, cs: STATION_ID, from: iso(from), to: iso(today + 86_400_000) },
  );
  const expected = Array(30).fill(0);
  for (const point of data.installation.chargingStation.measure.values) {
    expected[Math.floor((Date.parse(point.date) - from) / 86_400_000)] += point.value ?? 0;
  }
  const drawn = (await page.getAttribute(canvas, 'data-values')).split(' ').map(Number);
  assert.equal(drawn.length, 30);
  // Today's bar was read at load: the car plugged since may have added to the day.
  drawn.forEach((value, day) => {
    const close = day < 29 ? Math.abs(value - expected[day]) < 0.001 : value <= expected[day] + 0.001;
    assert.ok(close, `day ${day}: ${value} drawn, ${expected[day]} answered`);
  });
});

test('the sessions of this month are listed with their costs', async () => {
  const sessions = (await sessionsOfTheMonth()).sort((a, b) => a.startDate.localeCompare(b.startDate));
  await page.waitForSelector(`${STATION} [data-field="sessions-total"][data-value="${sessions.length}"]`, LONG);
  const rows = await page.$$eval(`${STATION} tbody[data-field="sessions"] tr`, (trs) =>
    trs.map((tr) => ({ start: tr.dataset.start, cost: tr.cells[3].textContent })),
  );
  assert.deepEqual(rows.map((r) => r.start), sessions.map((s) => s.startDate));
  for (const [i, s] of sessions.entries()) {
    if (s.cost !== null) assert.match(rows[i].cost, /\d/, `the cost of the session of ${s.startDate}`);
  }
});

test('the charge-mode switch shows ACCEPTED, then APPLIED', async () => {
  const current = await page.getAttribute(`${STATION} [data-field="chargeMode"]`, 'data-value');
  const mode = current === 'DEFERRED' ? 'IMMEDIATE' : 'DEFERRED';
  await page.selectOption(`${STATION} form.mode select`, mode);
  await page.click(`${STATION} form.mode button[type="submit"]`);
  await page.waitForSelector(`${STATION} output[data-field="command"][data-status="APPLIED"]`, { timeout: 60_000 });
  const history = await page.getAttribute(`${STATION} output[data-field="command"]`, 'data-history');
  assert.match(history, /ACCEPTED APPLIED$/, `statuses shown: ${history}`);
  assert.equal(await page.getAttribute(`${STATION} [data-field="chargeMode"]`, 'data-value'), mode);
  const data = await graphql(server, `query($id: ID!, $cs: ID!) { installation(id: $id) { chargingStation(id: $cs) { chargeMode } } }`, {
    id: INSTALLATION_ID,
    cs: STATION_ID,
  });
  assert.equal(data.installation.chargingStation.chargeMode, mode);
});

/** RFC 4180 rows (quoted fields, doubled quotes, CRLF or LF). */
function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i += 1;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      row.push(field);
      field = '';
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i += 1;
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
    } else field += c;
  }
  if (field || row.length) rows.push([...row, field]);
  return rows;
}

/** The column whose name is `word` (any case, spacing or unit), else the first containing it. */
function column(header, word) {
  const names = header.map((h) => h.toLowerCase().replace(/[^a-z]/g, ''));
  const exact = names.findIndex((n) => n === word || n === `${word}kwh` || n.startsWith(`${word}date`));
  return exact >= 0 ? exact : names.findIndex((n) => n.includes(word));
}

test('the CSV download holds what `sessions` answers (needs GET /reports/sessions.csv)', async () => {
  const sessions = (await sessionsOfTheMonth()).sort((a, b) => a.startDate.localeCompare(b.startDate));
  const installation = `section.installation[data-installation-id="${INSTALLATION_ID}"]`;
  const downloaded = page.waitForEvent('download', LONG);
  await page.click(`${installation} button.csv`);
  // A refusal shows beside the button: fail with it rather than wait for a download.
  const refused = page
    .waitForSelector(`${installation} [data-field="csv-status"]:text("could not download")`, LONG)
    .then(async (node) => {
      throw new Error(`the page says: ${await node.textContent()}`);
    });
  const download = await Promise.race([downloaded, refused]);
  refused.catch(() => {});
  const text = readFileSync(await download.path(), 'utf8');
  const [header, ...lines] = parseCsv(text).filter((r) => r.some((f) => f !== ''));
  // One line per session, then the totals.
  const total = lines.pop();
  const rows = lines;
  assert.equal(total[0], 'Total', `CSV:\n${text}`);
  assert.equal(rows.length, sessions.length, `CSV:\n${text}`);
  assert.equal(Number(total[column(header, 'sessions')]), sessions.length, `CSV:\n${text}`);
  const [start, energy, cost] = ['start', 'energy', 'cost'].map((w) => column(header, w));
  assert.ok(start >= 0 && energy >= 0 && cost >= 0, `header: ${header}`);
  rows.sort((a, b) => Date.parse(a[start]) - Date.parse(b[start]));
  for (const [i, s] of sessions.entries()) {
    assert.equal(Date.parse(rows[i][start]), Date.parse(s.startDate), `row ${i + 1} start`);
    for (const [col, value] of [[energy, s.energy], [cost, s.cost]]) {
      if (value === null) assert.equal(rows[i][col], '', `row ${i + 1}: ${header[col]}`);
      else assert.ok(Math.abs(Number(rows[i][col]) - value) < 1e-6, `row ${i + 1}: ${header[col]} ${rows[i][col]} ≠ ${value}`);
    }
  }
  await page.waitForSelector(`${installation} [data-field="csv-status"]:text("downloaded")`, LONG);
});

test('at phone width (375 px) nothing scrolls sideways', async () => {
  const phone = await browser.newContext({ viewport: { width: 375, height: 740 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  try {
    const p = await phone.newPage();
    const seen = watch(p);
    await p.goto(`${server.base}/`);
    await p.waitForSelector(`${STATION} canvas.chart[data-days="30"]`, LONG);
    await p.waitForSelector('body[data-live="live"]', LONG);
    const { scrollWidth, clientWidth } = await p.evaluate(() => ({
      scrollWidth: document.scrollingElement.scrollWidth,
      clientWidth: document.scrollingElement.clientWidth,
    }));
    mkdirSync(TARGET, { recursive: true });
    await p.screenshot({ path: `${TARGET}dashboard-375.png`, fullPage: true });
    assert.ok(scrollWidth <= clientWidth, `scrollWidth ${scrollWidth} > clientWidth ${clientWidth}`);
    assert.deepEqual(seen.requested.filter((url) => !isLocal(url)), []);
    assert.deepEqual(seen.problems, []);
  } finally {
    await phone.close();
  }
});

/** A page of its own, as served away from the simulator (no dev token minted into it). */
async function pageWithoutToken(ctx) {
  const p = await ctx.newPage();
  const seen = watch(p);
  // The dev token is taken out as the page is parsed, before its (deferred) script runs.
  // (Answering the page through `page.route` instead would make it a page of no known address,
  // which Chromium's local network access checks keep off the loopback WebSocket.)
  await p.addInitScript(() => {
    new MutationObserver((changes) => {
      for (const change of changes) {
        for (const node of change.addedNodes) if (node.name === 'witty-dev-token') node.remove();
      }
    }).observe(document, { childList: true, subtree: true });
  });
  return { p, seen };
}

test('with no token minted, the page asks for one and keeps it', async () => {
  const fresh = await browser.newContext();
  try {
    const { p, seen } = await pageWithoutToken(fresh);
    await p.goto(`${server.base}/`);
    await p.waitForSelector('#token-form:not([hidden])', LONG);
    assert.equal(await p.$$eval('article.station', (a) => a.length), 0);
    await p.fill('#token-input', `Bearer ${server.token}`);
    await p.click('#token-form button[type="submit"]');
    await p.waitForSelector(STATION, LONG);
    assert.equal(await p.evaluate(() => localStorage.getItem('witty-bff:dashboardToken')), server.token);
    await p.reload();
    await p.waitForSelector(STATION, LONG);
    await p.waitForSelector('body[data-live="live"]', LONG);
    assert.deepEqual(seen.problems, []);
  } finally {
    await fresh.close();
  }
});

test('an installer sees the state and sessions, not energy, costs or commands', async () => {
  const fresh = await browser.newContext();
  // A session running: its energy and cost are refused him too, and that is no error either.
  await simulate(server, 'plug');
  try {
    const { p } = await pageWithoutToken(fresh);
    await p.goto(`${server.base}/`);
    await p.fill('#token-input', tokenFor('ivan'));
    await p.click('#token-form button[type="submit"]');
    await p.waitForSelector(`${STATION} [data-field="sessions-total"][data-value]`, LONG);
    assert.equal(await p.textContent('#error'), '', 'a refusal the page expects is not an error of the page');
    assert.match(await p.textContent(`${STATION} [data-field="energy-total"]`), /^Energy: .*owner/);
    assert.doesNotMatch(await p.textContent(`${STATION} [data-field="sessions-total"]`), /kWh|€|\d\.\d/);
    await p.click(`${STATION} form.mode button[type="submit"]`);
    await p.waitForSelector(`${STATION} output[data-field="command"][data-status="REFUSED"]`, LONG);
    assert.match(await p.textContent(`${STATION} output[data-field="command"]`), /^REFUSED: .*owner/i);
    assert.equal(await p.textContent('#error'), '', 'the running session\'s refused cost is no error of the page');

    // The owner disables him: his live events end for good, and the page drops the installation
    // instead of subscribing again and again.
    const account = (await graphql(server, `{ installation(id: ${INSTALLATION_ID}) { users { accountId email } } }`))
      .installation.users.find((u) => /ivan/i.test(u.email ?? '')).accountId;
    const toggle = (what) =>
      graphql(server, `mutation($a: ID!) { ${what}(installationId: ${INSTALLATION_ID}, accountId: $a) }`, { a: account });
    await toggle('disableInstaller');
    try {
      await p.waitForSelector(`section.installation[data-installation-id="${INSTALLATION_ID}"]`, { ...LONG, state: 'detached' });
      assert.equal(await p.textContent('#error'), '');
    } finally {
      await toggle('enableInstaller');
    }
  } finally {
    await simulate(server, 'unplug');
    await fresh.close();
  }
});
