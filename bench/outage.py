#!/usr/bin/env python3
"""Migration time with a network outage in the middle (protocol 2).

    python3 bench/outage.py [--quick] [--outage S] [--out DIR]

For each link (a veth pair shaped to 1 Gb/s, and bench/wanem at 150 ms RTT
and 1 Gb/s) and each contender (plain QEMU over TCP, encmig), the same paused
random-filled guest migrates without an outage and with one: `--outage`
seconds (default 5) of TCP resets on the destination's port, starting at half
the contender's own median time without an outage. encmig pauses and resumes.
Plain QEMU fails; the controller retries at once, again and again (each try
refused while the outage lasts), with a fresh destination QEMU, as an
operator's script would: its time is the time to complete including restarts.

Reports medians of --reps runs (interleaved), the time added by the outage,
and the target: encmig with an outage <= encmig without + outage + 1 s.
Writes OUT/outage.md and OUT/outage.json (OUT: bench/results/outage)."""
import argparse, json, os, statistics, subprocess, sys, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from lib import ENCMIG, Bench, Qmp, Veth, Wan, _free_port, files_equal  # noqa: E402


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def encmig_try(env, topo, src, dst, daemons):
    argv = [ENCMIG, "migrate", "--json", "--src-qmp", src["qmp"], "--dst-qmp", dst["qmp"], "--run-dir", env.dir,
            "--src-encmigd", daemons[0]["ctl"], "--dst-encmigd", daemons[1]["ctl"], "--encrypted=required",
            "--dst-addr", f"{topo.addr['dst']}:{daemons[1]['port']}"]
    cp = subprocess.run(argv, capture_output=True, text=True)
    res = json.loads(cp.stdout or "{}")
    resumes = res.get("source-encmigd", {}).get("resumes", 0)
    return res.get("result") == "completed", res.get("error", cp.stderr[-200:]), resumes


def plain_try(topo, sq, dst):
    dq = Qmp(dst["qmp"])
    port = _free_port(topo.addr["dst"], topo.prefix("dst"))
    for q in (sq, dq):
        q.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
    uri = f"tcp:{topo.addr['dst']}:{port}"
    dq.cmd("migrate-incoming", uri=uri)
    sq.cmd("migrate", uri=uri)
    while True:
        st = sq.cmd("query-migrate").get("status")
        if st in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.02)
    if st == "completed":
        for _ in range(3000):  # the destination finishes loading after the source
            if dq.cmd("query-status")["status"] != "inmigrate":
                break
            time.sleep(0.02)
    dq.close()
    return st == "completed", st


def one(env, topo, kind, outage_at, outage_s):
    """One migration, with an outage at outage_at seconds (None: none).
    Returns (seconds to complete, tries, resumes)."""
    src = env.guest(topo, "src", "src", incoming=False)
    sq = Qmp(src["qmp"])
    sq.cmd("stop")
    daemons = [env.bench_daemon(topo, "src", "src-d"), env.bench_daemon(topo, "dst", "dst-d")] if kind == "encmig" else []
    cutter = None
    if outage_at is not None:
        def cut():
            time.sleep(outage_at)
            topo.reset_port(daemons[1]["port"] if daemons else 0) if daemons else topo.nft(
                "dst", "chain input { type filter hook input priority 0; tcp dport 20000-40000 reject with tcp reset; }")
            time.sleep(outage_s)
            topo.heal()
        cutter = threading.Thread(target=cut)
    tries, resumes, n = 0, 0, 0
    t0 = time.time()
    if cutter:
        cutter.start()
    while True:
        tries += 1
        dst = env.guest(topo, "dst", f"dst{n}", incoming=True)
        n += 1
        if kind == "encmig":
            sq.close()
            ok, err, resumes = encmig_try(env, topo, src, dst, daemons)
            sq = Qmp(src["qmp"])
        else:
            ok, err = plain_try(topo, sq, dst)
        if ok:
            break
        if tries == 1:
            log(f"{kind}: try 1 failed: {err}")
        env.stop(dst["proc"])
        if tries > 200 or time.time() - t0 > 600 or (kind == "encmig" and "paused due to previous" in str(err)):
            raise RuntimeError(f"{kind}: no success after {tries} tries: {err}")
        time.sleep(0.2)  # the controller notices and tries again
    secs = time.time() - t0
    if cutter:
        cutter.join()
    sq.close()
    assert files_equal(src["mem"], dst["mem"]), "destination RAM differs"
    for p in [d["proc"] for d in daemons] + [dst["proc"], src["proc"]]:
        env.stop(p)
    return secs, tries, resumes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--outage", type=float, default=5.0)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "outage"))
    a = ap.parse_args()
    reps = a.reps or (1 if a.quick else 3)
    mem = 256 if a.quick else 1024
    links = [("veth-1g", lambda: Veth(1.0, tag="x"))] if a.quick else \
        [("veth-1g", lambda: Veth(1.0, tag="x")), ("wan-150ms", lambda: Wan(150, 1000, tag="y"))]
    rows = []
    t_start = time.time()
    for name, make in links:
        topo = make()
        env = Bench(mem)
        try:
            one(env, topo, "encmig", None, 0)  # warm-up on the fresh tmpfs, discarded
            base = {}
            for rep in range(reps):
                for kind in ("plain", "encmig"):
                    s, _, _ = one(env, topo, kind, None, 0)
                    base.setdefault(kind, []).append(s)
                    rows.append({"link": name, "kind": kind, "outage": 0, "rep": rep, "seconds": s, "tries": 1})
                    log(f"{name:10} {kind:7} no outage        {s:6.2f} s")
            for rep in range(reps):
                for kind in ("plain", "encmig"):
                    at = statistics.median(base[kind]) / 2
                    s, tries, resumes = one(env, topo, kind, at, a.outage)
                    rows.append({"link": name, "kind": kind, "outage": a.outage, "outage_at": at, "rep": rep,
                                 "seconds": s, "tries": tries, "resumes": resumes})
                    log(f"{name:10} {kind:7} {a.outage:.0f} s outage at {at:4.1f} s {s:6.2f} s  tries {tries}  resumes {resumes}")
        finally:
            env.close()
            topo.close()
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "outage.json"), "w") as f:
        json.dump(rows, f, indent=1)
    L = [f"# Migration with a {a.outage:.0f} s outage in the middle\n",
         f"`python3 bench/outage.py{' --quick' if a.quick else ''}`: {mem} MiB paused random guest, medians of {reps} "
         f"run(s), {time.strftime('%Y-%m-%d')}, {int(time.time() - t_start)} s in all. The outage: every packet to the "
         "destination's port answered with a TCP reset, from half the contender's own median time. Plain QEMU fails "
         "and is retried at once until it completes (a fresh destination QEMU each time); encmig pauses and resumes.\n",
         "| link | contender | without outage (s) | with outage (s) | added (s) | tries | resumes | target: added <= outage + 1 s |",
         "|---|---|---|---|---|---|---|---|"]
    for name, _ in links:
        for kind in ("plain", "encmig"):
            b = statistics.median(r["seconds"] for r in rows if r["link"] == name and r["kind"] == kind and not r["outage"])
            w = [r for r in rows if r["link"] == name and r["kind"] == kind and r["outage"]]
            m = statistics.median(r["seconds"] for r in w)
            tries = statistics.median(r["tries"] for r in w)
            res = statistics.median(r.get("resumes", 0) for r in w)
            target = ("met" if m - b <= a.outage + 1 else "MISSED") if kind == "encmig" else "n/a"
            L.append(f"| {name} | {kind} | {b:.2f} | {m:.2f} | {m - b:.2f} | {tries:.0f} | {res:.0f} | {target} |")
    open(os.path.join(a.out, "outage.md"), "w").write("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()
