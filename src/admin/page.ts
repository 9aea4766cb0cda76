import { CLUSTER_RENDER_JS, CLUSTER_SECTION_HTML } from '../cluster-store/page.ts';

/**
 * The live status page served at `GET /` by the admin server: one self-contained HTML document
 * (inline CSS and JS, no build step, no external resources) that polls `/status` every second.
 * It carries no data itself; with an admin token, open it as `/#token=…` (the fragment never
 * leaves the browser) and the script sends the token as a bearer header.
 * All data is written with textContent: Connector ids and health reasons are never parsed as HTML.
 */
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
  header { display:flex; align-items:baseline; gap:16px; padding:14px 24px; background:#1d2330; color:#fff; }
  header h1 { margin:0; font-size:18px; font-weight:600; }
  header .meta { color:#aab2c0; font-size:12px; }
  header .live { margin-left:auto; font-size:12px; color:#aab2c0; }
  header .live::before { content:""; display:inline-block; width:8px; height:8px; border-radius:50%; background:#3fb950; margin-right:6px; }
  header .live.stale::before { background:var(--down); }
  main { padding:20px 24px; max-width:1400px; }
  #error { display:none; margin-bottom:16px; padding:10px 14px; border-radius:6px; background:#ffebe9; color:var(--down); border:1px solid #ffcecb; }
  .tiles { display:grid; grid-template-columns:repeat(auto-fit,minmax(170px,1fr)); gap:12px; margin-bottom:20px; }
  .tile { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
  .tile .label { color:var(--mute); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
  .tile .value { font-size:24px; font-weight:600; margin-top:2px; font-variant-numeric:tabular-nums; }
  table { width:100%; border-collapse:collapse; background:var(--card); border:1px solid var(--line); border-radius:8px; overflow:hidden; }
  th, td { text-align:left; padding:10px 12px; border-bottom:1px solid var(--line); vertical-align:top; }
  th { font-size:12px; color:var(--mute); text-transform:uppercase; letter-spacing:.04em; background:#fafbfc; }
  td.num { font-variant-numeric:tabular-nums; white-space:nowrap; }
  th { white-space:nowrap; }
  tr:last-child td { border-bottom:none; }
  .id { font-weight:600; }
  .sub { color:var(--mute); font-size:12px; }
  .badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; color:#fff; }
  .badge.up { background:var(--up); } .badge.down { background:var(--down); }
  .badge.active { background:#0969da; } .badge.drain { background:var(--drain); } .badge.maint { background:var(--maint); }
  .reason { color:var(--down); font-size:12px; max-width:340px; word-break:break-word; }
  tr.down td { background:#fff8f8; }
</style>
</head>
<body>
<header><h1>pcoip-lb</h1><span class="meta" id="meta"></span><span class="live stale" id="live">connecting…</span></header>
<main>
  <div id="error"></div>
  <section class="tiles">
    <div class="tile"><div class="label">Connectors up</div><div class="value" id="t-up">–</div></div>
    <div class="tile"><div class="label">Taking new clients</div><div class="value" id="t-new">–</div></div>
    <div class="tile"><div class="label">Clients</div><div class="value" id="t-clients">–</div></div>
    <div class="tile"><div class="label">Open flows</div><div class="value" id="t-flows">–</div></div>
    <div class="tile"><div class="label">Throughput</div><div class="value" id="t-rate">–</div></div>
  </section>
  <table>
    <thead><tr><th>Connector</th><th>Health</th><th>State</th><th>Clients</th><th>Flows 443/tcp/udp</th><th>In</th><th>Out</th><th>Last check</th></tr></thead>
    <tbody id="rows"></tbody>
  </table>${CLUSTER_SECTION_HTML}
</main>
<script>
(function () {
  var token = (location.hash.match(/token=([^&]+)/) || [])[1];
  var previous = null;
  function el(tag, cls, text) { var e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; }${CLUSTER_RENDER_JS}
  function rate(bitsPerSecond) {
    var units = ['bit/s', 'kbit/s', 'Mbit/s', 'Gbit/s'], i = 0, v = bitsPerSecond;
    while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    return (i === 0 ? Math.round(v) : v.toFixed(1)) + ' ' + units[i];
  }
  function ago(since, now) {
    var s = Math.max(0, Math.round((now - since) / 1000));
    return s < 120 ? s + ' s' : s < 7200 ? Math.round(s / 60) + ' min' : Math.round(s / 3600) + ' h';
  }
  function rates(status, at) {
    var out = {};
    status.connectors.forEach(function (c) {
      var p = previous && previous.byId[c.id];
      var dt = previous ? (at - previous.at) / 1000 : 0;
      out[c.id] = p && dt > 0 ? { inBps: Math.max(0, c.bytesIn - p.bytesIn) * 8 / dt, outBps: Math.max(0, c.bytesOut - p.bytesOut) * 8 / dt } : { inBps: 0, outBps: 0 };
    });
    return out;
  }
  function render(status, at) {
    var r = rates(status, at), total = 0;
    var up = status.connectors.filter(function (c) { return c.health === 'up'; }).length;
    document.getElementById('meta').textContent = 'v' + status.version + ' · up ' + status.uptimeSeconds + ' s · ' + Object.keys(status.listeners).map(function (k) { return k + ' ' + status.listeners[k]; }).join(' · ');
    document.getElementById('t-up').textContent = up + ' / ' + status.connectors.length;
    document.getElementById('t-new').textContent = String(status.connectorsTakingNewClients);
    document.getElementById('t-clients').textContent = String(status.clients);
    document.getElementById('t-flows').textContent = String(status.activeFlows);
    var rows = document.getElementById('rows');
    rows.textContent = '';
    status.connectors.forEach(function (c) {
      var tr = el('tr', c.health === 'down' ? 'down' : '');
      tr.setAttribute('data-connector', c.id);
      var name = el('td'); name.appendChild(el('div', 'id', c.id)); name.appendChild(el('div', 'sub', c.address + ' · weight ' + c.weight)); tr.appendChild(name);
      var health = el('td'); var hb = el('span', 'badge ' + c.health, c.health); hb.setAttribute('data-field', 'health'); health.appendChild(hb);
      health.appendChild(el('div', 'sub', 'for ' + ago(Date.parse(c.healthSince), at) + (c.healthSource === 'passive' ? ' (failed client connects)' : '')));
      if (c.healthReason) { var reason = el('div', 'reason', c.healthReason); reason.setAttribute('data-field', 'reason'); health.appendChild(reason); }
      tr.appendChild(health);
      var state = el('td'); var sb = el('span', 'badge ' + c.state, c.state); sb.setAttribute('data-field', 'state'); state.appendChild(sb);
      if (c.state === 'drain') state.appendChild(el('div', 'sub', c.drained ? 'drained' : 'draining'));
      tr.appendChild(state);
      var clients = el('td', 'num', String(c.pinnedClients)); clients.setAttribute('data-field', 'clients'); tr.appendChild(clients);
      var flows = el('td', 'num', c.activeFlows + '  (' + c.flows.broker.active + ' / ' + c.flows.pcoipTcp.active + ' / ' + c.flows.pcoipUdp.active + ')'); flows.setAttribute('data-field', 'flows'); tr.appendChild(flows);
      tr.appendChild(el('td', 'num', rate(r[c.id].inBps)));
      tr.appendChild(el('td', 'num', rate(r[c.id].outBps)));
      total += r[c.id].inBps + r[c.id].outBps;
      var lc = c.lastCheck, check = el('td', 'sub');
      check.textContent = lc ? (lc.ok ? 'pass' : 'fail') + ' · ' + Object.keys(lc.latencyMs).map(function (k) { return k + ' ' + lc.latencyMs[k] + ' ms'; }).join(', ') : 'no check yet';
      tr.appendChild(check);
      rows.appendChild(tr);
    });
    document.getElementById('t-rate').textContent = rate(total);
    var byId = {}; status.connectors.forEach(function (c) { byId[c.id] = { bytesIn: c.bytesIn, bytesOut: c.bytesOut }; });
    previous = { at: at, byId: byId };
    renderCluster(status, el);
  }
  function showError(text) {
    var e = document.getElementById('error'); e.textContent = text; e.style.display = text ? 'block' : 'none';
    var live = document.getElementById('live'); live.className = text ? 'live stale' : 'live'; live.textContent = text ? 'not updating' : 'live · ' + new Date().toLocaleTimeString();
  }
  function poll() {
    var headers = token ? { authorization: 'Bearer ' + decodeURIComponent(token) } : {};
    fetch('status', { headers: headers, cache: 'no-store' }).then(function (res) {
      if (res.status === 401) throw new Error('The admin API needs a token: open this page as /#token=YOUR_TOKEN');
      if (!res.ok) throw new Error('GET /status answered HTTP ' + res.status);
      return res.json();
    }).then(function (status) { render(status, Date.now()); showError(''); }, function (err) { showError(String(err.message || err)); })
      .finally(function () { setTimeout(poll, 1000); });
  }
  poll();
})();
</script>
</body>
</html>
`;
