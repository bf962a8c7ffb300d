"""``docs/benchmarks.md``, rendered from the latest result record of each benchmark.

The page is data, not prose: every figure on it comes from a record in
``infra/bench/results/`` (:mod:`jobs.benchrecord`), each section names its record, the
machine and the exact command that reproduces it. ``twin bench report`` writes it and
``twin bench report --check`` (a test runs it) says whether it matches the records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# NAB's published scoreboard (standard, reward low FP, reward low FN); NAB README.
NAB_PUBLISHED = {
    "ARTime": (74.9, 65.1, 80.4),
    "Numenta HTM": (70.5, 62.6, 75.2),
    "CAD OSE": (69.9, 67.0, 73.2),
    "KNN CAD": (58.0, 43.4, 64.8),
    "Relative Entropy": (54.6, 47.6, 58.8),
    "Random Cut Forest": (51.7, 38.4, 59.7),
    "Twitter ADVec": (47.1, 33.6, 53.5),
    "Windowed Gaussian": (39.6, 20.9, 47.4),
    "Random": (11.0, 1.2, 19.5),
}
NAB_PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")

HEADER = """\
# Benchmarks

<!-- Written by `twin bench report` from the records in infra/bench/results/.
     Do not edit by hand: run a bench with --record, then `twin bench report`. -->

Every figure here comes from the latest result record of its benchmark in
[`infra/bench/results/`](../infra/bench/results/): one JSON file per run with the date,
the commit, the machine, the command and every figure it printed. Older records are the
history. Each section gives the command that reproduces it; add `--record` to store a new
record, then `twin bench report` rewrites this page.

The machines are virtual; their speed drifts between runs (up to tens of percent), so
compare figures *within* one record (the ratios of the throughput bench, the stages of
one run), not across records.
"""


def _n(x: Any, fmt: str = ",") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and fmt == ",":
        return f"{x:,.1f}" if abs(x) < 100 else f"{x:,.0f}"
    return format(x, fmt)


def _table(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _source(r: dict[str, Any]) -> str:
    dirty = " (with uncommitted changes)" if r.get("dirty") else ""
    return (f"Record `{r['_file']}`: {r['date'][:10]}, commit `{r.get('commit')}`{dirty}, "
            f"{_machine_name(r)}.\n\n```sh\n.venv/bin/{r['command']}\n```")


def _machine_name(r: dict[str, Any]) -> str:
    m = r["machine"]
    return f"{m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}"


def machines(records: dict[str, dict[str, Any]]) -> str:
    rows = []
    for bench, r in records.items():
        m = r["machine"]
        pk = m.get("packages", {})
        load = m.get("load_at_start")
        rows.append([bench, r["date"][:10], f"`{r.get('commit')}`", m["cpu"], m["cores"],
                     f"{m['memory_gib']} GiB", "-" if not load else f"{load[0]:.2f}",
                     m["python"], pk.get("apache-beam"), pk.get("apache-flink"),
                     pk.get("river")])
    return ("## Machines\n\nLoad: the machine's 1-minute load average when the bench "
            "started (other work running).\n\n" + _table(
                ["bench", "date", "commit", "CPU", "cores", "memory", "load", "Python",
                 "Beam", "Flink", "River"], rows))


# -- one renderer per bench ---------------------------------------------------------------

def nab(r: dict[str, Any]) -> str:
    f = r["figures"]
    ours = tuple(f[p]["score"] for p in NAB_PROFILES)
    rows = sorted([("**twinstream**", ours), *NAB_PUBLISHED.items()], key=lambda x: -x[1][0])
    table = _table(["detector", "standard", "low FP", "low FN"],
                   [[name, *(f"{s:.1f}" for s in scores)] for name, scores in rows])
    per_row = f["detector_s"] / max(f["rows"], 1) * 1e6
    return f"""### NAB: the Numenta Anomaly Benchmark

All {f['files']} files of NAB v1.1 ({f['rows']:,} rows) replayed row by row with
`twin replay`'s one configuration (labels never read, no look-ahead, not even a file's
minimum or maximum), scored with NAB's rules by `nab_score.py` on the detector's `alarm`
column: the onset of each episode, valued by how sure it is (NAB picks one corpus-wide
threshold per profile on it, as for every detector on its board:
{f['standard']['threshold']:.4f}). The other rows are
NAB's published scoreboard. The detector costs {per_row:.0f} µs per row, file I/O included.

{table}

Data: the corpus of [github.com/numenta/NAB](https://github.com/numenta/NAB) (`data/`,
`labels/`), `--data DIR` or `$TWIN_NAB_DATA`; the scorer, `--scorer FILE` or
`$TWIN_NAB_SCORER` (in this project's CI both come from `../shared/bench/`).

{_source(r)}"""


# Anchors of ../shared/bench/tep/README.md (FAR %, mean FDR over the 18 usual faults %)
TEP_ANCHORS = (
    ("online Mahalanobis, frozen at row 500 (bench README)", 2.1, 92.2),
    ("DPCA Q, 2 lags, 29 PCs (bench README)", 25.7, 90.8),
    ("PCA T², 11 PCs (bench README)", 1.2, 62.6),
    ("KPCA (Ren et al. 2024, another protocol)", 2.8, 92.8),
    ("DAE-PCA (Ren et al. 2024, another protocol)", 2.3, 93.5),
)


def tep(r: dict[str, Any]) -> str:
    f = r["figures"]
    s = f["summary"]
    per_row = f["detector_s"] / max(f["rows"], 1) * 1e6
    faults = _table(
        ["fault", *f["per_fault"].keys()],
        [["FDR %", *(f"{v['fdr'] * 100:.0f}" for v in f["per_fault"].values())],
         ["delay, min", *("-" if v["delay_min"] is None else v["delay_min"]
                          for v in f["per_fault"].values())]])
    anchors = _table(["detector", "FAR %", "mean FDR, 18 faults %"],
                     [["**twinstream** (`is_anomaly`)", f"{s['far'] * 100:.2f}",
                       f"{s['mean_fdr_18'] * 100:.1f}"],
                      *[[name, far, fdr] for name, far, fdr in TEP_ANCHORS]])
    return f"""### TEP: Tennessee Eastman fault detection

The 22 streams of the Tennessee Eastman benchmark ({f['rows']:,} rows of {f['columns']}
sensors; 21 faults, each switched on at row 660 of its stream; rows 0-499 are the normal
training run and unscored) replayed row by row with `twin replay`'s one configuration
(the label column is never read), scored by `tep_score.py` on the detector's own verdict
`is_anomaly`: detection rate (FDR) = share of faulty rows flagged, false-alarm rate (FAR)
= share of normal scored rows flagged. Faults 3, 9 and 15 are practically undetectable
and left out of the usual 18-fault mean. The detector costs {per_row:,.0f} µs per row of
{f['columns']} columns, file I/O included.

{anchors}

FAR {s['far'] * 100:.2f} % (stream_00, normal throughout: {s['far_stream_00'] * 100:.2f} %);
mean FDR over all 21 faults {s['mean_fdr_21'] * 100:.1f} %; ROC AUC of `anomaly_score`
{s['auc']:.3f}; at the score threshold giving FAR 5 % (chosen by the scorer with the
labels, a comparison device only), mean FDR {s['mean_fdr_at_far_18'] * 100:.1f} %.

{faults}

Data: Braatz's TEP files as 22 streams, `--data DIR` or `$TWIN_TEP_DATA`; the scorer,
`--scorer FILE` or `$TWIN_TEP_SCORER` (in this project's CI both come from
`../shared/bench/`).

{_source(r)}"""


def tep_twin(r: dict[str, Any]) -> str:
    f = r["figures"]
    s = f["summary"]
    faults = _table(
        ["fault", *f["per_fault"].keys()],
        [["FDR %", *(f"{v['fdr'] * 100:.0f}" for v in f["per_fault"].values())]])
    return f"""### TEP through the twin (`twin bench tep --through-twin`)

The same streams with the plant declared as an asset model
(`docs/examples/tep/tep.model.yaml`: the 11 manipulated variables as the operating point,
the 41 measurements as condition sensors), each stream one asset's history through the
twin (`twin replay --model`): {r['parameters'].get('window_s', 900) / 60:g}-minute windows,
the asset detector, every row given its window's verdict. The asset detector explains
condition sensors by the operating point, as a machine's physics; a chemical process
whose measurements move with its disturbances more than with its valves is not what it
was built for, and the table detector above is the one to use on such a table.

FAR {s['far'] * 100:.2f} %; mean FDR, 18 faults {s['mean_fdr_18'] * 100:.1f} %; ROC AUC
{s['auc']:.3f}.

{faults}

{_source(r)}"""


def sweep(r: dict[str, Any]) -> str:
    f = r["figures"]
    p = r["parameters"]
    lead = f.get("median_of_median_lead_time_s")
    table = _table(
        ["seeds", "fault episodes", "detected", "recall", "alerts", "precision",
         "false alarms / asset-day", "regime changes", "alerts after them",
         "median lead time"],
        [[f"{p['seeds'][0]}-{p['seeds'][1]}", f["fault_episodes"], f["detected_episodes"],
          f["recall"], f["alerts"], f["precision"], f["false_alarms_per_asset_day"],
          f["regime_changes"], f["regime_change_alerts"],
          "-" if lead is None else f"{lead / 60:.0f} min"]])
    return f"""### The simulated fleet, many seeds

{f['seeds']} fleets of {p['assets']} assets, {p['duration_s'] / 3600:g} h each, through the
same transforms the pipelines run (in-process), scored against the simulator's ground
truth: an episode is detected when an alert precedes its failure; alerts outside episodes
are false alarms; regime changes (load steps, weather) must raise none.

{table}

{_source(r)}"""


def fleet(r: dict[str, Any]) -> str:
    f = r["figures"]
    s, m = f["summary"], f["evaluation"]
    acts = ", ".join(f"{v} {k}" for k, v in s["actions"].items())
    counts = _table(
        ["messages", "valid", "dead letters", "late", "duplicates", "windows", "anomalous "
         "windows", "drift windows", "actions", "wall time", "peak RSS"],
        [[_n(s["readings_in"]), _n(s["readings_valid"]), _n(s["dead_letters"]),
          _n(s["late_readings"]), _n(s["duplicate_readings"]), _n(s["windows"]),
          _n(s["anomalies"]), _n(s["drift_events"]), acts, f"{f['wall_s']} s",
          f"{f['peak_rss_mb'] / 1024:.2f} GB"]])
    lead = m.get("median_lead_time_s")
    lead_min = m.get("min_lead_time_s")
    evaluation = _table(
        ["fault episodes", "detected", "recall", "precision", "false alarms / asset-day",
         "median lead time", "min lead time", "regime changes", "alerts after them"],
        [[m["fault_episodes"], m["detected_episodes"], m["recall"], m["precision"],
          m["false_alarms_per_asset_day"],
          "-" if lead is None else f"{lead / 60:.0f} min",
          "-" if lead_min is None else f"{lead_min / 60:.0f} min",
          m.get("regime_changes"), m.get("regime_change_alerts")]])
    return f"""### The main job (`make run`)

`twin run` on its defaults ({s['assets']} assets, {s['duration_s'] / 3600:g} h of event
time, seed {s['seed']}) on Beam's DirectRunner, in a child process: wall time and peak
memory of the whole command, start-up included. Every dead letter is one the simulator
broke on purpose, for the reason its defect calls for.

{counts}

`twin evaluate` on its output:

{evaluation}

{_source(r)}"""


def throughput(r: dict[str, Any]) -> str:
    f = r["figures"]
    w = f["workload"]
    labels = {"decode": "(a) fastavro decode alone", "naive": "(b) per-element Beam",
              "twinstream": "(c) twinstream Beam", "flink": "(d) twinstream Flink, 1 slot"}
    per_cpu = any("messages_per_cpu_s" in v for v in f["stages"].values())
    table = _table(["stage", "messages/s", "values/s", "seconds", "peak RSS"]
                   + (["messages per CPU second"] if per_cpu else []),
                   [[labels[k], _n(v["messages_per_s"]), _n(v["values_per_s"]),
                     v["seconds"], f"{v['peak_rss_mb']:,} MB"]
                    + ([_n(v["messages_per_cpu_s"]) if "messages_per_cpu_s" in v else "-"]
                       if per_cpu else [])
                    for k, v in f["stages"].items()])
    p = f.get("predictions", {})
    same = p.get("same", True) and all(v for k, v in p.items() if k.startswith("flink_same_as_"))
    counts = sorted({v for k, v in p.items() if k in labels})
    agree = (f"{' / '.join(f'{c:,}' for c in counts)} predictions per stage, "
             f"{'identical in every stage' if same else 'NOT identical across stages'}")
    ratios = []
    if "speedup_vs_naive" in f:
        ratios.append(f"`speedup_vs_naive` (c)/(b) = **{f['speedup_vs_naive']}**")
    if "fraction_of_decode_limit" in f:
        ratios.append(f"`fraction_of_decode_limit` (c)/(a) = **{f['fraction_of_decode_limit']}"
                      f"**")
    if "flink_vs_beam" in f:
        ratios.append(f"(d)/(c) = **{f['flink_vs_beam']}** by the clock"
                      + (f", **{f['flink_vs_beam_per_cpu_s']}** per CPU second"
                         if "flink_vs_beam_per_cpu_s" in f else ""))
    flink = f["stages"].get("flink", {})
    if "cpu_s" in flink:
        cpu = flink["cpu_s"]
        ratios.append(f"(d) is timed from its first element to the job's end "
                      f"({flink.get('wall_s', '-')} s with the JVM's start and the job's "
                      f"submission) and used {cpu.get('python', 0):g} CPU seconds in Python "
                      f"and {cpu.get('jvm', 0):g} in the JVM")
    return f"""### The pipelines side by side (`twin bench`)

One workload, {w['assets']:,} assets x {w['messages'] // max(w['assets'], 1)} samples
({w['messages']:,} clean vendor messages, {w['sensors_per_asset']:g} sensors each,
{f['window_s']:g} s windows), each stage in its own process pinned to one core and timed
after imports: (a) decoding alone, the limit any Avro pipeline works under; (b) the
textbook per-element Beam pipeline of the same scoring (`Map`, `FixedWindows`,
`GroupByKey`); (c) twinstream's own Beam pipeline, everything it does; (d) twinstream's
Flink job on a local mini-cluster, reading the same recorded chunks and writing the same
predictions as (c). Messages per CPU second count every CPU second the stage used (the
JVM's too), so they hold when the machine is busy and the clock does not.

{table}

{'; '.join(ratios)}. {agree}. Twin state: {_n(f['state_bytes_per_asset'])} bytes
per asset.

{_source(r)}"""


def flink_slots(r: dict[str, Any]) -> str:
    f = r["figures"]
    rows = []
    for x in f["runs"]:
        c, share = x["checkpoints"], x["core_share"]
        rows.append([x["parallelism"], x["seconds"], _n(x["messages_per_s"]),
                     _n(x.get("messages_per_cpu_s", 0)), c["completed"],
                     f"{c.get('duration_p50_ms', '-')} / {c.get('duration_max_ms', '-')} ms",
                     f"{c.get('state_mb_max', '-')} MB",
                     *(f"{100 * share[k]:.0f} %" for k in ("broker", "jobmanager",
                                                           "taskmanager", "machine"))])
    table = _table(["slots", "job seconds", "messages/s", "per TaskManager CPU second",
                    "checkpoints",
                    "checkpoint p50 / max", "state", "broker", "JobManager",
                    "TaskManager + Python", "machine"], rows)
    speedup = (f" 2 slots against 1: **{f['speedup']}x**." if "speedup" in f else "")
    return f"""### Slots on a standalone cluster with Kafka (`twin bench flink-slots`)

{_n(f['assets'])} assets' backlog of {_n(f['messages'])} messages in the raw topics
({f['partitions']} partitions each) on the embedded broker; the twin job bounded over it
(Kafka sinks) on a standalone cluster of one TaskManager, once per parallelism, each job
timed as Flink reports it (start to FINISHED: Python workers' start and the last
checkpoint included); messages per CPU second of the TaskManager and its Python workers
is what a slot's core gives when the job has it. Shares are of all {f['cores']} cores
during the run; *machine* is every process, other work on the machine included.{speedup}

{table}

{_source(r)}"""


def scale(r: dict[str, Any]) -> str:
    f = r["figures"]
    table = _table(["assets", "sensors", "messages", "messages/s", "values/s",
                    "µs per message", "peak RSS", "state per asset"],
                   [[_n(x["assets"]), x["sensors"], _n(x["messages"]),
                     _n(x["messages_per_s"]), _n(x["values_per_s"]), x["us_per_message"],
                     f"{x['peak_rss_mb']:,} MB", f"{x['state_bytes_per_asset']:,} B"]
                    for x in f["runs"]])
    return f"""### Fleet size and sensors per asset (`twin bench scale`)

Stage (c) of the throughput bench (twinstream's Beam pipeline, one core) at several fleet
sizes{' and sensor counts' if r['parameters'].get('sensors') else ''}, 1 sample/s.

{table}

![messages/s and peak memory against the fleet size](img/scale.png)

{_source(r)}"""


def history(r: dict[str, Any]) -> str:
    f = r["figures"]
    table = _table(["event time", "windows", "µs per window", "state per asset"],
                   [[f"{s['from_h']:g}-{s['to_h']:g} h", _n(s["windows"]),
                     _n(s["us_per_window"]), f"{s['state_bytes_per_asset']:,} B"]
                    for s in f["spans"]])
    return f"""### Steady state over days (`twin bench history`)

{f['assets']} assets, {f['interval_s']:g} s samples, {f['window_s']:g} s windows, for
{f['duration_s'] / 3600:g} h of event time through the twins in one process (no engine):
the cost of a window and the state of an asset as their history grows.

{table}

{_source(r)}"""


def dashboard(r: dict[str, Any]) -> str:
    f, p = r["figures"], r["parameters"]
    table = _table(
        ["assets", "fleet page render (median / max)", "row updates applied", "behind the "
         "topics (p50 / p95)", "redraw (p50 / p95)", "server memory (empty / loaded)",
         "ingest"],
        [[_n(f["assets"]), f"{f['render_ms']['median']:,.0f} / {f['render_ms']['max']:,.0f} ms",
          f"{_n(f['rows_applied_per_s'])}/s of {_n(f['updates_published_per_s'])}/s "
          f"published", f"{_n(f['lag_ms']['p50'])} / {_n(f['lag_ms']['p95'])} ms",
          f"{f['redraw_ms']['p50']} / {f['redraw_ms']['p95']} ms",
          f"{f['server_rss_empty_mb']:,.0f} / {f['server_rss_mb']:,.0f} MB",
          f"{_n(f['backlog_records'])} records in {f['ingest_s']} s"]])
    return f"""### The dashboard's fleet page (`twin bench dashboard`)

`twin dashboard` on a fresh embedded broker holding {_n(f['assets'])} assets' twin state
and predictions ({p['windows']} windows each, alerts on every 50th asset, dead letters),
the fleet page opened {p['renders']} times in headless Chromium: render is navigation start
to the whole table drawn, fetching every asset included (`/api/assets` for the page:
{f['api_fleet_fields']['bytes'] / 1e6:.1f} MB, {f['api_fleet_fields']['ms']:.0f} ms). Then
state and predictions of random assets were published at {p['rate']:g} updates/s for
{p['seconds']:g} s with the page open: rows it applied per second, how far behind the
topics each was when applied (now minus its Kafka timestamp), and each redraw (re-sort of
the fleet, the rows in view). Server memory: resident, before the first record and at the
end (most of the first figure is what the `twin` CLI imports).

{table}

{_source(r)}"""


def kafka_backlog(r: dict[str, Any]) -> str:
    f = r["figures"]
    slices = (f"slices of {f['max_messages_per_slice']:,} messages"
              if f["max_messages_per_slice"] else "slices of its default size")
    table = _table(["backlog (messages)", "slices", "readings in", "predictions",
                    "peak memory", "run", "messages/s"],
                   [[_n(x["backlog"]), x["slices"], _n(x["readings_in"]), _n(x["predictions"]),
                     f"{x['peak_rss_mb']:,} MB", f"{x['run_s']} s", _n(x["msg_per_s"])]
                    for x in f["rows"]])
    return f"""### A Kafka run against its backlog (`twin bench kafka-backlog`)

For each backlog size, a fresh embedded broker gets the simulator's messages
({f['assets']} assets every {f['interval_s']:g} s, the usual transport defects), then one
`twin run --source kafka` reads it all in {slices}, in a child process:
its peak resident memory (the whole run, slices' children included) and wall time.

{table}

Peak memory, largest backlog over smallest: **{f['peak_ratio']}x** (the whole run: its
slices' children, and the final join of their files into one file per output).

{_source(r)}"""


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x * 100:.{digits}f} %"


def fidelity(r: dict[str, Any]) -> str:
    f, p = r["figures"], r["parameters"]
    rows = []
    for group in ("healthy", "faulty"):
        for h in ("15m", "1h", "6h"):
            b = f.get(f"{group}_{h}") or {}
            if not b.get("n"):
                continue
            by = b.get("by_change", {})

            def cell(k: str, by=by) -> str:
                x = by.get(k) or {}
                return "-" if not x.get("n") else (f"{_pct(x['median_relative_error'])} / "
                                                   f"{_pct(x['coverage_90'], 0)}")

            inside = b.get("not_extrapolated") or {}
            rows.append([group, h, b["n"], _pct(b["median_relative_error"]),
                         _pct(b["coverage_90"], 0), _pct(b["extrapolated_share"], 0),
                         (f"{_pct(inside['median_relative_error'])} / "
                          f"{_pct(inside['coverage_90'], 0)}") if inside else "-",
                         cell("speed"), cell("load"), cell("none")])
    table = _table(["assets", "horizon", "comparisons", "median relative error",
                    "90 % coverage", "flagged as extrapolation", "not flagged: error / "
                    "coverage", "speed changes", "load changes", "no change"], rows)
    sensors = _table(
        ["sensor", "unit", "comparisons", "median absolute error", "median relative error",
         "90 % coverage"],
        [[s, x["unit"], x["n"], x["median_abs_error"], _pct(x["median_relative_error"]),
          _pct(x["coverage_90"], 0)]
         for s, x in (f.get("healthy_1h", {}).get("by_sensor") or {}).items()])
    h1 = f.get("healthy_1h") or {}
    step = ("each asset ran a commissioning speed step test in its first hour"
            if p.get("step_test") else "without a speed step test")
    return f"""### What-if fidelity (`twin bench fidelity`)

The twin as a simulator of its asset, against the simulator: {len(p['seeds'])} fleets of
{p['assets']} assets (seeds {p['seeds'][0]}-{p['seeds'][-1]}, {p['fleet_hours']:g} h, no
regime changes, the usual transport defects; {step}). Each twin's state is asked what-if
questions (speed {', '.join(f'{c * 100:+g} %' for c in p['speed_changes'])}; base load
{', '.join(f'{c:+g}' for c in p['load_changes'])} of rated; no change) at
{' h and '.join(f'{h:g}' for h in p['healthy_at_h'])} h of event time on healthy assets
and half way into each developing fault, and the simulated asset is run again from that
moment with the same change, the same seed: the same load wander, weather, fault and
noise. Errors of each condition sensor's predicted window mean (relative to the value, a
temperature to its rise over ambient); coverage = share of truths inside the 90 %
interval; cells of the last three columns: median relative error / coverage.
{f['questions']} questions, {f['comparisons']} comparisons.

{table}

Healthy assets at 1 h: median relative error **{_pct(h1.get('median_relative_error'))}**,
90 % intervals covering **{_pct(h1.get('coverage_90'), 0)}** (targets: at most 5 %,
85-95 %). Per sensor:

{sensors}

{_source(r)}"""


def faults(r: dict[str, Any]) -> str:
    f = r["figures"]
    m = f["messages"]
    hostile = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in m["hostile"].items())
    defects = ", ".join(f"{_n(n)} {kind.replace('_', '-')}" for kind, n in
                        m["fleet_defects"].items() if kind != "clean")
    cols = ["reference", "records", "distinct", "lost", "extra", "duplicates",
            "score_mismatch"]
    rows = [[f"{where}: {tag.replace('_', ' ')}", *(_n(c[k]) for k in cols)]
            for where in ("topics", "files") for tag, c in f[where].items()]
    table = _table(["output", "undisturbed run", "records", "distinct ids", "lost", "extra",
                    "duplicates", "scores differ"], rows)
    runs = _table(["run", "kill planned", "killed at", "slices it committed",
                   "messages it committed", "records it put on the output topics"],
                  [[x["run"], x["planned"] or "- (runs to the end)",
                    f"{x['at_s']} s" if x["killed"] else f"finished, {x['at_s']} s",
                    x["slices_committed"], _n(x["messages_committed"]),
                    _n(x["outputs_before_kill"])] for x in f["runs"]])
    s = f["summary"]
    reasons = ", ".join(f"{k} {v}" for k, v in s["dead_letter_reasons"].items())
    left = f.get("left_behind", {})
    leftovers = (f"\nLeft behind after the last run: {left['out']} work folders in the "
                 f"output folder, {left['tmpdir']} entries in the runs' `$TMPDIR` (Beam's "
                 f"empty `beam-pipeline-temp*` folders, one per killed run)." if left else "")
    verdict = ("every check passed" if not f["failed"]
               else "**failed: " + "; ".join(f["failed"]) + "**")
    return f"""### Kills and hostile input (`twin bench faults`)

{_n(m['published'])} messages on each of two fresh brokers: the simulator's fleet
({f['assets']} assets, {f['hours']:g} h every {f['interval_s']:g} s; {defects}) and
{hostile}. One undisturbed `twin run --source kafka` on the first, on its defaults
({_n(f['reference_summary']['slices'])} slice(s)), is the reference; on the second,
`twin run --source kafka --max-messages-per-slice {f['max_messages_per_slice']}` was
SIGKILLed **{f['kills']}** times at seeded moments ({f['kills_before_commit']} before the
run committed a slice, {f['kills_after_commit']} after), each kill followed by a rerun
(**{f['reruns']}** reruns):

{runs}

The final summary counts every message once: readings in {_n(s['readings_in'])} = valid
{_n(s['readings_valid'])} + dead letters {_n(s['dead_letters'])}
({'holds' if s['invariant_ok'] else 'BROKEN'}); reasons: {reasons}.

Outputs against the undisturbed run's, by id (dead letters by source offset and reason):

{table}

Lost **{f['lost']}**, extra **{f['extra']}**, scores differ **{f['score_mismatch']}**,
duplicates in the files **{f['file_duplicates']}**; copies on the topics
**{_n(f['topic_duplicates'])}** (outputs of slices published again after a kill before
their commit: at-least-once, consumers dedupe by id). Checks: {verdict}.
The undisturbed run took {f['reference_wall_s']} s, the killed runs and their reruns
{f['crashy_wall_s']} s together.{leftovers}

{_source(r)}"""


def optimize(r: dict[str, Any]) -> str:
    f, p = r["figures"], r["parameters"]
    rows = [[fault, x["n"], f"{x['median_fraction']:.0%}" if x["median_fraction"] else "-",
             "-" if x["median_gain"] is None else f"{x['median_gain']:.2f}x",
             _pct(x["median_throughput_cost"], 0)]
            for fault, x in f["by_fault"].items()]
    table = _table(["fault", "cases", "median recommended speed", "median time to failure "
                    "gained", "median throughput cost"], rows)
    w = f["wear_faults"]
    verdict = ("meets" if f["target_met"] else "does not meet")
    return f"""### Recommended setpoints (`twin bench optimize`)

{len(p['seeds'])} fleets of {p['assets']} assets (seeds {p['seeds'][0]}-{p['seeds'][-1]})
with the simulator's wear law on (bearing wear by ISO 281 fatigue, insulation by the 10-K
rule; other faults fail on their clock). At each fault's work order the twin's
`recommend` is asked for the fastest speed that keeps the asset running
{p['life_factor']:g} times as long as the twin expects now, within the policy's guardrails
(80-105 % of nominal, 5 % steps every 10 min); the simulated asset is run again from then
with that ramp. Gain = time to failure with it / without it; throughput cost = loss of
flow (pumps) or speed (motors) until the failure it would have had.

{table}

Wear-out faults ({w['n']} cases): median gain **{w['median_gain']}x** (the twin expected
{w['median_predicted_gain']}x) at a median throughput cost of
**{_pct(w['median_throughput_cost'], 0)}**; all {f['cases']} cases: {f['median_gain']}x at
{_pct(f['median_throughput_cost'], 0)}. This {verdict} the target (2x at 15 %); see
[what-if.md](what-if.md#measured-against-the-simulator) for why.

{_source(r)}"""


def peer(r: dict[str, Any]) -> str:
    f = r["figures"]
    table = _table(["run", "wall", "messages/s", "messages/CPU s", "peak RSS (tree)",
                    "peak PSS (tree)", "CPU", "windows"],
                   [[f"{x['side']} #{x['pair']}", f"{x['wall_s']:.1f} s", _n(x["msg_per_s"]),
                     _n(x.get("msg_per_cpu_s")), f"{x['peak_rss_mb']:,} MB",
                     f"{x['peak_pss_mb']:,} MB" if "peak_pss_mb" in x else "-",
                     f"{x['cpu_s']:.0f} s ({x['cpu_pct']} %)", _n(x["windows"])]
                    for x in f["runs"]])
    cpu = (f" Per CPU second (what does not move with other work on the machine): "
           f"{_n(f['twin_msg_per_cpu_s'])} against {_n(f['peer_msg_per_cpu_s'])}, "
           f"**{f['cpu_ratio']}x**." if "cpu_ratio" in f else "")
    pss = (f" Proportional (PSS: pages a forked child shares with its parent counted once) "
           f"{_n(f['twin_peak_pss_mb'])} MB against {_n(f['peer_peak_pss_mb'])} MB."
           if "twin_peak_pss_mb" in f else "")
    packages = ", ".join(f"{k} {v}" for k, v in f.get("peer_packages", {}).items() if v)
    twin_args = " ".join(f.get("twin_args") or []) or "its defaults"
    return f"""### The Kafka path against a Quix Streams peer (`twin bench peer`)

`twin simulate` published {_n(f['messages'])} messages ({f['assets']} assets x
{f['duration_s'] / 3600:g} h at {f['interval_s']:g} s, no malformed messages, transport
defects on) to a fresh embedded broker. Then, interleaved, `twin run --source kafka
--window {f['window_s']:g}s` ({twin_args}) and the peer (`../shared/bench/peers/quix_peer.py`:
decode, units, {f['window_s']:g} s windows with {f['grace_s']:g} s grace, mean/std, River
HalfSpaceTrees per asset, one JSON topic out; {packages}) each read the whole backlog with
a fresh consumer group and output folder. Wall time from start to exit (imports included);
peak memory is the resident memory of the whole process tree, summed (the twin's slices
run in forked children), sampled every 0.1 s; CPU is user + system of the tree.

{table}

**twinstream / peer: {f['ratio']}x** messages/s ({_n(f['twin_msg_per_s'])} against
{_n(f['peer_msg_per_s'])}; per pair {', '.join(str(x) for x in f['pair_ratios'])}).{cpu}
Peak memory {_n(f['twin_peak_rss_mb'])} MB against {_n(f['peer_peak_rss_mb'])} MB
({f['memory_ratio']}x).{pss} The peer does far less per message (no validation, dead letters,
duplicates, features beyond mean/std, health, actions, Avro outputs, files or state file):
see the peer's README.

{_source(r)}"""


def latency(r: dict[str, Any]) -> str:
    f = r["figures"]

    def ms(x: Any) -> str:
        return "-" if x is None else f"{x:,} ms"

    rows = [[f"{p['rate']:,.0f}", "-" if p.get("load") is None else f"{100 * p['load']:.0f} %",
             _n(p["predictions"]), ms(p["beyond_ms"]["p50"]), ms(p["beyond_ms"]["p99"]),
             ms(p["beyond_ms"]["max"]), ms(p["beyond_received_ms"]["p99"])]
            for p in f["phases"]]
    checkpoints = f.get("checkpoints") or {}
    if checkpoints:  # (records before it have no checkpoint figures)
        for row, p in zip(rows, f["phases"]):
            c = checkpoints.get(p["phase"]) or {}
            row.append("-" if c.get("duration_p50_ms") is None else
                       f"{c['duration_p50_ms']:,} / {c['duration_max_ms']:,} ms"
                       + (f" ({c['failed']} failed)" if c.get("failed") else ""))
    table = _table(["messages/s", "load", "predictions", "p50", "p99", "max",
                    "p99 by receipt"] + (["checkpoints p50 / max"] if checkpoints else []),
                   rows)
    mode = f.get("python_mode", "process")
    engine = f"Python in `{mode}` mode"
    if mode == "process":  # (records from before --bundle-time ran with Flink's 1 s)
        engine += f", bundles of at most {1000 * f.get('bundle_time_s', 1.0):,g} ms"
    capacity = (f"{_n(f['capacity_msg_per_s'])} messages/s ({f['capacity_source']})"
                if f.get("capacity_msg_per_s") else "none given (one --rate)")
    half = [p for p in f["phases"] if p.get("load") == 0.5]
    target = ""
    if half and half[0]["beyond_ms"]["p99"] is not None:
        p99 = half[0]["beyond_ms"]["p99"]
        target = (f" At 50 % of capacity p99 is **{p99:,} ms**: "
                  f"{'within' if p99 <= 1000 else 'above'} the 1 s target.")
    return f"""### Latency beyond the watermark, {mode} mode (`twin bench latency`)

The twin job unbounded on a standalone cluster (one TaskManager, one slot; {engine}) with
Kafka on the embedded broker; {f['assets']} simulated assets replayed in wall-clock time (clean
stream: 20-400 ms transport delay, nothing late, duplicated or reordered), one phase of
{f['phase_s']:g} s per load after {f['warmup_s']:g} s of warm-up; windows of
{f['window_s']:g} s, allowed lateness {f['allowed_lateness_s']:g} s, out-of-orderness
{f['out_of_orderness_s']:g} s, watermark delay {f['watermark_delay_s']:g} s. Capacity:
{capacity}. Per prediction: its Kafka timestamp minus the later of its window's last
reading's Kafka timestamp and the moment the job's watermark let the window close (the
first reading of the asset past window end + lateness + out-of-orderness, or the engine
watermark). One machine, one clock: both timestamps are CreateTime stamped by the
producing clients (the broker keeps the producer's time); *by receipt* takes the moment
the bench's consumer got the prediction instead (an upper bound). {_n(f['matched'])} of
{_n(f['predictions'])} predictions matched to their window, {f['negative']}
negative.{target}

{table}

{_source(r)}"""


def formats(r: dict[str, Any]) -> str:
    f = r["figures"]
    table = _table(["source", "µs per message"],
                   [[k, f"{v:.2f}"] for k, v in f["us_per_message"].items()])
    return f"""### Data formats: the generic adapter's cost (`twin bench formats`)

Normalization (decode, map, convert units, validate; `normalize_batch` in batches of
5,000) of messages read through a data format file (the compressor example written as
plain JSON, CSV lines and plain Avro, 4 values each) beside the built-in vendors' own
adapters (8 values each; Helios' binary frames and Orca's and Kestrel's text frames are
read through frame templates). Best of {f['rounds']} interleaved rounds, one process.

{table}

{_source(r)}"""


def generic(r: dict[str, Any]) -> str:
    import json

    return (f"### {r['bench']}\n\n```json\n{json.dumps(r['figures'], indent=1)}\n```\n\n"
            f"{_source(r)}")


THREAD_LATENCY = "latency (thread mode)"  # the latency bench's latest thread-mode record

SECTIONS: list[tuple[str, list[tuple[str, Callable[[dict[str, Any]], str]]]]] = [
    ("Detection", [("nab", nab), ("tep", tep), ("tep-twin", tep_twin), ("sweep", sweep),
                   ("fleet", fleet)]),
    ("Throughput", [("throughput", throughput), ("flink-slots", flink_slots),
                    ("scale", scale), ("history", history), ("kafka-backlog", kafka_backlog),
                    ("peer", peer), ("formats", formats)]),
    ("Latency", [("latency", latency), (THREAD_LATENCY, latency)]),
    ("Faults", [("faults", faults)]),
    ("Dashboard", [("dashboard", dashboard)]),
    ("What-if", [("fidelity", fidelity), ("optimize", optimize)]),
]


HEADLINE_BEGIN = ("<!-- headline figures: written by `twin bench report` from "
                  "infra/bench/results/ -->")
HEADLINE_END = "<!-- /headline figures -->"


def _shown(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The latest record of each bench, the latency bench's once per Python mode: the
    job's default (process) and the opt-in thread mode answer different questions."""
    from jobs.benchrecord import latest

    newest = latest([r for r in records if r["bench"] != "latency"])
    for r in records:
        if r["bench"] == "latency":
            thread = r["figures"].get("python_mode") == "thread"
            newest[THREAD_LATENCY if thread else "latency"] = r
    return newest


def headline(records: list[dict[str, Any]]) -> str:
    """The README's short table of headline figures, from the latest records."""
    newest = _shown(records)
    rows = []
    if "nab" in newest:
        f = newest["nab"]["figures"]
        rows.append(["Detection: NAB v1.1, 58 streams, one configuration (standard / low FP "
                     "/ low FN)",
                     " / ".join(f"{f[p]['score']:.1f}" for p in NAB_PROFILES)
                     + " (best published: ARTime 74.9 / 65.1 / 80.4)"])
    if "tep" in newest:
        s = newest["tep"]["figures"]["summary"]
        rows.append(["Detection: Tennessee Eastman, 21 faults, 52 sensors (mean FDR of the "
                     "18 usual faults, FAR, AUC)",
                     f"{s['mean_fdr_18'] * 100:.1f} % at {s['far'] * 100:.2f} % false alarms, "
                     f"AUC {s['auc']:.3f} (frozen Mahalanobis: 92.2 % at 2.1 %)"])
    if "sweep" in newest:
        f, p = newest["sweep"]["figures"], newest["sweep"]["parameters"]
        rows.append([f"Detection: simulated fleets, {f['seeds']} seeds x {p['assets']} assets "
                     f"x {p['duration_s'] / 3600:g} h",
                     f"{f['detected_episodes']}/{f['fault_episodes']} faults caught before "
                     f"failure, precision {f['precision']}, "
                     f"{f['regime_change_alerts']} alerts after {f['regime_changes']} "
                     f"regime changes"])
    if "fleet" in newest:
        f = newest["fleet"]["figures"]
        m, s = f["evaluation"], f["summary"]
        lead = m.get("median_lead_time_s")
        rows.append([f"`make run` ({s['assets']} assets x {s['duration_s'] / 3600:g} h, "
                     f"{s['readings_in']:,} messages)",
                     f"{f['wall_s']:.0f} s, {f['peak_rss_mb'] / 1024:.2f} GB; "
                     f"{m['detected_episodes']}/{m['fault_episodes']} faults caught, precision "
                     f"{m['precision']}"
                     + (f", median lead {lead / 60:.0f} min" if lead else "")])
    if "fidelity" in newest:
        h1 = newest["fidelity"]["figures"].get("healthy_1h") or {}
        rows.append(["What-if fidelity: the twin's 1 h answers on healthy simulated assets "
                     "(median relative error, 90 % interval coverage)",
                     f"{_pct(h1.get('median_relative_error'))}, "
                     f"{_pct(h1.get('coverage_90'), 0)}"])
    if "throughput" in newest:
        f = newest["throughput"]["figures"]
        st = f["stages"]
        if "twinstream" in st:
            rows.append(["Throughput: Beam pipeline, one core",
                         f"{st['twinstream']['messages_per_s']:,} messages/s"
                         + (f" ({f['speedup_vs_naive']}x a per-element Beam pipeline)"
                            if "speedup_vs_naive" in f else "")])
        if "flink" in st:
            rows.append(["Throughput: Flink job, one slot (mini-cluster)",
                         f"{st['flink']['messages_per_s']:,} messages/s"])
    for name in ("latency", THREAD_LATENCY):
        if name not in newest:
            continue
        half = [p for p in newest[name]["figures"]["phases"] if p.get("load") == 0.5]
        if half and half[0]["beyond_ms"]["p99"] is not None:
            b = half[0]["beyond_ms"]
            mode = newest[name]["figures"].get("python_mode", "process")
            rows.append([f"Latency: Flink job, one slot, {mode} mode, 50 % of capacity "
                         "(beyond the watermark's wait, p50 / p99)",
                         f"{b['p50']:,} / {b['p99']:,} ms at "
                         f"{half[0]['rate']:,.0f} messages/s"])
    if not rows:
        return ""
    return _table(["benchmark", "result"], rows)


def with_headline(readme: str, records: list[dict[str, Any]]) -> str:
    """``readme`` with its headline block rewritten from ``records`` (unchanged if it has
    no block)."""
    begin, end = readme.find(HEADLINE_BEGIN), readme.find(HEADLINE_END)
    if begin < 0 or end < begin:
        return readme
    body = headline(records)
    block = HEADLINE_BEGIN + "\n" + (body + "\n" if body else "")
    return readme[:begin] + block + readme[end:]


def render(records: list[dict[str, Any]]) -> str:
    """The page for ``records`` (every record; the latest of each bench is shown)."""
    newest = _shown(records)
    parts = [HEADER]
    known = set()
    for title, benches in SECTIONS:
        shown = [fn(newest[name]) for name, fn in benches if name in newest]
        known.update(name for name, _ in benches)
        if shown:
            parts.append(f"## {title}\n\n" + "\n\n".join(shown))
    others = [generic(r) for name, r in newest.items() if name not in known]
    if others:
        parts.append("## Other benchmarks\n\n" + "\n\n".join(others))
    parts.append(machines(newest))
    return "\n\n".join(parts) + "\n"
