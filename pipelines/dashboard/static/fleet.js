"use strict";
// The fleet page: every asset, riskiest first, filtered and sorted in the browser; only the
// rows in view are in the document (a virtual list), so 10,000 assets stay quick.
(() => {
  const FIELDS = ["asset_id", "asset_type", "site", "status", "risk", "health_index",
    "anomaly_score", "alert_open", "alert_severity", "alert_reason", "drift", "drift_events",
    "last_drift_ms", "rul_s", "forecast_health", "forecast_horizon_s", "last_seen_ms",
    "received_ms"];
  const COLUMNS = [
    ["asset_id", "asset", r => twin.esc(r.asset_id)],
    ["asset_type", "type", r => twin.esc(r.asset_type)],
    ["site", "site", r => twin.esc(r.site ?? "-")],
    ["status", "state", r => `<span class="${twin.statusClass(r.status)}">${twin.esc(r.status)}</span>`],
    ["risk", "risk", r => twin.fmt(r.risk, 2), "num"],
    ["health_index", "health", r => twin.fmt(r.health_index, 2), "num"],
    ["anomaly_score", "score", r => twin.fmt(r.anomaly_score, 3), "num"],
    ["alert_severity", "open alert", r => r.alert_open
      ? `<span class="sev-${twin.esc(r.alert_severity)}">${twin.esc(r.alert_severity)}</span> ${twin.esc(r.alert_reason ?? "")}` : "-"],
    ["drift_events", "drift", r => (r.drift ? "now · " : "") + r.drift_events, "num"],
    ["rul_s", "RUL", r => twin.dur(r.rul_s), "num"],
    ["forecast_health", "forecast", r => r.forecast_health === null ? "-"
      : `${twin.fmt(r.forecast_health, 2)} @${twin.dur(r.forecast_horizon_s)}`, "num"],
    ["last_seen_ms", "last seen (UTC)", r => twin.time(r.last_seen_ms)],
  ];
  const ROW_H = 28, OVERSCAN = 10;
  const rows = new Map();
  let view = [], sortKey = "risk", sortDesc = true, version = -1, epoch = 0, dirty = true;
  const $ = id => document.getElementById(id);
  const body = $("fleet-body"), spacer = $("fleet-spacer"), list = $("fleet-rows");
  const filters = { type: $("f-type"), site: $("f-site"), status: $("f-status"), text: $("f-text") };

  $("fleet-head").innerHTML = COLUMNS.map(([k, label, , cls]) =>
    `<div data-key="${k}" class="${cls || ""}">${label}</div>`).join("");
  $("fleet-head").addEventListener("click", e => {
    const key = e.target.dataset.key;
    if (!key) return;
    if (key === sortKey) sortDesc = !sortDesc; else { sortKey = key; sortDesc = key === "risk"; }
    dirty = true; schedule();
  });
  for (const f of Object.values(filters)) f.addEventListener("input", () => { dirty = true; schedule(); });
  list.addEventListener("click", e => {
    const row = e.target.closest(".grow");
    if (row) location.href = "/asset/" + encodeURIComponent(row.dataset.asset);
  });
  body.addEventListener("scroll", () => paint());
  window.addEventListener("resize", () => paint());

  function compare(a, b) {
    let x = a[sortKey], y = b[sortKey];
    if (sortKey === "risk" && x === y) return a.asset_id < b.asset_id ? -1 : 1;
    if (x === null || x === undefined) return 1;
    if (y === null || y === undefined) return -1;
    if (x === y) return a.asset_id < b.asset_id ? -1 : 1;
    return (x < y ? -1 : 1) * (sortDesc ? -1 : 1);
  }

  function rebuild() {
    const t = filters.type.value, s = filters.site.value, st = filters.status.value;
    const text = filters.text.value.trim().toLowerCase();
    view = [];
    for (const r of rows.values()) {
      if (t && r.asset_type !== t) continue;
      if (s && String(r.site) !== s) continue;
      if (st && r.status !== st) continue;
      if (text && !r.asset_id.toLowerCase().includes(text)) continue;
      view.push(r);
    }
    view.sort(compare);
    spacer.style.height = (view.length * ROW_H) + "px";
    $("shown").textContent = `${view.length.toLocaleString("en")} of ${rows.size.toLocaleString("en")} shown`;
    for (const el of $("fleet-head").children) {
      el.classList.toggle("sorted", el.dataset.key === sortKey);
      el.classList.toggle("asc", el.dataset.key === sortKey && !sortDesc);
    }
  }

  function paint() {
    const first = Math.max(0, Math.floor(body.scrollTop / ROW_H) - OVERSCAN);
    const last = Math.min(view.length, Math.ceil((body.scrollTop + body.clientHeight) / ROW_H) + OVERSCAN);
    const now = Date.now(), html = [];
    for (let i = first; i < last; i++) {
      const r = view[i];
      const fresh = r._updated && now - r._updated < 1500 ? " fresh" : "";
      html.push(`<div class="grow${fresh}" data-asset="${twin.esc(r.asset_id)}">` +
        COLUMNS.map(([k, , f, cls]) => `<div data-field="${k}" class="${cls || ""}">${f(r)}</div>`).join("") + "</div>");
    }
    list.style.transform = `translateY(${first * ROW_H}px)`;
    list.innerHTML = html.join("");
  }

  let pending = false;
  function schedule() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      const t0 = performance.now();
      if (dirty) { rebuild(); dirty = false; }
      paint();
      const stats = window.twinStats;
      (stats.paintMs ||= []).push(performance.now() - t0);
      if (stats.paintMs.length > 5000) stats.paintMs.splice(0, stats.paintMs.length - 5000);
    });
  }

  function options(select, values) {
    const key = JSON.stringify(values);
    if (select.dataset.values === key) return;  // unchanged: leave an open list alone
    select.dataset.values = key;
    const keep = select.value;
    select.innerHTML = `<option value="">all</option>` + values.map(v => `<option>${twin.esc(v)}</option>`).join("");
    select.value = values.includes(keep) ? keep : "";
  }

  function showCounts(c, q) {
    if (c) {
      $("n-assets").textContent = c.assets.toLocaleString("en");
      $("n-alert").textContent = c.by_status.alert;
      $("n-abnormal").textContent = c.by_status.abnormal;
      $("n-drift").textContent = c.by_status.drift;
      $("n-warming").textContent = c.by_status["warming up"];
      options(filters.type, Object.keys(c.by_type));
      options(filters.site, c.sites);
      options(filters.status, Object.keys(c.by_status).filter(k => c.by_status[k] > 0));
    }
    if (q) {
      $("n-dead").textContent = q.dead_letters.toLocaleString("en");
      $("dead-reasons").textContent = Object.entries(q.dead_letters_by_reason).slice(0, 4)
        .map(([k, v]) => `${k} ${v}`).join(", ");
      $("n-late").textContent = q.late_readings === null ? "n/a" : q.late_readings.toLocaleString("en");
      $("late-note").textContent = q.late_readings === null ? "not on the output topics (see docs)" : "";
    }
  }

  async function load() {
    const data = await twin.get("/api/assets?fields=" + FIELDS.join(","));
    rows.clear();
    for (const r of data.assets) rows.set(r.asset_id, r);
    version = data.version; epoch = data.epoch;
    showCounts(data.counts, data.quality);
    rebuild(); dirty = false; paint();
    document.body.dataset.ready = "1";
    document.body.dataset.version = version;
    if (window.twinStats.firstRenderMs === null) window.twinStats.firstRenderMs = performance.now();
    connect();
  }

  let es = null;
  function connect() {
    if (es) es.close();
    es = twin.stream(() => `/api/events?since=${version}&epoch=${epoch}&fields=${FIELDS.join(",")}`, {
      fleet(d) {
        const now = Date.now();
        for (const r of d.rows) { r._updated = now; rows.set(r.asset_id, r); twin.noteLag(r.received_ms); }
        window.twinStats.updates += d.rows.length;
        window.twinStats.batches += 1;
        version = d.version;
        document.body.dataset.version = version;
        showCounts(d.counts, d.quality);
        dirty = true; schedule();
      },
      reset() { es.close(); load(); },
    });
  }
  load().catch(err => { $("shown").textContent = "could not load: " + err.message; });
})();
