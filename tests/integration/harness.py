"""Real QEMU + real encmigd test hosts on one machine.

Every process started here is stopped by PID in Env.close(), which runs from
a finally block, atexit and SIGTERM. Guest RAM lives on a private tmpfs with
huge=always, file-backed on both sides so it can be compared byte for byte.
"""
import atexit, json, os, signal, socket, subprocess, sys, tempfile, threading, time

BUILD = os.environ.get("ENCMIG_BUILD", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
# The installed package's programs, when ENCMIG_PREFIX names where it was unpacked.
PREFIX = os.environ.get("ENCMIG_PREFIX")
ENCMIGD = os.path.join(PREFIX, "usr/sbin/encmigd") if PREFIX else os.path.join(BUILD, "tools", "encmigd")
ENCMIG = os.path.join(PREFIX, "usr/bin/encmig") if PREFIX else os.path.join(BUILD, "tools", "encmig")
# The installed unit: /lib on Debian 12, /usr/lib from Debian 13 (merged /usr).
UNIT = next((u for u in (os.path.join(PREFIX, d, "systemd/system/encmigd.service") for d in ("lib", "usr/lib"))
             if os.path.exists(u)), None) if PREFIX else None
GUEST = os.path.join(BUILD, "tests", "dirty.elf")
MIB = 1 << 20
WORKSET = (16 * MIB, 32 * MIB)  # what the guest dirties (tests/guest/dirty.S)


def qemu_argv(mem_mib, mem, qmps, serial, incoming, machine="pc"):
    """The test guest under TCG, RAM file-backed on a huge-page tmpfs (align=2M)."""
    argv = ["qemu-system-x86_64", "-machine", f"{machine},accel=tcg,memory-backend=mem", "-m", f"{mem_mib}M",
            "-object", f"memory-backend-file,id=mem,size={mem_mib}M,mem-path={mem},share=on,align=2M",
            "-nodefaults", "-display", "none", "-kernel", GUEST, "-serial", f"file:{serial}"]
    for q in qmps:
        argv += ["-qmp", f"unix:{q},server=on,wait=off"]
    if incoming:
        argv += ["-incoming", "defer", "-S"]
    return argv


class Qmp:
    def __init__(self, path, timeout=30):
        deadline = time.time() + timeout
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        self.s.settimeout(timeout)
        self.f = self.s.makefile("rb")
        self.events = []
        json.loads(self.f.readline())
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        req = {"execute": name}
        if args:
            req["arguments"] = args
        self.s.sendall(json.dumps(req).encode())
        while True:
            line = self.f.readline()
            if not line:
                raise ConnectionError("monitor closed")
            msg = json.loads(line)
            if "event" in msg:
                self.events.append(msg)
                continue
            if "error" in msg:
                raise RuntimeError(f"{name}: {msg['error']['desc']}")
            return msg["return"]

    def close(self):
        self.f.close()  # the file object holds its own reference to the socket
        self.s.close()


class Env:
    def __init__(self, mem_mib=256, max_vms=6):
        self.mem_mib = mem_mib
        self.dir = tempfile.mkdtemp(prefix="encmig-test-")
        self.memdir = os.path.join(self.dir, "mem")
        os.makedirs(self.memdir)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"huge=always,size={max_vms * mem_mib + 64}M", "tmpfs", self.memdir], check=True)
        self.procs = []
        atexit.register(self.close)
        signal.signal(signal.SIGTERM, lambda *_: (self.close(), sys.exit(1)))

    def path(self, name):
        return os.path.join(self.dir, name)

    def spawn(self, argv, log):
        p = subprocess.Popen(argv, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        return p

    def daemon(self, name, extra=(), prefix=(), listen="127.0.0.1:0", encmigd=None):
        """prefix: e.g. ["ip", "netns", "exec", NS] to run it on another "host";
        encmigd: another build's daemon (a host of another release)."""
        ctl = self.path(name + ".sock")
        # Confined exactly as the shipped unit confines it.
        from unit_confinement import unit_prefix
        p = self.spawn(list(prefix) + unit_prefix(UNIT) + [encmigd or ENCMIGD, "--control", ctl, "--listen", listen, "--libvirt",
                                                           "none", "--run-dir", self.dir] + list(extra),
                       self.path(name + ".log"))
        q = Qmp(ctl)
        port = q.cmd("query-encmig-capabilities")["data-port"]
        q.close()
        return {"name": name, "proc": p, "ctl": ctl, "port": port, "log": self.path(name + ".log")}

    def qemu(self, name, incoming=False, fill=True, marker=None, marker_offset=100 * MIB, start=True, observer=False,
             prefix=(), machine="pc"):
        """start=False: a source QEMU that never ran (-S, runstate prelaunch).
        observer=True: a second monitor (vm["obs"], a path) for the test,
        while encmig holds the first. prefix: runs it on another host (a
        Debian 13 root, say); machine: a versioned machine type both QEMUs
        of a cross-release migration know."""
        mem = os.path.join(self.memdir, name + ".mem")
        if fill:
            # Random RAM, so QEMU cannot skip zero pages.
            with open(mem, "wb") as f:
                left = self.mem_mib * MIB
                while left:
                    n = min(left, 16 * MIB)
                    f.write(os.urandom(n))
                    left -= n
            if marker is not None:
                with open(mem, "r+b") as f:
                    f.seek(marker_offset)
                    f.write(marker)
        qmp = self.path(name + ".qmp")
        serial = self.path(name + ".serial")
        obs = self.path(name + ".obs.qmp")
        argv = qemu_argv(self.mem_mib, mem, [qmp] + ([obs] if observer else []), serial, incoming, machine) + \
            ([] if start or incoming else ["-S"])
        p = self.spawn(list(prefix) + argv, self.path(name + ".qemu.log"))
        vm = {"name": name, "proc": p, "qmp": qmp, "mem": mem, "serial": serial, "obs": obs if observer else None}
        if not incoming and start:
            wait_for(lambda: last_ops(serial) > 0, 30, f"{name} guest never ran")
        else:
            Qmp(qmp).close()
        return vm

    def migrate(self, src, dst, sd=None, dd=None, extra=(), timeout=300):
        argv = [ENCMIG, "migrate", "--json", "--src-qmp", src["qmp"], "--dst-qmp", dst["qmp"], "--run-dir", self.dir]
        if sd:
            argv += ["--src-encmigd", sd["ctl"]]
        if dd:
            argv += ["--dst-encmigd", dd["ctl"]]
        argv += list(extra)
        r = subprocess.run(argv, capture_output=True, timeout=timeout)
        try:
            out = json.loads(r.stdout)
        except ValueError:
            raise AssertionError(f"encmig printed no JSON (rc {r.returncode}): {r.stdout!r} {r.stderr!r}")
        out["_rc"] = r.returncode
        out["_stderr"] = r.stderr.decode(errors="replace")
        return out

    def stop(self, p, sig=signal.SIGTERM):
        stop_process(p, sig)

    def close(self):
        for p in reversed(self.procs):
            try:
                self.stop(p)
            except Exception:
                pass
        self.procs = []
        if os.path.ismount(self.memdir):
            subprocess.run(["umount", "-l", self.memdir])
        subprocess.run(["rm", "-rf", self.dir])


def stop_process(p, sig=signal.SIGTERM, group=False, grace=10):
    """Signals a process we started (or its whole session), then SIGKILLs it
    if it has not exited within `grace` seconds."""
    if p.poll() is not None:
        return
    kill = os.killpg if group else os.kill
    try:
        kill(p.pid, sig)
        p.wait(grace)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(what)


def ops_lines(text):
    """The guest's "ops N" counters from complete serial lines (the last line
    may still be half written)."""
    lines = text.split("\n")[:-1]
    return [int(l[4:]) for l in lines if l.startswith("ops ") and l[4:].isdigit()]


def last_ops(serial):
    try:
        ops = ops_lines(open(serial, errors="replace").read())
    except FileNotFoundError:
        return 0
    return ops[-1] if ops else 0


def status(vm):
    q = Qmp(vm["qmp"])
    try:
        return q.cmd("query-status")["status"]
    finally:
        q.close()


def files_equal(a, b):
    return subprocess.run(["cmp", "-s", a, b]).returncode == 0


def check_migrated(env, src, dst, res):
    """RAM identical byte for byte; the destination guest then runs on."""
    assert res["result"] == "completed", res
    assert res["destination-state"] == "paused", res
    assert files_equal(src["mem"], dst["mem"]), "destination RAM differs from source RAM"
    before = last_ops(src["serial"])
    q = Qmp(dst["qmp"])
    q.cmd("cont")
    q.close()
    wait_for(lambda: last_ops(dst["serial"]) > before, 30, "destination guest did not continue")


def snapshot_outside_workset(path):
    """Bytes of guest RAM the guest never writes (from 32 MiB up)."""
    with open(path, "rb") as f:
        f.seek(WORKSET[1])
        return f.read()


def run(cases):
    """Runs the case named on the command line (or all) and reports."""
    names = sys.argv[1:] or list(cases)
    failed = 0
    for n in names:
        t = time.time()
        try:
            cases[n]()
            print(f"PASS {n} ({time.time() - t:.1f}s)", flush=True)
        except Exception as e:
            failed += 1
            import traceback
            traceback.print_exc()
            print(f"FAIL {n}: {e}", flush=True)
    sys.exit(1 if failed else 0)
