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

  // -- what-if: a scenario in, the roll-forward out (GET /api/whatif/{id}). It computes
  // and never actuates: a recommended setpoint is shown as a dry run with the command a
  // person would run to send it, signed.
  let wiCharts = [], wiCount = 0, wiLast = null;
  const wiPanel = () => $("whatif");
  const rul = s => s === null || s === undefined ? "none in sight" : twin.dur(s);

  function wiState(state, message) {
    wiPanel().dataset.state = state;
    if (message !== undefined) $("whatif-message").textContent = message;
  }

  // where the answer extrapolates: an orange bar along the top and a dashed line where it
  // starts (a fill would tint the bands beneath it)
  function wiShade(result) {
    const ex = result.scenario_path.extrapolation;
    return u => {
      if (!result.scenario_path.extrapolating || ex.from_s === null) return;
      const x0 = Math.max(u.valToPos(result.from_ms / 1e3 + ex.from_s, "x", true), u.bbox.left);
      const x1 = u.bbox.left + u.bbox.width;
      if (x0 >= x1) return;
      const ctx = u.ctx;
      ctx.save();
      ctx.fillStyle = "rgba(224,123,0,.55)";
      ctx.fillRect(x0, u.bbox.top, x1 - x0, 5 * devicePixelRatio);
      ctx.strokeStyle = "rgba(224,123,0,.8)";
      ctx.setLineDash([4, 3]);
      ctx.beginPath(); ctx.moveTo(x0, u.bbox.top); ctx.lineTo(x0, u.bbox.top + u.bbox.height); ctx.stroke();
      ctx.restore();
    };
  }

  // one chart: baseline (grey) and scenario (blue), each with its 90 % band
  function wiChart(box, title, unit, xs, base, scen, inner, range, shade) {
    const div = document.createElement("div");
    div.className = "wi-chart";
    div.dataset.series = title;
    div.innerHTML = `<h3>${twin.esc(title)} <small class="muted">${twin.esc(unit ?? "")}</small></h3>`;
    box.appendChild(div);
    const opts = { tzDate: utc, width: width(div), height: 160, axes,
      legend: { show: false }, hooks: { draw: [shade] },
      series: [{}, { label: "as now", stroke: "#78909c", width: 1.5 },
               { label: "as now, low", stroke: "rgba(120,144,156,.3)" }, { label: "as now, high", stroke: "rgba(120,144,156,.3)" },
               { label: "if", stroke: "#1565c0", width: 2 },
               { label: "if, low", stroke: "rgba(21,101,192,.3)" }, { label: "if, high", stroke: "rgba(21,101,192,.3)" }],
      bands: [{ series: [3, 2], fill: "rgba(120,144,156,.16)" }, { series: [6, 5], fill: "rgba(21,101,192,.14)" }] };
    if (range) opts.scales = { y: { range } };
    wiCharts.push(new uPlot(opts, [xs, base[inner], base.lo, base.hi, scen[inner], scen.lo, scen.hi], div));
  }

  function wiRender(r) {
    for (const c of wiCharts) c.destroy();
    wiCharts = [];
    wiLast = r;
    $("whatif-result").hidden = false;  // before the charts: they take their box's width
    const b = r.baseline, s = r.scenario_path;
    $("wi-scenario").textContent = `what if ${r.scenario.text}` +
      ` · from the state of ${twin.time(r.model.as_of_ms)} UTC, ${twin.dur(r.horizon_s)} ahead`;
    $("wi-rul-base").textContent = rul(b.rul_s);
    $("wi-rul-base-int").textContent = `90 %: ${rul(b.rul_lo_s)} to ${rul(b.rul_hi_s)}`;
    $("wi-rul-scen").textContent = rul(s.rul_s);
    $("wi-rul-scen-int").textContent = `90 %: ${rul(s.rul_lo_s)} to ${rul(s.rul_hi_s)}`;
    const last = b.health.mean.length - 1;
    $("wi-health").textContent = `${twin.fmt(b.health.mean[last], 2)} → ${twin.fmt(s.health.mean[last], 2)}`;
    $("wi-health-label").textContent = `health in ${twin.dur(r.horizon_s)}, as now → if`;
    const ex = s.extrapolation;
    $("wi-extrap").textContent = s.extrapolating ? `from +${twin.dur(ex.from_s)}` : "none";
    $("wi-extrap").className = s.extrapolating ? "extrap" : "";
    $("wi-extrap-why").textContent = s.extrapolating
      ? `${ex.reasons.join(", ")}: beyond what this asset has shown; wider intervals, not more trust (orange on the charts)`
      : "within what this asset has shown";
    $("wi-notes").innerHTML = r.notes.map(n => `<li>${twin.esc(n)}</li>`).join("") +
      (r.fidelity.error === null || r.fidelity.error === undefined || r.notes.some(n => n.includes("fidelity")) ? "" :
        `<li>the twin's running fidelity: ${(100 * r.fidelity.error).toFixed(1)} % median error a window ahead, ` +
        `${(100 * r.fidelity.coverage).toFixed(0)} % inside its 90 % intervals</li>`);
    const xs = r.times_s.map(t => r.from_ms / 1e3 + t);
    const box = $("wi-charts");
    box.innerHTML = "";
    const shade = wiShade(r);
    const set = (r.scenario.steps || []).flatMap(st => Object.keys(st.set));
    const names = [...new Set([...set, ...r.condition_sensors])];
    for (const n of names) {
      if (!b.sensors[n]) continue;
      wiChart(box, n, b.sensors[n].unit, xs, b.sensors[n], s.sensors[n], "mean", null, shade);
    }
    wiChart(box, "health index", "", xs, b.health, s.health, "mean", [0, 1.05], shade);
    wiChart(box, "anomaly score", "median", xs, b.anomaly_score, s.anomaly_score, "median", [0, 1], shade);
    wiRecommendation(r.recommendation);
  }

  function wiRecommendation(rec) {
    const el = $("wi-rec");
    if (!rec) { el.hidden = true; el.innerHTML = ""; return; }
    if (rec.error) {
      el.innerHTML = `<b>recommended:</b> <span id="wi-rec-text" class="error">${twin.esc(rec.error)}</span>`;
      el.hidden = false;
      return;
    }
    const a = rec.action, num = x => Number(x).toPrecision(4);
    let html = `<b>recommended:</b> <span id="wi-rec-text">${twin.esc(rec.text)}</span>` +
      ` <small class="muted">(${rec.candidates.length} setpoints tried; ${rec.feasible ? "meets every constraint" : "none meets every constraint"})</small>`;
    if (a) {
      html += `<div id="wi-rec-action">SETPOINT ${twin.esc(a.setpoint_name)} ${num(a.setpoint_previous)} → ${num(a.setpoint_value)}` +
        ` <span class="badge">dry run: not sent</span> <small class="muted">guardrails passed; the ramp's first of ${rec.steps.length} step(s)</small></div>`;
      html += rec.command
        ? `<div>To send it, signed, a person runs (still a dry run without <code class="inline">--apply</code>; the twin's state and guardrails are checked again then):<code id="wi-rec-command">${twin.esc(rec.command)}</code></div>`
        : `<div class="muted">This dashboard's source is not one <code class="inline">twin optimize</code> reads: run it on the run folder or the state topic.</div>`;
    } else if (rec.refused) {
      html += `<div id="wi-rec-action" class="error">${twin.esc(rec.refused)}</div>`;
    } else {
      html += `<div id="wi-rec-action" class="muted">no SETPOINT: the recommendation changes nothing</div>`;
    }
    el.innerHTML = html;
    el.hidden = false;
  }

  async function wiAsk(params) {
    const err = $("whatif-error"), run = $("wi-run");
    err.hidden = true;
    run.disabled = true;
    wiState("computing", params.has("recommend") ? "computing (with the recommended setpoint: a few seconds)…" : "computing…");
    try {
      const r = await twin.get(wiUrl(params), [400, 409, 503]);
      if (r._status !== 200) {
        err.textContent = r.error || `what-if failed (${r._status})`;
        err.hidden = false;
        wiState(r._status === 409 ? "unavailable" : "error", "");
        return;
      }
      wiRender(r);
      wiCount += 1;
      wiPanel().dataset.computed = String(wiCount);
      wiState("done", "");
    } catch (e) {
      err.textContent = "what-if failed: " + e.message;
      err.hidden = false;
      wiState("error", "");
    } finally {
      run.disabled = false;
    }
  }

  const wiUrl = params => `/api/whatif/${encodeURIComponent(assetId)}` + (params && [...params].length ? "?" + params : "");

  function wiParams() {
    const p = new URLSearchParams();
    const change = $("wi-change").value.trim();
    if (change) p.append("set", `${$("wi-sensor").value}=${change}`);
    for (const k of ["from", "for", "horizon"]) {
      const v = $("wi-" + k).value.trim();
      if (v) p.append(k, v);
    }
    if ($("wi-recommend").checked) p.append("recommend", "1");
    return p;
  }

  async function whatif() {
    // the baseline first: whether this asset's twin can answer, and what may be set
    let r;
    try {
      r = await twin.get(wiUrl(null), [409]);
    } catch (e) {
      wiState("unavailable", "what-if: " + e.message);
      return;
    }
    if (r._status === 404 || r._status === 409) {
      wiState("unavailable", "what-if: " + (r.error || "not available"));
      return;
    }
    const sel = $("wi-sensor");
    sel.innerHTML = Object.entries(r.settable).map(([n, s]) =>
      `<option value="${twin.esc(n)}">${twin.esc(n)}</option>`).join("");
    const pol = r.settable.speed ? "speed" : Object.keys(r.settable)[0];
    if (pol) sel.value = pol;
    const showCurrent = () => {
      const s = r.settable[sel.value];
      $("wi-current").textContent = s && s.value !== null ? `now ${Number(s.value).toPrecision(5)} ${s.unit}` : "";
    };
    sel.addEventListener("change", showCurrent);
    showCurrent();
    $("whatif-form").hidden = false;
    $("whatif-form").addEventListener("submit", ev => { ev.preventDefault(); wiAsk(wiParams()); });
    wiRender(r);
    wiState("ready", "the baseline (the asset run as now); set a change and Run");
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
  window.addEventListener("resize", () => { if (data) makeCharts(); if (wiLast) wiRender(wiLast); });
  wiState("loading", "…");
  whatif();
  load().catch(err => { $("missing").hidden = false; $("missing").textContent = "could not load: " + err.message; });
})();
