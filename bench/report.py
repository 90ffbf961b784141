"""bench/results.md and the latency plot from the numbers bench/run.py collected."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

NOISY = 0.10  # other processes using more than this share of the machine's CPUs during a run


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _ratio(service: float, floor: float) -> float:
    return service / floor if floor > 0 else math.inf


def one_worker(counts: list[int], connections: int) -> bool:
    """All or all but one of a run's connections on one worker: it measured one process."""
    return len(counts) > 1 and connections >= 2 * len(counts) and max(counts) >= connections - 1


# The verdict of a ratio target whose service or floor run measured one process.
INCONCLUSIVE = "inconclusive"


def _verdict(ok: bool | str | None) -> str:
    if isinstance(ok, str):
        return f"**{ok}**"
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


def targets(r: dict[str, Any]) -> list[tuple[str, str, str, bool | str | None]]:
    """(target, measured, how far from it, met? or INCONCLUSIVE) for every target of the issue."""
    rows: list[tuple[str, str, str, bool | str | None]] = []
    sc = r["scenarios"]

    def ratio_row(key: str, pct: str, limit: float, label: str) -> None:
        s = sc.get(key, {})
        if "service" not in s:
            reason = s.get("skipped") or s.get("failed") or "not measured"
            rows.append((label, "not measured", reason, None))
            return
        service, floor = s["service"][f"{pct}_ms"], s["floor"][f"{pct}_ms"]
        ratio = _ratio(service, floor)
        ok: bool | str = ratio <= limit
        measured = f"{_ms(service)} ms vs floor {_ms(floor)} ms = **{ratio:.2f}×**"
        gap = (
            f"{limit / ratio:.1f}× headroom"
            if ok
            else f"over by {ratio / limit:.2f}× (service would need ≤ {_ms(limit * floor)} ms)"
        )
        lopsided = [
            f"{side} {'/'.join(map(str, s[side].get('connections_per_worker', [])))}"
            for side in ("service", "floor")
            if one_worker(s[side].get("connections_per_worker", []), s[side]["connections"])
        ]
        if lopsided:
            # A run with (nearly) every connection on one worker measures one process: its
            # latencies are not the server's, and the ratio says nothing either way.
            ok = INCONCLUSIVE
            gap = (
                f"{INCONCLUSIVE}: connections stayed on one worker ({', '.join(lopsided)}) "
                f"after re-measuring; {gap}"
            )
        rows.append((label, measured, gap, ok))

    ratio_row("a", "p50", 1.5, "(a) p50 ≤ 1.5× floor")
    ratio_row("a", "p99", 2.0, "(a) p99 ≤ 2× floor")
    ratio_row("d", "p50", 1.5, "(d) p50 ≤ 1.5× floor")
    ratio_row("b", "p50", 3.0, "(b) p50 ≤ 3× floor")

    c = sc.get("c", {})
    if "single" in c:
        rt = c["fhir_round_trip"]["single_ms"]
        own = c["own_time"]["p50_ms"]
        bound = 1.5 * rt + own
        wall = c["single"]["p50_ms"]
        ok = wall <= bound
        rows.append(
            (
                "(c) wall time ≤ 1.5 × one FHIR round trip + own time (p50, one client)",
                f"{_ms(wall)} ms vs 1.5 × {_ms(rt)} + {_ms(own)} = {_ms(bound)} ms",
                f"{_ms(bound - wall)} ms to spare"
                if ok
                else f"over by {_ms(wall - bound)} ms ({wall / bound:.2f}× the bound)",
                ok,
            )
        )
    else:
        rows.append(("(c) wall time bound", "not measured", c.get("failed", "-"), None))

    soak = r.get("soak", {}).get("service")
    if soak:
        e = soak["wrk_errors"]
        ok = soak["errors"] == 0
        rows.append(
            (
                f"zero errors, {soak['connections']} clients for {soak['duration_s']:g} s (a)",
                f"{soak['errors']} errors in {soak['requests']} requests "
                f"(connect {e['connect']}, read {e['read']}, write {e['write']}, timeout "
                f"{e['timeout']}, non-200 {soak['not_200']})",
                "-" if ok else f"{soak['errors']} too many",
                ok,
            )
        )

    for who in ("service", "floor"):
        times = r["cold_start_s"][who]
        worst = max(times)
        rows.append(
            (
                f"cold start < 2 s ({who})",
                ", ".join(f"{t:.2f} s" for t in times)
                + (" (first: fresh database)" if who == "service" else ""),
                f"worst {worst:.2f} s: "
                + (f"{2 - worst:.2f} s to spare" if worst < 2 else f"over by {worst - 2:.2f} s"),
                worst < 2,
            )
        )

    mem = r.get("memory", {})
    if "service_after_n" in mem:
        n = mem["service_after_n_requests"]
        spans = [("start", mem["service_start"], 0)]
        if "service_after_warmup" in mem:
            spans.append(
                ("warm-up", mem["service_after_warmup"], mem["service_after_warmup_requests"])
            )
        for name, before, at in spans:
            growth = _growth(before, mem["service_after_n"])
            worst = max(growth.values())
            label = (
                "memory growth < 5% over 10,000 requests: from start (VmRSS per worker)"
                if name == "start"
                else "memory growth < 5% over 10,000 requests: from after the warm-up"
            )
            rows.append(
                (
                    label,
                    f"{n - at} calls (call {at} → {n}): "
                    + ", ".join(f"{g:+.1%}" for g in growth.values()),
                    f"worst {worst:+.1%}"
                    + ("" if worst < 0.05 else f": over by {worst - 0.05:.1%}"),
                    worst < 0.05,
                )
            )
    return rows


def _growth(before: dict[Any, Any], after: dict[Any, Any]) -> dict[str, float]:
    return {
        str(pid): after[pid]["VmRSS"] / before[pid]["VmRSS"] - 1 for pid in before if pid in after
    }


def _split(before: dict[Any, Any], after: dict[Any, Any]) -> list[str]:
    """Per worker: the VmRSS growth as RssAnon and RssFile changes, in MiB."""
    out = []
    for pid in before:
        b, a = before[pid], after.get(pid, {})
        if all(k in b and k in a for k in ("RssAnon", "RssFile")):
            anon = (a["RssAnon"] - b["RssAnon"]) / 1024
            files = (a["RssFile"] - b["RssFile"]) / 1024
            out.append(f"worker {pid}: RssAnon {anon:+.1f} MiB, RssFile {files:+.1f} MiB")
    return out


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _pair(add: Any, name: str, service: dict[str, Any], floor: dict[str, Any] | None) -> None:
    """Table rows for one measurement: the service, then its floor (with the ratios on the first)."""
    for label, run in (("service", service), ("floor", floor)):
        if run is None:
            continue
        show = label == "service"
        ratios = ["", ""]
        if show and floor:
            ratios = [
                f"{_ratio(service['p50_ms'], floor['p50_ms']):.2f}×",
                f"{_ratio(service['p99_ms'], floor['p99_ms']):.2f}×",
            ]
        add(
            _row(
                [
                    name if show else "",
                    label,
                    run["connections"],
                    f"{run['rps']:.1f}",
                    _ms(run["p50_ms"]),
                    _ms(run["p95_ms"]),
                    _ms(run["p99_ms"]),
                    _ms(run["max_ms"]),
                    run["errors"],
                    *ratios,
                    "/".join(str(n) for n in run.get("connections_per_worker", [])) or "-",
                    f"{run['other_cpu']:.0%}",
                ]
            )
        )


def write(r: dict[str, Any], results: Path, plot: Path) -> None:
    plot_ok = _plot(r, plot)
    m, st = r["machine"], r["settings"]
    lines: list[str] = []
    add = lines.append
    add("# Benchmark: the CDS service against the framework floor")
    add("")
    add(
        f"Run {r['started']} (UTC), {r['elapsed_s']:.0f} s in all. Command: `{r['command']}`"
        + (f" (arguments: `{' '.join(r['argv'])}`)" if r.get("argv") else "")
        + "."
    )
    add("")
    add(
        f"Machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory_gib']} GiB; {m['os']}; Python "
        f"{m['python']}, Flask {m['flask']}, gunicorn {m['gunicorn']}; {m['wrk']}; Node "
        f"{m['node']}. Load average at start: {' '.join(m['loadavg_at_start'])}. Code: "
        f"{m['commit']}{' plus uncommitted changes' if m['uncommitted_changes'] else ''}"
        + (f"; service code: {r['service_code']}" if r.get("service_code") else "")
        + "."
    )
    add("")
    add(
        f"Both servers: gunicorn, {st['workers']} workers × {st['threads']} threads, "
        f"`{st['worker_class']}`, timeout 30 s, no access log (the settings of `cds-service "
        f"serve`). Service: `CDS_ENV=production`, `CDS_AUTH=off` (client JWT verification "
        f"excluded except in the `(a) + JWT` row), SQLite store under `bench/out/`. Load: wrk "
        f"on 127.0.0.1, {st['warmup_s']:g} s warm-up then {st['duration_s']:g} s at "
        f"{st['connections']} connections per row unless noted; wrk's request timeout "
        f"{st['wrk_timeout_s']:g} s."
        + (
            f" Scenarios (a)-(d): floor and service take turns, {st['rounds']} rounds of "
            f"{st['duration_s'] / st['rounds']:g} s each (the machine's speed drifts; both sides "
            "see the same drift); a row's p50/p95/p99 is the median of its rounds', its req/s "
            "over all rounds, its max the largest."
            if st.get("rounds", 1) > 1
            else ""
        )
    )
    add("")

    add("## Targets")
    add("")
    add(_row(["target", "measured", "distance", "result"]))
    add(_row(["---"] * 4))
    for target, measured, gap, ok in targets(r):
        add(_row([target, measured, gap, _verdict(ok)]))
    add("")

    add("## Scenarios")
    add("")
    add(
        _row(
            [
                "scenario",
                "server",
                "conn.",
                "req/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "max ms",
                "errors",
                "p50 / floor",
                "p99 / floor",
                "conn. per worker",
                "other CPU",
            ]
        )
    )
    add(_row(["---"] * 13))
    sc = r["scenarios"]
    order = [
        ("a", "(a) ~50 resources"),
        ("b", "(b) ~2,000 resources"),
        ("c", "(c) 5 keys fetched, +50 ms †"),
        ("d", "(d) order-sign, 5 drafts"),
        ("a_jwt", "(a) + JWT ‡"),
    ]
    for key, name in order:
        s = sc.get(key)
        if not s:
            continue
        if "service" not in s:
            reason = s.get("skipped") or s.get("failed", "not measured")
            add(_row([name, "—", *[""] * 10, reason]))
            continue
        _pair(add, name, s["service"], s.get("floor"))
    c = sc.get("c", {})
    if "single" in c:
        _pair(add, "(c) one client", c["single"], None)
    if r.get("own_time_c1"):
        _pair(add, "(a) one client", r["own_time_c1"], r.get("own_time_c1_floor"))
    soak = r.get("soak", {})
    if soak:
        _pair(
            add,
            f"soak (a), {soak['service']['duration_s']:g} s",
            soak["service"],
            soak.get("floor"),
        )
    add("")
    add(
        "† The floor fetches nothing, so the (c) ratios compare five 50 ms FHIR fetches with none; "
        "the (c) target is the wall-time bound above. At 8 connections (c) is bounded by the local "
        "FHIR server (one Node process) rather than by the service. "
        "‡ Its floor row is the (a) floor run. *conn. per worker*: how wrk's keep-alive "
        "connections were spread over the gunicorn workers (they stay where they were accepted). "
        "A worker holding k connections answers each in about k times its CPU per call, so an "
        "uneven run has two latency modes and its p50 falls on either: each measured run restarts "
        "wrk until the spread is even (decided when the connections open, before any latency "
        "counts; bounded, the last start is kept). A "
        "run with (nearly) all of them on one worker measures one process and is measured again "
        "(the best-spread attempt is kept); a ratio target whose run still sat on one worker is "
        "inconclusive."
    )
    add("")
    add(
        "*other CPU*: share of the machine's CPUs used meanwhile by processes that are not this "
        "benchmark's (from /proc/stat minus our processes); above "
        f"{NOISY:.0%} the row is noisy. *errors*: wrk's connect, read, write and timeout errors "
        "plus answers with a status of 400 or more (wrk's own count); the soak checks every "
        "answer's status and counts any but 200. Checking every status makes wrk copy each "
        "answer into its Lua script, a cost per byte answered on the CPUs the servers share "
        "(the service's (d) answer is ~13 KB, the floor's 0.3 KB), so latency rows leave it off."
    )
    add("")
    for key, name in order:
        s = sc.get(key) or {}
        if "preflight" in s:
            p = s["preflight"]
            cards = ", ".join(p.get("cards", [])) or "(none)"
            bits = [
                f"{s.get('resources', '?')} resources",
                f"{s.get('body_kb', '?')} KB body",
                f"answer {p['status']}",
                f"cards: {cards}",
                (
                    f"the first hook call after start (a cold worker) took {p['latency_ms']} ms"
                    if key in ("a", "a_jwt")
                    else f"one unloaded call {p['latency_ms']} ms"
                ),
            ]
            if s.get("rounds"):
                bits.append(
                    "p50 service/floor by round: "
                    + ", ".join(
                        f"{_ratio(x['service_p50_ms'], x['floor_p50_ms']):.2f}×"
                        f" ({x['service_rps']:.0f} vs {x['floor_rps']:.0f} req/s)"
                        for x in s["rounds"]
                    )
                )
            add(f"- {name}: {s['title']}; " + "; ".join(bits) + ".")
    c = sc.get("c", {})
    if "fhir_round_trip" in c:
        rt = c["fhir_round_trip"]
        per_key = ", ".join(
            f"{k} {v} ms ({rt['entries'].get(k, '?')} entries)" for k, v in rt["per_key_ms"].items()
        )
        direct = ", ".join(f"{k} {v} ms" for k, v in rt["direct_per_key_ms"].items())
        add(
            f"- (c) missing keys: {', '.join(c['missing_keys'])}. One FHIR round trip through "
            f"the delaying proxy (median of {rt['samples']} sequential GETs per query on a "
            f'kept-alive connection): {per_key}; the slowest, {rt["single_ms"]} ms, is "a '
            f"single round trip\". Directly, without the proxy: {direct}. The service's own time "
            f"is the p50 of (a) at one client: same patient, full prefetch."
        )
    fp = c.get("fetch_pattern")
    if fp:
        add(
            f"- (c) one unloaded call, from the proxy's timings (medians of {fp['calls']} calls): "
            f"{_ms(fp['latency_ms'])} ms in all; its {fp['fhir_requests']:g} FHIR requests "
            f"arrived within {_ms(fp['arrival_spread_ms'])} ms of each other (fetched "
            f"concurrently) and the last was answered {_ms(fp['fhir_window_ms'])} ms after the "
            f"first arrived (the {_ms(fp['upstream_max_ms'])} ms slowest and "
            f"{_ms(fp['upstream_sum_ms'])} ms summed upstream times, after the proxy's delay, show "
            f"how much the single-threaded local FHIR server serialises them); "
            f"{_ms(fp['outside_fhir_ms'])} ms of the call is outside that window."
        )
    jwt = sc.get("a_jwt", {})
    if "service" in jwt:
        add(
            f"- (a) + JWT: a second instance with `CDS_AUTH=jwt`, a trusted issuer with a static "
            f"ES384 key, and a fresh token (unique `jti`, `aud` = the URL called) for every "
            f"request; a call without a token answered {jwt.get('without_token_status')}; cold "
            f"start {jwt.get('cold_start_s', 0):.2f} s. Floor column: the (a) floor run."
        )
    add("")

    mem = r.get("memory", {})
    if mem:
        add("## Memory per worker (VmRSS, MiB)")
        add("")
        add(
            _row(
                [
                    "server",
                    "worker pid",
                    "at start",
                    "after warm-up",
                    "after N calls",
                    "after the soak",
                    "at the end",
                    "growth start → N",
                    "growth warm-up → N",
                    "growth N → soak",
                ]
            )
        )
        add(_row(["---"] * 10))
        start, after = mem["service_start"], mem.get("service_after_n", {})
        warm, end = mem.get("service_after_warmup", {}), mem.get("service_end", {})
        soaked = mem.get("service_after_soak", {})
        growth = _growth(start, after) if after else {}
        steady = _growth(warm, after) if after and warm else {}
        later = _growth(after, soaked) if after and soaked else {}

        def pct(table: dict[str, float], pid: str) -> str:
            return f"{table[str(pid)]:+.1%}" if str(pid) in table else "-"

        for pid in start:
            add(
                _row(
                    [
                        "service",
                        pid,
                        _mib(start, pid),
                        _mib(warm, pid),
                        _mib(after, pid),
                        _mib(soaked, pid),
                        _mib(end, pid),
                        pct(growth, pid),
                        pct(steady, pid),
                        pct(later, pid),
                    ]
                )
            )
        for pid in mem.get("floor_start", {}):
            floor_end = _mib(mem.get("floor_end", {}), pid)
            add(
                _row(
                    ["floor", pid, _mib(mem["floor_start"], pid), "", "", "", floor_end, "", "", ""]
                )
            )
        add("")
        add(
            f"Calls answered when read: warm-up {mem.get('service_after_warmup_requests')}, "
            f"N {mem.get('service_after_n_requests')} (--memory-requests after the warm-up "
            f"reading, all of scenario (a)"
            + (", topped up" if "memory_topup" in r else "")
            + f"), after the soak {mem.get('service_after_soak_requests')} (still only (a)), at "
            f"the end {mem.get('service_end_requests')} (every scenario, including the 1.7 MB "
            f"(b) bodies). VmRSS counts pages shared with the master (copy-on-write) too."
        )
        add("")
        split = _split(start, after)
        if split:
            add(
                "Growth start → N by kind (/proc/<pid>/status): "
                + "; ".join(split)
                + ". RssFile is library and file pages a worker maps as it first runs their code"
                " (shared with the master and the other workers, read from the page cache, not"
                " new memory); RssAnon is memory the worker itself allocated."
            )
            add("")

    add("## Cold start (process start to the first 200 on /healthz)")
    add("")
    for who, times in r["cold_start_s"].items():
        add(f"- {who}: " + ", ".join(f"{t:.2f} s" for t in times))
    first = (sc.get("a") or {}).get("preflight", {}).get("latency_ms")
    if first is not None:
        usual = (r.get("own_time_c1") or {}).get("p50_ms")
        slow = usual is not None and first > 10 * usual
        add(
            f"- then the first hook call, (a), took {first} ms"
            + (
                f" (the p50 of later calls at one client: {_ms(usual)} ms): something is still "
                "initialised on a worker's first call"
                if slow
                else ""
            )
        )
    add("")

    noisy = [run for run in r["runs"] if run["other_cpu"] > NOISY]
    if noisy:
        add("## Noise")
        add("")
        add(
            "Other processes used a noticeable share of the CPUs during: "
            + "; ".join(f"{run['label']} ({run['target']}) {run['other_cpu']:.0%}" for run in noisy)
            + ". Compare with a quieter re-run."
        )
        add("")
    for key, what in (
        (
            "uneven_starts",
            "wrk starts dropped for an uneven connection spread before the measured run",
        ),
        (
            "rebalance_retries",
            "Measured again because wrk's connections had all landed on one worker",
        ),
    ):
        counted = [run for run in r["runs"] if run.get(key)]
        if counted:
            listed = "; ".join(f"{run['label']} ({run['target']}) {run[key]}×" for run in counted)
            add(f"{what}: {listed}.")
            add("")
    for note in r.get("notes", []):
        add(f"- {note}")
    if plot_ok:
        add(f"![latency by percentile]({plot.name})")
        add("")
        add(
            f"`{plot.name}`: latency by percentile, service against floor, per scenario "
            f"(log scale)."
        )
        add("")
    add("Raw numbers: `bench/out/results.json` (not kept in git); server logs in `bench/out/`.")
    results.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _mib(table: dict[Any, Any], pid: Any) -> str:
    entry = table.get(pid) if table else None
    return f"{entry['VmRSS'] / 1024:.1f}" if entry else "-"


def _plot(r: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sc = r["scenarios"]
    panels: list[tuple[str, list[tuple[str, dict[str, Any]]]]] = []
    for key, name in (
        ("a", "(a) ~50 resources"),
        ("b", "(b) ~2,000 resources"),
        ("c", "(c) 5 keys fetched (+50 ms)"),
        ("d", "(d) order-sign"),
        ("a_jwt", "(a) + JWT"),
    ):
        s = sc.get(key) or {}
        if "service" in s:
            series = [("service", s["service"]), ("floor", s["floor"])]
            if key == "c" and "single" in s:
                series.append(("service, 1 client", s["single"]))
            panels.append((f"{name}, {s['service']['connections']} connections", series))
    if r.get("soak"):
        soak = r["soak"]
        panels.append(
            (
                f"soak (a), {soak['service']['connections']} connections",
                [("service", soak["service"]), ("floor", soak["floor"])],
            )
        )
    if not panels:
        return False
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    ticks = [50, 90, 99, 99.9]

    def x(p: float) -> float:
        return -math.log10(1 - p / 100)

    for ax, (title, series) in zip(axes.flat, panels, strict=False):
        for label, run in series:
            points = [(x(p), v) for p, v in run["percentiles_ms"] if p < 100]
            ax.plot([p for p, _ in points], [v for _, v in points], marker=".", label=label)
        ax.set_yscale("log")
        ax.set_xticks([x(t) for t in ticks], [f"p{t:g}" for t in ticks])
        ax.set_xlim(0, x(99.9) + 0.05)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("latency (ms)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(
        f"CDS service vs framework floor, {r['started'][:10]} "
        f"({r['settings']['workers']} workers × {r['settings']['threads']} threads, "
        f"{r['machine']['cpus']} CPUs)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


if (
    __name__ == "__main__"
):  # re-render from saved numbers: python bench/report.py bench/out/results.json
    import json
    import sys

    here = Path(__file__).resolve().parent
    saved = json.loads(
        Path(sys.argv[1] if len(sys.argv) > 1 else here / "out" / "results.json").read_text(
            encoding="utf-8"
        )
    )
    write(saved, here / "results.md", here / "latency.png")
