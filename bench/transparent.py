#!/usr/bin/env python3
"""The transparent mode, measured: an unchanged `virsh migrate --live --p2p`
carried by `encmigd --transparent`, against the explicit `encmig migrate`
(encrypted, the daemons' UNIX sockets) and against plain QEMU (virsh with a
migration URI outside the intercepted port range), in one run, interleaved.

    python3 bench/transparent.py [--reps 3] [--mem 512] [--rtts 0.5,150] [--evacuate 4]

Two libvirt hosts as Debian ships them, joined by bench/wanem at 1 Gb/s with
each RTT, encmigd confined as its unit confines it, the Linux guest from
Debian's packages (scripts/build-linux-guest.sh) idle with MEM MiB touched.
Per mode: wall time of the command, libvirt's downtime (the destination's
completed job), and the time from the command's start to the first migration
byte on the wire (a packet tap on host a's link). Then host evacuation as
`nova host-evacuate-live` does it: N guests migrated at once by unchanged
virsh, encrypted (transparent) against plain, total time and the CPU seconds
of both hosts' encmigd and of the whole machine (both hosts share it). Writes bench/results/transparent/."""
import argparse, json, os, re, statistics, subprocess, sys, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from hosts import ENCMIG, TwoHosts  # noqa: E402
from sniff import Sniffer  # noqa: E402
import test_linux_guest as lg  # noqa: E402
from test_libvirt import running_on  # noqa: E402
from test_transparent import transparent_args  # noqa: E402

PLAIN_PORT = 49300  # outside libvirt's range: never intercepted


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def cpu_seconds(pid):
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_busy_seconds():
    """CPU time the whole machine spent busy (both hosts share it)."""
    f = open("/proc/stat").readline().split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in f[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def boot(host, name, mem, touch):
    lg.MEM_MIB = mem
    path = os.path.join(host.dir, f"{name}.xml")
    open(path, "w").write(lg.domain_xml(name, cmdline=f"encmig.touch={touch}"))
    host.virsh("create", path)
    lg.wait_for(lambda: "touched" in lg.serial(host, name)[1], 600, f"{name} never touched its memory")


def transparent_hosts(rtt):
    """Two hosts joined at 1 Gb/s with this RTT, the Linux guest's files on
    both, encmigd --transparent on both."""
    hosts = TwoHosts(debian=True, wan=(rtt, 1000))
    try:
        for h in hosts.all:
            images = os.path.join(h.dir, "lib", "images")
            for f in ("vmlinuz", "initrd.img"):
                subprocess.run(["cp", os.path.join(lg.GUEST_DIR, f), images], check=True)
            h.start_encmigd(transparent_args(hosts))
    except BaseException:
        hosts.close()
        raise
    return hosts


def downtime_ms(dst, name):
    out = dst.virsh("domjobinfo", "--completed", name, check=False).stdout
    m = re.search(r"Total downtime:\s+(\d+)", out)
    return int(m.group(1)) if m else None


def one(src, dst, name, mode):
    tap = src.in_netns(lambda: Sniffer(src.dev, b""))
    t0 = time.time()
    if mode == "explicit":
        r = src.sh([ENCMIG, "migrate", "--live", "--p2p", "--json", "--encrypted=required", "--handoff-timeout", "8000",
                    name, dst.uri()], check=False, timeout=1800)
    else:
        extra = ["--migrateuri", f"tcp://{dst.addr}:{PLAIN_PORT}"] if mode == "plain" else []
        r = src.sh(["virsh", "-c", "qemu:///system", "migrate", "--live", "--p2p", *extra, name, dst.uri()],
                   check=False, timeout=1800)
    wall = time.time() - t0
    tap.close()
    if r.returncode != 0 or not running_on(dst, name):
        raise RuntimeError(f"{mode} {src.name}->{dst.name} failed: {r.stdout[-500:]} {r.stderr[-1500:]}")
    firsts = [f for k, f in tap.first_payload.items() if k[0] == src.addr and (k[3] == 16520 or k[3] == PLAIN_PORT or
                                                                            49152 <= k[3] <= 49215)]
    ttfb = (min(firsts) - t0) * 1000 if firsts else None
    enc = tap.bytes_to_port(16520)
    down = downtime_ms(dst, name)
    if mode == "explicit":  # encmig's summary has libvirt's figure
        try:
            down = json.loads(r.stdout).get("downtime-ms", down)
        except ValueError:
            pass
    return {"mode": mode, "wall_ms": round(wall * 1000), "downtime_ms": down,
            "first_byte_ms": round(ttfb) if ttfb is not None else None, "bytes_via_encmigd": enc,
            "bytes_plain": tap.bytes_in_range(49152, 49215) + tap.bytes_to_port(PLAIN_PORT)}


def med(rows, key):
    xs = [r[key] for r in rows if r.get(key) is not None]
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)} if xs else None


def single(rtt, reps, mem, results):
    hosts = transparent_hosts(rtt)
    try:
        boot(hosts.a, "t", mem + 256, mem)
        at = hosts.a
        rows = []
        modes = ["plain", "transparent", "explicit"]
        # A warm-up pass on fresh tmpfs and page cache, discarded.
        for r in range(reps + 1):
            order = modes if r % 2 == 0 else modes[::-1]
            for mode in order:
                to = hosts.b if at is hosts.a else hosts.a
                row = one(at, to, "t", mode)
                at = to
                if r == 0:
                    log(f"  warm-up {mode}: {row['wall_ms']} ms")
                    continue
                row["rtt_ms"] = rtt
                rows.append(row)
                log(f"  rtt {rtt} ms {mode:11s}: {row['wall_ms']} ms, downtime {row['downtime_ms']} ms, "
                    f"first byte {row['first_byte_ms']} ms, via encmigd {row['bytes_via_encmigd'] >> 20} MiB, "
                    f"plain {row['bytes_plain'] >> 20} MiB")
                time.sleep(1)
        summary = {m: {k: med([x for x in rows if x["mode"] == m], k) for k in ("wall_ms", "downtime_ms", "first_byte_ms")}
                   for m in modes}
        results["single"].append({"rtt_ms": rtt, "runs": rows, "summary": summary})
    finally:
        hosts.close()


def evacuate(n, reps, mem, results):
    hosts = transparent_hosts(0.5)
    try:
        names = [f"e{i}" for i in range(n)]
        for name in names:
            boot(hosts.a, name, mem + 256, mem)
        at = hosts.a
        rows = []
        for r in range(reps * 2 + 1):
            mode = ("plain", "transparent")[r % 2]
            to = hosts.b if at is hosts.a else hosts.a
            daemons = [h.encmigd.pid for h in hosts.all]
            cpu0 = {p: cpu_seconds(p) for p in daemons}
            busy0 = machine_busy_seconds()
            t0 = time.time()
            procs = []
            for i, name in enumerate(names):
                extra = ["--migrateuri", f"tcp://{to.addr}:{PLAIN_PORT + i}"] if mode == "plain" else []
                procs.append(at.spawn(["virsh", "-c", "qemu:///system", "migrate", "--live", "--p2p", *extra, name, to.uri()],
                                      f"evacuate-{r}-{name}.log"))
            codes = [p.wait(timeout=1800) for p in procs]
            wall = time.time() - t0
            if any(codes):
                raise RuntimeError(f"evacuation {mode} failed: {codes}")
            cpu_d = sum(cpu_seconds(p) - cpu0[p] for p in daemons)
            cpu_q = machine_busy_seconds() - busy0
            at = to
            if r == 0:
                log(f"  warm-up evacuation {mode}: {wall:.1f} s")
                continue
            rows.append({"mode": mode, "wall_ms": round(wall * 1000), "encmigd_cpu_s": round(cpu_d, 2),
                         "machine_cpu_s": round(cpu_q, 2)})
            log(f"  evacuate {n} x {mem} MiB {mode:11s}: {wall:.2f} s, encmigd CPU {cpu_d:.2f} s, machine CPU {cpu_q:.2f} s")
        summary = {m: {k: med([x for x in rows if x["mode"] == m], k) for k in ("wall_ms", "encmigd_cpu_s", "machine_cpu_s")}
                   for m in ("plain", "transparent")}
        results["evacuate"] = {"guests": n, "mem_mib": mem, "runs": rows, "summary": summary}
    finally:
        hosts.close()


def report(results, out):
    lines = ["# The transparent mode: unchanged `virsh migrate` against `encmig migrate` and plain QEMU", "",
             f"`python3 bench/transparent.py --reps {results['reps']} --mem {results['mem']}`, {results['date']}. "
             "Two libvirt hosts as Debian ships them (Debian 12: QEMU 7.2, libvirt 9.0), joined by bench/wanem "
             "at 1 Gb/s, encmigd confined as its unit, the Linux guest idle with its memory touched. Medians "
             "(min-max) of the repetitions after a discarded warm-up, modes interleaved.", "",
             "| RTT | mode | wall time ms | downtime ms | first byte on the wire ms |", "|---|---|---|---|---|"]
    f = lambda s: "-" if not s else f"{s['median']:.0f} ({s['min']:.0f}-{s['max']:.0f})"
    for e in results["single"]:
        for m, s in e["summary"].items():
            lines.append(f"| {e['rtt_ms']} ms | {m} | {f(s['wall_ms'])} | {f(s['downtime_ms'])} | {f(s['first_byte_ms'])} |")
    if "evacuate" in results:
        ev = results["evacuate"]
        lines += ["", f"Host evacuation: {ev['guests']} guests of {ev['mem_mib']} MiB at once, unchanged virsh, 1 Gb/s, 0.5 ms.", "",
                  "| mode | wall time ms | encmigd CPU s (both hosts) | machine CPU s (both hosts, QEMU, libvirtd, wanem) |",
                  "|---|---|---|---|"]
        for m, s in ev["summary"].items():
            lines.append(f"| {m} | {f(s['wall_ms'])} | {s['encmigd_cpu_s']['median'] if s['encmigd_cpu_s'] else '-'} | "
                         f"{s['machine_cpu_s']['median'] if s['machine_cpu_s'] else '-'} |")
    open(os.path.join(out, "report.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--mem", type=int, default=512, help="guest MiB touched")
    ap.add_argument("--rtts", default="0.5,150")
    ap.add_argument("--evacuate", type=int, default=4, help="guests in the evacuation (0: skip)")
    ap.add_argument("--evacuate-mem", type=int, default=256)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "transparent"))
    a = ap.parse_args()
    lg.build_guest()
    os.makedirs(a.out, exist_ok=True)
    results = {"reps": a.reps, "mem": a.mem, "date": time.strftime("%Y-%m-%d"), "single": []}
    for rtt in (float(x) for x in a.rtts.split(",")):
        log(f"single migrations at RTT {rtt} ms")
        single(rtt, a.reps, a.mem, results)
        json.dump(results, open(os.path.join(a.out, "results.json"), "w"), indent=1)
    if a.evacuate:
        log(f"evacuation of {a.evacuate} guests")
        evacuate(a.evacuate, a.reps, a.evacuate_mem, results)
    json.dump(results, open(os.path.join(a.out, "results.json"), "w"), indent=1)
    report(results, a.out)


if __name__ == "__main__":
    main()
