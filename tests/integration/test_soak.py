#!/usr/bin/env python3
"""Soak: hundreds of encrypted migrations of one guest back and forth between
two long-lived encmigd daemons, with random faults, bounded in time.

One small running guest (32 MiB; SOAK_MEM_MIB) migrates A->B, B->A, ... in
QMP-direct mode, each time to a fresh incoming QEMU. Between the daemons, a
chaos man in the middle (tests/integration/chaos_proxy.py) resets, delays,
stalls or black-holes connections at random on about half the migrations. At
low rates a migration is also cancelled (SIGINT to `encmig migrate`), has its
destination QEMU SIGKILLed, or one of the daemons SIGKILLed (and restarted)
mid-way; a quarter use multifd 2. After every migration, whatever happened:

- both daemons answer query-stats with keys-held 0 and no migration open;
- a completed one has the destination's RAM identical byte for byte and the
  guest going on there (check_migrated), and the destination is the next source;
- one that did not complete was failed by a cancel or a kill: one that fails
  with only the man in the middle's faults (pauses, README "When the network
  breaks"), or with none, fails the soak at once; the source QEMU is still
  running and making progress, and the next migration starts from it (after
  two failures in a row, without faults; so does a last try, if the last
  one failed);
- no daemon logged a protocol error: a record that failed authentication,
  a counter or integrity check, or an acknowledgement that went backwards
  (the man in the middle never changes a byte: it only cuts, delays, holds,
  and drops before a reset);
- encmig ends within 5 s of a mid-way fault (FAULT_END_S), 180 s in all.

Flatness: each daemon's VmRSS, open fds and threads are sampled after its
first 10 migrations (after 2 s idle) and at the end (idle again), per daemon
instance: a restarted daemon starts a new instance, and daemons are killed
only in the first half of the run, so the instances that end it have had the
second half at least. Threads must come back within 2 and fds within 4 of the
baseline, RSS within 48 MiB and locked memory within 2 MiB (RSS_BOUND_KIB).

Usage: test_soak.py [soak-random-faults | soak-random-faults-long]
SOAK_SECONDS: how long to start new migrations (default 150 s and 1800 s);
SOAK_SEED: the seed of the random plan (printed at the start);
SOAK_FAULT_SCALE: multiplies the mid-way fault rates (default 1)."""
import collections, json, os, random, shutil, signal, subprocess, sys, time

from chaos_proxy import ChaosProxy
from harness import ENCMIG, Env, Qmp, check_migrated, last_ops, run, status, wait_for

MEM = int(os.environ.get("SOAK_MEM_MIB", "32"))
WARMUP = 10  # migrations a daemon instance does before its baseline
# RSS may grow this much over the soak. The daemon's own memory per migration
# is freed when it ends, and its resend log lives in locked chunks that are
# reused and given back; what remains is allocator behaviour: glibc gives each
# thread that allocates an arena, and keeps freed memory cached in it (a 1 MiB
# record buffer or two per stream and direction, 3 streams with multifd 2, on
# each of a few threads). 48 MiB is 1.5 times the guest's whole RAM: a leak of
# one guest-sized buffer per migration passes it within two migrations, one of
# 400 KiB per migration within the CI run (about 120 migrations), one of
# 32 KiB within the long run (about 1500); a steady allocator cache stays well
# below it (runs here: +0.1 MiB). Locked memory (the resend log) must be given
# back: at most one 2 MiB huge page more than at the baseline.
RSS_BOUND_KIB = 48 << 10
LOCKED_BOUND_KIB = 2 << 10
THREADS_SLACK, FDS_SLACK = 2, 4
MIGRATE_TIMEOUT = 180  # longer than any fault here may explain: a hang
# From a mid-way fault to encmig's exit, at most. A destination daemon killed
# while the source QEMU is in the switch-over once took about 15.5 s (QEMU's
# migration thread blocked in its write holding the big lock, encmig waiting
# for its monitor's 10 s timeout, then the end's 5 s grace). encmig's daemon
# watch now cancels on the source daemon at once: 0.3 s at most over 60 such
# kills (8-24 MiB into a 32 MiB/s migration, switch-over included).
FAULT_END_S = 5

# Fault rates per migration (the man in the middle has its own, per connection).
P_NET = 0.5
P_PARALLEL = 0.25
FAULTS = {"cancel": 0.05, "kill-dst-qemu": 0.05, "kill-src-daemon": 0.025, "kill-dst-daemon": 0.025}
SCALE = float(os.environ.get("SOAK_FAULT_SCALE", "1"))  # more mid-way faults, to exercise them (at most 1/0.15)
FAULTS = {k: v * SCALE for k, v in FAULTS.items()}


# Daemon log text that no fault here may cause: the man in the middle never
# changes, repeats or reorders a byte, so a record that fails authentication,
# a counter or integrity check, or an acknowledgement that goes backwards, is
# a daemon's own error.
PROTOCOL_ERRORS = ("authentication failed", "counter mismatch", "integrity check failed", "bad acknowledgement")


class SoakFailure(AssertionError):
    pass


def proc_sample(pid):
    vals = {}
    for line in open(f"/proc/{pid}/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmLck"):
            vals[k] = int(v.split()[0])
    return {"rss": vals.get("VmRSS", 0), "lck": vals.get("VmLck", 0),
            "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": len(os.listdir(f"/proc/{pid}/task"))}


def fmt(s):
    return f"rss {s['rss'] / 1024:.1f} MiB (locked {s['lck'] / 1024:.1f}), {s['fds']} fds, {s['threads']} threads" if s else "n/a"


class Daemon:
    """One encmigd process (an instance: a restart makes a new one)."""

    def __init__(self, env, role, gen):
        self.role, self.gen, self.name = role, gen, f"{role}{gen}"
        d = env.daemon(self.name)
        self.proc, self.ctl, self.port, self.log = d["proc"], d["ctl"], d["port"], d["log"]
        comm = open(f"/proc/{self.proc.pid}/comm").read().strip()
        assert comm == "encmigd", f"pid {self.proc.pid} is {comm}, not encmigd"
        self.d = d
        self.migrations = 0
        self.baseline = self.final = None
        self.killed = False
        self.log_at = 0

    def stats(self):
        q = Qmp(self.ctl, timeout=5)
        try:
            return q.cmd("query-stats")
        finally:
            q.close()

    def new_lines(self):
        """The log lines written since the last call."""
        with open(self.log, "rb") as f:
            f.seek(self.log_at)
            data = f.read()
        end = data.rfind(b"\n") + 1  # whole lines only
        self.log_at += end
        return data[:end].decode(errors="replace").splitlines()

    def sample(self):
        return proc_sample(self.proc.pid)


class Soak:
    def __init__(self, seed, seconds):
        self.seed, self.seconds = seed, seconds
        self.rng = random.Random(seed)
        self.env = Env(MEM, max_vms=4)
        self.daemons = {}
        self.instances = []
        self.proxies = {}
        self.encmig = None
        self.counts = collections.Counter()
        self.failed_by = collections.Counter()
        self.errors = collections.defaultdict(list)
        self.faults = collections.Counter()  # mid-way faults fired
        self.faults_late = collections.Counter()  # planned, but the migration ended first
        self.resumes = {"source": 0, "destination": 0}
        self.resent = 0
        self.last = None  # the last migration's record, for a failure report
        self.key_wait = []
        self.fault_end = collections.defaultdict(float)  # the longest fault-to-exit, by kind
        self.fired_completed = collections.Counter()  # faults fired, yet the migration completed
        self.state_wrong = []  # failures whose summary's source-state is not the source's runstate  # seconds from encmig's exit to no key held on either daemon
        self.n = 0

    # -- failure report --------------------------------------------------------

    def fail(self, what):
        keep = f"/tmp/encmig-soak-{self.seed}-{os.getpid()}"
        try:
            os.makedirs(keep, exist_ok=True)
            for f in os.listdir(self.env.dir):
                p = os.path.join(self.env.dir, f)
                if os.path.isfile(p) and (f.endswith((".log", ".json", ".err", ".serial"))):
                    shutil.copy(p, keep)
        except OSError:
            pass
        lines = [f"SOAK FAILURE at migration {self.n} (seed {self.seed}): {what}",
                 f"  the migration: {json.dumps(self.last, default=str)}",
                 f"  logs and JSON kept in {keep}"]
        mid = (self.last or {}).get("res", {}).get("migration-id")
        for d in self.instances:
            try:
                text = open(d.log, errors="replace").read().splitlines()
            except OSError:
                continue
            pick = [l for l in text if mid and mid[:12] in l] if mid else []
            lines.append(f"  --- {d.name} (pid {d.proc.pid}, rc {d.proc.poll()}) log, "
                         + (f"lines naming {mid[:12]}:" if pick else "last 30 lines:"))
            lines += ["    " + l for l in (pick or text)[-30:]]
        raise SoakFailure("\n".join(lines))

    def check(self, cond, what):
        if not cond:
            self.fail(what)

    # -- set-up ------------------------------------------------------------------

    def start_daemon(self, role):
        gen = sum(1 for d in self.instances if d.role == role) + 1
        d = Daemon(self.env, role, gen)
        self.instances.append(d)
        self.daemons[role] = d
        if role in self.proxies:
            self.proxies[role].retarget(d.port)
        return d

    def setup(self):
        for role in ("A", "B"):
            self.start_daemon(role)
            self.proxies[role] = ChaosProxy(self.daemons[role].port, self.rng.random())
        self.vm = self.env.qemu("vm0")
        self.where = "A"

    def close(self):
        if self.encmig and self.encmig.poll() is None:
            self.encmig.kill()
            self.encmig.wait()
        for p in self.proxies.values():
            p.close()
        self.env.close()

    # -- one migration -------------------------------------------------------------

    def plan(self, clean):
        r = self.rng
        plan = {"net": False, "fault": None, "parallel": 2 if r.random() < P_PARALLEL else 0,
                "at": r.randrange(1 << 20, 40 << 20)}
        if clean:
            return plan
        plan["net"] = r.random() < P_NET
        x = r.random()
        for kind, p in FAULTS.items():
            if x < p:
                plan["fault"] = kind
                break
            x -= p
        # Daemons die only in the first half: the instances that end the soak
        # have the second half at least to show they stay flat.
        if plan["fault"] and "daemon" in plan["fault"] and time.monotonic() - self.t0 > self.seconds / 2:
            plan["fault"] = None
        # A cancel is seen by encmig within 100 ms and must come while QEMU
        # still copies (the switch-over itself is not cancelled): early on.
        if plan["fault"] == "cancel":
            plan["at"] = r.randrange(1 << 20, 10 << 20)
        return plan

    def stop_vm(self, vm):
        self.env.stop(vm["proc"])
        try:
            os.unlink(vm["mem"])  # the tmpfs holds a few guests only
        except FileNotFoundError:
            pass

    def set_multifd(self, vm, on):
        """Each migration says whether it uses multifd, as libvirt does: a VM
        that came in over multifd keeps the capability, and a later migration
        without --parallel would otherwise use it on one side only."""
        q = Qmp(vm["qmp"])
        try:
            q.cmd("migrate-set-capabilities", capabilities=[{"capability": "multifd", "state": on}])
        finally:
            q.close()

    def fire_midway(self, plan, p, sd, dd, dst):
        """Waits until the source daemon has sent plan['at'] bytes, then fires."""
        kind = plan["fault"]
        try:
            q = Qmp(sd.ctl, timeout=5)
            deadline = time.monotonic() + 60
            try:
                while p.poll() is None and time.monotonic() < deadline:
                    sent = sum(m.get("bytes-out", 0) for m in q.cmd("query-migrations"))
                    if sent >= plan["at"]:
                        break
                    time.sleep(0.01)
                else:
                    return False
            finally:
                q.close()
        except (OSError, RuntimeError, ConnectionError) as e:
            self.fail(f"the source daemon {sd.name} does not answer query-migrations: {e!r}")
        if kind == "cancel":
            p.send_signal(signal.SIGINT)
        elif kind == "kill-dst-qemu":
            os.kill(dst["proc"].pid, signal.SIGKILL)
        else:
            victim = sd if kind == "kill-src-daemon" else dd
            os.kill(victim.proc.pid, signal.SIGKILL)
            victim.killed = True
        return True

    def keys_released(self):
        """Both daemons answer, hold no key and have no migration open. A
        destination whose stream was still reconnecting when encmig ended the
        migration (its source daemon killed) keeps the key for the end's grace
        (5 s, checked every 500 ms by the reaper), so: within 10 s."""
        last = {}
        t = time.monotonic()
        while True:
            ok = True
            for role, d in self.daemons.items():
                try:
                    st = d.stats()
                except Exception as e:
                    self.fail(f"daemon {d.name} does not answer query-stats: {e!r}")
                last[d.name] = {k: st.get(k) for k in ("keys-held", "migrations-open", "resend-budget-used-bytes")}
                ok = ok and st.get("keys-held") == 0 and st.get("migrations-open") == 0
            waited = time.monotonic() - t
            if ok:
                self.key_wait.append(waited)
                return last
            if waited > 10:
                self.fail(f"a daemon still holds a key or an open migration 10 s after the migration ended: {last}")
            time.sleep(0.1)

    def migrate_once(self, clean):
        self.n += 1
        n = self.n
        src_role = self.where
        dst_role = "B" if src_role == "A" else "A"
        sd, dd = self.daemons[src_role], self.daemons[dst_role]
        proxy = self.proxies[dst_role]
        src = self.vm
        plan = self.plan(clean)
        self.last = {"n": n, "from": sd.name, "to": dd.name, "plan": {k: v for k, v in plan.items()}, "clean": clean}
        dst = self.env.qemu(f"vm{n}", incoming=True, fill=False)
        self.set_multifd(src, bool(plan["parallel"]))
        argv = [ENCMIG, "migrate", "--json", "--no-progress", "--src-qmp", src["qmp"], "--dst-qmp", dst["qmp"],
                "--run-dir", self.env.dir, "--src-encmigd", sd.ctl, "--dst-encmigd", dd.ctl, "--encrypted=required",
                "--dst-addr", f"127.0.0.1:{proxy.port}"]
        if plan["parallel"]:
            argv += ["--parallel", "--parallel-connections", str(plan["parallel"])]
        if plan["fault"]:
            # Slow enough to be caught mid-way: precopy at 32 MiB/s until what
            # is left fits the downtime limit (the first 13 MiB or so, about
            # 0.4 s), then the switch-over at full speed. A fault lands in
            # either, or after the end ("too late").
            argv += ["--bandwidth", "32", "--downtime-limit", "600"]
        out_path, err_path = self.env.path(f"mig{n}.json"), self.env.path(f"mig{n}.err")
        proxy.chaos = plan["net"]
        t = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            self.encmig = p = subprocess.Popen(argv, stdout=out, stderr=err, start_new_session=True)
        fired = False
        try:
            if plan["fault"]:
                fired = self.fire_midway(plan, p, sd, dd, dst)
                (self.faults if fired else self.faults_late)[plan["fault"]] += 1
            fired_at = time.monotonic()
            try:
                p.wait(MIGRATE_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.fail(f"encmig migrate still running after {MIGRATE_TIMEOUT} s (a hang)")
        finally:
            proxy.chaos = False
        took = time.monotonic() - t
        if fired:
            # From the fault to encmig's exit: a dead daemon or QEMU is noticed
            # and the migration ended, in seconds, not after some budget.
            end = time.monotonic() - fired_at
            self.fault_end[plan["fault"]] = max(self.fault_end[plan["fault"]], end)
            if end > FAULT_END_S:
                self.fail(f"encmig took {end:.1f} s to end the migration after {plan['fault']}")
        self.encmig = None
        try:
            res = json.load(open(out_path))
        except ValueError:
            self.fail(f"encmig printed no JSON (rc {p.returncode}): {open(out_path).read()!r} {open(err_path).read()!r}")
        self.last.update(res=res, rc=p.returncode, seconds=round(took, 2), fired=fired)

        # A killed daemon comes back, as systemd would restart it.
        for role in ("A", "B"):
            d = self.daemons[role]
            if d.killed:
                d.proc.wait(10)
                self.start_daemon(role)
            elif d.proc.poll() is not None:
                self.fail(f"daemon {d.name} died (rc {d.proc.returncode}) without being killed")

        # Nothing on the wire was changed: no protocol error, in any daemon.
        bad = [f"{d.name}: {l}" for d in self.instances for l in d.new_lines()
               if any(w in l for w in PROTOCOL_ERRORS)]
        self.check(not bad, "protocol errors though no byte on the wire was changed:\n" + "\n".join(bad[:20]))

        # (a) No key left, whatever happened.
        self.last["daemons"] = self.keys_released()
        for side in ("source", "destination"):
            self.resumes[side] += int(res.get(f"{side}-encmigd", {}).get("resumes", 0))
        self.resent += int(res.get("source-encmigd", {}).get("resent-bytes", 0))
        self.counts["migrations"] += 1
        if res.get("result") == "completed":
            # (b) RAM identical, the guest goes on at the destination, which
            # is the next source.
            try:
                check_migrated(self.env, src, dst, res)
            except AssertionError as e:
                self.fail(f"completed, but: {e}")
            self.counts["completed"] += 1
            if fired:
                self.fired_completed[plan["fault"]] += 1
            self.stop_vm(src)
            self.vm, self.where = dst, dst_role
            result = "completed"
        else:
            # (c) The source is still there, running, and goes on.
            cause = plan["fault"] if fired else ("network" if plan["net"] else "no fault")
            self.failed_by[cause] += 1
            self.errors[cause].append((n, res.get("error", "")[:200]))
            # Resets, delays, stalls and black holes of a few seconds are
            # pauses, not failures (README, "When the network breaks").
            self.check(cause not in ("network", "no fault"),
                       f"failed with {'only network faults' if cause == 'network' else 'no fault at all'}: "
                       f"{res.get('error')}")
            self.check(src["proc"].poll() is None, "the source QEMU died")
            st = status(src)
            self.check(st == "running", f"the migration failed and the source is {st}, not running")
            if res.get("source-state") != st:
                self.state_wrong.append((n, cause, res.get("source-state")))
            ops = last_ops(src["serial"])
            try:
                wait_for(lambda: last_ops(src["serial"]) > ops, 30, "source guest stopped making progress")
            except AssertionError as e:
                self.fail(str(e))
            self.stop_vm(dst)
            result = f"failed ({cause}): {res.get('error', '')[:160]}"
        for d in (sd, dd):
            d.migrations += 1
        print(f"  #{n} {sd.name}->{dd.name} {'net-chaos ' if plan['net'] else ''}"
              f"{'multifd2 ' if plan['parallel'] else ''}"
              f"{(plan['fault'] + (' ' if fired else ' (too late) ')) if plan['fault'] else ''}"
              f"{took:.2f}s resumes {res.get('source-encmigd', {}).get('resumes', 0)}: {result}", flush=True)
        return result == "completed"

    # -- flatness ------------------------------------------------------------------

    def take_baselines(self):
        due = [d for d in self.daemons.values() if d.baseline is None and d.migrations >= WARMUP]
        if due:
            time.sleep(2)
            for d in due:
                d.baseline = d.sample()

    def final_flatness(self):
        """Idle again: every daemon instance that had its baseline and lived
        to the end is back to it. Threads and fds may take a moment to be
        reaped (the reaper runs every 500 ms): up to 10 s."""
        time.sleep(2)
        checked = [d for d in self.daemons.values() if d.baseline is not None]
        deadline = time.monotonic() + 10
        while True:
            bad = []
            for d in checked:
                d.final = s = d.sample()
                b = d.baseline
                if abs(s["threads"] - b["threads"]) > THREADS_SLACK:
                    bad.append(f"{d.name}: threads {b['threads']} -> {s['threads']}")
                if abs(s["fds"] - b["fds"]) > FDS_SLACK:
                    bad.append(f"{d.name}: fds {b['fds']} -> {s['fds']}")
                if s["rss"] - b["rss"] > RSS_BOUND_KIB:
                    bad.append(f"{d.name}: RSS {b['rss'] // 1024} -> {s['rss'] // 1024} MiB")
                if s["lck"] - b["lck"] > LOCKED_BOUND_KIB:
                    bad.append(f"{d.name}: locked {b['lck'] // 1024} -> {s['lck'] // 1024} MiB")
            if not bad or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        return checked, bad

    # -- the soak ------------------------------------------------------------------

    def run(self):
        self.t0 = time.monotonic()
        self.setup()
        fails = 0
        while time.monotonic() - self.t0 < self.seconds:
            # After two failures in a row, the next try is without faults.
            fails = 0 if self.migrate_once(clean=fails >= 2) else fails + 1
            self.take_baselines()
        started = time.monotonic() - self.t0
        # The last VM must still be migratable: a failed last try is tried
        # again, without faults (and a failure without faults fails the soak).
        if fails:
            self.migrate_once(clean=True)
        checked, bad = self.final_flatness()
        elapsed = time.monotonic() - self.t0
        net_picked = collections.Counter()
        net_fired = collections.Counter()
        conns = 0
        for p in self.proxies.values():
            net_picked.update(p.counts)
            net_fired.update(p.fired)
            conns += p.conns
        fault_end = "{" + ", ".join(f"{k}: {v:.1f} s" for k, v in self.fault_end.items()) + "}"
        flat = "; ".join(f"{d.name} baseline [{fmt(d.baseline)}] final [{fmt(d.final)}]" for d in checked)
        others = ", ".join(f"{d.name} ({d.migrations} migrations{', killed' if d.killed else ''})"
                           for d in self.instances if d not in checked)
        print(f"SOAK seed {self.seed}: {self.counts['migrations']} migrations in {elapsed:.0f} s "
              f"(new ones started for {started:.0f} s), {self.counts['completed']} completed, "
              f"{self.counts['migrations'] - self.counts['completed']} failed by cause {dict(self.failed_by)}; "
              f"resumes {self.resumes['source']} (source side) / {self.resumes['destination']} (destination side), "
              f"{self.resent / (1 << 20):.1f} MiB resent; keys gone after at most {max(self.key_wait):.1f} s "
              f"({sum(w > 1 for w in self.key_wait)} waits over 1 s); mid-way faults fired {dict(self.faults)}, "
              f"fired but completed anyway {dict(self.fired_completed)}, too late {dict(self.faults_late)}, longest "
              f"fault-to-exit {fault_end}; "
              f"summary's source-state not the source's runstate after {len(self.state_wrong)} failures "
              f"{self.state_wrong[:5]}; man in the middle: {conns} connections, faults picked "
              f"{dict(net_picked)}, fired {dict(net_fired)}; flatness: {flat}; not checked: {others or 'none'}",
              flush=True)
        for cause, errs in self.errors.items():
            for n, e in errs[:5]:
                print(f"  failed ({cause}) #{n}: {e}", flush=True)
        self.check(not bad, "not flat: " + "; ".join(bad))
        roles = {d.role for d in checked}
        self.check(roles == {"A", "B"}, f"too few migrations to show flatness for both daemons (checked: {sorted(roles)})")


def soak(default_seconds):
    def case():
        seconds = float(os.environ.get("SOAK_SECONDS", default_seconds))
        seed = int(os.environ.get("SOAK_SEED", random.SystemRandom().randrange(1 << 32)))
        print(f"  soak: seed {seed} (SOAK_SEED={seed} makes the same choices), new migrations for {seconds:.0f} s, "
              f"{MEM} MiB guest", flush=True)
        s = Soak(seed, seconds)
        try:
            s.run()
        finally:
            s.close()
    return case


CASES = {
    "soak-random-faults": soak(150),
    "soak-random-faults-long": soak(1800),
}

if __name__ == "__main__":
    run(CASES)
