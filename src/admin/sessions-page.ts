/**
 * The live page's sessions table (docs/sessions.md): the first 50 sessions of GET /sessions,
 * worst media quality first, refreshed every 2 s; clicking a column header sorts by it (numbers
 * highest first, text A to Z; a second click reverses). Inserted into page.ts as three pieces (style, markup, script) so the page and
 * this table can change independently. Like the rest of the page, every value is written with
 * textContent (client addresses and SNIs are never parsed as HTML), and the token comes from the
 * page's #token= fragment.
 */
export const SESSIONS_STYLE = `
  #sessions { margin-top:24px; }
  #sessions h2 { font-size:15px; margin:0 0 8px; }
  #sessions h2 .sub { font-weight:normal; margin-left:8px; }
  #sessions th[data-sort] { cursor:pointer; user-select:none; }
  #sessions th[data-sort].sorted::after { content:" \\25BE"; }
  #sessions th[data-sort].sorted.reversed::after { content:" \\25B4"; }
  #sessions td.bad { color:var(--down); font-weight:600; }
  .badge.streaming { background:var(--up); } .badge.connected { background:#0969da; } .badge.allocated { background:var(--drain); }
  .badge.logging-in { background:var(--maint); } .badge.ended { background:var(--mute); }
`;

export const SESSIONS_SECTION_HTML = `
  <section id="sessions">
    <h2>Sessions<span class="sub" id="sessions-count"></span></h2>
    <table>
      <thead><tr>
        <th data-sort="id">Session</th><th data-sort="client">Client</th><th data-sort="connector">Connector</th><th data-sort="state">State</th>
        <th data-sort="age">Age</th><th data-sort="flows">TCP / UDP</th><th data-sort="bytesIn">In</th><th data-sort="bytesOut">Out</th>
        <th data-sort="lossIn" title="ESP sequence gaps between the client and the proxy">Loss in</th>
        <th data-sort="lossOut" title="ESP sequence gaps between the Connector and the proxy">Loss out</th>
        <th data-sort="jitter">Jitter</th><th data-sort="rekeys">Rekeys</th>
      </tr></thead>
      <tbody id="session-rows"></tbody>
    </table>
  </section>
`;

export const SESSIONS_SCRIPT = `
(function () {
  var token = (location.hash.match(/token=([^&]+)/) || [])[1];
  var sortKey = null, reversed = false, latest = [];
  function el(tag, cls, text) { var e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; }
  function bytes(n) { var u = ['B', 'kB', 'MB', 'GB', 'TB'], i = 0; while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; } return (i === 0 ? n : n.toFixed(1)) + ' ' + u[i]; }
  function worst(s, dir) {
    var v = null;
    s.udp.forEach(function (u) { var q = u.quality && u.quality[dir]; if (q && q.layout !== 'detecting' && q.layout !== 'unknown') v = Math.max(v === null ? 0 : v, q.lossRatio); });
    return v;
  }
  function row(s) {
    var sum = function (k) { return s.tcp.concat(s.udp).reduce(function (n, f) { return n + f[k]; }, 0); };
    var open = function (list) { return list.filter(function (f) { return f.endedAt === null; }).length; };
    return { s: s, id: s.id, client: s.client, connector: s.connector, state: s.state, age: s.ageSeconds, flows: open(s.tcp) + open(s.udp),
      flowsText: open(s.tcp) + ' / ' + open(s.udp), bytesIn: sum('bytesIn'), bytesOut: sum('bytesOut'),
      lossIn: worst(s, 'fromClient'), lossOut: worst(s, 'fromConnector'), jitter: s.quality.measured ? s.quality.jitterMs : null, rekeys: s.quality.rekeys };
  }
  function pct(v) { return v === null ? '–' : (v * 100).toFixed(v >= 0.1 ? 0 : v >= 0.01 ? 1 : 2) + ' %'; }
  function render() {
    var rows = latest.map(row);
    if (sortKey) {
      rows.sort(function (a, b) {
        var x = a[sortKey], y = b[sortKey];
        if (x === y) return 0; if (x === null) return 1; if (y === null) return -1;
        var c = typeof x === 'number' ? y - x : String(x).localeCompare(String(y));
        return reversed ? -c : c;
      });
    }
    var body = document.getElementById('session-rows');
    body.textContent = '';
    rows.forEach(function (r) {
      var tr = el('tr'); tr.setAttribute('data-session', r.id);
      var cell = function (field, text, cls) { var td = el('td', cls, text); td.setAttribute('data-field', field); tr.appendChild(td); return td; };
      cell('id', r.id, 'id'); cell('client', r.client); cell('connector', r.connector);
      var st = el('td'); st.setAttribute('data-field', 'state'); st.appendChild(el('span', 'badge ' + r.state, r.state)); tr.appendChild(st);
      cell('age', r.age < 120 ? r.age + ' s' : Math.round(r.age / 60) + ' min', 'num'); cell('flows', r.flowsText, 'num');
      cell('bytes-in', bytes(r.bytesIn), 'num'); cell('bytes-out', bytes(r.bytesOut), 'num');
      cell('loss-in', pct(r.lossIn), 'num' + (r.lossIn !== null && r.lossIn >= 0.01 ? ' bad' : ''));
      cell('loss-out', pct(r.lossOut), 'num' + (r.lossOut !== null && r.lossOut >= 0.01 ? ' bad' : ''));
      cell('jitter', r.jitter === null ? '–' : r.jitter.toFixed(1) + ' ms', 'num'); cell('rekeys', String(r.rekeys), 'num');
      body.appendChild(tr);
    });
    document.querySelectorAll('#sessions th[data-sort]').forEach(function (th) {
      th.className = th.getAttribute('data-sort') === sortKey ? 'sorted' + (reversed ? ' reversed' : '') : '';
    });
  }
  document.querySelectorAll('#sessions th[data-sort]').forEach(function (th) {
    th.addEventListener('click', function () {
      var key = th.getAttribute('data-sort');
      if (sortKey === key) reversed = !reversed; else { sortKey = key; reversed = false; }
      render();
    });
  });
  function poll() {
    var headers = token ? { authorization: 'Bearer ' + decodeURIComponent(token) } : {};
    fetch('sessions?limit=50', { headers: headers, cache: 'no-store' }).then(function (res) { return res.ok ? res.json() : null; }).then(function (page) {
      if (!page) return;
      latest = page.sessions;
      document.getElementById('sessions-count').textContent = page.total + ' in all' + (page.total > page.sessions.length ? ', ' + page.sessions.length + ' worst shown' : '') + ' · worst media quality first; click a column to sort';
      render();
    }, function () {}).finally(function () { setTimeout(poll, 2000); });
  }
  poll();
})();
`;
