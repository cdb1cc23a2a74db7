#!/usr/bin/env python3
"""A/B of two encmig builds in one run: the same migration, interleaved,
medians and spread of the total time and of each encmigd's CPU-seconds per
GiB (from /proc). For a change to the relay, build the tree before it
somewhere else (git worktree add, meson setup, ninja tools/encmig
tools/encmigd) and compare:

    python3 bench/ab.py --before /tmp/old/build --after build [--reps 5] [--mem 1024] [--multifd N] [--out DIR]

Loopback, a paused random-filled guest, encmigd confined as its unit; the
first run on the fresh tmpfs is discarded (huge pages)."""
import argparse, json, os, statistics, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402
from lib import Bench, Loopback, contender, migrate_once  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--mem", type=int, default=1024)
    ap.add_argument("--multifd", type=int, default=0)
    ap.add_argument("--out")
    a = ap.parse_args()
    builds = {"before": os.path.abspath(a.before), "after": os.path.abspath(a.after)}
    c = contender("encmig", multifd=a.multifd)
    env, topo, rows = Bench(a.mem), Loopback(), []

    def use(b):
        lib.ENCMIG = os.path.join(b, "tools", "encmig")
        lib.ENCMIGD = os.path.join(b, "tools", "encmigd")
    try:
        use(builds["after"])
        print("warm-up", migrate_once(env, topo, c)["total_ms"], "ms, discarded", flush=True)
        for rep in range(a.reps):
            for name, b in builds.items():  # interleaved: drift hits both alike
                use(b)
                r = migrate_once(env, topo, c)
                r["build"] = name
                rows.append(r)
                print(f"{name:7} rep {rep}: ok={r['ok']} {r['total_ms']} ms  src-encmigd "
                      f"{r['cpu_s_per_gib'].get('src-encmigd')}  dst-encmigd {r['cpu_s_per_gib'].get('dst-encmigd')} CPU-s/GiB",
                      flush=True)
    finally:
        env.close()
    summary = {}
    for name in builds:
        rs = [r for r in rows if r["build"] == name and r["ok"]]

        def s(f):
            v = sorted(f(r) for r in rs)
            return {"median": statistics.median(v), "min": v[0], "max": v[-1]} if v else None
        summary[name] = {"build": builds[name], "runs": len(rs), "total_ms": s(lambda r: r["total_ms"]),
                         "src_encmigd_cpu_s_per_gib": s(lambda r: r["cpu_s_per_gib"]["src-encmigd"]),
                         "dst_encmigd_cpu_s_per_gib": s(lambda r: r["cpu_s_per_gib"]["dst-encmigd"])}
    print(json.dumps(summary, indent=1))
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        json.dump({"rows": rows, "summary": summary, "mem_mib": a.mem, "multifd": a.multifd}, open(os.path.join(a.out, "ab.json"), "w"),
                  indent=1)
    return 0 if all(summary[n]["runs"] == a.reps for n in builds) else 1


if __name__ == "__main__":
    sys.exit(main())
