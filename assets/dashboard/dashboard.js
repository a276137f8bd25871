// The dashboard on `GET /` (docs/dashboard.md): the caller's installations, each station's live
// state (kept up to date by the `stationEvents` subscription over graphql-transport-ws), energy
// per day over the last 30 days, this month's sessions with their costs, their CSV, and a
// charge-mode switch. Plain JavaScript, no library, nothing loaded from elsewhere. Everything
// the API answers goes into the page as text (textContent, attributes), never as HTML.
'use strict';

(() => {
  const TOKEN_KEY = 'witty-bff:dashboardToken';
  const DAYS = 30;
  const DAY_MS = 86_400_000;
  const COMMAND_WATCH_MS = 60_000;

  const STATION_FIELDS = /* GraphQL */ `
    fragment StationState on ChargingStation {
      id friendlyName fetchedAt
      availability availabilityRaw
      carPlugStatus carPlugStatusRaw
      chargeMode chargeModeRaw
      currentSession { startDate durationSeconds totalSessionEnergy totalSessionCost }
    }`;
  const SESSION_FIELDS = /* GraphQL */ `
    fragment Sessions on ChargingStation {
      sessions(from: $monthFrom, to: $monthTo) { startDate endDate durationSeconds energy cost currency }
    }`;
  const DASHBOARD = /* GraphQL */ `
    query Dashboard($from: DateTime!, $to: DateTime!, $monthFrom: DateTime!, $monthTo: DateTime!) {
      installations {
        id name locationName
        chargingStations {
          ...StationState
          ...Sessions
          energy: measure(id: "1") { unit values(operator: SUM, from: $from, to: $to, step: DAY) { date value } }
        }
      }
    }
    ${STATION_FIELDS}
    ${SESSION_FIELDS}`;
  const STATION = /* GraphQL */ `
    query Station($installationId: ID!, $stationId: ID!, $monthFrom: DateTime!, $monthTo: DateTime!) {
      installation(id: $installationId) { chargingStation(id: $stationId) { ...StationState ...Sessions } }
    }
    ${STATION_FIELDS}
    ${SESSION_FIELDS}`;
  const SET_CHARGE_MODE = /* GraphQL */ `
    mutation SetChargeMode($installationId: ID!, $stationId: ID!, $mode: ChargeMode!, $key: String!) {
      setChargeMode(installationId: $installationId, chargingStationId: $stationId, mode: $mode, idempotencyKey: $key) {
        status
        chargingStation { ...StationState }
      }
    }
    ${STATION_FIELDS}`;
  const STATION_EVENTS = /* GraphQL */ `
    subscription StationEvents($installationId: ID!) {
      stationEvents(installationId: $installationId) { id type chargingStationId eventTime }
    }`;

  const LABELS = {
    availability: { AVAILABLE: 'Available', OCCUPIED: 'Occupied', CHARGING: 'Charging', UNAVAILABLE: 'Unavailable' },
    plug: { UNPLUGGED: 'No car plugged', MODE_3: 'Car plugged (mode 3 socket)' },
    chargeMode: { IMMEDIATE: 'Immediate', DEFERRED: 'Deferred', DEFERRED_EXCLUSIVE: 'Deferred (exclusive)' },
  };
  const MODES = ['IMMEDIATE', 'DEFERRED', 'DEFERRED_EXCLUSIVE'];

  // ---------------------------------------------------------------- small helpers

  const $ = (selector, root = document) => root.querySelector(selector);

  /** An element with attributes and children; strings become text nodes, never markup. */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === 'class') node.className = value;
      else if (name === 'text') node.textContent = value;
      else node.setAttribute(name, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null) continue;
      node.append(typeof child === 'string' ? document.createTextNode(child) : child);
    }
    return node;
  }

  const utcMidnight = (date) => Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate());
  /** RFC 3339 in UTC, to the second (`2026-12-01T00:00:00Z`): what any reader of dates takes. */
  const iso = (ms) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

  /** The ranges the page shows: the last 30 UTC days (today included) and this UTC month. */
  function ranges(now = new Date()) {
    const today = utcMidnight(now);
    return {
      from: iso(today - (DAYS - 1) * DAY_MS),
      to: iso(today + DAY_MS),
      monthFrom: iso(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)),
      monthTo: iso(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1)),
    };
  }

  const dateTime = new Intl.DateTimeFormat(undefined, {
    day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit',
  });
  const shortDay = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', timeZone: 'UTC' });
  const when = (value) => (value ? dateTime.format(new Date(value)) : '—');

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return '—';
    const minutes = Math.round(seconds / 60);
    const h = Math.floor(minutes / 60);
    const m = minutes % 60;
    return h ? `${h} h ${String(m).padStart(2, '0')} min` : `${m} min`;
  }

  const kwh = (value) => (value === null || value === undefined ? '—' : `${value.toFixed(2)} kWh`);

  function money(value, currency) {
    if (value === null || value === undefined) return '—';
    const code = (currency ?? '').toUpperCase();
    if (/^[A-Z]{3}$/.test(code)) {
      try {
        return new Intl.NumberFormat(undefined, { style: 'currency', currency: code }).format(value);
      } catch {
        // An unknown code: written out below.
      }
    }
    return code ? `${value.toFixed(2)} ${code}` : value.toFixed(2);
  }

  function label(kind, value, raw) {
    if (value === null || value === undefined) return '—';
    if (value === 'UNKNOWN') return raw ? `${raw} (unknown)` : 'unknown';
    return LABELS[kind][value] ?? value;
  }

  /** An idempotency key: random, where crypto.randomUUID is missing too (plain http off loopback). */
  function randomKey() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return `dashboard-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
  }

  // ---------------------------------------------------------------- errors and the token

  const errors = new Map();

  /** Shows (or, with no message, clears) the page-wide error of one source. */
  function setError(source, message) {
    if (message) errors.set(source, message);
    else errors.delete(source);
    $('#error').textContent = [...errors.values()].join('\n');
  }

  class GraphQLError extends Error {
    constructor(error) {
      super(error?.message ?? 'the request failed');
      this.code = error?.extensions?.code;
    }
  }

  const meta = $('meta[name="witty-dev-token"]');
  const devToken = meta?.content ?? '';
  let token = devToken || localStorage.getItem(TOKEN_KEY) || '';

  function askForToken(message) {
    live.stop();
    const form = $('#token-form');
    form.hidden = false;
    $('#token-error').textContent = message ?? '';
    $('#forget-token').hidden = true;
    $('#installations').replaceChildren();
    setLive('offline');
    $('#token-input').focus();
  }

  $('#token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const value = $('#token-input').value.trim().replace(/^bearer\s+/i, '');
    if (!value) return;
    token = value;
    localStorage.setItem(TOKEN_KEY, token);
    $('#token-input').value = '';
    start();
  });

  $('#forget-token').addEventListener('click', () => {
    localStorage.removeItem(TOKEN_KEY);
    token = '';
    askForToken();
  });

  // ---------------------------------------------------------------- GraphQL over HTTP

  /** Runs an operation; resolves to `{ data, errors }`, throws when there is no data at all. */
  async function graphql(query, variables) {
    const response = await fetch('/graphql', {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/graphql-response+json, application/json',
        authorization: `Bearer ${token}`,
      },
      body: JSON.stringify({ query, variables }),
    });
    let body;
    try {
      body = await response.json();
    } catch {
      throw new Error(`the server answered ${response.status} without a GraphQL response`);
    }
    const first = body.errors?.[0];
    if (first?.extensions?.code === 'UNAUTHENTICATED') {
      askForToken(`The token was refused: ${first.message}`);
      throw new GraphQLError(first);
    }
    if (!body.data) throw new GraphQLError(first);
    return body;
  }

  const describe = (errs) => (errs ?? []).map((e) => `${e.message}${e.path ? ` (${e.path.join('.')})` : ''}`).join('; ');

  // An installer's refusals (costs, energy: FORBIDDEN) are expected: the page shows what is left
  // without listing them as errors.
  const unexpected = (errs) => (errs ?? []).filter((e) => e.extensions?.code !== 'FORBIDDEN');
  // A subscription refused for good: the installation is gone, or the caller's access to it.
  const lost = (errs) => (errs ?? []).some((e) => ['NOT_FOUND', 'FORBIDDEN'].includes(e.extensions?.code));

  // ---------------------------------------------------------------- live events (graphql-transport-ws)

  /**
   * A small graphql-transport-ws client: `connection_init` with the bearer token, one `subscribe`
   * per installation, `pong` to the server's `ping`, and a reconnection with backoff when the
   * socket closes (not when the token is refused: 4403).
   */
  class LiveEvents {
    constructor() {
      this.subscriptions = new Map();
      this.socket = null;
      this.retry = 0;
      this.timer = null;
      this.stopped = true;
      this.onConnected = () => {};
    }

    subscribe(id, query, variables, onNext) {
      this.subscriptions.set(id, { query, variables, onNext });
      if (this.socket?.readyState === WebSocket.OPEN && this.acked) this.send(id);
    }

    /** Forgets a subscription: not sent again, on this socket or the next. */
    unsubscribe(id) {
      this.subscriptions.delete(id);
      if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify({ id, type: 'complete' }));
    }

    send(id) {
      const { query, variables } = this.subscriptions.get(id);
      this.socket.send(JSON.stringify({ id, type: 'subscribe', payload: { query, variables } }));
    }

    start() {
      this.stopped = false;
      this.connect();
    }

    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      this.subscriptions.clear();
      if (this.socket) this.socket.close(1000, 'done');
      this.socket = null;
    }

    connect() {
      const url = `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/graphql`;
      const socket = new WebSocket(url, 'graphql-transport-ws');
      this.socket = socket;
      this.acked = false;
      setLive('connecting');
      socket.addEventListener('open', () => {
        socket.send(JSON.stringify({ type: 'connection_init', payload: { Authorization: `Bearer ${token}` } }));
      });
      socket.addEventListener('message', (message) => {
        let msg;
        try {
          msg = JSON.parse(message.data);
        } catch {
          return;
        }
        switch (msg.type) {
          case 'connection_ack':
            this.acked = true;
            this.retry = 0;
            for (const id of this.subscriptions.keys()) this.send(id);
            setLive('live');
            this.onConnected();
            break;
          case 'ping':
            socket.send(JSON.stringify({ type: 'pong' }));
            break;
          case 'next':
            this.subscriptions.get(msg.id)?.onNext(msg.payload);
            break;
          case 'error':
            setError(`live:${msg.id}`, `Live events: ${describe(msg.payload)}`);
            break;
          case 'complete':
            // The server ended it (a last `next` said why): subscribe again after a pause.
            if (this.subscriptions.has(msg.id)) {
              setTimeout(() => {
                if (this.socket === socket && this.acked && this.subscriptions.has(msg.id)) this.send(msg.id);
              }, 5_000);
            }
            break;
          default:
            break;
        }
      });
      socket.addEventListener('close', (event) => {
        if (this.socket !== socket) return;
        this.socket = null;
        setLive('offline');
        if (this.stopped) return;
        if (event.code === 4403) {
          askForToken(`The token was refused: ${event.reason}`);
          return;
        }
        const wait = Math.min(30_000, 1_000 * 2 ** this.retry++);
        this.timer = setTimeout(() => this.connect(), wait);
      });
    }
  }

  const live = new LiveEvents();

  function setLive(state) {
    const node = $('#live');
    node.dataset.state = state;
    node.textContent = { live: 'live', connecting: 'connecting…', offline: 'offline' }[state];
    document.body.dataset.live = state;
  }

  // ---------------------------------------------------------------- the page

  /** The stations shown, by id: their elements and what is known of them. */
  const stations = new Map();
  /** The charts, redrawn when the page's width changes. */
  const charts = new Map();

  function render(installations, refusals) {
    const main = $('#installations');
    main.replaceChildren();
    stations.clear();
    charts.clear();
    sized.disconnect();
    if (!installations.length) {
      main.append(el('p', { class: 'empty', text: 'This account has no installation.' }));
    }
    for (const installation of installations) {
      main.append(renderInstallation(installation, refusals));
    }
  }

  function renderInstallation(installation, refusals) {
    const csvStatus = el('span', { class: 'status', 'data-field': 'csv-status', role: 'status' });
    const csvButton = el('button', { type: 'button', class: 'csv', text: 'Download this month’s sessions (CSV)' });
    csvButton.addEventListener('click', () => downloadCsv(installation, csvButton, csvStatus));
    const list = el('div', { class: 'stations' });
    for (const station of installation.chargingStations ?? []) {
      list.append(renderStation(installation.id, station, refusals.get(station.id)));
    }
    if (!installation.chargingStations?.length) {
      list.append(el('p', { class: 'empty', text: 'No charging station yet.' }));
    }
    return el(
      'section',
      { class: 'installation', 'data-installation-id': installation.id },
      el(
        'header',
        {},
        el('h2', { text: installation.name }),
        installation.locationName ? el('p', { class: 'location', text: installation.locationName }) : null,
        el('div', { class: 'csv-row' }, csvButton, csvStatus),
      ),
      list,
    );
  }

  function field(name, title) {
    return [el('dt', { text: title }), el('dd', { 'data-field': name })];
  }

  function renderStation(installationId, station, refusal) {
    const state = el(
      'dl',
      { class: 'state' },
      field('availability', 'Availability'),
      field('plug', 'Cable'),
      field('chargeMode', 'Charge mode'),
      field('session', 'Current session'),
      field('fetchedAt', 'State read at'),
    );
    const select = el('select', { name: 'mode', 'aria-label': 'Charge mode' });
    for (const mode of MODES) select.append(el('option', { value: mode, text: LABELS.chargeMode[mode] }));
    const output = el('output', { 'data-field': 'command', 'data-history': '' });
    const form = el(
      'form',
      { class: 'mode' },
      el('label', {}, 'Set charge mode ', select),
      el('button', { type: 'submit', text: 'Apply' }),
      output,
    );
    const canvas = el('canvas', { class: 'chart', 'data-days': '0', role: 'img', 'aria-label': 'Energy per day' });
    const chart = el(
      'figure',
      { class: 'energy' },
      el('figcaption', { text: `Energy per day, last ${DAYS} days (UTC)` }),
      canvas,
      el('p', { class: 'total', 'data-field': 'energy-total' }),
    );
    const sessions = el(
      'section',
      { class: 'sessions' },
      el('h4', { text: 'Sessions this month' }),
      el(
        'table',
        {},
        el('thead', {}, el('tr', {}, el('th', { text: 'Start' }), el('th', { text: 'Duration' }),
          el('th', { text: 'Energy', class: 'num' }), el('th', { text: 'Cost', class: 'num' }))),
        el('tbody', { 'data-field': 'sessions' }),
      ),
      el('p', { class: 'total', 'data-field': 'sessions-total' }),
    );
    const node = el(
      'article',
      { class: 'station', 'data-station-id': station.id },
      el('h3', { 'data-field': 'name' }),
      state,
      form,
      chart,
      sessions,
    );
    const entry = { installationId, node, select, output, pending: null, refreshing: null, again: false };
    stations.set(station.id, entry);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      setChargeMode(entry, select.value);
    });
    showState(entry, station);
    showSessions(entry, station);
    showEnergy(entry, canvas, station.energy, refusal);
    return node;
  }

  function setField(node, name, text, value) {
    const target = $(`[data-field="${name}"]`, node);
    target.textContent = text;
    if (value !== undefined) target.dataset.value = value ?? '';
  }

  function showState(entry, station) {
    const { node } = entry;
    setField(node, 'name', station.friendlyName || station.id);
    setField(node, 'availability', label('availability', station.availability, station.availabilityRaw), station.availability);
    setField(node, 'plug', label('plug', station.carPlugStatus, station.carPlugStatusRaw), station.carPlugStatus);
    setField(node, 'chargeMode', label('chargeMode', station.chargeMode, station.chargeModeRaw), station.chargeMode);
    const session = station.currentSession;
    setField(
      node,
      'session',
      session?.startDate
        ? `since ${when(session.startDate)}, ${duration(session.durationSeconds)}, ${kwh(session.totalSessionEnergy)}`
        : 'none',
      session?.startDate ? 'running' : 'none',
    );
    setField(node, 'fetchedAt', when(station.fetchedAt));
    entry.chargeMode = station.chargeMode;
    if (!entry.pending && MODES.includes(station.chargeMode) && document.activeElement !== entry.select) {
      entry.select.value = station.chargeMode;
    }
    if (entry.pending?.accepted && station.chargeMode === entry.pending.mode) commandStatus(entry, 'APPLIED');
  }

  function showSessions(entry, station) {
    const body = $('[data-field="sessions"]', entry.node);
    const sessions = station.sessions;
    body.replaceChildren();
    if (!sessions) {
      setField(entry.node, 'sessions-total', 'Sessions could not be read.');
      return;
    }
    for (const s of sessions) {
      body.append(el(
        'tr',
        { 'data-start': s.startDate },
        el('td', { text: when(s.startDate) }),
        el('td', { text: s.endDate ? duration(s.durationSeconds) : `${duration(s.durationSeconds)}, running` }),
        el('td', { class: 'num', text: kwh(s.energy) }),
        el('td', { class: 'num', text: money(s.cost, s.currency) }),
      ));
    }
    // Installers get sessions without energy or cost: then there is nothing to add up.
    const sum = (key) => (sessions.some((s) => s[key] !== null) ? sessions.reduce((a, s) => a + (s[key] ?? 0), 0) : null);
    const currency = sessions.find((s) => s.currency)?.currency;
    const count = `${sessions.length} session${sessions.length > 1 ? 's' : ''}`;
    const energy = sum('energy');
    const cost = sum('cost');
    setField(
      entry.node,
      'sessions-total',
      !sessions.length
        ? 'No session this month.'
        : energy === null && cost === null
          ? count
          : `${count}: ${kwh(energy)}, ${money(cost, currency)}`,
      String(sessions.length),
    );
  }

  // ---------------------------------------------------------------- energy chart (canvas)

  /** The measure's points summed per UTC day, over the last 30 days (missing days are 0). */
  function perDay(points) {
    const { from } = ranges();
    const start = Date.parse(from);
    const days = Array.from({ length: DAYS }, (_, i) => ({ day: start + i * DAY_MS, value: 0 }));
    for (const point of points ?? []) {
      if (!point.date || point.value === null) continue;
      const index = Math.floor((utcMidnight(new Date(point.date)) - start) / DAY_MS);
      if (index >= 0 && index < DAYS) days[index].value += point.value;
    }
    return days;
  }

  function showEnergy(entry, canvas, measure, refusal) {
    const total = $('[data-field="energy-total"]', entry.node);
    if (!measure?.values) {
      total.textContent = refusal ?? 'The energy measure could not be read.';
      return;
    }
    const days = perDay(measure.values);
    const unit = measure.unit || 'kWh';
    const sum = days.reduce((a, d) => a + d.value, 0);
    total.textContent = `${sum.toFixed(1)} ${unit} in ${DAYS} days`;
    canvas.setAttribute('aria-label', `Energy per day over the last ${DAYS} days: ${sum.toFixed(1)} ${unit} in all`);
    charts.set(canvas, { days, unit });
    if (canvas.isConnected) draw(canvas);
    sized.observe(canvas);
  }

  function niceMax(max) {
    if (max <= 0) return 1;
    const power = 10 ** Math.floor(Math.log10(max));
    const step = [1, 2, 2.5, 5, 10].find((s) => s * power >= max);
    return step * power;
  }

  function draw(canvas) {
    const chart = charts.get(canvas);
    if (!chart || !canvas.isConnected || !canvas.clientWidth) return;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight || 160;
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const style = getComputedStyle(canvas);
    const ink = style.color;
    const bar = style.getPropertyValue('--bar').trim() || '#2f7d4f';
    const left = 34;
    const bottom = 18;
    const top = 8;
    const plotWidth = width - left - 4;
    const plotHeight = height - top - bottom;
    const max = niceMax(Math.max(...chart.days.map((d) => d.value)));
    ctx.font = '11px system-ui, sans-serif';
    ctx.fillStyle = ink;
    ctx.strokeStyle = ink;
    ctx.globalAlpha = 0.25;
    ctx.lineWidth = 1;
    for (const fraction of [0, 0.5, 1]) {
      const y = Math.round(top + plotHeight * (1 - fraction)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(width - 4, y);
      ctx.stroke();
    }
    ctx.globalAlpha = 1;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (const fraction of [0, 0.5, 1]) {
      const value = max * fraction;
      const text = value === 0 || value >= 10 ? value.toFixed(0) : value.toFixed(1);
      ctx.fillText(text, left - 4, top + plotHeight * (1 - fraction));
    }
    const slot = plotWidth / chart.days.length;
    const gap = Math.min(2, slot * 0.2);
    ctx.fillStyle = bar;
    chart.days.forEach((d, i) => {
      const h = (d.value / max) * plotHeight;
      ctx.fillRect(left + i * slot + gap / 2, top + plotHeight - h, Math.max(1, slot - gap), h);
    });
    ctx.fillStyle = ink;
    ctx.textBaseline = 'top';
    const labelled = [0, Math.floor(chart.days.length / 2), chart.days.length - 1];
    labelled.forEach((i, n) => {
      ctx.textAlign = ['left', 'center', 'right'][n];
      const x = n === 0 ? left : n === 2 ? width - 4 : left + (i + 0.5) * slot;
      ctx.fillText(shortDay.format(new Date(chart.days[i].day)), x, top + plotHeight + 4);
    });
    canvas.dataset.days = String(chart.days.length);
    // What was drawn, for a reader (or a test) that cannot look at the pixels.
    canvas.dataset.values = chart.days.map((d) => +d.value.toFixed(3)).join(' ');
  }

  // A chart is drawn once its canvas is in the page (its size and colours known), and again
  // whenever its width changes.
  const sized = new ResizeObserver((entries) => {
    for (const entry of entries) draw(entry.target);
  });

  // ---------------------------------------------------------------- refreshing a station

  /** Reads one station's state and sessions again; a refresh asked for meanwhile runs after it. */
  async function refresh(stationId) {
    const entry = stations.get(stationId);
    if (!entry) return;
    if (entry.refreshing) {
      entry.again = true;
      return entry.refreshing;
    }
    entry.refreshing = (async () => {
      do {
        entry.again = false;
        try {
          const { monthFrom, monthTo } = ranges();
          const { data, errors: errs } = await graphql(STATION, {
            installationId: entry.installationId,
            stationId,
            monthFrom,
            monthTo,
          });
          const station = data.installation?.chargingStation;
          if (station) {
            showState(entry, station);
            showSessions(entry, station);
          }
          const shown = unexpected(errs);
          setError(`station:${stationId}`, shown.length ? `Station: ${describe(shown)}` : null);
        } catch (e) {
          setError(`station:${stationId}`, `Station: ${e.message}`);
        }
      } while (entry.again);
      entry.refreshing = null;
    })();
    return entry.refreshing;
  }

  function refreshInstallation(installationId) {
    for (const [id, entry] of stations) {
      if (entry.installationId === installationId) refresh(id);
    }
  }

  // ---------------------------------------------------------------- charge-mode command

  function commandStatus(entry, status, detail) {
    const history = entry.output.dataset.history ? entry.output.dataset.history.split(' ') : [];
    if (status && history[history.length - 1] !== status) history.push(status);
    entry.output.dataset.history = history.join(' ');
    entry.output.dataset.status = status ?? '';
    // A detail starting with punctuation (`: why`) follows the status without a space.
    const gap = detail && /^[:;,.]/.test(detail) ? '' : ' ';
    entry.output.textContent = detail ? `${status ?? ''}${gap}${detail}`.trim() : status ?? '';
    if (status === 'APPLIED' || status === 'REFUSED' || status === 'NOT_SEEN') entry.pending = null;
  }

  /**
   * Sends the command and shows its outcome: ACCEPTED when the upstream took it (202), then
   * APPLIED once the station's state shows the mode, read again at each of its events and, in
   * case one is missed, at growing intervals (as `wait: true` does server-side).
   */
  async function setChargeMode(entry, mode) {
    const stationId = entry.node.dataset.stationId;
    entry.output.dataset.history = '';
    commandStatus(entry, 'SENDING', '…');
    entry.pending = { mode, since: Date.now() };
    let result;
    try {
      const { data, errors: errs } = await graphql(SET_CHARGE_MODE, {
        installationId: entry.installationId,
        stationId,
        mode,
        key: randomKey(),
      });
      result = data?.setChargeMode;
      if (!result) throw new GraphQLError(errs?.[0]);
    } catch (e) {
      entry.pending = null;
      commandStatus(entry, 'REFUSED', `: ${e.message}`);
      return;
    }
    const pending = entry.pending;
    commandStatus(entry, result.status);
    if (!pending || result.status !== 'ACCEPTED') return;
    pending.accepted = true;
    if (result.chargingStation) showState(entry, result.chargingStation);
    let pause = 250;
    while (entry.pending === pending) {
      if (Date.now() - pending.since > COMMAND_WATCH_MS) {
        commandStatus(entry, 'NOT_SEEN', `: the station has not shown ${LABELS.chargeMode[mode]} yet`);
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 2, 2_000);
      if (entry.pending === pending) await refresh(stationId);
    }
  }

  // ---------------------------------------------------------------- CSV

  /** The CSV of this month's sessions, fetched with the token and saved through a link. */
  async function downloadCsv(installation, button, status) {
    const { monthFrom, monthTo } = ranges();
    const query = new URLSearchParams({ installationId: installation.id, from: monthFrom, to: monthTo });
    button.disabled = true;
    status.textContent = 'preparing…';
    try {
      const response = await fetch(`/reports/sessions.csv?${query}`, {
        headers: { authorization: `Bearer ${token}`, accept: 'text/csv' },
      });
      if (!response.ok) {
        const text = (await response.text()).slice(0, 200);
        throw new Error(`${response.status}${text ? `: ${text}` : ''}`);
      }
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      const link = el('a', { href: url, download: `sessions-${installation.id}-${monthFrom.slice(0, 7)}.csv`, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      status.textContent = 'downloaded';
    } catch (e) {
      status.textContent = `could not download: ${e.message}`;
    } finally {
      button.disabled = false;
    }
  }

  // ---------------------------------------------------------------- start

  async function load() {
    setError('load', null);
    const { data, errors: errs } = await graphql(DASHBOARD, ranges());
    const installations = data.installations ?? [];
    // An energy measure refused (an installer's: FORBIDDEN) is said in its chart's place; the
    // other errors above the page.
    const refusals = new Map();
    const others = (errs ?? []).filter((e) => {
      const [root, i, stations, j, field] = e.path ?? [];
      const station = installations[i]?.chargingStations?.[j];
      if (root !== 'installations' || stations !== 'chargingStations' || field !== 'energy' || !station) {
        return unexpected([e]).length > 0;
      }
      refusals.set(station.id, e.extensions?.code === 'FORBIDDEN' ? `Energy: ${e.message}` : `Energy could not be read: ${e.message}`);
      return false;
    });
    render(installations, refusals);
    setError('load', others.length ? describe(others) : null);
    return installations;
  }

  async function start() {
    $('#token-form').hidden = true;
    $('#forget-token').hidden = Boolean(devToken) || !token;
    live.stop();
    let installations;
    try {
      installations = await load();
    } catch (e) {
      if (e.code !== 'UNAUTHENTICATED') setError('load', `The dashboard could not be read: ${e.message}`);
      return;
    }
    let first = true;
    live.onConnected = () => {
      // Events missed while disconnected: read every station again (not on the first connection).
      if (!first) stations.forEach((_, id) => refresh(id));
      first = false;
    };
    for (const installation of installations) {
      const id = `installation-${installation.id}`;
      live.subscribe(id, STATION_EVENTS, { installationId: installation.id }, (payload) => {
        if (payload.errors?.length) {
          // A token that expired ends the subscription (as a query would be refused): ask for
          // another rather than subscribe again with it.
          if (payload.errors.some((e) => e.extensions?.code === 'UNAUTHENTICATED')) {
            askForToken(devToken ? 'The dev token has expired: reload the page for a new one.' : 'The token has expired.');
            return;
          }
          // The installation is gone, or the caller's access to it: not subscribed again; the
          // page is read afresh and shows the installations the caller has now.
          if (lost(payload.errors)) {
            live.unsubscribe(id);
            setTimeout(start, 0);
            return;
          }
          setError(`live:${id}`, `Live events: ${describe(payload.errors)}`);
          return;
        }
        setError(`live:${id}`, null);
        const event = payload.data?.stationEvents;
        if (!event) return;
        document.body.dataset.lastEvent = event.type;
        if (event.chargingStationId && stations.has(event.chargingStationId)) refresh(event.chargingStationId);
        else refreshInstallation(installation.id);
      });
    }
    live.start();
  }

  if (token) start();
  else askForToken();
})();
