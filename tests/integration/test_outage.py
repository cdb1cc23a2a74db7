#!/usr/bin/env python3
"""Protocol 2: a migration survives the outages real networks have.

Two encmigd "hosts" in network namespaces, joined by a veth pair (0.5 ms RTT
or less) or by bench/wanem (150 ms RTT, 1 Gb/s); nftables and ip-link inside
those namespaces break the data connections mid-migration: (a) every packet
to the data port answered with a TCP reset, (b) the open connections
black-holed while new ones work, (c) the link down. Then the network heals,
the source daemon resumes every stream, and the migration completes with the
destination RAM identical byte for byte and the guest going on there.

Usage: test_outage.py [CASE...]   (no CASE: the CI set; "full": every case)"""
import os, sys, threading, time

from harness import Env, Qmp, check_migrated, last_ops, status, wait_for
from mitm import Mitm
from netns import Veth, Wan

MEM = int(os.environ.get("ENCMIG_TEST_MEM_MIB", "256"))
MIB = 1 << 20


def outcome_lines(log, mid):
    return [l for l in open(log).read().splitlines()
            if any(f"migration {mid} {o}:" in l for o in ("completed", "failed", "cancelled"))]


class Hosts:
    """Two daemons on two namespaced hosts; a running, random-filled source
    guest and an incoming destination (QEMU talks to its daemon over UNIX
    sockets, which do not care about network namespaces)."""

    def __init__(self, net, src_extra=(), dst_extra=(), observer=False):
        self.env = Env(MEM)
        self.topo = None
        try:
            self.topo = Veth(tag="o") if net == "lan" else Wan(150, 1000, tag="q")
            t = self.topo
            self.sd = self.env.daemon("src-d", src_extra, t.prefix("src"), f"{t.addr['src']}:0")
            self.dd = self.env.daemon("dst-d", dst_extra, t.prefix("dst"), f"{t.addr['dst']}:0")
            self.src = self.env.qemu("src", observer=observer)
            self.dst = self.env.qemu("dst", incoming=True, fill=False, observer=observer)
        except BaseException:
            self.close()
            raise
        self.thread = None
        self.res = None

    def start(self, extra=(), src=None, dst=None):
        src, dst = src or self.src, dst or self.dst
        argv = ["--encrypted=required", "--dst-addr", f"{self.topo.addr['dst']}:{self.dd['port']}"] + list(extra)

        def go():
            self.res = self.env.migrate(src, dst, self.sd, self.dd, argv, timeout=600)
        self.thread = threading.Thread(target=go)
        self.thread.start()

    def finish(self, timeout=300):
        self.thread.join(timeout)
        assert self.res is not None, "encmig did not return"
        return self.res

    def migrations(self, side="src"):
        q = Qmp((self.sd if side == "src" else self.dd)["ctl"])
        try:
            return q.cmd("query-migrations")
        finally:
            q.close()

    def wait_bytes(self, n, what="the migration did not start"):
        wait_for(lambda: sum(m["bytes-out"] for m in self.migrations()) > n, 120, what)

    def cut(self, kind):
        """Breaks the data connections as real networks do."""
        if kind == "reset":
            self.topo.reset_port(self.dd["port"])
        elif kind == "blackhole":
            assert self.topo.blackhole_existing(self.dd["port"]), "no connection to black-hole"
        elif kind == "linkdown":
            self.topo.link(False)
        else:
            raise ValueError(kind)

    def heal(self):
        self.topo.heal()

    def logs(self):
        return open(self.sd["log"]).read() + open(self.dd["log"]).read()

    def close(self):
        try:
            if self.topo:
                self.topo.close()
        finally:
            self.env.close()


def resumes(res, side="source-encmigd"):
    return sum(s["resumes"] for s in res[side]["streams"])


def check_resumed(h, res, at_least=1):
    """RAM identical and the guest going on at the destination; the source's
    streams resumed at least that often; one 'completed' line per daemon."""
    check_migrated(h.env, h.src, h.dst, res)
    assert resumes(res) >= at_least, res
    check_completed_once(h, res)


def check_completed_once(h, res):
    """One 'completed' outcome line per daemon."""
    mid = res["migration-id"]
    wait_for(lambda: len(outcome_lines(h.sd["log"], mid)) == 1 and len(outcome_lines(h.dd["log"], mid)) == 1, 15,
             "one outcome line per daemon")
    for log in (h.sd["log"], h.dd["log"]):
        lines = outcome_lines(log, mid)
        assert "completed" in lines[0], lines


def outage(kind, seconds, net, multifd):
    """Break the connections `seconds` into the migration's second quarter,
    then heal: the migration completes, byte for byte, with streams resumed."""
    def case():
        h = Hosts(net)
        try:
            # 24 MiB/s: long enough to break it in the middle; a 2 s downtime
            # limit lets it converge although the guest dirties 32 MiB a pass.
            extra = ["--bandwidth", "24", "--downtime-limit", "2000"]
            if multifd:
                extra += ["--parallel", "--parallel-connections", str(multifd)]
            h.start(extra)
            h.wait_bytes(48 * MIB)
            h.cut(kind)
            time.sleep(seconds)
            h.heal()
            res = h.finish()
            check_resumed(h, res)
            assert res["encrypted"] is True and "protocol 3" in res["reason"], res
            assert resumes(res, "destination-encmigd") >= 1, res
            assert "resumed after" in h.logs(), h.logs()
        finally:
            h.close()
    return case


def over_budget():
    """An outage longer than --outage-budget: the migration fails cleanly,
    naming the stream and the outage; the source VM keeps running; neither
    daemon keeps the migration (nor its key); a retry after the network
    healed completes."""
    h = Hosts("lan", ["--outage-budget", "3"], ["--outage-budget", "3"])
    try:
        h.start(["--bandwidth", "24"])
        h.wait_bytes(32 * MIB)
        h.cut("reset")
        res = h.finish(120)
        assert res["result"] != "completed", res
        assert status(h.src) == "running", "the source VM is not running after the failed migration"
        ops = last_ops(h.src["serial"])
        wait_for(lambda: last_ops(h.src["serial"]) > ops, 30, "the source guest stopped")
        mid = res["migration-id"]
        wait_for(lambda: outcome_lines(h.sd["log"], mid) and outcome_lines(h.dd["log"], mid), 15, "outcome lines")
        src_line = outcome_lines(h.sd["log"], mid)[0]
        assert "failed" in src_line and "stream main" in src_line and "outage budget 3 s" in src_line, src_line
        for side in ("src", "dst"):
            ms = [m for m in h.migrations(side) if m["id"] == mid]
            assert all(m["state"] in ("failed", "cancelled") for m in ms), ms
        assert h.sd["proc"].poll() is None and h.dd["proc"].poll() is None, "a daemon died"
        h.heal()
        dst2 = h.env.qemu("dst2", incoming=True, fill=False)
        h.start([], dst=dst2)
        res = h.finish()
        check_migrated(h.env, h.src, dst2, res)
    finally:
        h.close()


def several_flaps():
    """Three resets of a second each, a few seconds apart, in one migration."""
    h = Hosts("lan")
    try:
        h.start(["--bandwidth", "16", "--downtime-limit", "3000"])
        for i in range(3):
            h.wait_bytes((24 + 40 * i) * MIB, f"flap {i}: no progress")
            h.cut("reset")
            time.sleep(1)
            h.heal()
        check_resumed(h, h.finish(), 3)
    finally:
        h.close()


def switchover_flap():
    """The link resets while the source VM is stopped for the switch-over:
    QEMU's pause-before-switchover holds the source there, the test cuts the
    link and lets QEMU go on, the network heals 2 s later. Completes."""
    h = Hosts("lan", observer=True)
    try:
        obs = Qmp(h.src["obs"])
        obs.cmd("migrate-set-capabilities", capabilities=[{"capability": "pause-before-switchover", "state": True}])
        h.start(["--bandwidth", "64", "--downtime-limit", "1000"])
        wait_for(lambda: obs.cmd("query-migrate").get("status") == "pre-switchover", 120, "no switch-over")
        assert obs.cmd("query-status")["status"] != "running"
        h.cut("reset")
        obs.cmd("migrate-continue", state="pre-switchover")
        time.sleep(2)
        h.heal()
        res = h.finish()
        obs.close()
        check_resumed(h, res)
    finally:
        h.close()


def postcopy_outage(preempt=False):
    """An outage in the postcopy phase, when the VM's pages live on two
    hosts: QEMU sees a pause, never a broken socket; the migration completes
    without migrate-recover, RAM identical. With preempt, QEMU's
    postcopy-preempt channel is open too, and resumes with the main stream."""
    h = Hosts("lan", observer=True)
    try:
        obs = Qmp(h.src["obs"])
        h.start(["--postcopy", "--postcopy-after-precopy", "--bandwidth", "64", "--postcopy-bandwidth", "16",
                 "--downtime-limit", "1"] + (["--postcopy-preempt"] if preempt else []))
        wait_for(lambda: obs.cmd("query-migrate").get("status") == "postcopy-active", 120, "no postcopy phase")
        obs.close()
        h.cut("reset")
        time.sleep(3)
        h.heal()
        res = h.finish()
        assert res.get("phase") == "postcopy", res
        if preempt:
            names = sorted(st["name"] for st in res["source-encmigd"]["streams"])
            assert names == ["main", "postcopy-preempt"], names
        check_resumed(h, res)
    finally:
        h.close()


def endless_resets(side="source"):
    """An attacker on the path resets every connection again and again. It is
    bounded (--max-resumes, counted by each side): with 3 on either daemon the
    migration fails honestly, naming the stream, the VM stays."""
    limit = ["--max-resumes", "3"]
    h = Hosts("lan", limit if side == "source" else (), limit if side == "destination" else ())
    stop = threading.Event()

    def flapper():
        while not stop.is_set():
            h.cut("reset")
            time.sleep(0.3)
            h.heal()
            stop.wait(1.0)
    try:
        h.start(["--bandwidth", "16", "--downtime-limit", "3000"])
        h.wait_bytes(16 * MIB)
        f = threading.Thread(target=flapper)
        f.start()
        try:
            res = h.finish(180)
        finally:
            stop.set()
            f.join()
            h.heal()
        assert res["result"] != "completed", res
        assert status(h.src) == "running"
        mid = res["migration-id"]
        d = h.sd if side == "source" else h.dd
        wait_for(lambda: outcome_lines(d["log"], mid), 15, "no outcome line")
        line = outcome_lines(d["log"], mid)[0]
        assert "resumed 3 times" in line, line
    finally:
        h.close()


def resume_replay():
    """Someone on the path records a resume connection (hello, confirmation
    and RESUME record) and replays it, during the migration and after it: the
    daemon answers with fresh randoms, the old confirmation fails, and the
    migration neither notices nor slows; the replay after completion finds no
    migration to resume."""
    env = Env(MEM)
    try:
        sd, dd = env.daemon("src-d"), env.daemon("dst-d")
        src, dst = env.qemu("src"), env.qemu("dst", incoming=True, fill=False)
        mitm = Mitm(dd["port"], attack="truncate", at_record=20, record_conn=1)
        result = {}
        t = threading.Thread(target=lambda: result.update(res=env.migrate(
            src, dst, sd, dd, ["--encrypted=required", "--bandwidth", "64", "--dst-addr", f"127.0.0.1:{mitm.port}"])))
        t.start()
        wait_for(lambda: len(mitm.recorded) >= 64 + 32 + 40, 60, "no resume connection recorded")
        q = Qmp(dd["ctl"])

        def refused():
            return q.cmd("query-stats")["pre-auth-refused"].get("key-confirmation-failed", 0)
        before = refused()
        mitm.replay(dd["port"])
        wait_for(lambda: refused() > before, 10, "the replayed resume was not refused at key confirmation")
        t.join(120)
        res = result["res"]
        check_migrated(env, src, dst, res)
        assert resumes(res) >= 1, res
        mid = res["migration-id"]
        wait_for(lambda: len(outcome_lines(dd["log"], mid)) == 1, 15, "no outcome line")
        assert "completed" in outcome_lines(dd["log"], mid)[0]
        stats = q.cmd("query-stats")["pre-auth-refused"]
        mitm.replay(dd["port"])  # after the end: that migration is gone
        wait_for(lambda: sum(q.cmd("query-stats")["pre-auth-refused"].values()) > sum(stats.values()), 10,
                 "the replay after completion was not refused")
        assert outcome_lines(dd["log"], mid) == outcome_lines(dd["log"], mid)[:1], "a second outcome line"
        q.close()
        mitm.close()
    finally:
        env.close()


FULL = {}
for _net in ("lan", "wan150"):
    for _mf in (0, 4):
        _tag = f"{_net}-{'multifd4' if _mf else 'single'}"
        for _s in (1, 10, 45):
            FULL[f"outage-reset-{_s}s-{_tag}"] = outage("reset", _s, _net, _mf)
        FULL[f"outage-blackhole-{_tag}"] = outage("blackhole", 10, _net, _mf)
        FULL[f"outage-linkdown-10s-{_tag}"] = outage("linkdown", 10, _net, _mf)

CASES = {
    "outage-over-budget": over_budget,
    "outage-several-flaps": several_flaps,
    "outage-during-switchover": switchover_flap,
    "outage-postcopy": postcopy_outage,
    "outage-postcopy-preempt": lambda: postcopy_outage(preempt=True),
    "attack-endless-resets": endless_resets,
    "attack-endless-resets-destination": lambda: endless_resets("destination"),
    "attack-resume-replay": resume_replay,
}
# The CI set: every kind of break, both link kinds, both stream layouts.
CI = ["outage-reset-1s-lan-single", "outage-blackhole-lan-multifd4", "outage-linkdown-10s-wan150-single",
      "outage-reset-10s-wan150-multifd4"] + list(CASES)
CASES.update(FULL)

if __name__ == "__main__":
    from harness import run
    args = sys.argv[1:]
    if args == ["full"]:
        sys.argv[1:] = list(CASES)
    elif not args:
        sys.argv[1:] = CI
    run(CASES)
