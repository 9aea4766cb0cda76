import { CLUSTER_RENDER_JS, CLUSTER_SECTION_HTML } from '../cluster-store/page.ts';

/**
 * The live status page served at `GET /` by the admin server: one self-contained HTML document
 * (inline CSS, JS and SVG; no build step, no external resources) that polls `/status` every
 * second and `/history` every minute. It carries no data itself; with an admin token, open it
 * as `/#token=…` (the fragment never leaves the browser) and the script sends the token as a
 * bearer header. All data is written with textContent: Connector ids and health reasons are
 * never parsed as HTML.
 *
 * Rates come from the server's clock: each /status carries `now`, and a rate is the byte delta
 * between two documents over the delta of their `now` (a throttled background tab or a slow
 * poll does not inflate it). The chart is the server's 15-minute history (/history, one point
 * per 10 s) extended by the page's own per-second points since the last history fetch.
 */
import { SESSIONS_SCRIPT, SESSIONS_SECTION_HTML, SESSIONS_STYLE } from './sessions-page.ts';

export const STATUS_PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pcoip-lb</title>
<link rel="icon" href="data:,">
<style>
  :root { --bg:#f5f6f8; --card:#fff; --ink:#1d2330; --mute:#677083; --line:#e2e5ea; --up:#1a7f37; --down:#cf222e; --drain:#9a6700; --maint:#6e40c9; }
  * { box-sizing: border-box; }
  body { margin:0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background:var(--bg); color:var(--ink); }
  header { display:flex; flex-wrap:wrap; align-items:baseline; gap:4px 16px; padding:14px 24px; background:#1d2330; color:#fff; }
  body.alarm header { background:var(--down); }
  header h1 { margin:0; font-size:18px; font-weight:600; }
  header .meta { color:#aab2c0; font-size:12px; overflow-wrap:anywhere; }
  body.alarm header .meta, body.alarm header .live { color:#ffe4e1; }
  header .live { margin-left:auto; font-size:12px; color:#aab2c0; }
  header .live::before { content:""; display:inline-block; width:8px; height:8px; border-radius:50%; background:#3fb950; margin-right:6px; }
  header .live.stale::before { background:var(--down); }
  main { padding:20px 24px; max-width:1400px; }
  #error { display:none; margin-bottom:16px; padding:10px 14px; border-radius:6px; background:#ffebe9; color:var(--down); border:1px solid #ffcecb; }
  #alarm { display:none; margin-bottom:16px; padding:14px 16px; border-radius:8px; background:var(--down); color:#fff; font-weight:600; font-size:16px; }
  #alarm .sub { display:block; font-weight:400; font-size:13px; color:#ffe4e1; margin-top:2px; }
  body.alarm #alarm { display:block; }
  .tiles { display:grid; grid-template-columns:repeat(auto-fit,minmax(128px,1fr)); gap:12px; margin-bottom:20px; }
  .tile { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 14px; min-width:0; }
  .tile .label { color:var(--mute); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
  .tile .value { font-size:22px; font-weight:600; margin-top:2px; font-variant-numeric:tabular-nums; }
  .tile .detail { color:var(--mute); font-size:12px; overflow-wrap:anywhere; }
  .tile.bad { border-color:#ffcecb; background:#fff8f8; } .tile.bad .value { color:var(--down); }
  .card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 14px; margin-bottom:20px; }
  .card h2 { margin:0 0 6px; font-size:12px; color:var(--mute); text-transform:uppercase; letter-spacing:.04em; font-weight:600; }
  #chart { display:block; width:100%; height:180px; }
  #chart .axis { stroke:var(--line); } #chart text { fill:var(--mute); font-size:11px; }
  #legend { display:flex; flex-wrap:wrap; gap:4px 14px; font-size:12px; color:var(--mute); }
  #legend span::before { content:""; display:inline-block; width:10px; height:3px; margin-right:5px; vertical-align:middle; background:var(--c); }
  table { width:100%; border-collapse:collapse; background:var(--card); border:1px solid var(--line); border-radius:8px; overflow:hidden; }
  th, td { text-align:left; padding:10px 12px; border-bottom:1px solid var(--line); vertical-align:top; }
  th { font-size:12px; color:var(--mute); text-transform:uppercase; letter-spacing:.04em; background:#fafbfc; white-space:nowrap; }
  td.num { font-variant-numeric:tabular-nums; white-space:nowrap; }
  tr:last-child td { border-bottom:none; }
  .id { font-weight:600; overflow-wrap:anywhere; }
  .sub { color:var(--mute); font-size:12px; }
  .badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; color:#fff; }
  .badge.up { background:var(--up); } .badge.down { background:var(--down); }
  .badge.active { background:#0969da; } .badge.drain { background:var(--drain); } .badge.maint { background:var(--maint); } .badge.removed { background:var(--mute); }
  /* A long reason (a Connector's own error text) wraps inside its cell instead of widening the table. */
  .reason { color:var(--down); font-size:12px; max-width:340px; overflow-wrap:anywhere; }
  td.health { min-width:120px; max-width:360px; }
  tr.down td { background:#fff8f8; }
${SESSIONS_STYLE}</style>
</head>
<body>
<header><h1>pcoip-lb</h1><span class="meta" id="meta"></span><span class="live stale" id="live">connecting…</span></header>
<main>
  <div id="error"></div>
  <div id="alarm" role="alert">Outage: no Connector takes new clients — new users are refused<span class="sub" id="alarm-detail"></span></div>
  <section class="tiles">
    <div class="tile"><div class="label">Connectors up</div><div class="value" id="t-up">–</div></div>
    <div class="tile" id="tile-new"><div class="label">Taking new clients</div><div class="value" id="t-new">–</div></div>
    <div class="tile"><div class="label">Live sessions</div><div class="value" id="t-live">–</div><div class="detail">clients with an open flow</div></div>
    <div class="tile"><div class="label">Pinned clients</div><div class="value" id="t-clients">–</div><div class="detail">live + within affinity TTL</div></div>
    <div class="tile"><div class="label">Open flows</div><div class="value" id="t-flows">–</div></div>
    <div class="tile"><div class="label">Throughput</div><div class="value" id="t-rate">–</div></div>
    <div class="tile" id="tile-refused"><div class="label">Refused (15 min)</div><div class="value" id="t-refused">–</div><div class="detail" id="t-refused-detail"></div></div>
    <div class="tile" id="tile-failures"><div class="label">Connect failures (15 min)</div><div class="value" id="t-failures">–</div><div class="detail" id="t-failures-detail"></div></div>
  </section>
  <section class="card">
    <h2>Throughput per Connector, last 15 minutes</h2>
    <svg id="chart" viewBox="0 0 1000 180" preserveAspectRatio="none" role="img" aria-label="throughput per Connector, last 15 minutes"></svg>
    <div id="legend"></div>
  </section>
  <table>
    <thead><tr><th>Connector</th><th>Health</th><th>State</th><th>Sessions</th><th>Flows 443/tcp/udp</th><th>In</th><th>Out</th><th>Connect fails</th><th>Last check</th></tr></thead>
    <tbody id="rows"></tbody>
  </table>${CLUSTER_SECTION_HTML}
${SESSIONS_SECTION_HTML}</main>
<script>
(function () {
  var token = (location.hash.match(/token=([^&]+)/) || [])[1];
  var headers = token ? { authorization: 'Bearer ' + decodeURIComponent(token) } : {};
  var WINDOW_MS = 15 * 60 * 1000;
  var COLORS = ['#0969da', '#1a7f37', '#9a6700', '#6e40c9', '#cf222e', '#1b7c83', '#bf3989', '#57606a'];
  var previous = null, history = { points: [], inWindow: null, totals: null }, live = [], lastStatus = null;
  function el(tag, cls, text) { var e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; }${CLUSTER_RENDER_JS}
  function svg(tag, attrs) { var e = document.createElementNS('http://www.w3.org/2000/svg', tag); for (var k in attrs) e.setAttribute(k, attrs[k]); return e; }
  function rate(bitsPerSecond) {
    var units = ['bit/s', 'kbit/s', 'Mbit/s', 'Gbit/s', 'Tbit/s'], i = 0, v = bitsPerSecond;
    while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    return (i === 0 ? Math.round(v) : v.toFixed(1)) + ' ' + units[i];
  }
  /** 42 s, 12 min, 3 h 5 min, 2 d 4 h. */
  function duration(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min';
    if (s < 86400) return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
    return Math.floor(s / 86400) + ' d ' + Math.floor((s % 86400) / 3600) + ' h';
  }
  window.plbFormat = { rate: rate, duration: duration };
  function colorOf(ids, id) { return COLORS[ids.indexOf(id) % COLORS.length]; }
  function allConnectors(status) {
    return status.connectors.concat(status.removedConnectors.map(function (r) { return { id: r.id, removed: true, bytesIn: r.bytesIn, bytesOut: r.bytesOut, activeFlows: r.activeFlows, flows: r.flows }; }));
  }
  /** Bits per second per Connector since the previous /status, by the server's clock. */
  function rates(status) {
    var now = Date.parse(status.now), out = {};
    var dt = previous ? (now - previous.at) / 1000 : 0;
    allConnectors(status).forEach(function (c) {
      var p = previous && previous.byId[c.id];
      out[c.id] = p && dt > 0 ? { inBps: Math.max(0, c.bytesIn - p.bytesIn) * 8 / dt, outBps: Math.max(0, c.bytesOut - p.bytesOut) * 8 / dt } : null;
    });
    return { at: now, byId: out, known: dt > 0 };
  }
  function refusalSummary(status) {
    var byReason = {};
    status.refusals.forEach(function (r) { byReason[r.reason] = (byReason[r.reason] || 0) + r.count; });
    return Object.keys(byReason).sort(function (a, b) { return byReason[b] - byReason[a]; }).map(function (k) { return k + ' ' + byReason[k]; }).join(', ');
  }
  function renderTiles(status, r) {
    var up = status.connectors.filter(function (c) { return c.health === 'up'; }).length;
    var outage = status.connectorsTakingNewClients === 0;
    document.body.classList.toggle('alarm', outage);
    document.getElementById('alarm-detail').textContent = outage ? up + ' of ' + status.connectors.length + ' Connector(s) up; ' + status.connectors.filter(function (c) { return c.state !== 'active'; }).length + ' in drain or maint. Established sessions keep running.' : '';
    document.getElementById('tile-new').classList.toggle('bad', outage);
    document.getElementById('meta').textContent = 'v' + status.version + ' · up ' + duration(status.uptimeSeconds) + ' · ' + Object.keys(status.listeners).map(function (k) { return k + ' ' + status.listeners[k]; }).join(' · ');
    document.getElementById('t-up').textContent = up + ' / ' + status.connectors.length;
    document.getElementById('t-new').textContent = String(status.connectorsTakingNewClients);
    document.getElementById('t-live').textContent = String(status.liveClients);
    document.getElementById('t-clients').textContent = String(status.clients);
    document.getElementById('t-flows').textContent = String(status.activeFlows);
    var total = 0;
    for (var id in r.byId) if (r.byId[id]) total += r.byId[id].inBps + r.byId[id].outBps;
    document.getElementById('t-rate').textContent = r.known ? rate(total) : '–';
    // In-window counts: the server's count over its history window, plus what happened since that answer.
    var totalRefused = status.refusals.reduce(function (n, x) { return n + x.count; }, 0);
    var w = history.inWindow, base = history.totals;
    var refused = w ? w.refused + Math.max(0, totalRefused - base.refused) : totalRefused;
    var failures = w ? w.connectFailures + Math.max(0, status.connectFailures - base.connectFailures) : status.connectFailures;
    document.getElementById('t-refused').textContent = String(refused);
    document.getElementById('tile-refused').classList.toggle('bad', refused > 0);
    document.getElementById('t-refused-detail').textContent = totalRefused > 0 ? 'since start: ' + refusalSummary(status) : 'none since start';
    document.getElementById('t-failures').textContent = String(failures);
    document.getElementById('tile-failures').classList.toggle('bad', failures > 0);
    document.getElementById('t-failures-detail').textContent = 'since start: ' + status.connectFailures;
  }
  function renderRows(status, r) {
    var rows = document.getElementById('rows');
    var now = Date.parse(status.now);
    rows.textContent = '';
    status.connectors.forEach(function (c) {
      var tr = el('tr', c.health === 'down' ? 'down' : '');
      tr.setAttribute('data-connector', c.id);
      var name = el('td'); name.appendChild(el('div', 'id', c.id)); name.appendChild(el('div', 'sub', c.address + ' · weight ' + c.weight)); tr.appendChild(name);
      var health = el('td', 'health'); var hb = el('span', 'badge ' + c.health, c.health); hb.setAttribute('data-field', 'health'); health.appendChild(hb);
      health.appendChild(el('div', 'sub', 'for ' + duration((now - Date.parse(c.healthSince)) / 1000) + (c.healthSource === 'passive' ? ' (failed client connects)' : '')));
      if (c.healthReason) { var reason = el('div', 'reason', c.healthReason); reason.setAttribute('data-field', 'reason'); health.appendChild(reason); }
      tr.appendChild(health);
      var state = el('td'); var sb = el('span', 'badge ' + c.state, c.state); sb.setAttribute('data-field', 'state'); state.appendChild(sb);
      if (c.state === 'drain') state.appendChild(el('div', 'sub', c.drained ? 'drained' : 'draining'));
      tr.appendChild(state);
      var sessions = el('td', 'num');
      var liveEl = el('div', '', c.liveClients + ' live'); liveEl.setAttribute('data-field', 'live'); sessions.appendChild(liveEl);
      var pinnedEl = el('div', 'sub', c.pinnedClients + ' pinned'); pinnedEl.setAttribute('data-field', 'clients'); sessions.appendChild(pinnedEl);
      tr.appendChild(sessions);
      appendFlows(tr, c, r);
      var fails = el('td', 'num', String(c.connectFailures)); fails.setAttribute('data-field', 'connect-failures'); tr.appendChild(fails);
      var lc = c.lastCheck, check = el('td', 'sub');
      check.textContent = lc ? (lc.ok ? 'pass' : 'fail') + ' · ' + Object.keys(lc.latencyMs).map(function (k) { return k + ' ' + lc.latencyMs[k] + ' ms'; }).join(', ') : 'no check yet';
      tr.appendChild(check);
      rows.appendChild(tr);
    });
    status.removedConnectors.forEach(function (c) {
      var tr = el('tr'); tr.setAttribute('data-connector', c.id); tr.setAttribute('data-removed', 'true');
      var name = el('td'); name.appendChild(el('div', 'id', c.id)); name.appendChild(el('div', 'sub', 'removed by a reload; its flows run until they end')); tr.appendChild(name);
      tr.appendChild(el('td', 'sub', '–'));
      var state = el('td'); state.appendChild(el('span', 'badge removed', 'removed')); tr.appendChild(state);
      tr.appendChild(el('td', 'num sub', '–'));
      appendFlows(tr, c, r);
      tr.appendChild(el('td', 'num sub', '–'));
      tr.appendChild(el('td', 'sub', '–'));
      rows.appendChild(tr);
    });
  }
  function appendFlows(tr, c, r) {
    var flows = el('td', 'num', c.activeFlows + '  (' + c.flows.broker.active + ' / ' + c.flows.pcoipTcp.active + ' / ' + c.flows.pcoipUdp.active + ')'); flows.setAttribute('data-field', 'flows'); tr.appendChild(flows);
    var x = r.byId[c.id];
    tr.appendChild(el('td', 'num', x ? rate(x.inBps) : '–'));
    tr.appendChild(el('td', 'num', x ? rate(x.outBps) : '–'));
  }
  /** History points from the server, then the page's own since the last history answer; each {at, rates: {id: [in, out]}}. */
  function chartPoints(now) {
    var lastAt = history.points.length ? history.points[history.points.length - 1].at : 0;
    return history.points.concat(live.filter(function (p) { return p.at > lastAt; })).filter(function (p) { return p.at >= now - WINDOW_MS; });
  }
  function renderChart(status) {
    var chart = document.getElementById('chart'), legend = document.getElementById('legend');
    var now = Date.parse(status.now), points = chartPoints(now);
    var ids = allConnectors(status).map(function (c) { return c.id; });
    points.forEach(function (p) { for (var id in p.rates) if (ids.indexOf(id) < 0) ids.push(id); });
    var max = 0;
    points.forEach(function (p) { for (var id in p.rates) max = Math.max(max, p.rates[id][0] + p.rates[id][1]); });
    var W = 1000, H = 180, top = 14, bottom = 16, scale = max > 0 ? max * 1.1 : 1;
    chart.textContent = '';
    chart.appendChild(svg('line', { class: 'axis', x1: 0, x2: W, y1: H - bottom, y2: H - bottom }));
    var label = svg('text', { x: 4, y: 11 }); label.textContent = rate(scale); chart.appendChild(label);
    var left = svg('text', { x: 4, y: H - 3 }); left.textContent = '−15 min'; chart.appendChild(left);
    var right = svg('text', { x: W - 4, y: H - 3, 'text-anchor': 'end' }); right.textContent = 'now'; chart.appendChild(right);
    legend.textContent = '';
    ids.forEach(function (id) {
      var coords = points.filter(function (p) { return p.rates[id]; }).map(function (p) {
        var x = W - ((now - p.at) / WINDOW_MS) * W, v = p.rates[id][0] + p.rates[id][1];
        return x.toFixed(1) + ',' + (H - bottom - (v / scale) * (H - bottom - top)).toFixed(1);
      });
      var line = svg('polyline', { points: coords.join(' '), fill: 'none', stroke: colorOf(ids, id), 'stroke-width': 2, 'vector-effect': 'non-scaling-stroke', 'data-connector': id, 'data-points': coords.length });
      chart.appendChild(line);
      var last = points.length ? points[points.length - 1].rates[id] : null;
      var item = el('span', '', id + (last ? ' ' + rate(last[0] + last[1]) : ''));
      item.style.setProperty('--c', colorOf(ids, id));
      item.setAttribute('data-connector', id);
      legend.appendChild(item);
    });
  }
  function render(status) {
    var r = rates(status);
    lastStatus = status;
    if (r.known) {
      var p = { at: r.at, rates: {} };
      for (var id in r.byId) if (r.byId[id]) p.rates[id] = [r.byId[id].inBps, r.byId[id].outBps];
      live.push(p);
      live = live.filter(function (x) { return x.at >= r.at - WINDOW_MS; });
    }
    renderTiles(status, r);
    renderRows(status, r);
    renderChart(status);
    renderCluster(status, el);
    var byId = {}; allConnectors(status).forEach(function (c) { byId[c.id] = { bytesIn: c.bytesIn, bytesOut: c.bytesOut }; });
    previous = { at: r.at, byId: byId };
  }
  function showError(text) {
    var e = document.getElementById('error'); e.textContent = text; e.style.display = text ? 'block' : 'none';
    var liveEl = document.getElementById('live'); liveEl.className = text ? 'live stale' : 'live';
    liveEl.textContent = text ? 'not updating' : 'live · ' + (lastStatus ? new Date(lastStatus.now).toLocaleTimeString() : '');
  }
  function get(path) {
    return fetch(path, { headers: headers, cache: 'no-store' }).then(function (res) {
      if (res.status === 401) throw new Error('The admin API needs a token: open this page as /#token=YOUR_TOKEN');
      if (!res.ok) throw new Error('GET /' + path + ' answered HTTP ' + res.status);
      return res.json();
    });
  }
  function pollHistory() {
    get('history').then(function (h) {
      history = { points: h.points, inWindow: h.inWindow, totals: h.totals };
    }, function () { /* the status poll reports errors */ }).finally(function () { setTimeout(pollHistory, 60000); });
  }
  function poll() {
    get('status').then(function (status) { render(status); showError(''); }, function (err) { showError(String(err.message || err)); })
      .finally(function () { setTimeout(poll, 1000); });
  }
  poll();
  setTimeout(pollHistory, 300);
})();
${SESSIONS_SCRIPT}</script>
</body>
</html>
`;
