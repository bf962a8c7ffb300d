"use strict";
// The asset page: its state, charts of its history (uPlot), alarms, actions, and the
// what-if panel. Updates arrive as deltas on /api/assets/{id}/events.
(() => {
  const $ = id => document.getElementById(id);
  const assetId = decodeURIComponent(location.pathname.replace(/^\/asset\//, ""));
  let data = null, cursor = null, charts = {}, es = null;
  const utc = ts => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");
  const width = el => Math.max(280, el.clientWidth - 12);

  function kpis(a) {
    $("asset-id").textContent = a.asset_id;
    $("asset-type").textContent = [a.asset_type, a.site].filter(x => x).join(" · ");
    $("asset-status").textContent = a.status;
    $("asset-status").className = twin.statusClass(a.status);
    $("k-health").textContent = twin.fmt(a.health_index, 2);
    $("k-score").textContent = twin.fmt(a.anomaly_score, 3);
    $("k-rul").textContent = twin.dur(a.rul_s);
    $("k-forecast").textContent = twin.fmt(a.forecast_health, 2);
    $("k-forecast-label").textContent = "health forecast in " + twin.dur(a.forecast_horizon_s);
    $("k-interval").textContent = a.forecast_low === null ? "interval: not enough history yet"
      : `90 % interval ${twin.fmt(a.forecast_low, 2)} – ${twin.fmt(a.forecast_high, 2)}`;
    $("k-alert").textContent = a.alert_open ? a.alert_severity : "none";
    $("k-alert").className = a.alert_open ? "sev-" + a.alert_severity : "";
    $("k-alert-reason").textContent = a.alert_open ? `${a.alert_reason ?? ""} since ${twin.time(a.alert_since_ms)}` : "";
    $("k-drift").textContent = a.drift_events;
    $("k-drift-last").textContent = a.last_drift_ms ? "last " + twin.time(a.last_drift_ms) : "";
    $("k-seen").textContent = twin.time(a.window_end_ms);
    $("k-windows").textContent = `${a.windows_seen} windows`;
    const rows = [];
    for (const [k, v] of Object.entries(a.setpoints || {})) rows.push(`<tr><td>setpoint ${twin.esc(k)}</td><td data-setpoint="${twin.esc(k)}">${Number(v).toPrecision(5)}</td></tr>`);
    for (const [k, v] of Object.entries(a.values || {})) rows.push(`<tr><td>${twin.esc(k)}</td><td>${Number(v).toPrecision(5)}</td></tr>`);
    $("values").tBodies[0].innerHTML = rows.join("");
  }

  // vertical marks (alarms red, drift blue) drawn over a time chart
  function markHook(u) {
    const ctx = u.ctx, top = u.bbox.top, h = u.bbox.height;
    ctx.save();
    for (const m of data.marks) {
      if (m.kind === "anomaly") continue;  // abnormal windows are the score chart's dots
      const x = u.valToPos(m.ms / 1e3, "x", true);
      if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
      ctx.strokeStyle = m.kind === "drift" ? "rgba(21,101,192,.7)" : "#c62828";
      ctx.lineWidth = m.kind === "drift" ? 1 : 2;
      ctx.setLineDash(m.kind === "drift" ? [4, 3] : []);
      ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + h); ctx.stroke();
    }
    ctx.restore();
  }

  function scoreData() {
    const p = data.predictions;
    return [p.window_end_ms.map(t => t / 1e3), p.anomaly_score,
            p.anomaly_score.map((s, i) => p.is_anomaly[i] ? s : null)];
  }

  // health at window ends; the forecast (and its interval) at the time it is for
  function healthData() {
    const p = data.predictions, pts = new Map();
    const at = t => { if (!pts.has(t)) pts.set(t, [null, null, null, null]); return pts.get(t); };
    p.window_end_ms.forEach((t, i) => {
      at(t / 1e3)[0] = p.health_index[i];
      if (p.forecast_health[i] !== null && p.forecast_horizon_s[i] !== null) {
        const f = at((t + p.forecast_horizon_s[i] * 1e3) / 1e3);
        f[1] = p.forecast_health[i]; f[2] = p.forecast_low[i]; f[3] = p.forecast_high[i];
      }
    });
    const xs = [...pts.keys()].sort((a, b) => a - b);
    const cols = [xs, [], [], [], []];
    for (const x of xs) { const v = pts.get(x); for (let k = 0; k < 4; k++) cols[k + 1].push(v[k]); }
    return cols;
  }

  function sensorData(name) {
    const s = data.sensors, v = s.sensors[name];
    return [s.window_end_ms.map(t => t / 1e3), v.mean, v.min, v.max];
  }

  // compact axis numbers: 412,800 Pa reads 4.13e5, not a clipped "2,800"
  const compact = (u, vals) => vals.map(v => v === null ? "" : Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-2)
    ? v.toExponential(2) : String(+v.toPrecision(4)));
  const axes = [{}, { size: 64, values: compact }];

  function makeCharts() {
    for (const c of Object.values(charts)) c.destroy();
    charts = {};
    const base = { tzDate: utc, cursor: { drag: { x: true, y: false } }, hooks: { draw: [markHook] } };
    const sc = $("c-score");
    charts.score = new uPlot({ ...base, width: width(sc), height: 220,
      scales: { y: { range: [0, 1] } },
      series: [{}, { label: "anomaly score", stroke: "#455a64", width: 1 },
               { label: "abnormal window", stroke: "transparent", points: { show: true, size: 5, fill: "#e07b00", stroke: "#e07b00" } }] },
      scoreData(), sc);
    const hc = $("c-health");
    charts.health = new uPlot({ ...base, width: width(hc), height: 220,
      scales: { y: { range: [0, 1.05] } },
      series: [{}, { label: "health", stroke: "#2e7d32", width: 2, spanGaps: true },
               { label: "forecast", stroke: "#8e24aa", dash: [5, 4], spanGaps: true },
               { label: "low", stroke: "rgba(142,36,170,.25)", spanGaps: true },
               { label: "high", stroke: "rgba(142,36,170,.25)", spanGaps: true }],
      bands: [{ series: [4, 3], fill: "rgba(142,36,170,.10)" }] },
      healthData(), hc);
    const box = $("c-sensors");
    box.innerHTML = "";
    for (const [name, s] of Object.entries(data.sensors.sensors)) {
      const div = document.createElement("div");
      div.innerHTML = `<h3>${twin.esc(name)} <small class="muted">${twin.esc(s.unit ?? "")}</small></h3>`;
      box.appendChild(div);
      charts["s:" + name] = new uPlot({ ...base, axes, width: width(div), height: 150, legend: { show: false },
        series: [{}, { label: "mean", stroke: "#1565c0", width: 1.5 },
                 { label: "min", stroke: "rgba(21,101,192,.25)" }, { label: "max", stroke: "rgba(21,101,192,.25)" }],
        bands: [{ series: [3, 2], fill: "rgba(21,101,192,.12)" }] },
        sensorData(name), div);
    }
  }

  function refreshCharts() {
    charts.score.setData(scoreData());
    charts.health.setData(healthData());
    for (const name of Object.keys(data.sensors.sensors)) {
      const c = charts["s:" + name];
      if (c) c.setData(sensorData(name));
    }
  }

  function tables() {
    $("marks").tBodies[0].innerHTML = data.marks.slice().reverse().map(m =>
      `<tr><td>${twin.time(m.ms)}</td><td>${m.kind === "drift" ? "drift / regime change" : m.kind}</td>` +
      `<td>${m.score === undefined ? "" : twin.fmt(m.score, 3)}</td>` +
      `<td>${twin.esc((m.contributors || m.sensors || []).join(", "))}</td></tr>`).join("");
    $("actions").tBodies[0].innerHTML = data.actions.map(a => {
      const num = x => x === null || x === undefined ? "-" : Number(x).toPrecision(5);
      const sp = a.setpoint_name ? `${twin.esc(a.setpoint_name)} ${num(a.setpoint_previous)} → ${num(a.setpoint_value)}${a.dry_run ? " (dry run)" : ""}` : "";
      const sig = a.signature ? `<span class="sig-${twin.esc(a.signature)}">${twin.esc(a.signature)}</span>` +
        (a.command ? ` <small class="muted">seq ${a.command.seq}${a.command.expired ? ", expired" : ""}</small>` : "") : "<small class='muted'>file</small>";
      return `<tr data-action="${twin.esc(a.action_id)}"><td>${twin.time(a.ts_ms)}</td><td>${twin.esc(a.kind)}</td>` +
        `<td class="sev-${twin.esc(a.severity)}">${twin.esc(a.severity)}</td><td>${twin.esc(a.reason)}</td><td>${sp}</td><td>${sig}</td></tr>`;
    }).join("");
  }

  function apply(d) {
    if (d.reset) { data = d; cursor = d.cursor; kpis(d.asset); tables(); makeCharts(); return; }
    const p = data.predictions;
    for (const k of Object.keys(p)) p[k].push(...(d.predictions[k] || []));
    const s = data.sensors;
    s.window_end_ms.push(...d.sensors.window_end_ms);
    for (const [name, v] of Object.entries(d.sensors.sensors || {})) {
      if (!s.sensors[name]) continue;
      for (const k of ["mean", "min", "max"]) s.sensors[name][k].push(...v[k]);
    }
    data.actions = d.actions.concat(data.actions).slice(0, 200);
    data.marks = data.marks.concat(d.marks).slice(-200);
    data.asset = d.asset;
    cursor = d.cursor;
    kpis(d.asset); tables(); refreshCharts();
    twin.noteLag(d.asset.received_ms);
    window.twinStats.updates += 1;
    window.twinStats.batches += 1;
    document.body.dataset.version = cursor.version;
  }

  async function whatif() {
    // WHAT-IF (issue 23): the panel asks /api/whatif/{id}; until the roll-forward exists it
    // answers 501 and the panel says so. When it exists, render its scenario form here.
    const panel = $("whatif");
    try {
      const r = await twin.get("/api/whatif/" + encodeURIComponent(assetId));
      if (r._status === 501 || r.available === false) {
        panel.dataset.state = "unavailable";
        $("whatif-message").textContent = r.message || "what-if: not available in this version";
        return;
      }
      panel.dataset.state = "available";
    } catch (err) {
      panel.dataset.state = "unavailable";
      $("whatif-message").textContent = "what-if: not available in this version";
    }
  }

  async function load() {
    const d = await twin.get("/api/assets/" + encodeURIComponent(assetId));
    if (d._status === 404) {
      $("asset-id").textContent = assetId;
      $("missing").hidden = false;
      $("missing").textContent = d.error;
      document.body.dataset.ready = "1";
      return;
    }
    data = d; cursor = d.cursor;
    kpis(d.asset); tables(); makeCharts();
    document.body.dataset.ready = "1";
    document.body.dataset.version = cursor.version;
    if (window.twinStats.firstRenderMs === null) window.twinStats.firstRenderMs = performance.now();
    connect();
  }

  function connect() {
    if (es) es.close();
    const url = () => `/api/assets/${encodeURIComponent(assetId)}/events?` +
      new URLSearchParams(Object.entries(cursor).map(([k, v]) => [k, String(v)]));
    es = twin.stream(url, {
      asset: apply,
      reset() { es.close(); load(); },
    });
  }
  window.addEventListener("resize", () => { if (data) makeCharts(); });
  whatif();
  load().catch(err => { $("missing").hidden = false; $("missing").textContent = "could not load: " + err.message; });
})();
