#!/usr/bin/env python3
"""The evaluation of VMware's Encrypted vMotion study (vSphere 6.5 performance
study), reproduced for QEMU/libvirt with encmig, on a real Linux guest
(Debian's kernel, Redis; scripts/build-linux-guest.sh) between two libvirt
hosts configured as Debian ships them, with encmigd confined as its systemd
unit confines it and the hosts' TCP autotuning at Debian's defaults.

    python3 bench/study.py           # full: about 30 minutes
    python3 bench/study.py --quick   # smoke: a few minutes (CI's bench-study test)

  Figure 4     the Redis guest under the study's GET/SET mixes (idle, 100/0,
               75/25, 50/50, 25/75, 0/100): migration time and switch-over
               time (downtime), plain against encmig, interleaved repetitions.
  Figure 5     idle guests whose memory is fully touched, at several sizes.
  Figures 10-11  Redis with an fsync'd append-only file on its virtio disk,
               migrated with --copy-storage-all over the WAN emulator at
               1 Gb/s for RTT 0.5, 5, 50, 100 and 150 ms: total time per RTT,
               and the guest's operations per second around the migration at
               150 ms.

Writes OUT/report.md, OUT/study.json and OUT/fig*.png (gnuplot). OUT is
bench/results/study, or build/bench-study-quick with --quick. Every
migration must complete encrypted (encmig) or plain (the baseline), and the
guest must go on: otherwise the run fails, it is not a data point."""
import argparse, json, os, statistics, subprocess, sys, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from hosts import TwoHosts  # noqa: E402
from test_libvirt import encmig, running_on  # noqa: E402
import test_linux_guest as lg  # noqa: E402

MIXES = [("idle", "idle"), ("100/0", "100"), ("75/25", "75"), ("50/50", "50"), ("25/75", "25"), ("0/100", "0")]


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def images(hosts, disk_mib=0, fill_mib=0):
    import shutil
    for h in hosts.all:
        d = os.path.join(h.dir, "lib", "images")
        for f in ("vmlinuz", "initrd.img"):
            shutil.copy(os.path.join(lg.GUEST_DIR, f), os.path.join(d, f))
        if disk_mib:
            h.sh(["qemu-img", "create", "-q", "-f", "qcow2", "/var/lib/libvirt/images/redis.qcow2", f"{disk_mib}M"])
    if fill_mib:  # a disk with data on it, so that storage migration moves real bytes
        hosts.a.sh(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a 64M {fill_mib}M", "/var/lib/libvirt/images/redis.qcow2"])


def boot(host, name, mem_mib, cmdline, disk=False):
    lg.MEM_MIB = mem_mib
    path = os.path.join(host.dir, f"{name}.xml")
    open(path, "w").write(lg.domain_xml(name, disk="/var/lib/libvirt/images/redis.qcow2" if disk else None,
                                        cmdline=cmdline))
    host.virsh("create", path)
    ready = "touched" if "encmig.touch" in cmdline else "redis ready"
    lg.wait_for(lambda: ready in lg.serial(host, name)[1] and len(lg.serial(host, name)[0]) >= 3, 600,
                f"the guest never got going on {host.name}: " + lg.serial(host, name)[1][-1500:])


def migrate(src, dst, name, mode, extra=()):
    args = ["migrate", "--live", "--p2p", "--json", "--handoff-timeout", "8000"]
    args += ["--encrypted=required"] if mode == "encmig" else ["--encrypted=disabled"]
    res = encmig(src, *args, *extra, name, dst.uri(), timeout=1800)
    ok = res.get("result") == "completed" and res.get("encrypted") is (mode == "encmig") and running_on(dst, name)
    if not ok:
        raise RuntimeError(f"{mode} migration {src.name}->{dst.name} failed: {res}")
    return {"mode": mode, "total_ms": res["total-time-ms"], "downtime_ms": res["downtime-ms"], "bytes": res["bytes"],
            "wall_ms": res.get("wall-ms"), "disk_bytes": res.get("disk-bytes", 0)}


def ping_pong(hosts, name, reps, extra=()):
    """reps migrations per mode, interleaved (plain/encmig, then encmig/plain),
    back and forth between the hosts; the guest never restarts."""
    out, at = [], hosts.a
    for r in range(reps):
        for mode in (("plain", "encmig") if r % 2 == 0 else ("encmig", "plain")):
            to = hosts.b if at is hosts.a else hosts.a
            row = migrate(at, to, name, mode, extra)
            out.append(row)
            log(f"  {mode:6s} {at.name}->{to.name}: {row['total_ms']} ms, downtime {row['downtime_ms']} ms, "
                f"{row['bytes'] >> 20} MiB")
            at = to
            time.sleep(1)
    return out


def medians(rows):
    by = {}
    for r in rows:
        by.setdefault(r["mode"], []).append(r)
    return {m: {"total_ms": statistics.median(x["total_ms"] for x in v),
                "downtime_ms": statistics.median(x["downtime_ms"] for x in v),
                "n": len(v)} for m, v in by.items()}


def figure4(plan, results):
    hosts = TwoHosts(debian=True)
    try:
        images(hosts)
        for h in hosts.all:
            h.start_encmigd()
        for label, mix in plan["mixes"]:
            name = "f4-" + mix
            boot(hosts.a, name, plan["mem"], f"encmig.keys={plan['keys']} encmig.mix={mix}")
            time.sleep(plan["settle"])
            log(f"figure 4: Redis {label}")
            rows = ping_pong(hosts, name, plan["reps"])
            results["figure4"].append({"mix": label, "runs": rows, "median": medians(rows)})
            for h in hosts.all:
                h.virsh("destroy", name, check=False)
    finally:
        hosts.close()


def figure5(plan, results):
    hosts = TwoHosts(debian=True)
    try:
        images(hosts)
        for h in hosts.all:
            h.start_encmigd()
        for size in plan["sizes"]:
            name = f"f5-{size}"
            # Headroom for the kernel, the initramfs and Redis: with 128 MiB a
            # 512 MiB touch panicked the guest ("System is deadlocked on memory").
            boot(hosts.a, name, size + 256, f"encmig.touch={size}")
            log(f"figure 5: idle guest, {size} MiB touched")
            rows = ping_pong(hosts, name, plan["reps"])
            results["figure5"].append({"touched_mib": size, "runs": rows, "median": medians(rows)})
            for h in hosts.all:
                h.virsh("destroy", name, check=False)
    finally:
        hosts.close()


def figure10(plan, results):
    for rtt in plan["rtts"]:
        hosts = TwoHosts(debian=True, wan=(rtt, 1000))
        try:
            images(hosts, disk_mib=plan["disk"], fill_mib=plan["fill"])
            for h in hosts.all:
                h.start_encmigd()
            name = "f10"
            boot(hosts.a, name, plan["mem"], f"encmig.keys={plan['keys']} encmig.mix=25 encmig.aof=always", disk=True)
            time.sleep(plan["settle"])
            log(f"figures 10-11: --copy-storage-all over 1 Gb/s at RTT {rtt} ms")
            timeline = rtt == max(plan["rtts"])
            rows = ping_pong(hosts, name, plan["reps"], extra=["--copy-storage-all"])
            entry = {"rtt_ms": rtt, "runs": rows, "median": medians(rows)}
            if timeline:
                entry["timeline"] = {m: timeline_run(hosts, name, m, plan["around"]) for m in ("plain", "encmig")}
            results["figure10"].append(entry)
        finally:
            hosts.close()


def timeline_run(hosts, name, mode, around):
    """The guest's operations per second, sampled from its console, from
    `around` s before a migration to `around` s after it ends."""
    src = hosts.a if running_on(hosts.a, name) else hosts.b
    dst = hosts.b if src is hosts.a else hosts.a
    samples, stop = [], threading.Event()
    t0 = time.time()

    def sample():
        last = None
        while not stop.is_set():
            for h in (src, dst):
                ops = lg.serial(h, name)[0]
                if ops and h is (dst if running_on(dst, name) else src):
                    if last is None or ops[-1] != last:
                        samples.append((time.time() - t0, ops[-1]))
                        last = ops[-1]
            time.sleep(0.25)
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    time.sleep(around)
    m0 = time.time() - t0
    row = migrate(src, dst, name, mode, ["--copy-storage-all"])
    m1 = time.time() - t0
    time.sleep(around)
    stop.set()
    th.join(5)
    rates = []
    for (ta, a), (tb, b) in zip(samples, samples[1:]):
        if tb > ta and b >= a:
            rates.append(((ta + tb) / 2, (b - a) / (tb - ta)))
    return {"migration_start_s": m0, "migration_end_s": m1, "ops_per_s": rates, "total_ms": row["total_ms"],
            "downtime_ms": row["downtime_ms"]}


def targets(results):
    out = []
    for e in results["figure4"]:
        p, c = e["median"]["plain"], e["median"]["encmig"]
        out.append((f"figure 4, Redis {e['mix']}: migration time encmig/plain", c["total_ms"] / p["total_ms"], 1.05))
        out.append((f"figure 4, Redis {e['mix']}: switch-over encmig/plain", c["downtime_ms"] / max(1, p["downtime_ms"]), 1.05))
    for e in results["figure5"]:
        p, c = e["median"]["plain"], e["median"]["encmig"]
        out.append((f"figure 5, {e['touched_mib']} MiB touched: migration time encmig/plain", c["total_ms"] / p["total_ms"], 1.05))
    f10 = {e["rtt_ms"]: e["median"] for e in results["figure10"]}
    if f10:
        lo, hi = min(f10), max(f10)
        out.append((f"figure 10: encmig at {hi} ms / encmig at {lo} ms", f10[hi]["encmig"]["total_ms"] / f10[lo]["encmig"]["total_ms"], 1.15))
        for rtt, m in sorted(f10.items()):
            out.append((f"figure 10, RTT {rtt} ms: encmig/plain", m["encmig"]["total_ms"] / m["plain"]["total_ms"], None))
    return out


def plots(results, out):
    def gp(script):
        subprocess.run(["gnuplot"], input=script, text=True, check=False, capture_output=True)
    # Figure 4: bars per mix.
    with open(os.path.join(out, "fig4.dat"), "w") as f:
        for i, e in enumerate(results["figure4"]):
            p, c = e["median"]["plain"], e["median"]["encmig"]
            f.write(f'{i} "{e["mix"]}" {p["total_ms"] / 1000:.3f} {c["total_ms"] / 1000:.3f} {p["downtime_ms"]} {c["downtime_ms"]}\n')
    gp(f"""set terminal pngcairo size 1000,420 noenhanced; set output '{out}/fig4.png'
set multiplot layout 1,2 title 'Figure 4: Redis guest, GET/SET mixes (medians)'
set style data histograms; set style histogram cluster gap 1; set style fill solid 0.8 border -1
set ylabel 'migration time (s)'; set yrange [0:*]; set xtics rotate by -30
plot '{out}/fig4.dat' using 3:xtic(2) title 'plain QEMU', '' using 4 title 'encmig'
set ylabel 'switch-over time (ms)'
plot '{out}/fig4.dat' using 5:xtic(2) title 'plain QEMU', '' using 6 title 'encmig'
unset multiplot""")
    with open(os.path.join(out, "fig5.dat"), "w") as f:
        for e in results["figure5"]:
            p, c = e["median"]["plain"], e["median"]["encmig"]
            f.write(f'{e["touched_mib"]} {p["total_ms"] / 1000:.3f} {c["total_ms"] / 1000:.3f}\n')
    gp(f"""set terminal pngcairo size 640,420 noenhanced; set output '{out}/fig5.png'
set title 'Figure 5: idle guests, memory fully touched (medians)'; set xlabel 'touched memory (MiB)'
set ylabel 'migration time (s)'; set yrange [0:*]; set key left top
plot '{out}/fig5.dat' using 1:2 with linespoints title 'plain QEMU', '' using 1:3 with linespoints title 'encmig'""")
    with open(os.path.join(out, "fig10.dat"), "w") as f:
        for e in results["figure10"]:
            p, c = e["median"]["plain"], e["median"]["encmig"]
            f.write(f'{e["rtt_ms"]} {p["total_ms"] / 1000:.3f} {c["total_ms"] / 1000:.3f}\n')
    gp(f"""set terminal pngcairo size 640,420 noenhanced; set output '{out}/fig10.png'
set title 'Figure 10: --copy-storage-all at 1 Gb/s, Redis with fsync (medians)'; set xlabel 'RTT (ms)'
set ylabel 'total migration time (s)'; set yrange [0:*]; set key left top
plot '{out}/fig10.dat' using 1:2 with linespoints title 'plain QEMU', '' using 1:3 with linespoints title 'encmig'""")
    tl = [e for e in results["figure10"] if "timeline" in e]
    if tl:
        e = tl[0]
        lines = []
        for m in ("plain", "encmig"):
            t = e["timeline"][m]
            with open(os.path.join(out, f"fig11-{m}.dat"), "w") as f:
                for ts, r in t["ops_per_s"]:
                    f.write(f"{ts - t['migration_start_s']:.2f} {r:.1f}\n")
            lines.append((m, t["migration_end_s"] - t["migration_start_s"]))
        gp(f"""set terminal pngcairo size 900,420 noenhanced; set output '{out}/fig11.png'
set title 'Figure 11: Redis operations per second around a --copy-storage-all migration at {e["rtt_ms"]} ms RTT'
set xlabel 'seconds from the start of the migration'; set ylabel 'operations/s'; set yrange [0:*]
set arrow from 0, graph 0 to 0, graph 1 nohead dt 2
set arrow from {lines[0][1]:.2f}, graph 0 to {lines[0][1]:.2f}, graph 1 nohead dt 3 lc 1
set arrow from {lines[1][1]:.2f}, graph 0 to {lines[1][1]:.2f}, graph 1 nohead dt 3 lc 2
plot '{out}/fig11-plain.dat' using 1:2 with lines title 'plain QEMU', '{out}/fig11-encmig.dat' using 1:2 with lines title 'encmig'""")


def report(results, out, plan, started):
    rows = targets(results)
    L = ["# The Encrypted vMotion study's evaluation, for QEMU with encmig", "",
         f"Generated by `python3 bench/study.py{' --quick' if plan['quick'] else ''}` on {time.strftime('%Y-%m-%d')} "
         f"({(time.time() - started) / 60:.0f} min). Two libvirt 9.0 hosts in network and mount namespaces on one "
         "2-core machine, configured as Debian ships libvirt (QEMU as libvirt-qemu, dynamic ownership, virtlogd), "
         "joined by a veth pair (figures 4 and 5) or by bench/wanem at 1 Gb/s (figures 10 and 11). encmigd runs "
         "confined as its systemd unit confines it; the hosts' TCP autotuning ceilings are Debian's "
         "(net.ipv4.tcp_rmem 6 MiB, tcp_wmem 4 MiB). Measured otherwise than as deployed: both hosts share the "
         "machine's 2 cores and its kernel (6.18, congestion control bbr, net.core.[rw]mem_max 4 MiB), and guests run "
         "under TCG. The guest is Debian's 6.1 kernel with busybox and Redis 7.0 (scripts/build-linux-guest.sh), "
         f"{plan['mem']} MiB, {plan['keys']} keys of 1 KiB. Plain QEMU is libvirt's own TCP migration "
         "(`encmig migrate --encrypted=disabled`); encmig is `--encrypted=required`. Repetitions are interleaved "
         "and migrate back and forth; each figure is the median. Times are libvirt's: total time and downtime "
         "(switch-over) from the completed job's statistics.", "", "## Targets", "",
         "| target | measured | limit | met |", "|---|---|---|---|"]
    for name, v, limit in rows:
        L.append(f"| {name} | {v:.3f} | {'≤ ' + str(limit) if limit else '(no target)'} | "
                 f"{'' if limit is None else ('yes' if v <= limit else '**no**')} |")
    L += ["", "## Figure 4: Redis under GET/SET mixes", "", "![figure 4](fig4.png)", "",
          "| mix | plain time (ms) | encmig time (ms) | ratio | plain downtime (ms) | encmig downtime (ms) |",
          "|---|---|---|---|---|---|"]
    for e in results["figure4"]:
        p, c = e["median"]["plain"], e["median"]["encmig"]
        L.append(f"| {e['mix']} | {p['total_ms']:.0f} | {c['total_ms']:.0f} | {c['total_ms'] / p['total_ms']:.3f} | "
                 f"{p['downtime_ms']:.0f} | {c['downtime_ms']:.0f} |")
    L += ["", "## Figure 5: idle guests, memory fully touched", "", "![figure 5](fig5.png)", "",
          "| touched (MiB) | plain (ms) | encmig (ms) | ratio |", "|---|---|---|---|"]
    for e in results["figure5"]:
        p, c = e["median"]["plain"], e["median"]["encmig"]
        L.append(f"| {e['touched_mib']} | {p['total_ms']:.0f} | {c['total_ms']:.0f} | {c['total_ms'] / p['total_ms']:.3f} |")
    L += ["", "## Figures 10 and 11: storage migration over a WAN", "", "![figure 10](fig10.png)", "",
          "| RTT (ms) | plain (ms) | encmig (ms) | encmig/plain |", "|---|---|---|---|"]
    for e in results["figure10"]:
        p, c = e["median"]["plain"], e["median"]["encmig"]
        L.append(f"| {e['rtt_ms']} | {p['total_ms']:.0f} | {c['total_ms']:.0f} | {c['total_ms'] / p['total_ms']:.3f} |")
    if any("timeline" in e for e in results["figure10"]):
        L += ["", "![figure 11](fig11.png)", ""]
    L += ["", "Raw runs: study.json."]
    open(os.path.join(out, "report.md"), "w").write("\n".join(L) + "\n")
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--only", choices=["4", "5", "10"], action="append")
    a = ap.parse_args()
    top = os.path.abspath(os.path.join(HERE, ".."))
    out = a.out or (os.path.join(lg.BUILD, "bench-study-quick") if a.quick else os.path.join(HERE, "results", "study"))
    os.makedirs(out, exist_ok=True)
    if a.quick:
        plan = {"quick": True, "mem": 384, "keys": 20000, "settle": 3, "reps": 1, "mixes": [MIXES[0], MIXES[3]],
                "sizes": [256], "rtts": [0.5, 50], "disk": 256, "fill": 64, "around": 5}
    else:
        plan = {"quick": False, "mem": 512, "keys": 100000, "settle": 5, "reps": 3, "mixes": MIXES,
                "sizes": [256, 512, 1024], "rtts": [0.5, 5, 50, 100, 150], "disk": 512, "fill": 256, "around": 10}
    lg.build_guest()
    started = time.time()
    results = {"plan": plan, "figure4": [], "figure5": [], "figure10": []}
    only = a.only or ["4", "5", "10"]
    for fig, fn in (("4", figure4), ("5", figure5), ("10", figure10)):
        if fig in only:
            fn(plan, results)
            json.dump(results, open(os.path.join(out, "study.json"), "w"), indent=1)
    plots(results, out)
    for name, v, limit in report(results, out, plan, started):
        log(f"{name}: {v:.3f}" + (f" (target ≤ {limit}: {'met' if v <= limit else 'MISSED'})" if limit else ""))
    log(f"report: {out}/report.md")


if __name__ == "__main__":
    main()
