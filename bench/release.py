#!/usr/bin/env python3
"""encmig against plain QEMU and QEMU's own TLS on this host's QEMU: the
1 Gb/s capped link and 150 ms RTT (bench/wanem at 1 Gb/s), contenders
interleaved, medians with min-max, RAM byte for byte on every run.

    python3 bench/release.py [--reps 5] [--mem 512] [--out DIR]

Run it on each release's QEMU: on Debian 12 directly, on Debian 13 inside
its root (scripts/test-debian13.sh builds there; then
scripts/debian13-enter.sh ROOT --bind SRC:/src -- env ENCMIG_BUILD=/var/tmp/encmig-build
python3 /src/bench/release.py). Writes OUT/release-<qemu>.md and .json."""
import argparse, json, os, re, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from lib import Bench, Veth, Wan, contender, migrate_once  # noqa: E402


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def med(xs):
    return statistics.median(xs) if xs else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--mem", type=int, default=512, help="guest MiB (paused guest, random RAM)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "release"))
    a = ap.parse_args()
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    qv = re.search(r"version (\d+\.\d+)", qemu).group(1)
    cs = [contender("plain"), contender("plain", 4), contender("tls-x509", 4, "aes-gcm"), contender("encmig"),
          contender("encmig", 4)]
    rows = []
    for name, mk in (("capped 1 Gb/s", lambda: Veth(1)), ("150 ms RTT, 1 Gb/s", lambda: Wan(150))):
        topo = mk()
        env = Bench(a.mem)
        try:
            w = migrate_once(env, topo, cs[-1])
            log(f"{name}: warm-up {w['total_ms']} ms, discarded")
            for rep in range(a.reps):
                for c in cs:
                    r = migrate_once(env, topo, c)
                    r.update(link=name, rep=rep)
                    rows.append(r)
                    log(f"{name:20} {c['label']:40} " + (f"{r['total_ms']:>6} ms  down {r['downtime_ms']:>4} ms"
                                                         if r["ok"] else f"FAILED: {r['error']}"))
        finally:
            env.close()
            topo.close()
    os.makedirs(a.out, exist_ok=True)
    base = os.path.join(a.out, f"release-qemu-{qv}")
    json.dump({"qemu": qemu, "mem_mib": a.mem, "reps": a.reps, "rows": rows}, open(base + ".json", "w"), indent=1,
              default=str)
    lines = [f"# {qemu}: {a.mem} MiB paused guest, medians of {a.reps} (min-max), interleaved", "",
             "| link | contender | total ms | downtime ms | total / plain 1 stream | total / QEMU TLS multifd 4 |"
             " src CPU-s/GiB (QEMU+encmigd) | dst CPU-s/GiB |",
             "|---|---|---|---|---|---|---|---|"]
    fails = [r for r in rows if not r["ok"]]
    for link in dict.fromkeys(r["link"] for r in rows):
        ok = [r for r in rows if r["link"] == link and r["ok"]]
        def m(label, key="total_ms"):
            return med([r[key] for r in ok if r["contender"] == label])
        plain, tls = m(cs[0]["label"]), m(cs[2]["label"])
        for c in cs:
            rs = [r for r in ok if r["contender"] == c["label"]]
            if not rs:
                lines.append(f"| {link} | {c['label']} | failed | | | | | |")
                continue
            t = [r["total_ms"] for r in rs]
            d = [r["downtime_ms"] for r in rs]
            def cpu(side):
                v = [sum(x for k, x in r["cpu_s_per_gib"].items() if k.startswith(side)) for r in rs if r["cpu_s_per_gib"]]
                return f"{med(v):.2f}" if v else "-"
            lines.append(f"| {link} | {c['label']} | {med(t):.0f} ({min(t)}-{max(t)}) | {med(d):.0f} ({min(d)}-{max(d)}) | "
                         f"{med(t) / plain:.2f} | {med(t) / tls:.2f} | {cpu('src')} | {cpu('dst')} |")
    lines += ["", f"{len(rows) - len(fails)}/{len(rows)} runs with RAM identical byte for byte."]
    open(base + ".md", "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
