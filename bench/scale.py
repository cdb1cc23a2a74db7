#!/usr/bin/env python3
"""Many streams, many cores: encmig with 1 stream and with N multifd
channels, interleaved, on loopback (a paused random-filled guest, encmigd
confined as its unit, the first run on the fresh tmpfs discarded). For each
setting: the time, CPU-seconds per GiB of each encmigd (from /proc), and,
when perf is installed, each encmigd's futex calls (a contended lock or a
condition variable's wait or wake) and context switches per GiB:

    python3 bench/scale.py [--channels 0 1 2 4 8 16] [--reps 3] [--mem 1024] [--out DIR]

Channel count 0 is the single main stream. CPU per GiB flat from 1 to 16
channels means nothing on the data path is shared across streams."""
import argparse, json, os, shutil, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import GIB, Bench, Loopback, contender, migrate_once  # noqa: E402

PERF = shutil.which("perf")
EVENTS = ["syscalls:sys_enter_futex", "context-switches"]


class CountingBench(Bench):
    """Bench whose daemons are counted by perf stat while they live."""
    def __init__(self, mem):
        super().__init__(mem)
        self.stats = []

    def bench_daemon(self, topo, side, name, extra=()):
        d = super().bench_daemon(topo, side, name, extra)
        if PERF:
            out = self.path(f"{name}.perf.{len(self.stats)}")
            p = subprocess.Popen([PERF, "stat", "-x,", "-e", ",".join(EVENTS), "-p", str(d["proc"].pid), "-o", out],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.track(p)
            self.stats.append((name, p, out))
            time.sleep(0.2)  # perf attached before the migration starts
        return d

    def collect(self):
        """Counts of the daemons of the last migration (perf ends with them)."""
        got = {}
        for name, p, out in self.stats:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.terminate()
                p.wait()
            counts = {}
            try:
                for line in open(out):
                    f = line.strip().split(",")
                    if len(f) > 2 and f[2] in EVENTS and f[0].replace(".", "").isdigit():
                        counts[f[2]] = float(f[0])
            except FileNotFoundError:
                pass
            got[name] = counts
        self.stats = []
        return got

    def track(self, p):
        # Stopped by PID with everything else this Env started.
        if hasattr(self, "procs"):
            self.procs.append(p)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--channels", type=int, nargs="*", default=[0, 1, 2, 4, 8, 16])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--mem", type=int, default=1024)
    ap.add_argument("--out")
    a = ap.parse_args()
    env, topo, rows = CountingBench(a.mem), Loopback(), []
    try:
        print("warm-up", migrate_once(env, topo, contender("encmig"))["total_ms"], "ms, discarded", flush=True)
        env.collect()
        for rep in range(a.reps):
            for n in a.channels:  # interleaved: drift hits all alike
                r = migrate_once(env, topo, contender("encmig", multifd=n))
                counts = env.collect()
                gib = (r["bytes"] or 0) / GIB
                r["channels"] = n
                r["per_gib"] = {f"{d}-encmigd {e}": round(c / gib) for d, ev in
                                (("src", counts.get("src-d", {})), ("dst", counts.get("dst-d", {})))
                                for e, c in ev.items()} if gib else {}
                rows.append(r)
                print(f"channels {n:2} rep {rep}: ok={r['ok']} {r['total_ms']} ms  src-encmigd "
                      f"{r['cpu_s_per_gib'].get('src-encmigd')}  dst-encmigd {r['cpu_s_per_gib'].get('dst-encmigd')} "
                      f"CPU-s/GiB  {r['per_gib']}", flush=True)
    finally:
        env.close()
    summary = {}
    for n in a.channels:
        rs = [r for r in rows if r["channels"] == n and r["ok"]]

        def s(f):
            v = sorted(f(r) for r in rs)
            return {"median": statistics.median(v), "min": v[0], "max": v[-1]} if v else None
        summary[n] = {"runs": len(rs), "total_ms": s(lambda r: r["total_ms"]),
                      "src_encmigd_cpu_s_per_gib": s(lambda r: r["cpu_s_per_gib"]["src-encmigd"]),
                      "dst_encmigd_cpu_s_per_gib": s(lambda r: r["cpu_s_per_gib"]["dst-encmigd"])}
        for k in sorted({k for r in rs for k in r["per_gib"]}):
            summary[n][k + " per GiB"] = s(lambda r, k=k: r["per_gib"].get(k, 0))
    print(json.dumps(summary, indent=1))
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        json.dump({"rows": rows, "summary": summary, "mem_mib": a.mem}, open(os.path.join(a.out, "scale.json"), "w"),
                  indent=1)
    return 0 if all(summary[n]["runs"] == a.reps for n in a.channels) else 1


if __name__ == "__main__":
    sys.exit(main())
