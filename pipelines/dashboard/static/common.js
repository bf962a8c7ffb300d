"use strict";
// Shared by the pages: fetching, push streams, formatting. No framework, no CDN.
window.twinStats = { loadedAt: performance.now(), firstRenderMs: null, updates: 0,
                     batches: 0, lagsMs: [], pageId: Math.random().toString(36).slice(2) };
const twin = {
  fmt(x, digits) { return x === null || x === undefined ? "-" : Number(x).toFixed(digits); },
  time(ms) { return ms === null || ms === undefined ? "-"
             : new Date(ms).toISOString().slice(0, 19).replace("T", " "); },
  dur(s) {
    if (s === null || s === undefined) return "-";
    for (const [u, n] of [["d", 86400], ["h", 3600], ["m", 60]]) if (s >= n) return (s / n).toFixed(1) + u;
    return s.toFixed(0) + "s";
  },
  esc(s) { return String(s ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;"}[c])); },
  // the JSON body with its _status; statuses other than 2xx, 404 and those in `answers`
  // (which carry an {error} the page shows) throw
  async get(url, answers) {
    const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); throw new Error("login"); }
    if (!r.ok && r.status !== 404 && !(answers || []).includes(r.status)) throw new Error(url + ": " + r.status);
    const body = await r.json();
    body._status = r.status;
    return body;
  },
  // A Server-Sent Events stream from urlFn() (called again on each reconnect, so the
  // server resumes from what this page has). handlers: event -> fn(data).
  stream(urlFn, handlers) {
    const live = document.getElementById("live");
    const handle = { es: null, closed: false, close() { this.closed = true; if (this.es) this.es.close(); } };
    const open = () => {
      if (handle.closed) return;
      const es = handle.es = new EventSource(urlFn());
      es.onopen = () => { if (live) { live.textContent = "live"; live.className = "live ok"; } };
      es.onerror = () => {
        if (live) { live.textContent = "reconnecting…"; live.className = "live down"; }
        es.close();
        setTimeout(open, 2000);
      };
      for (const [ev, fn] of Object.entries(handlers)) {
        es.addEventListener(ev, e => fn(JSON.parse(e.data)));
      }
    };
    open();
    return handle;
  },
  noteLag(receivedMs) {
    if (receivedMs === null || receivedMs === undefined) return;
    const s = window.twinStats;
    s.lagsMs.push(Date.now() - receivedMs);
    if (s.lagsMs.length > 5000) s.lagsMs.splice(0, s.lagsMs.length - 5000);
  },
  statusClass(status) { return "badge st-" + String(status || "").replace(" ", "-"); },
};

// Where the data comes from, and whether it keeps up (the header's source note).
(function watchSource() {
  const el = document.getElementById("source");
  if (!el) return;
  const show = async () => {
    try {
      const s = await twin.get("/api/status");
      const where = s.source === "kafka" ? `Kafka ${s.bootstrap_servers}` : s.source === "folder" ? s.folder : s.source;
      let note = "";
      if (s.error) note = ` · error: ${s.error}`;
      else if (s.behind_messages > 0) note = ` · ${s.behind_messages.toLocaleString("en")} messages to read`;
      el.textContent = where + note;
      el.className = "source" + (s.error ? " bad" : "");
      el.title = `${s.records.toLocaleString("en")} records read` + (s.unreadable ? `, ${s.unreadable} unreadable` : "");
    } catch (err) { /* the live indicator shows a lost server */ }
  };
  show();
  setInterval(show, 5000);
})();
