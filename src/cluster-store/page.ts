/**
 * The live page's cluster section (admin/page.ts embeds these two strings): one table with a
 * row per instance (heartbeats in the store) and a column per Connector, each cell that
 * instance's view (health/state), and the list of disagreements. Hidden when `/status` has no
 * `cluster` (a single instance). Written with textContent only: ids and reasons read from the
 * store are never parsed as HTML.
 */
export const CLUSTER_SECTION_HTML = `
  <section id="cluster" style="display:none; margin-top:20px">
    <h2 style="font-size:15px; margin:0 0 8px">Cluster <span class="sub" id="cluster-store"></span></h2>
    <table><thead id="cluster-head"></thead><tbody id="cluster-rows"></tbody></table>
    <ul id="cluster-disagreements" class="sub" style="margin:8px 0 0; padding-left:18px"></ul>
  </section>`;

/** Defines `renderCluster(status, el)` inside the page's script (ES5, like the rest of it). */
export const CLUSTER_RENDER_JS = `
  function renderCluster(status, el) {
    var section = document.getElementById('cluster'), c = status.cluster;
    if (!c) { section.style.display = 'none'; return; }
    section.style.display = 'block';
    var store = document.getElementById('cluster-store');
    store.textContent = '· ' + c.instances.length + ' instance(s) · store ' + c.store.url + ' ' + (c.store.up ? 'up' : 'DOWN' + (c.store.lastError ? ' (' + c.store.lastError + ')' : ''));
    store.setAttribute('data-store', c.store.up ? 'up' : 'down');
    var ids = [];
    c.instances.forEach(function (i) { i.connectors.forEach(function (x) { if (ids.indexOf(x.id) < 0) ids.push(x.id); }); });
    ids.sort();
    var head = document.getElementById('cluster-head'); head.textContent = '';
    var hr = el('tr'); hr.appendChild(el('th', '', 'Instance')); hr.appendChild(el('th', '', 'Heartbeat'));
    ids.forEach(function (id) { var th = el('th', '', id); th.style.textTransform = 'none'; hr.appendChild(th); });
    head.appendChild(hr);
    var rows = document.getElementById('cluster-rows'); rows.textContent = '';
    c.instances.forEach(function (i) {
      var tr = el('tr'); tr.setAttribute('data-instance', i.id);
      tr.appendChild(el('td', 'id', i.id + (i.self ? ' (this)' : '')));
      tr.appendChild(el('td', 'num', (i.heartbeatAgeMs / 1000).toFixed(1) + ' s ago'));
      ids.forEach(function (id) {
        var v = null; i.connectors.forEach(function (x) { if (x.id === id) v = x; });
        var td = el('td'); td.setAttribute('data-connector', id);
        if (!v) td.appendChild(el('span', 'sub', 'absent'));
        else { td.appendChild(el('span', 'badge ' + v.health, v.health)); td.appendChild(document.createTextNode(' ')); td.appendChild(el('span', 'badge ' + v.state, v.state)); }
        tr.appendChild(td);
      });
      rows.appendChild(tr);
    });
    var list = document.getElementById('cluster-disagreements'); list.textContent = '';
    if (c.disagreements.length === 0) list.appendChild(el('li', '', 'the instances agree on every Connector'));
    c.disagreements.forEach(function (d) {
      var li = el('li', '', d.connector + ' ' + d.field + ': ' + Object.keys(d.values).map(function (k) { return k + ' ' + d.values[k]; }).join(' · '));
      li.setAttribute('data-disagreement', d.connector + ':' + d.field);
      list.appendChild(li);
    });
  }`;
