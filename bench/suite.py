#!/usr/bin/env python3
"""The encmig benchmark suite: one command, one report.

    python3 bench/suite.py            # full: about 30-40 minutes
    python3 bench/suite.py --quick    # smoke: a few minutes

Writes OUT/report.md, OUT/results.json and OUT/*.png (gnuplot). OUT is
bench/results for the full suite and build/bench-quick for --quick.

Every comparison is measured in the same run on the same guest image,
repetitions interleaved across contenders. Each run's RAM is compared byte for
byte; a run that fails that check is a failure, not a data point.
Build first: meson setup build && ninja -C build."""
import argparse, json, os, platform, re, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from lib import BUILD, GIB, Bench, Loopback, Veth, Wan, contender, migrate_once  # noqa: E402

TEN_GBIT_GIB = 10e9 / 8 / GIB  # 10 Gb/s in GiB/s


def plan(quick):
    C = contender
    if quick:
        return {
            "reps": 3, "mem": 256,
            "loopback_paused": [C("plain"), C("tls-x509", 0, "aes-gcm"), C("encmig"), C("encmig", 2)],
            "loopback_dirty": [C("plain"), C("encmig")],
            "capped_rates": [1], "capped": [C("plain"), C("encmig")], "capped_reps": 1,
            "rtts": [0.5, 50], "wan": [C("plain"), C("encmig")], "wan_reps": 1, "wan_mem": 256,
            "penalty": [C("plain"), C("encmig")], "penalty_mem": 256, "penalty_settle": 2, "penalty_after": 2,
        }
    return {
        "reps": 3, "mem": 2048,
        "loopback_paused": [C("plain"), C("plain", 2), C("plain", 4),
                            C("tls-x509", 0, "aes-gcm"), C("tls-x509", 4, "aes-gcm"), C("tls-x509", 0, None),
                            C("tls-psk", 0, "aes-gcm"), C("tls-psk", 4, "aes-gcm"), C("tls-psk", 0, None),
                            C("encmig"), C("encmig", 2), C("encmig", 4), C("encmig", 0, engine="gnutls")],
        "loopback_dirty": [C("plain"), C("plain", 4), C("tls-x509", 4, "aes-gcm"), C("encmig"), C("encmig", 4)],
        "capped_rates": [1, 2.5, 5], "capped": [C("plain"), C("encmig"), C("plain", 4), C("encmig", 4)],
        "capped_reps": 3, "capped_mem": 1024,
        "rtts": [0.5, 5, 50, 100, 150], "wan": [C("plain"), C("plain", 4), C("encmig"), C("encmig", 4)],
        "wan_reps": 3,
        "wan_mem": 1024,
        "penalty": [C("plain"), C("tls-x509", 4, "aes-gcm"), C("encmig")], "penalty_mem": 1024,
        "penalty_settle": 4, "penalty_after": 4,
    }


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def run_set(rows, scenario, topo, mem, contenders, reps, guest="paused", **kw):
    env = Bench(mem)
    try:
        # One discarded warm-up run: the first run on a fresh tmpfs pays for
        # the kernel assembling huge pages, whatever the transport.
        w = migrate_once(env, topo, contenders[0], guest=guest)
        log(f"{scenario:9} {topo.name:12} {guest:6} warm-up ({contenders[0]['label']}): {w['total_ms']} ms, discarded")
        for rep in range(reps):
            for c in contenders:  # interleaved, so drift hits every contender alike
                r = migrate_once(env, topo, c, guest=guest, **kw)
                r.update(scenario=scenario, rep=rep, link=topo.describe())
                rows.append(r)
                log(f"{scenario:9} {topo.name:12} {guest:6} {c['label']:42} "
                    + (f"{r['total_ms']:>6} ms  down {r['downtime_ms']:>4} ms  {r['mb_per_s']:7.0f} MB/s"
                       if r["ok"] else f"FAILED: {r['error']}"))
    finally:
        env.close()


def micro():
    exe = os.path.join(BUILD, "bench", "seal_open_bench")
    out = subprocess.run([exe], capture_output=True, text=True).stdout
    return out


def env_facts():
    def first(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, shell=True).stdout.strip().splitlines()[0]
        except (IndexError, OSError):
            return "?"
    return {
        "cpu": first("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "qemu": first("qemu-system-x86_64 --version"),
        "gnutls": first("certtool --version"),
        "tcp_congestion_control": first("sysctl -n net.ipv4.tcp_congestion_control"),
        "tcp_wmem": first("sysctl -n net.ipv4.tcp_wmem"),
        "tcp_rmem": first("sysctl -n net.ipv4.tcp_rmem"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


# ------------------------------------------------------------------ summaries

def groups(rows, **match):
    out = {}
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            out.setdefault(r["contender"], []).append(r)
    return out


def med(rs, f):
    vals = [f(r) for r in rs if r["ok"] and f(r) is not None]
    return statistics.median(vals) if vals else None


def spread(rs, f):
    vals = [f(r) for r in rs if r["ok"] and f(r) is not None]
    return (min(vals), max(vals)) if vals else (None, None)


def summarize(rs):
    cpu = lambda k: (lambda r: r["cpu_s_per_gib"].get(k))
    s = {"runs": len(rs), "ok": sum(r["ok"] for r in rs),
         "total_ms": med(rs, lambda r: r["total_ms"]), "total_ms_range": spread(rs, lambda r: r["total_ms"]),
         "downtime_ms": med(rs, lambda r: r["downtime_ms"]), "setup_ms": med(rs, lambda r: r["setup_ms"]),
         "mb_per_s": med(rs, lambda r: r["mb_per_s"])}
    for k in ("src-qemu", "dst-qemu", "src-encmigd", "dst-encmigd"):
        s[k] = med(rs, cpu(k))
    return s


def fmt(v, nd=0):
    if v is None:
        return "–"
    return f"{v:.{nd}f}"


def table(rows, **match):
    g = groups(rows, **match)
    lines = ["| contender | runs ok | total ms (median, min–max) | downtime ms | setup ms | MB/s | CPU-s/GiB src QEMU | dst QEMU | src encmigd | dst encmigd |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, rs in g.items():
        s = summarize(rs)
        lo, hi = s["total_ms_range"]
        lines.append(f"| {name} | {s['ok']}/{s['runs']} | {fmt(s['total_ms'])} ({fmt(lo)}–{fmt(hi)}) | "
                     f"{fmt(s['downtime_ms'])} | {fmt(s['setup_ms'])} | {fmt(s['mb_per_s'])} | {fmt(s['src-qemu'], 2)} | "
                     f"{fmt(s['dst-qemu'], 2)} | {fmt(s['src-encmigd'], 2)} | {fmt(s['dst-encmigd'], 2)} |")
    return "\n".join(lines)


def best(g, kind):
    cands = [(summarize(rs)["total_ms"], name) for name, rs in g.items() if rs[0]["kind"].startswith(kind)]
    cands = [c for c in cands if c[0] is not None]
    return min(cands) if cands else (None, None)


def targets(rows, p):
    out = []
    # 1. Capped links: encmig vs plain, same multifd setting.
    for rate in p["capped_rates"]:
        g = groups(rows, scenario="capped", topology=f"veth-{rate}g")
        for m in sorted({r["multifd"] for r in rows if r["scenario"] == "capped"}):
            pl = [rs for rs in g.values() if rs[0]["kind"] == "plain" and rs[0]["multifd"] == m]
            en = [rs for rs in g.values() if rs[0]["kind"] == "encmig" and rs[0]["multifd"] == m]
            if not pl or not en:
                continue
            sp, se = summarize(pl[0]), summarize(en[0])
            if sp["total_ms"] is None or se["total_ms"] is None:
                out.append((f"{rate} Gb/s, multifd {m}: duration ≤ 1.03 × plain", "no data", False))
                continue
            ratio = se["total_ms"] / sp["total_ms"]
            out.append((f"{rate} Gb/s link, {'1 stream' if not m else f'multifd {m}'}: encmig duration ≤ 1.03 × plain",
                        f"{se['total_ms']:.0f} / {sp['total_ms']:.0f} ms = {ratio:.3f}", ratio <= 1.03))
            dd = se["downtime_ms"] - sp["downtime_ms"]
            out.append((f"{rate} Gb/s link, {'1 stream' if not m else f'multifd {m}'}: downtime ≤ plain + 20 ms",
                        f"{se['downtime_ms']:.0f} vs {sp['downtime_ms']:.0f} ms ({dd:+.0f})", dd <= 20))
    # 2. Loopback: best encmig vs best QEMU TLS.
    # encmig as shipped: its own engine choice (a pinned engine is a reference).
    g = {n: rs for n, rs in groups(rows, scenario="loopback", guest="paused").items() if not rs[0].get("engine")}
    be, ne = best(g, "encmig")
    bt, nt = best(g, "tls")
    bp, np_ = best(g, "plain")
    if be and bt:
        out.append(("loopback, unlimited: best encmig ≤ 0.33 × best QEMU TLS",
                    f"{be:.0f} ms ({ne}) / {bt:.0f} ms ({nt}) = {be / bt:.3f}", be / bt <= 0.33))
    if be and bp:
        out.append(("loopback, unlimited: best encmig ≤ 2 × best plain TCP",
                    f"{be:.0f} ms ({ne}) / {bp:.0f} ms ({np_}) = {be / bp:.3f}", be / bp <= 2))
    # 3. encmig's own CPU per 10 Gb/s, on each side (loopback, paused, every encmig setting).
    for side in ("src-encmigd", "dst-encmigd"):
        vals = [summarize(rs)[side] for rs in g.values() if rs[0]["kind"] == "encmig"]
        vals = [v for v in vals if v is not None]
        if vals:
            worst = max(vals) * TEN_GBIT_GIB
            out.append((f"{side} CPU ≤ 0.40 core per 10 Gb/s (worst encmig setting, loopback)",
                        f"{worst:.2f} cores ({max(vals):.2f} CPU-s/GiB)", worst <= 0.40))
    # 4. WAN: 150 ms vs 0.5 ms, and vs plain at 150 ms.
    def wan_total(rtt, kind, m=0):
        g = groups(rows, scenario="wan", topology=f"wan-{rtt}ms")
        rs = [rs for rs in g.values() if rs[0]["kind"] == kind and rs[0]["multifd"] == m]
        return summarize(rs[0])["total_ms"] if rs else None
    far, near = max(p["rtts"]), min(p["rtts"])
    e_far, e_near, p_far = wan_total(far, "encmig"), wan_total(near, "encmig"), wan_total(far, "plain")
    if e_far and e_near:
        out.append((f"{far} ms RTT at 1 Gb/s: encmig ≤ 1.05 × its own {near} ms duration",
                    f"{e_far:.0f} / {e_near:.0f} ms = {e_far / e_near:.3f}", e_far / e_near <= 1.05))
    if e_far and p_far:
        out.append((f"{far} ms RTT: encmig faster than plain QEMU", f"{e_far:.0f} vs {p_far:.0f} ms", e_far < p_far))
    return out


# ---------------------------------------------------------------------- plots

def gnuplot(script):
    r = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True)
    if r.returncode:
        log("gnuplot: " + r.stderr[-300:])


def plots(rows, p, out):
    # RTT sweep
    data = os.path.join(out, "rtt.dat")
    series = []
    with open(data, "w") as f:
        for name in dict.fromkeys(r["contender"] for r in rows if r["scenario"] == "wan"):
            f.write(f'"{name}"\n')
            for rtt in p["rtts"]:
                rs = [r for r in rows if r["scenario"] == "wan" and r["contender"] == name and r["topology"] == f"wan-{rtt}ms"]
                s = summarize(rs) if rs else None
                if s and s["total_ms"]:
                    lo, hi = s["total_ms_range"]
                    f.write(f"{rtt} {s['total_ms'] / 1000:.3f} {lo / 1000:.3f} {hi / 1000:.3f}\n")
            f.write("\n\n")
            series.append(name)
    if series:
        plot = ", ".join(f"'{data}' index {i} using 1:2:3:4 with yerrorlines lw 2 title '{n}'" for i, n in enumerate(series))
        gnuplot(f"""set terminal pngcairo size 900,540 font ',11'
set output '{out}/rtt.png'
set title 'Migration time vs round-trip time, 1 Gb/s link ({p.get("wan_mem")} MiB guest)'
set xlabel 'RTT (ms)'; set ylabel 'total migration time (s)'
set logscale x; set xrange [0.3:200]; set grid; set key top left
plot {plot}
""")
    # Guest penalty timeline
    pen = [r for r in rows if r["scenario"] == "penalty" and r.get("timeline") and r["ok"]]
    if pen:
        data = os.path.join(out, "penalty.dat")
        arrows = []
        with open(data, "w") as f:
            for i, r in enumerate(pen):
                tl = r["timeline"]
                t0 = tl["start"]
                f.write(f'"{r["contender"]}"\n')
                for t, v in tl["src"]:
                    f.write(f"{t - t0:.2f} {v * 16}\n")  # a round dirties 16 MiB
                f.write("\n")  # the guest is stopped in between: break the line
                for t, v in tl["dst"]:
                    f.write(f"{t - t0:.2f} {v * 16}\n")
                f.write("\n\n")
                arrows.append((tl["end"] - t0, r["contender"]))
        plot = ", ".join(f"'{data}' index {i} using 1:2 with linespoints lw 2 pt 7 ps 0.6 title '{r['contender']}'"
                         for i, r in enumerate(pen))
        marks = "\n".join(f"set arrow from {x:.2f}, graph 0 to {x:.2f}, graph 1 nohead dt 2 lc {i + 1}"
                          for i, (x, _) in enumerate(arrows))
        gnuplot(f"""set terminal pngcairo size 900,540 font ',11'
set output '{out}/penalty.png'
set title 'Guest throughput before, during and after live migration ({p["penalty_mem"]} MiB guest, loopback)'
set xlabel 'seconds since the migration started (dashed: completed; the gap includes the RAM check)'
set ylabel 'memory the guest dirties (MiB/s)'
set grid; set key bottom right; set yrange [0:*]
set arrow from 0, graph 0 to 0, graph 1 nohead lc rgb 'black'
{marks}
plot {plot}
""")
    # Loopback bars
    g = groups(rows, scenario="loopback", guest="paused")
    if g:
        data = os.path.join(out, "loopback.dat")
        with open(data, "w") as f:
            for name, rs in g.items():
                s = summarize(rs)
                if s["total_ms"]:
                    f.write(f'"{name}" {s["total_ms"] / 1000:.3f}\n')
        gnuplot(f"""set terminal pngcairo size 1000,560 font ',10'
set output '{out}/loopback.png'
set title 'Loopback, {p["mem"]} MiB random guest, paused: total migration time (median of {p["reps"]})'
set style fill solid 0.7; set boxwidth 0.7; set grid ytics
set ylabel 'seconds'; set xtics rotate by -35; unset key; set bmargin 9
plot '{data}' using 0:2:xtic(1) with boxes
""")
    # Capped link throughput
    cap = [r for r in rows if r["scenario"] == "capped"]
    if cap:
        data = os.path.join(out, "capped.dat")
        names = list(dict.fromkeys(r["contender"] for r in cap))
        with open(data, "w") as f:
            for name in names:
                f.write(f'"{name}"\n')
                for rate in p["capped_rates"]:
                    rs = [r for r in cap if r["contender"] == name and r["topology"] == f"veth-{rate}g"]
                    s = summarize(rs)
                    if s["mb_per_s"]:
                        f.write(f"{rate} {s['mb_per_s'] * 8 / 1000:.3f}\n")
                f.write("\n\n")
        plot = ", ".join(f"'{data}' index {i} using 1:2 with linespoints lw 2 title '{n}'" for i, n in enumerate(names))
        gnuplot(f"""set terminal pngcairo size 900,540 font ',11'
set output '{out}/capped.png'
set title 'Throughput on a capped link (veth + tbf)'
set xlabel 'link rate (Gb/s)'; set ylabel 'migration throughput (Gb/s)'
set grid; set key top left; set xrange [0:*]; set yrange [0:*]
plot x with lines dt 2 lc rgb 'gray' title 'line rate', {plot}
""")


# --------------------------------------------------------------------- report

def report(rows, p, facts, micro_out, quick, out, elapsed):
    t = targets(rows, p)
    fails = [r for r in rows if not r["ok"]]
    L = []
    L.append(f"# encmig benchmark report{' (quick mode)' if quick else ''}\n")
    L.append(f"Generated (as root) by `python3 bench/suite.py{' --quick' if quick else ''}` in {elapsed / 60:.1f} minutes "
             f"on {facts['date']}. Every figure is the median of the runs shown (repetitions interleaved across "
             "contenders); every run's destination RAM was compared byte for byte with the source's, and a run that "
             "failed that check counts as a failure. CPU-s/GiB is utime+stime of each process during the migration, "
             "per GiB transferred.\n")
    L.append("Machine: " + ", ".join(f"{k} {v}" for k, v in facts.items() if k != "date") + ".\n")
    L.append("## Targets\n")
    L.append("| target | measured | verdict |\n|---|---|---|")
    for name, val, ok in t:
        L.append(f"| {name} | {val} | {'met' if ok else '**missed**'} |")
    L.append("")
    L.append(f"## Loopback, unlimited: {p['mem']} MiB random guest, paused\n")
    L.append(table(rows, scenario="loopback", guest="paused") + "\n")
    L.append("![loopback](loopback.png)\n")
    L.append(f"## Loopback, unlimited: {p['mem']} MiB guest dirtying 16 MiB continuously\n")
    L.append(table(rows, scenario="loopback", guest="dirty") + "\n")
    L.append("## Capped links (two namespaces, veth, tbf on both ends)\n")
    for rate in p["capped_rates"]:
        L.append(f"### {rate} Gb/s, {p.get('capped_mem', p['mem'])} MiB guest, paused\n")
        L.append(table(rows, scenario="capped", topology=f"veth-{rate}g") + "\n")
    L.append("![capped](capped.png)\n")
    L.append("## Long distance (bench/wanem: TUN devices, 1 Gb/s, RTT/2 each way, one-BDP drop-tail queue, MTU 9000)\n")
    for rtt in p["rtts"]:
        L.append(f"### RTT {rtt} ms, {p['wan_mem']} MiB guest, paused\n")
        L.append(table(rows, scenario="wan", topology=f"wan-{rtt}ms") + "\n")
    L.append("![rtt](rtt.png)\n")
    L.append("## Guest penalty\n")
    L.append("The guest prints how many 16 MiB rounds of writes it completed in each RTC second; the host timestamps "
             "each line. The destination is started only after the harness has compared RAM byte for byte, so the "
             "gap after 'migration completed' includes that check (not migration downtime; see the tables).\n")
    L.append(table(rows, scenario="penalty") + "\n")
    L.append("![penalty](penalty.png)\n")
    L.append("## Physical limit: seal+open per core against raw GnuTLS AES-256-GCM\n")
    L.append("```\n" + micro_out.strip() + "\n```\n")
    if fails:
        L.append("## Failed runs\n")
        for r in fails:
            L.append(f"- {r['scenario']} {r['topology']} {r['contender']} rep {r['rep']}: {r['error']}")
        L.append("")
    open(os.path.join(out, "report.md"), "w").write("\n".join(L))
    return t, fails


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke mode: small guest, few runs")
    ap.add_argument("--out", help="output directory")
    ap.add_argument("--only", nargs="*", help="scenarios: loopback capped wan penalty micro")
    ap.add_argument("--replot", action="store_true", help="rebuild the report and plots from OUT/results.json")
    a = ap.parse_args()
    p = plan(a.quick)
    out = a.out or (os.path.join(BUILD, "bench-quick") if a.quick else os.path.join(HERE, "results"))
    os.makedirs(out, exist_ok=True)
    if a.replot:
        d = json.load(open(os.path.join(out, "results.json")))
        plots(d["rows"], d["plan"], out)
        report(d["rows"], d["plan"], d["facts"], d.get("micro", ""), a.quick, out, d.get("elapsed_s", 0))
        return
    only = set(a.only or ["loopback", "capped", "wan", "penalty", "micro"])
    rows, t0 = [], time.time()
    micro_out = ""
    if "micro" in only:
        log("seal+open microbenchmark")
        micro_out = micro()
    if "loopback" in only:
        run_set(rows, "loopback", Loopback(), p["mem"], p["loopback_paused"], p["reps"])
        run_set(rows, "loopback", Loopback(), p["mem"], p["loopback_dirty"], p["reps"], guest="dirty")
    if "capped" in only:
        for rate in p["capped_rates"]:
            topo = Veth(rate)
            try:
                run_set(rows, "capped", topo, p.get("capped_mem", p["mem"]), p["capped"], p["capped_reps"])
            finally:
                topo.close()
    if "wan" in only:
        for rtt in p["rtts"]:
            topo = Wan(rtt)
            try:
                run_set(rows, "wan", topo, p["wan_mem"], p["wan"], p["wan_reps"])
            finally:
                topo.close()
    if "penalty" in only:
        run_set(rows, "penalty", Loopback(), p["penalty_mem"], p["penalty"], 1, guest="dirty", watch=True,
                settle_s=p["penalty_settle"], after_s=p["penalty_after"])
    facts = env_facts()
    json.dump({"facts": facts, "plan": {k: v for k, v in p.items()}, "rows": rows, "micro": micro_out,
               "elapsed_s": time.time() - t0},
              open(os.path.join(out, "results.json"), "w"), indent=1, default=str)
    plots(rows, p, out)
    t, fails = report(rows, p, facts, micro_out, a.quick, out, time.time() - t0)
    log(f"report: {out}/report.md")
    for name, val, ok in t:
        log(f"{'MET   ' if ok else 'MISSED'} {name}: {val}")
    log(f"{len(rows) - len(fails)}/{len(rows)} runs completed with identical RAM")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
