#!/usr/bin/env python3
"""A/B of two encmig builds in one run: the same migration, interleaved,
medians and spread of the total time and of each encmigd's CPU-seconds per
GiB (from /proc). For a change to the relay, build the tree before it
somewhere else (git worktree add, meson setup, ninja tools/encmig
tools/encmigd) and compare:

    python3 bench/ab.py [--before /tmp/old/build] --after build [--reps 5] [--mem 1024] [--multifd N]
                        [--also NAME=BUILD ...] [--rtt MS [--rate MBIT] | --capped GBIT] [--plain] [--relay]
                        [--out DIR]

Loopback (or, with --rtt, bench/wanem at that round trip and rate), a paused
random-filled guest, encmigd confined as its unit; the first run on the fresh
tmpfs is discarded (huge pages). --plain adds plain QEMU TCP to the
interleaving, for ratios and downtime against it in the same run; --relay
adds plain QEMU through bench/relay, a copying relay without crypto where
encmigd sits (the floor of any relay: encmigd's CPU minus the relay's is
what encryption and the protocol cost). Downtime
is end to end (the source's own figure plus the destination's drain)."""
import argparse, json, os, statistics, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402
from lib import Bench, Loopback, Veth, Wan, contender, migrate_once  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", help="the build before the change; without it, one build (with --plain/--relay)")
    ap.add_argument("--after", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--mem", type=int, default=1024)
    ap.add_argument("--multifd", type=int, default=0)
    ap.add_argument("--rtt", type=float, help="bench/wanem instead of loopback: round trip in ms")
    ap.add_argument("--rate", type=int, default=1000, help="with --rtt: Mb/s")
    ap.add_argument("--capped", type=float, help="a veth pair shaped by tbf instead of loopback: Gb/s")
    ap.add_argument("--also", action="append", default=[], metavar="NAME=BUILD",
                    help="a third (fourth...) build in the same interleaving")
    ap.add_argument("--plain", action="store_true", help="plain QEMU TCP too, interleaved")
    ap.add_argument("--relay", action="store_true",
                    help="plain QEMU TCP through bench/relay too (a copying relay without crypto), interleaved")
    ap.add_argument("--out")
    a = ap.parse_args()
    builds = {"before": os.path.abspath(a.before)} if a.before else {}
    builds["after"] = os.path.abspath(a.after)
    for extra in a.also:
        name, _, path = extra.partition("=")
        builds[name] = os.path.abspath(path)
    others = {k: contender(k, multifd=a.multifd) for k in ("plain", "relay") if getattr(a, k)}
    builds.update({k: None for k in others})
    c = contender("encmig", multifd=a.multifd)
    topo = Wan(a.rtt, a.rate) if a.rtt is not None else Veth(a.capped) if a.capped else Loopback()
    env, rows = Bench(a.mem), []

    def use(b):
        lib.ENCMIG = os.path.join(b, "tools", "encmig")
        lib.ENCMIGD = os.path.join(b, "tools", "encmigd")
    try:
        use(builds["after"])
        print("warm-up", migrate_once(env, topo, c)["total_ms"], "ms, discarded", flush=True)
        for rep in range(a.reps):
            for name, b in builds.items():  # interleaved: drift hits all alike
                if b:
                    use(b)
                r = migrate_once(env, topo, c if b else others[name])
                r["build"] = name
                rows.append(r)
                print(f"{name:7} rep {rep}: ok={r['ok']} {r['total_ms']} ms downtime {r['downtime_ms']} ms "
                      f"(drain {r.get('drain_ms')})  CPU-s/GiB {r['cpu_s_per_gib']}", flush=True)
    finally:
        env.close()
        topo.close()
    summary = {}
    for name in builds:
        rs = [r for r in rows if r["build"] == name and r["ok"]]

        def s(f):
            v = sorted(f(r) for r in rs)
            return {"median": statistics.median(v), "min": v[0], "max": v[-1]} if v else None
        summary[name] = {"build": builds[name], "runs": len(rs), "total_ms": s(lambda r: r["total_ms"]),
                         "downtime_ms": s(lambda r: r["downtime_ms"]), "drain_ms": s(lambda r: r.get("drain_ms") or 0)}
        for proc in ("src-encmigd", "dst-encmigd", "src-relay", "dst-relay", "src-qemu", "dst-qemu"):
            if rs and proc in rs[0]["cpu_s_per_gib"]:
                summary[name][proc.replace("-", "_") + "_cpu_s_per_gib"] = s(lambda r, p=proc: r["cpu_s_per_gib"][p])
    print(json.dumps(summary, indent=1))
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        json.dump({"rows": rows, "summary": summary, "mem_mib": a.mem, "multifd": a.multifd, "rtt_ms": a.rtt,
                   "rate_mbit": a.rate if a.rtt is not None else None}, open(os.path.join(a.out, "ab.json"), "w"),
                  indent=1)
    return 0 if all(summary[n]["runs"] == a.reps for n in builds) else 1


if __name__ == "__main__":
    sys.exit(main())
