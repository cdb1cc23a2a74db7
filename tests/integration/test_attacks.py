#!/usr/bin/env python3
"""Attacks on encmigd, each one tried for real and failing: a flood on the data
port, someone who knows a migration id, another process on the host posing
as QEMU, a control client that never reads, malformed control input, a
destination QEMU that dies or stalls, limits, concurrency, and every source
runstate. Usage: test_attacks.py [CASE...]"""
import base64, json, os, signal, socket, subprocess, threading, time

from flood import Flood, cpu_seconds, raise_fd_limit
from harness import Env, Qmp, check_migrated, files_equal, last_ops, run, status, wait_for

MEM = int(os.environ.get("ENCMIG_TEST_MEM_MIB", "256"))
KEY = lambda: base64.b64encode(os.urandom(32)).decode()


def outcome_lines(log, mid):
    return [l for l in open(log).read().splitlines()
            if any(f"migration {mid} {o}:" in l for o in ("completed", "failed", "cancelled"))]


def preauth_flood():
    """Thousands of idle, slow, garbage and forged-key connections to the
    destination's data port while a migration runs: it completes, encrypted,
    under the Opportunistic default; the daemon neither spins nor fills its log."""
    raise_fd_limit()
    env = Env(MEM)
    flood = None
    try:
        sd, dd = env.daemon("src-d"), env.daemon("dst-d", ["--max-pending", "512"])
        src0, dst0 = env.qemu("src0"), env.qemu("dst0", incoming=True, fill=False)
        quiet = env.migrate(src0, dst0, sd, dd, ["--encrypted=opportunistic"])
        check_migrated(env, src0, dst0, quiet)
        src = env.qemu("src")
        q = Qmp(dd["ctl"])
        # A known migration id: arm one the attacker learned, to aim forged hellos at.
        known = os.urandom(16).hex()
        q.cmd("migration-arm", id=known, role="destination", key=KEY(), nonce=os.urandom(8).hex(),
              **{"qemu-path": env.path("nobody.sock")})
        flood = Flood(dd["port"], idle=1500, slow=200, known_id=known)
        # All from one address: it holds at most --max-pending / 2.
        wait_for(lambda: q.cmd("query-stats")["connections-pending"] >= 200, 30, "the flood did not build up")
        cpu0, t0 = cpu_seconds(dd["proc"].pid), time.time()
        time.sleep(2)
        idle_cpu = (cpu_seconds(dd["proc"].pid) - cpu0) / (time.time() - t0)
        dst = env.qemu("dst", incoming=True, fill=False)
        res = env.migrate(src, dst, sd, dd, ["--encrypted=opportunistic"])
        stats = q.cmd("query-stats")
        flood.close()
        flood = None
        check_migrated(env, src, dst, res)
        assert res["encrypted"] is True, res  # no downgrade under attack
        print(f"  flood: {stats['pre-auth-refused']}, pending {stats['connections-pending']}, daemon cpu while flooded "
              f"{idle_cpu:.2f} cores; migration {quiet['total-time-ms']} ms quiet, {res['total-time-ms']} ms flooded",
              flush=True)
        assert stats["connections-pending"] <= 512, stats
        assert stats["pre-auth-refused"]["evicted-over-limit"] > 0, stats
        assert stats["pre-auth-refused"]["key-confirmation-failed"] > 0, stats
        assert idle_cpu < 0.6, f"encmigd used {idle_cpu:.2f} cores under the flood"
        assert q.cmd("query-migrations", id=known)[0]["state"] == "armed"  # forged hellos changed nothing
        lines = open(dd["log"]).read().splitlines()
        assert len(lines) < 200, f"{len(lines)} log lines: not rate-limited"
        q.close()
    finally:
        if flood:
            flood.close()
        env.close()


def emfile_no_spin():
    """At its fd limit the daemon drops the oldest unauthenticated connection
    instead of spinning on accept(), and a migration still gets through."""
    raise_fd_limit()
    env = Env(MEM)
    flood = None
    try:
        sd = env.daemon("src-d")
        ctl = env.path("dst-d.sock")
        p = env.spawn(["prlimit", "--nofile=200:200", "--", env_encmigd(), "--control", ctl, "--listen", "127.0.0.1:0",
                       "--libvirt", "none", "--run-dir", env.dir, "--max-pending", "1000"], env.path("dst-d.log"))
        q = Qmp(ctl)
        dd = {"name": "dst-d", "proc": p, "ctl": ctl, "port": q.cmd("query-encmig-capabilities")["data-port"],
              "log": env.path("dst-d.log")}
        # Idle connections only: three times the fd limit, never a byte. Once
        # the backlog is drained there is nothing to do: a daemon that spins
        # on accept() at EMFILE burns a core here, a correct one nothing.
        # (With garbage flooding too, its CPU would follow the flood's rate.)
        flood = Flood(dd["port"], idle=600, slow=0, garbage_threads=0)
        wait_for(lambda: q.cmd("query-stats")["pre-auth-refused"]["accept-failed"] > 0, 30, "never reached EMFILE")
        time.sleep(1)
        cpu0, t0 = cpu_seconds(p.pid), time.time()
        time.sleep(2)
        cpu = (cpu_seconds(p.pid) - cpu0) / (time.time() - t0)
        assert cpu < 0.3, f"encmigd used {cpu:.2f} cores at its fd limit with idle connections (spinning?)"
        # And a migration gets through with garbage flooding on top.
        flood.close()
        flood = Flood(dd["port"], idle=600, slow=0, garbage_threads=1)
        src, dst = env.qemu("src"), env.qemu("dst", incoming=True, fill=False)
        res = env.migrate(src, dst, sd, dd, ["--encrypted=required"])
        flood.close()
        flood = None
        check_migrated(env, src, dst, res)
        q.close()
    finally:
        if flood:
            flood.close()
        env.close()


def env_encmigd():
    from harness import ENCMIGD
    return ENCMIGD


def local_impostors():
    """Another process on the host (here: as the same user as QEMU) is not the
    migrating QEMU: it cannot feed the source's socket, and a socket it plants
    (or a symlink) at the destination's path receives nothing."""
    env = Env(64)
    try:
        sd, dd = env.daemon("src-d"), env.daemon("dst-d")
        src = env.qemu("src")
        a, b = Qmp(sd["ctl"]), Qmp(dd["ctl"])
        real_dst = env.qemu("dst", incoming=True, fill=False)
        dst_pid = real_dst["proc"].pid
        # Source side: an impostor connects to the source's socket; refused, counted, migration untouched.
        mid, key, nonce = os.urandom(16).hex(), KEY(), os.urandom(8).hex()
        listen = env.path("imp-src.sock")
        a.cmd("migration-arm", id=mid, role="source", key=key, nonce=nonce, peer=f"127.0.0.1:{dd['port']}",
              streams=1, **{"listen-path": listen, "qemu-pid": src["proc"].pid})
        imp = socket.socket(socket.AF_UNIX)
        imp.connect(listen)
        try:
            imp.sendall(b"QEVM" + b"\0" * 100)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused and closed before our bytes went out: the same refusal
        imp.settimeout(5)
        try:
            assert imp.recv(10) == b""
        except ConnectionResetError:
            pass
        wait_for(lambda: a.cmd("query-stats")["local-peers-refused"] >= 1, 10, "impostor not refused")
        st = a.cmd("query-migrations", id=mid)[0]
        assert st["state"] == "armed" and st["streams"] == [], st
        a.cmd("migration-cancel", id=mid)
        # Destination side: the path holds a socket the impostor made, then a symlink to one.
        for kind in ("socket", "symlink"):
            mid, key, nonce = os.urandom(16).hex(), KEY(), os.urandom(8).hex()
            qpath = env.path(f"imp-dst-{kind}.sock")
            rogue_path = env.path(f"rogue-{kind}.sock")
            rogue = socket.socket(socket.AF_UNIX)
            rogue.bind(qpath if kind == "socket" else rogue_path)
            rogue.listen(4)
            if kind == "symlink":
                os.symlink(rogue_path, qpath)
            got = []

            def take():
                rogue.settimeout(15)
                try:
                    c, _ = rogue.accept()
                    c.settimeout(5)
                    try:
                        while True:
                            d = c.recv(65536)
                            if not d:
                                break
                            got.append(d)
                    except OSError:
                        pass
                except OSError:
                    pass
            t = threading.Thread(target=take)
            t.start()
            b.cmd("migration-arm", id=mid, role="destination", key=key, nonce=nonce, streams=1,
                  **{"qemu-path": qpath, "qemu-pid": dst_pid})
            a.cmd("migration-arm", id=mid, role="source", key=key, nonce=nonce, peer=f"127.0.0.1:{dd['port']}",
                  streams=1, **{"listen-path": env.path(f"s-{kind}.sock")})
            # The source QEMU's stand-in: us, allowed because no qemu-pid was given for this source.
            c = socket.socket(socket.AF_UNIX)
            c.connect(env.path(f"s-{kind}.sock"))
            c.sendall(b"QEVM" + os.urandom(4096))
            wait_for(lambda: b.cmd("query-migrations", id=mid)[0]["state"] == "failed", 15, "destination not failed")
            err = b.cmd("query-migrations", id=mid)[0]["error"]
            assert ("is not the domain's QEMU" in err) or ("not a socket" in err) or ("Too many levels" in err), err
            try:
                rogue.shutdown(socket.SHUT_RDWR)  # wakes the accept()
            except OSError:
                pass
            rogue.close()
            t.join(20)
            assert sum(len(x) for x in got) == 0, f"the impostor received {sum(len(x) for x in got)} bytes"
            c.close()
            a.cmd("migration-end", id=mid)
            b.cmd("migration-end", id=mid)
        assert sd["proc"].poll() is None and dd["proc"].poll() is None
        # The real QEMU still migrates.
        res = env.migrate(src, real_dst, sd, dd, ["--encrypted=required"])
        check_migrated(env, src, real_dst, res)
    finally:
        env.close()


def control_plane_not_frozen():
    """A control client that writes thousands of commands and never reads is
    dropped; every other client is served all along."""
    env = Env(64)
    try:
        dd = env.daemon("dst-d")
        hog = socket.socket(socket.AF_UNIX)
        hog.connect(dd["ctl"])
        hog.setblocking(False)
        cmd = b'{"execute":"qmp_capabilities"}' + b'{"execute":"query-command-arguments"}' * 10000
        sent = 0
        deadline = time.time() + 20
        while sent < len(cmd) and time.time() < deadline:
            try:
                sent += hog.send(cmd[sent:])
            except BlockingIOError:
                time.sleep(0.01)
            except (BrokenPipeError, ConnectionResetError):
                break  # dropped: what we want
            # Someone else is served meanwhile.
            q = Qmp(dd["ctl"], timeout=5)
            q.cmd("query-stats")
            q.close()
        for _ in range(20):
            q = Qmp(dd["ctl"], timeout=5)
            assert q.cmd("query-version")["package"].startswith("encmigd")
            q.close()
        wait_for(lambda: "dropping a client" in open(dd["log"]).read(), 20, "the hog was never dropped")
        hog.close()
        assert dd["proc"].poll() is None
    finally:
        env.close()


def bad_control_input():
    """Every malformed migration-arm argument is refused with an error that
    names it; no path outside the run directory is ever touched."""
    env = Env(64)
    try:
        dd = env.daemon("dst-d")
        q = Qmp(dd["ctl"])
        good = {"id": os.urandom(16).hex(), "role": "source", "key": KEY(), "nonce": os.urandom(8).hex(),
                "peer": "127.0.0.1:1", "listen-path": env.path("ok.sock")}
        victim = env.path("victim.txt")
        open(victim, "w").write("keep me")
        cases = [("nonce", "0g0g0g0g0g0g0g0g"), ("nonce", " 1 2 3 4 5 6 7 8"), ("nonce", 5), ("key", "A" * 44),
                 ("key", base64.b64encode(b"\0" * 32).decode()), ("key", []), ("streams", 0), ("streams", -1),
                 ("streams", 1.5), ("streams", True), ("streams", 2 ** 63), ("id", "0/1/2"), ("id", "AB" * 16),
                 ("role", "both"), ("peer", "x"), ("listen-path", "/etc/passwd"), ("listen-path", victim),
                 ("listen-path", env.path("../x.sock")), ("listen-path", dd["ctl"]), ("listen-path", 7),
                 ("listen-path", env.path("a\0b")), ("qemu-pid", "1"), ("surprise", 1)]
        for name, value in cases:
            args = dict(good, id=os.urandom(16).hex())
            args[name] = value
            try:
                q.cmd("migration-arm", **args)
                raise AssertionError(f"{name}={value!r} was accepted")
            except RuntimeError as e:
                arg = name if name != "listen-path" or value != victim and value != dd["ctl"] else name
                assert f"'{arg}'" in str(e) or "bind" in str(e) or "exists" in str(e), f"{name}={value!r}: {e}"
        assert open(victim).read() == "keep me"
        assert os.path.exists(dd["ctl"]), "the daemon removed its own control socket"
        # Not a JSON object, garbage, unknown command: answered, never fatal.
        raw = socket.socket(socket.AF_UNIX)
        raw.connect(dd["ctl"])
        raw.recv(4096)
        for junk in (b'{"execute":"qmp_capabilities"}', b"[1,2]", b"}{", b'{"execute":5}', b'{"execute":"nope"}',
                     b'{"execute":"migration-arm","arguments":[]}', b'{"execute":"query-migrations","arguments":{"id":5}}'):
            raw.sendall(junk)
        time.sleep(0.5)
        raw.close()
        q2 = Qmp(dd["ctl"])
        assert q2.cmd("query-migrations") == []
        q2.close()
        q.close()
        assert dd["proc"].poll() is None
    finally:
        env.close()


def destination_qemu_dies():
    """The destination QEMU dies mid-migration: the destination daemon tells
    the source at once, the migration fails in seconds (not minutes), the
    source VM keeps running, and both daemons have let go of the key."""
    env = Env(MEM)
    try:
        sd, dd = env.daemon("src-d"), env.daemon("dst-d")
        src, dst = env.qemu("src"), env.qemu("dst", incoming=True, fill=False)
        result = {}
        t = threading.Thread(target=lambda: result.update(res=env.migrate(src, dst, sd, dd, ["--encrypted=required",
                                                                                          "--bandwidth", "16"])))
        t.start()
        q = Qmp(sd["ctl"])
        wait_for(lambda: sum(m["bytes-out"] for m in q.cmd("query-migrations")) > 8 << 20, 60, "no data flowed")
        killed = time.time()
        os.kill(dst["proc"].pid, signal.SIGKILL)
        t.join(60)
        took = time.time() - killed
        res = result["res"]
        assert res["result"] != "completed" and res["_rc"] == 1, res
        assert took < 20, f"encmig needed {took:.1f} s to notice the dead destination QEMU"
        assert status(src) == "running"
        for log in (sd["log"], dd["log"]):
            lines = outcome_lines(log, res["migration-id"])
            assert len(lines) == 1 and "failed" in lines[0], open(log).read()
        assert "destination QEMU" in open(sd["log"]).read() or "exited" in open(sd["log"]).read(), open(sd["log"]).read()
        q.close()
    finally:
        env.close()


def stalled_migration_fails():
    """No byte in either direction for --stall-timeout: the migration fails,
    the keys are wiped, encmig returns, the source keeps running."""
    env = Env(MEM)
    try:
        sd, dd = env.daemon("src-d", ["--stall-timeout", "3"]), env.daemon("dst-d", ["--stall-timeout", "3"])
        src, dst = env.qemu("src"), env.qemu("dst", incoming=True, fill=False)
        result = {}
        t = threading.Thread(target=lambda: result.update(res=env.migrate(src, dst, sd, dd, ["--encrypted=required",
                                                                                          "--bandwidth", "16"])))
        t.start()
        q = Qmp(dd["ctl"])
        wait_for(lambda: sum(m["bytes-in"] for m in q.cmd("query-migrations")) > 8 << 20, 60, "no data flowed")
        os.kill(dst["proc"].pid, signal.SIGSTOP)  # a destination QEMU that stops taking data
        try:
            t.join(60)
        finally:
            os.kill(dst["proc"].pid, signal.SIGCONT)
        res = result["res"]
        assert res["result"] != "completed", res
        assert status(src) == "running"
        # Both daemons watch for the stall with the same timeout: either may
        # be first, and the other then ends by the controller's migration-end
        # (the destination after its 5 s grace, its QEMU being stopped). One
        # outcome line each, and the stall named.
        mid = res["migration-id"]
        wait_for(lambda: outcome_lines(sd["log"], mid) and outcome_lines(dd["log"], mid), 20, "an outcome line is missing")
        lines = outcome_lines(sd["log"], mid) + outcome_lines(dd["log"], mid)
        assert len(lines) == 2 and any("stalled" in l for l in lines), open(sd["log"]).read() + open(dd["log"]).read()
        q.close()
    finally:
        env.close()


def limits_and_expiry():
    """Arming is bounded and armed migrations expire, in QMP-direct mode too."""
    env = Env(64)
    try:
        dd = env.daemon("dst-d", ["--max-migrations", "2", "--arm-timeout", "2"])
        q = Qmp(dd["ctl"])
        ids = [os.urandom(16).hex() for _ in range(3)]
        for i, mid in enumerate(ids):
            try:
                q.cmd("migration-arm", id=mid, role="destination", key=KEY(), nonce=os.urandom(8).hex(),
                      **{"qemu-path": env.path(f"q{i}.sock")})
                assert i < 2, "a third migration was armed past --max-migrations 2"
            except RuntimeError as e:
                assert i == 2 and "limit" in str(e), e
        wait_for(lambda: all(m["state"] == "cancelled" for m in q.cmd("query-migrations")), 10, "armed migrations never expired")
        for mid in ids[:2]:
            assert any("expired" in l for l in outcome_lines(dd["log"], mid)), open(dd["log"]).read()
        q.cmd("migration-arm", id=ids[2], role="destination", key=KEY(), nonce=os.urandom(8).hex(),
              **{"qemu-path": env.path("q2.sock")})
        q.close()
        # The resend budget is daemon-wide: a migration whose streams could
        # not all take their minimum (4 MiB each) is refused at arm, counted
        # and logged; one that fits is armed.
        bd = env.daemon("budget-d", ["--resend-budget", str(64 << 20)])
        q = Qmp(bd["ctl"])
        try:
            q.cmd("migration-arm", id=os.urandom(16).hex(), role="destination", key=KEY(), nonce=os.urandom(8).hex(),
                  streams=20, **{"qemu-path": env.path("b0.sock")})
            raise AssertionError("20 streams armed within a 64 MiB resend budget")
        except RuntimeError as e:
            assert "resend budget" in str(e), e
        st = q.cmd("query-stats")
        assert st["migrations-refused-budget"] == 1 and st["resend-budget-bytes"] == 64 << 20, st
        assert "resend budget" in open(bd["log"]).read()
        q.cmd("migration-arm", id=os.urandom(16).hex(), role="destination", key=KEY(), nonce=os.urandom(8).hex(),
              streams=4, **{"qemu-path": env.path("b1.sock")})
        q.close()
    finally:
        env.close()


def ten_at_once():
    """Ten concurrent migrations: all complete with identical RAM, and each
    daemon logs exactly one outcome line for each."""
    env = Env(64, max_vms=20)
    try:
        sd, dd = env.daemon("src-d"), env.daemon("dst-d")
        pairs = [(env.qemu(f"s{i}"), env.qemu(f"d{i}", incoming=True, fill=False)) for i in range(10)]
        results = [None] * 10

        def go(i):
            extra = ["--encrypted=required"] + (["--parallel", "--parallel-connections", "2"] if i % 2 else [])
            results[i] = env.migrate(pairs[i][0], pairs[i][1], sd, dd, extra)
        ts = [threading.Thread(target=go, args=(i,)) for i in range(10)]
        [t.start() for t in ts]
        [t.join(300) for t in ts]
        for i in range(10):
            check_migrated(env, pairs[i][0], pairs[i][1], results[i])
        time.sleep(1)
        for log in (sd["log"], dd["log"]):
            for r in results:
                lines = outcome_lines(log, r["migration-id"])
                assert len(lines) == 1 and " completed:" in lines[0], (r["migration-id"], lines, open(log).read())
    finally:
        env.close()


def source_runstates():
    """A running, a paused and a never-started (prelaunch) source all migrate
    completely; a destination holding the whole state is never second-guessed
    by resuming the source."""
    env = Env(64)
    try:
        sd, dd = env.daemon("src-d"), env.daemon("dst-d")
        for state in ("running", "paused", "prelaunch"):
            src = env.qemu(f"src-{state}", start=state != "prelaunch")
            if state == "paused":
                q = Qmp(src["qmp"])
                q.cmd("stop")
                q.close()
            dst = env.qemu(f"dst-{state}", incoming=True, fill=False)
            res = env.migrate(src, dst, sd, dd, ["--encrypted=required"])
            assert res["result"] == "completed", (state, res)
            assert files_equal(src["mem"], dst["mem"]), state
            assert res["destination-state"] in ("paused", "prelaunch"), (state, res)
            assert status(src) in ("postmigrate", "paused", "prelaunch"), (state, status(src))
            assert status(src) != "running", f"{state}: the source was resumed after a complete migration"
            assert "source-restored" not in res, f"{state}: the source was touched after a complete migration: {res}"
    finally:
        env.close()


def paused_source_migrates_again():
    """A paused source whose migration fails during completion is left by QEMU
    7.2 in postmigrate, from which it refuses to migrate again; encmig brings
    it back to paused (cont and stop, back to back), and it then migrates
    completely. Twice: the source QEMU failing at the switch-over (it is held
    there by pause-before-switchover while the destination QEMU is killed),
    and the source finishing but the destination failing to load the last
    device state (a device only the source has). With a disk on storage both
    hosts share: a source that finished had its disk inactivated, and one
    brought back without reactivating it would abort QEMU 7.2 on the next
    migration (bdrv_inactivate_recurse's assertion)."""
    env = Env(64)
    try:
        sd, dd = env.daemon("src-d"), env.daemon("dst-d")
        src = env.qemu("src", observer=True)
        obs = Qmp(src["obs"])
        obs.cmd("stop")
        disk = env.path("disk.raw")
        with open(disk, "wb") as f:
            f.truncate(16 << 20)
        node = {"driver": "raw", "node-name": "d0", "file": {"driver": "file", "filename": disk}}
        vdisk = dict(driver="virtio-blk-pci", drive="d0", id="vd", addr="0x4")
        # Hot-plugged on the paused source: its state is sent only at the switch-over.
        watchdog = dict(driver="i6300esb", id="wd", addr="0x5")
        obs.cmd("blockdev-add", **node)
        for dev in (vdisk, watchdog):
            obs.cmd("device_add", **dev)
        ran = []

        def destination(name, devices):
            dst = env.qemu(name, incoming=True, fill=False)
            q = Qmp(dst["qmp"])
            q.cmd("blockdev-add", **node)  # opened inactive: the source owns the disk until the switch-over
            for dev in devices:
                q.cmd("device_add", **dev)
            q.close()
            return dst

        def failed_and_restored(res, how):
            assert res["result"] != "completed" and res["_rc"] == 1, (how, res)
            assert res.get("source-restored") == "paused", (how, res)
            assert "restored to paused (QEMU 7.2 leaves it in postmigrate)" in res["_stderr"], (how, res["_stderr"])
            assert res["source-state"] == "paused" and status(src) == "paused", (how, res, status(src))
            ran.append(res.get("source-restore-ran-us"))

        # 1. The source fails at the switch-over: QEMU stopped it for completion
        #    (finish-migrate), then the destination QEMU dies.
        obs.cmd("migrate-set-capabilities", capabilities=[{"capability": "pause-before-switchover", "state": True}])
        dst1 = destination("dst1", (vdisk, watchdog))
        result = {}
        t = threading.Thread(target=lambda: result.update(res=env.migrate(src, dst1, sd, dd, ["--encrypted=required"])))
        t.start()
        wait_for(lambda: obs.cmd("query-migrate").get("status") == "pre-switchover", 60, "never reached the switch-over")
        assert obs.cmd("query-status")["status"] == "finish-migrate"
        os.kill(dst1["proc"].pid, signal.SIGKILL)
        t.join(60)
        assert not t.is_alive(), "encmig did not return after the destination QEMU died"
        failed_and_restored(result["res"], "failed at the switch-over")
        obs.cmd("migrate-set-capabilities", capabilities=[{"capability": "pause-before-switchover", "state": False}])

        # 2. The source completes; the destination, without the watchdog,
        #    refuses its state at the end of the stream and exits.
        dst2 = destination("dst2", (vdisk,))
        res = env.migrate(src, dst2, sd, dd, ["--encrypted=required"])
        assert "the destination did not complete" in res.get("error", ""), res  # the source QEMU had completed
        failed_and_restored(res, "destination failed to load")

        # Then it migrates, completely, to a destination that has the watchdog.
        dst = destination("dst", (vdisk, watchdog))
        res = env.migrate(src, dst, sd, dd, ["--encrypted=required"])
        assert src["proc"].poll() is None, "the source QEMU died: " + open(env.path("src.qemu.log")).read()[-500:]
        check_migrated(env, src, dst, res)
        assert "source-restored" not in res, res
        print(f"  source vCPUs ran {ran} us between cont and stop (QEMU's RESUME to STOP)", flush=True)
        obs.close()
    finally:
        env.close()


CASES = {
    "attack-preauth-flood": preauth_flood,
    "attack-emfile-no-spin": emfile_no_spin,
    "attack-local-impostors": local_impostors,
    "attack-control-client-never-reads": control_plane_not_frozen,
    "attack-bad-control-input": bad_control_input,
    "destination-qemu-dies": destination_qemu_dies,
    "stalled-migration-fails": stalled_migration_fails,
    "limits-and-expiry": limits_and_expiry,
    "ten-at-once": ten_at_once,
    "source-runstates": source_runstates,
    "paused-source-migrates-again": paused_source_migrates_again,
}

if __name__ == "__main__":
    run(CASES)
