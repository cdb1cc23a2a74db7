#!/usr/bin/env python3
"""Side-by-side migration benchmark on loopback: plain QEMU TCP, QEMU TLS
(x509) and encmig, on the same random-filled guest, with CPU-seconds per
process. Every run's RAM is compared byte for byte; a mismatch is a failure.

Usage: bench/compare.py [--mem-mib N] [--reps N] [--multifd N] [--json FILE]
Needs root (huge-page tmpfs). Build first: meson setup build && ninja -C build."""
import argparse, json, os, socket, statistics, subprocess, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
from harness import ENCMIG, Env, Qmp, files_equal  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def make_certs(d):
    os.makedirs(d, exist_ok=True)
    def certtool(*a):
        subprocess.run(["certtool", *a], check=True, capture_output=True)
    open(f"{d}/ca.info", "w").write("cn = encmig bench CA\nca\ncert_signing_key\nexpiration_days = 2\n")
    certtool("--generate-privkey", "--outfile", f"{d}/ca-key.pem")
    certtool("--generate-self-signed", "--load-privkey", f"{d}/ca-key.pem", "--template", f"{d}/ca.info", "--outfile", f"{d}/ca-cert.pem")
    for role in ("server", "client"):
        open(f"{d}/{role}.info", "w").write(
            f"cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\ntls_www_{role}\nencryption_key\nsigning_key\nexpiration_days = 2\n")
        certtool("--generate-privkey", "--outfile", f"{d}/{role}-key.pem")
        certtool("--generate-certificate", "--load-privkey", f"{d}/{role}-key.pem", "--load-ca-certificate",
                 f"{d}/ca-cert.pem", "--load-ca-privkey", f"{d}/ca-key.pem", "--template", f"{d}/{role}.info",
                 "--outfile", f"{d}/{role}-cert.pem")


def one_run(env, kind, multifd, certs):
    src = env.qemu("src")
    dst = env.qemu("dst", incoming=True, fill=False)
    sq = Qmp(src["qmp"])
    sq.cmd("stop")  # a paused guest: pure transport throughput
    daemons = []
    if kind == "encmig":
        daemons = [env.daemon("src-d"), env.daemon("dst-d")]
    pids = {"src-qemu": src["proc"].pid, "dst-qemu": dst["proc"].pid}
    for d, n in zip(daemons, ("src-encmigd", "dst-encmigd")):
        pids[n] = d["proc"].pid
    before = {k: cpu(p) for k, p in pids.items()}
    t0 = time.time()
    if kind == "encmig":
        sq.close()
        argv = [ENCMIG, "migrate", "--json", "--src-qmp", src["qmp"], "--dst-qmp", dst["qmp"], "--run-dir", env.dir,
                "--src-encmigd", daemons[0]["ctl"], "--dst-encmigd", daemons[1]["ctl"], "--encrypted=required"]
        if multifd:
            argv += ["--parallel", "--parallel-connections", str(multifd)]
        cp = subprocess.run(argv, capture_output=True)
        res = json.loads(cp.stdout or "{}")
        if res.get("result") != "completed":
            print("encmig failed:", res.get("error"), cp.stderr.decode()[-500:], file=sys.stderr)
        ok = res.get("result") == "completed"
        q = {"total-time": res.get("total-time-ms"), "downtime": res.get("downtime-ms"), "ram": {"transferred": res.get("bytes", 0)}}
    else:
        dq = Qmp(dst["qmp"])
        port = free_port()
        for q_ in (sq, dq):
            q_.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
            if multifd:
                q_.cmd("migrate-set-capabilities", capabilities=[{"capability": "multifd", "state": True}])
                q_.cmd("migrate-set-parameters", **{"multifd-channels": multifd})
        if kind == "tls":
            dq.cmd("object-add", **{"qom-type": "tls-creds-x509", "id": "tls0", "dir": certs, "endpoint": "server", "verify-peer": False})
            sq.cmd("object-add", **{"qom-type": "tls-creds-x509", "id": "tls0", "dir": certs, "endpoint": "client"})
            for q_ in (sq, dq):
                q_.cmd("migrate-set-parameters", **{"tls-creds": "tls0"})
            sq.cmd("migrate-set-parameters", **{"tls-hostname": "localhost"})
        dq.cmd("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
        sq.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        while True:
            q = sq.cmd("query-migrate")
            if q.get("status") in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.05)
        ok = q.get("status") == "completed"
        # wait for the destination to finish loading
        for _ in range(600):
            if dq.cmd("query-status")["status"] != "inmigrate":
                break
            time.sleep(0.05)
        dq.close()
        sq.close()
    after = {k: cpu(p) for k, p in pids.items()}
    identical = ok and files_equal(src["mem"], dst["mem"])
    for p in [src["proc"], dst["proc"]] + [d["proc"] for d in daemons]:
        env.stop(p)
    os.unlink(src["mem"])
    os.unlink(dst["mem"])
    gib = q["ram"]["transferred"] / (1 << 30) if ok else 0
    return {"contender": kind, "multifd": multifd, "ok": ok, "identical": identical,
            "total_ms": q.get("total-time"), "downtime_ms": q.get("downtime"), "bytes": q["ram"]["transferred"] if ok else 0,
            "mb_per_s": (q["ram"]["transferred"] / (q["total-time"] / 1000) / 1e6) if ok else 0,
            "cpu_s": {k: round(after[k] - before[k], 2) for k in pids},
            "cpu_s_per_gib": {k: round((after[k] - before[k]) / gib, 2) for k in pids} if gib else {},
            "wall_s": round(time.time() - t0, 2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mem-mib", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--multifd", type=int, nargs="*", default=[0])
    ap.add_argument("--contenders", nargs="*", default=["plain", "tls", "encmig"])
    ap.add_argument("--json")
    a = ap.parse_args()
    env = Env(a.mem_mib)
    rows = []
    try:
        certs = env.path("certs")
        make_certs(certs)
        for m in a.multifd:
            for rep in range(a.reps):
                for kind in a.contenders:  # interleaved, so drift hits all alike
                    r = one_run(env, kind, m, certs)
                    rows.append(r)
                    print(json.dumps(r), flush=True)
    finally:
        env.close()
    print("\n| contender | multifd | total ms | downtime ms | MB/s | src QEMU CPU-s | dst QEMU CPU-s | src encmigd CPU-s | dst encmigd CPU-s | RAM identical |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for m in a.multifd:
        for kind in a.contenders:
            rs = [r for r in rows if r["contender"] == kind and r["multifd"] == m and r["identical"]]
            if not rs:
                print(f"| {kind} | {m} | FAILED | | | | | | | no |")
                continue
            med = lambda f: statistics.median(f(r) for r in rs)
            c = lambda k: med(lambda r: r["cpu_s"].get(k, 0))
            print(f"| {kind} | {m} | {med(lambda r: r['total_ms']):.0f} | {med(lambda r: r['downtime_ms']):.0f} | "
                  f"{med(lambda r: r['mb_per_s']):.0f} | {c('src-qemu'):.2f} | {c('dst-qemu'):.2f} | "
                  f"{c('src-encmigd'):.2f} | {c('dst-encmigd'):.2f} | {len(rs)}/{len([r for r in rows if r['contender'] == kind and r['multifd'] == m])} |")
    if a.json:
        json.dump(rows, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
