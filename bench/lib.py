"""Building blocks for the benchmark suite (bench/suite.py): network
topologies (loopback, veth with tbf, a TUN-based WAN emulator), contenders
(plain QEMU TCP, QEMU TLS x509/PSK, encmig), and one measured migration with
CPU-seconds per process and a byte-for-byte RAM check.

Every process started here is stopped by PID in close() (also run from
atexit and SIGTERM by tests/integration/harness.Env)."""
import json, os, shutil, socket, subprocess, sys, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from harness import BUILD, ENCMIG, ENCMIGD, MIB, UNIT, Env, Qmp, files_equal, qemu_argv, wait_for  # noqa: E402
from unit_confinement import unit_prefix  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
GIB = 1 << 30
# GnuTLS's NORMAL without ChaCha20: it then negotiates AES-256-GCM (its first
# choice). QEMU appends the PSK key exchanges itself for PSK credentials.
PRIORITY_AES_GCM = "NORMAL:-CHACHA20-POLY1305"


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def sh(*argv, check=True):
    return subprocess.run(list(argv), check=check, capture_output=True, text=True)


# ---------------------------------------------------------------- topologies

# Loopback, Veth and Wan live with the tests (tests/integration/netns.py).
from netns import Loopback, Veth, Wan  # noqa: E402,F401


# ---------------------------------------------------------------- contenders

def contender(kind, multifd=0, priority=None, engine=None):
    """engine: pin encmigd's AES-256-GCM engine (--aead-engine); None = its
    own choice (the fastest that passes its known answers)."""
    label = {"plain": "plain TCP", "relay": "plain TCP via a copy relay", "tls-x509": "QEMU TLS x509",
             "tls-psk": "QEMU TLS PSK", "encmig": "encmig"}[kind]
    if kind.startswith("tls"):
        label += " AES-GCM" if priority == "aes-gcm" else " default priority"
    if engine:
        label += f" ({engine})"
    label += f", multifd {multifd}" if multifd else ", 1 stream"
    return {"kind": kind, "multifd": multifd, "priority": priority, "engine": engine, "label": label}


def make_tls_material(d):
    """x509 CA + server/client certs (certtool) and a PSK keys file."""
    os.makedirs(d, exist_ok=True)
    def certtool(*a):
        subprocess.run(["certtool", *a], check=True, capture_output=True)
    x = os.path.join(d, "x509")
    os.makedirs(x, exist_ok=True)
    open(f"{x}/ca.info", "w").write("cn = encmig bench CA\nca\ncert_signing_key\nexpiration_days = 2\n")
    certtool("--generate-privkey", "--outfile", f"{x}/ca-key.pem")
    certtool("--generate-self-signed", "--load-privkey", f"{x}/ca-key.pem", "--template", f"{x}/ca.info",
             "--outfile", f"{x}/ca-cert.pem")
    for role in ("server", "client"):
        open(f"{x}/{role}.info", "w").write(
            f"cn = encmig-bench\ndns_name = encmig-bench\ntls_www_{role}\nencryption_key\nsigning_key\n"
            "expiration_days = 2\n")
        certtool("--generate-privkey", "--outfile", f"{x}/{role}-key.pem")
        certtool("--generate-certificate", "--load-privkey", f"{x}/{role}-key.pem", "--load-ca-certificate",
                 f"{x}/ca-cert.pem", "--load-ca-privkey", f"{x}/ca-key.pem", "--template", f"{x}/{role}.info",
                 "--outfile", f"{x}/{role}-cert.pem")
    p = os.path.join(d, "psk")
    os.makedirs(p, exist_ok=True)
    open(f"{p}/keys.psk", "w").write("bench:" + os.urandom(32).hex() + "\n")
    return {"x509": x, "psk": p}


# ---------------------------------------------------------------- guests

class SerialWatch:
    """Timestamps the guest's serial lines as they appear (host clock)."""
    def __init__(self, path):
        self.path, self.lines, self.stop = path, [], False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        pos, part = 0, ""
        while not self.stop:
            try:
                with open(self.path, errors="replace") as f:
                    f.seek(pos)
                    data = f.read()
                    pos = f.tell()
            except FileNotFoundError:
                data = ""
            if data:
                now = time.time()
                chunks = (part + data).split("\n")
                part = chunks.pop()
                self.lines += [(now, c) for c in chunks]
            time.sleep(0.02)

    def close(self):
        self.stop = True
        self.t.join()

    def rates(self):
        """(time, rounds per second) from the guest's "rate N" lines."""
        out = [(t, int(l[5:])) for t, l in self.lines if l.startswith("rate ") and l[5:].isdigit()]
        return out[1:]  # the first covers a partial second


class Bench(Env):
    """harness.Env with guests placed in a topology, a template RAM image, and
    daemons bound to the topology's addresses."""
    def __init__(self, mem_mib):
        super().__init__(mem_mib)
        self.template = os.path.join(self.memdir, "template.mem")
        with open(self.template, "wb") as f:
            left = mem_mib * MIB
            while left:
                n = min(left, 16 * MIB)
                f.write(os.urandom(n))
                left -= n
        self.tls = make_tls_material(self.path("tls"))

    def guest(self, topo, side, name, incoming):
        mem = os.path.join(self.memdir, name + ".mem")
        if not incoming:
            shutil.copyfile(self.template, mem)
        qmp, serial, obs = self.path(name + ".qmp"), self.path(name + ".serial"), self.path(name + ".obs.qmp")
        for p in (qmp, serial, obs):
            if os.path.exists(p):
                os.unlink(p)
        argv = topo.prefix(side) + qemu_argv(self.mem_mib, mem, [qmp, obs], serial, incoming)
        p = self.spawn(argv, self.path(name + ".qemu.log"))
        vm = {"name": name, "proc": p, "qmp": qmp, "mem": mem, "serial": serial}
        Qmp(qmp).close()
        # A second monitor that only watches: MIGRATION and STOP events carry
        # host timestamps, for end-to-end times the same for every contender.
        vm["obs"] = Qmp(obs)
        vm["obs"].cmd("migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}])
        return vm

    def bench_daemon(self, topo, side, name, extra=()):
        ctl = self.path(name + ".sock")
        if os.path.exists(ctl):
            os.unlink(ctl)
        # Confined exactly as the shipped systemd unit confines it.
        p = self.spawn(topo.prefix(side) + unit_prefix(UNIT) + [ENCMIGD, "--control", ctl, "--listen", f"{topo.addr[side]}:0",
                                            "--libvirt", "none", "--run-dir", self.dir, *extra],
                       self.path(name + ".log"))
        q = Qmp(ctl)
        port = q.cmd("query-encmig-capabilities")["data-port"]
        q.close()
        return {"name": name, "proc": p, "ctl": ctl, "port": port}


def _free_port(addr, prefix):
    if not prefix:
        s = socket.socket()
        s.bind((addr, 0))
        port = s.getsockname()[1]
        s.close()
        return port
    # A fresh namespace of our own: any port is free; vary it between runs.
    return 20000 + int(time.time() * 1000) % 20000


def _tls_setup(sq, dq, c, tls):
    kind = c["kind"]
    qom = "tls-creds-x509" if kind == "tls-x509" else "tls-creds-psk"
    d = tls["x509"] if kind == "tls-x509" else tls["psk"]
    extra = {"priority": PRIORITY_AES_GCM} if c["priority"] == "aes-gcm" else {}
    server = {"qom-type": qom, "id": "tls0", "dir": d, "endpoint": "server", **extra}
    client = {"qom-type": qom, "id": "tls0", "dir": d, "endpoint": "client", **extra}
    if kind == "tls-x509":
        server["verify-peer"] = False
    else:
        client["username"] = "bench"
    dq.cmd("object-add", **server)
    sq.cmd("object-add", **client)
    for q in (sq, dq):
        q.cmd("migrate-set-parameters", **{"tls-creds": "tls0"})
    if kind == "tls-x509":
        sq.cmd("migrate-set-parameters", **{"tls-hostname": "encmig-bench"})


def _event_time(q, status):
    for e in q.events:
        if e["event"] == "MIGRATION" and e["data"]["status"] == status:
            return e["timestamp"]["seconds"] + e["timestamp"]["microseconds"] / 1e6
    return None


def end_to_end(sobs, dobs, m):
    """Times measured the same way for every contender, from QEMU's own event
    timestamps: from the source's 'setup' to the destination's 'completed'
    (the migration is over only when the destination has loaded everything),
    and downtime as the source's own figure plus the time the destination
    still needed after the source finished (data buffered on the way)."""
    deadline = time.time() + 120
    while True:
        sobs.cmd("query-status")
        dobs.cmd("query-status")
        t_setup, t_src_done = _event_time(sobs, "setup"), _event_time(sobs, "completed")
        t_dst_done = _event_time(dobs, "completed")
        if t_setup and t_src_done and t_dst_done:
            break
        if time.time() > deadline:
            return None
        time.sleep(0.02)
    drain = max(0.0, t_dst_done - t_src_done) * 1000
    return {"qemu_total_ms": m["total_ms"], "qemu_downtime_ms": m["downtime_ms"],
            "total_ms": round((t_dst_done - t_setup) * 1000), "downtime_ms": round((m["downtime_ms"] or 0) + drain),
            "drain_ms": round(drain)}


RELAY = os.path.join(BUILD, "bench", "relay")


def _start_relays(env, topo):
    """bench/relay on each side: source QEMU -> unix -> relay -> TCP -> relay
    -> unix -> destination QEMU; no encryption (the floor of any relay)."""
    src_sock, dst_sock = env.path("relay-src.sock"), env.path("relay-dst-in.sock")
    port = _free_port(topo.addr["dst"], topo.prefix("dst"))
    logs = {side: env.path(f"relay-{side}.log") for side in ("src", "dst")}
    for f in logs.values():
        if os.path.exists(f):
            os.unlink(f)
    dst = env.spawn(topo.prefix("dst") + [RELAY, "--listen-tcp", f"{topo.addr['dst']}:{port}", "--connect-unix", dst_sock],
                    logs["dst"])
    src = env.spawn(topo.prefix("src") + [RELAY, "--listen-unix", src_sock, "--connect-tcp", f"{topo.addr['dst']}:{port}"],
                    logs["src"])
    for f in logs.values():
        wait_for(lambda f=f: os.path.exists(f) and "ready" in open(f).read(), 10, "relay did not start")
    return {"src": src, "dst": dst, "src_sock": src_sock, "dst_sock": dst_sock}


def migrate_once(env, topo, c, guest="paused", watch=False, settle_s=0.0, after_s=0.0):
    """One measured migration of a fresh copy of the template guest."""
    src = env.guest(topo, "src", "src", incoming=False)
    dst = env.guest(topo, "dst", "dst", incoming=True)
    sq = Qmp(src["qmp"])
    if guest == "paused":
        sq.cmd("stop")
    else:
        wait_for(lambda: os.path.exists(src["serial"]) and os.path.getsize(src["serial"]) > 0, 30, "guest never ran")
    watches = [SerialWatch(src["serial"]), SerialWatch(dst["serial"])] if watch else []
    time.sleep(settle_s)
    daemons = []
    if c["kind"] == "encmig":
        extra = ["--aead-engine", c["engine"]] if c.get("engine") else []
        daemons = [env.bench_daemon(topo, "src", "src-d", extra), env.bench_daemon(topo, "dst", "dst-d", extra)]
    pids = {"src-qemu": src["proc"].pid, "dst-qemu": dst["proc"].pid}
    for d, n in zip(daemons, ("src-encmigd", "dst-encmigd")):
        pids[n] = d["proc"].pid
    relays = _start_relays(env, topo) if c["kind"] == "relay" else None
    if relays:
        pids.update({"src-relay": relays["src"].pid, "dst-relay": relays["dst"].pid})
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    t_start = time.time()
    err = None
    if c["kind"] == "encmig":
        sq.close()
        argv = [ENCMIG, "migrate", "--json", "--src-qmp", src["qmp"], "--dst-qmp", dst["qmp"], "--run-dir", env.dir,
                "--src-encmigd", daemons[0]["ctl"], "--dst-encmigd", daemons[1]["ctl"], "--encrypted=required",
                "--dst-addr", f"{topo.addr['dst']}:{daemons[1]['port']}"]
        if c["multifd"]:
            argv += ["--parallel", "--parallel-connections", str(c["multifd"])]
        cp = subprocess.run(argv, capture_output=True, text=True)
        res = json.loads(cp.stdout or "{}")
        ok = res.get("result") == "completed" and res.get("encrypted") is True
        if not ok:
            err = res.get("error") or cp.stderr[-300:]
        m = {"total_ms": res.get("total-time-ms"), "downtime_ms": res.get("downtime-ms"),
             "setup_ms": res.get("setup-time-ms"), "bytes": res.get("bytes", 0)}
    else:
        dq = Qmp(dst["qmp"])
        port = _free_port(topo.addr["dst"], topo.prefix("dst"))
        for q in (sq, dq):
            q.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
            if c["multifd"]:
                q.cmd("migrate-set-capabilities", capabilities=[{"capability": "multifd", "state": True}])
                q.cmd("migrate-set-parameters", **{"multifd-channels": c["multifd"]})
        if c["kind"].startswith("tls"):
            _tls_setup(sq, dq, c, env.tls)
        uri = f"tcp:{topo.addr['dst']}:{port}"
        if relays:
            dq.cmd("migrate-incoming", uri=f"unix:{relays['dst_sock']}")
            sq.cmd("migrate", uri=f"unix:{relays['src_sock']}")
        else:
            dq.cmd("migrate-incoming", uri=uri)
            sq.cmd("migrate", uri=uri)
        while True:
            q = sq.cmd("query-migrate")
            if q.get("status") in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.02)
        ok = q.get("status") == "completed"
        for _ in range(100):  # QEMU 7.2 says "completed" a moment before it fills in the times
            if not ok or q.get("total-time"):
                break
            time.sleep(0.01)
            q = sq.cmd("query-migrate")
        if not ok:
            err = q.get("error-desc", q.get("status"))
        for _ in range(1200):  # the destination finishes loading after the source says completed
            if dq.cmd("query-status")["status"] != "inmigrate":
                break
            time.sleep(0.02)
        dq.close()
        sq.close()
        m = {"total_ms": q.get("total-time"), "downtime_ms": q.get("downtime"), "setup_ms": q.get("setup-time"),
             "bytes": q.get("ram", {}).get("transferred", 0)}
    t_end = time.time()
    after = {k: cpu_seconds(p) for k, p in pids.items()}
    if ok:
        e2e = end_to_end(src["obs"], dst["obs"], m)
        if e2e is None:
            ok, err = False, "no MIGRATION events from QEMU"
        else:
            m.update(e2e)
    identical = ok and files_equal(src["mem"], dst["mem"])
    t_resume = None
    if watch and ok:
        dq = Qmp(dst["qmp"])
        dq.cmd("cont")
        dq.close()
        t_resume = time.time()
        time.sleep(after_s)
    for w in watches:
        w.close()
    for vm in (src, dst):
        vm["obs"].close()
    for p in [src["proc"], dst["proc"]] + [d["proc"] for d in daemons] + ([relays["src"], relays["dst"]] if relays else []):
        env.stop(p)
    for f in (src["mem"], dst["mem"]):
        if os.path.exists(f):
            os.unlink(f)
    gib = (m["bytes"] or 0) / GIB
    cpu = {k: round(after[k] - before[k], 3) for k in pids}
    row = {"contender": c["label"], "kind": c["kind"], "multifd": c["multifd"], "priority": c["priority"], "engine": c.get("engine"),
           "topology": topo.name, "guest": guest, "mem_mib": env.mem_mib, "ok": bool(ok and identical),
           "identical": identical, "error": err if not ok else (None if identical else "RAM differs"),
           "total_ms": m["total_ms"], "downtime_ms": m["downtime_ms"], "setup_ms": m["setup_ms"],
           "qemu_total_ms": m.get("qemu_total_ms"), "qemu_downtime_ms": m.get("qemu_downtime_ms"),
           "drain_ms": m.get("drain_ms"),
           "bytes": m["bytes"], "mb_per_s": (m["bytes"] / (m["total_ms"] / 1000) / 1e6) if ok and m["total_ms"] else 0,
           "cpu_s": cpu, "cpu_s_per_gib": {k: round(v / gib, 3) for k, v in cpu.items()} if gib else {}}
    if watch:
        row["timeline"] = {"start": t_start, "end": t_end, "resume": t_resume,
                           "src": watches[0].rates(), "dst": watches[1].rates()}
    return row
