"use strict";
// The data-quality page: dead letters by reason and source with samples, late and duplicate
// readings over time. The fleet stream says when quality changed; the page then rereads it.
(() => {
  const $ = id => document.getElementById(id);
  let q = null, picked = null, chart = null, timer = null;
  const utc = ts => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");

  // per-minute counts, summed into at most ~120 buckets of whole minutes
  function series() {
    const parts = [q.dead_letters_per_minute, q.late_per_minute, q.duplicates_per_minute];
    let lo = Infinity, hi = -Infinity;
    for (const s of parts) if (s) for (const m of s.minute_ms) { lo = Math.min(lo, m); hi = Math.max(hi, m); }
    if (lo > hi) return [[], [], [], []];
    const step = 60e3 * Math.max(1, Math.ceil((hi - lo) / 60e3 / 120));
    const n = Math.floor((hi - lo) / step) + 1;
    const cols = [Array.from({ length: n }, (_, i) => (lo + i * step) / 1e3)];
    for (const s of parts) {
      const c = s ? new Array(n).fill(0) : new Array(n).fill(null);
      if (s) s.minute_ms.forEach((m, i) => { c[Math.floor((m - lo) / step)] += s.count[i]; });
      cols.push(c);
    }
    q._bucketMin = step / 60e3;
    return cols;
  }

  function render() {
    $("q-dead").textContent = q.dead_letters.toLocaleString("en");
    $("q-late").textContent = q.late_readings === null ? "n/a" : q.late_readings.toLocaleString("en");
    $("q-late-note").textContent = q.late_readings === null ? "the output topics do not carry late readings: open a run folder to see them" : "";
    $("q-dup").textContent = q.duplicate_readings === null ? "n/a" : q.duplicate_readings.toLocaleString("en");
    $("q-dup-note").textContent = q.duplicate_readings === null ? "counted in window features, which the output topics do not carry" : "";
    $("q-unreadable").textContent = q.unreadable.toLocaleString("en");
    const sources = {};
    for (const x of q.by_reason_source) (sources[x.reason] ||= []).push(`${x.source} ${x.count}`);
    $("by-reason").tBodies[0].innerHTML = Object.entries(q.dead_letters_by_reason).map(([r, n]) =>
      `<tr class="pick${r === picked ? " picked" : ""}" data-reason="${twin.esc(r)}"><td>${twin.esc(r)}</td>` +
      `<td data-count="${n}">${n}</td><td>${twin.esc((sources[r] || []).join(", "))}</td></tr>`).join("");
    $("by-source").tBodies[0].innerHTML = Object.entries(q.by_source).map(([s, n]) =>
      `<tr><td>${twin.esc(s)}</td><td>${n}</td></tr>`).join("");
    $("late-assets").tBodies[0].innerHTML = q.late_by_asset === null ? "<tr><td colspan=2 class=muted>n/a</td></tr>"
      : Object.entries(q.late_by_asset).map(([a, n]) => `<tr><td><a href="/asset/${encodeURIComponent(a)}">${twin.esc(a)}</a></td><td>${n}</td></tr>`).join("");
    samples();
    const el = $("c-quality");
    const data = series();
    $("bucket").textContent = q._bucketMin ? `per ${q._bucketMin} min` : "";
    if (chart) { chart.setData(data); return; }
    chart = new uPlot({ width: Math.max(300, el.clientWidth - 12), height: 200, tzDate: utc,
      series: [{}, { label: "dead letters", stroke: "#c62828", width: 1.5 },
               { label: "late", stroke: "#e07b00", width: 1.5 }, { label: "duplicates", stroke: "#1565c0", width: 1.5 }] },
      data, el);
  }

  function samples() {
    const list = picked ? (q.samples[picked] || []) : [];
    $("samples-reason").textContent = picked ? `${picked}: newest ${list.length}` : "(pick a reason)";
    $("sample-list").innerHTML = list.map(s => `<div class="sample"><b>${twin.esc(s.reason)}</b> at ${twin.esc(s.stage)} from ` +
      `${twin.esc(s.source)}, ${twin.time(s.ts_ms)}${s.key ? ", key " + twin.esc(s.key) : ""}: ${twin.esc(s.detail)}` +
      `<pre>${s.payload_bytes} bytes · ${twin.esc(s.payload_hex)}\n${twin.esc(s.payload_text)}</pre></div>`).join("");
  }

  $("by-reason").addEventListener("click", e => {
    const tr = e.target.closest("tr[data-reason]");
    if (!tr) return;
    picked = tr.dataset.reason;
    render();
  });

  async function load() {
    q = await twin.get("/api/quality");
    if (!picked) picked = Object.keys(q.dead_letters_by_reason)[0] || null;
    render();
    document.body.dataset.ready = "1";
    document.body.dataset.version = q.version;
    if (window.twinStats.firstRenderMs === null) window.twinStats.firstRenderMs = performance.now();
  }

  let version = -1, epoch = 0;
  load().then(() => {
    twin.stream(() => `/api/events?since=${version}&epoch=${epoch}&fields=asset_id`, {
      fleet(d) {
        version = d.version;
        if (!d.quality) return;
        window.twinStats.updates += 1;
        window.twinStats.batches += 1;
        clearTimeout(timer);
        timer = setTimeout(load, 300);
      },
      reset() { location.reload(); },
    });
  }).catch(err => { $("sample-list").textContent = "could not load: " + err.message; });
})();
