#!/usr/bin/env python3
"""encmig on real QEMU 7.2 and real encmigd: integrity, confidentiality,
attacks, daemon deaths and concurrency. Usage: test_migration.py [CASE...]"""
import os, signal, threading, time

from harness import Env, Qmp, check_migrated, files_equal, last_ops, run, snapshot_outside_workset, status, wait_for
from mitm import Mitm, read_exact

MEM = int(os.environ.get("ENCMIG_TEST_MEM_MIB", "256"))


def two_hosts(env, src_extra=(), dst_extra=()):
    """Two daemons, a running random-filled source and an incoming destination."""
    sd, dd = env.daemon("src-d", src_extra), env.daemon("dst-d", dst_extra)
    src, dst = env.qemu("src"), env.qemu("dst", incoming=True, fill=False)
    return sd, dd, src, dst


def encrypted(channels):
    def case():
        env = Env(MEM)
        try:
            sd, dd, src, dst = two_hosts(env)
            extra = ["--encrypted=required"] + (["--parallel", "--parallel-connections", str(channels)] if channels else [])
            res = env.migrate(src, dst, sd, dd, extra)
            assert res["encrypted"] is True, res
            check_migrated(env, src, dst, res)
            streams = res["source-encmigd"]["streams"]
            assert len(streams) == 1 + channels, streams
            assert sorted(s["name"] for s in streams) == sorted(["main"] + [f"multifd-{i}" for i in range(channels)])
            # Every stream used the connection the source daemon made at arm.
            q = Qmp(sd["ctl"])
            stats = q.cmd("query-stats")
            q.close()
            assert stats["streams-preconnected"] == 1 + channels and stats["streams-connected-late"] == 0, stats
            # The counters say what they count: each stream used its connection
            # made at arm, and each DATA record and byte was counted once.
            made = res["source-encmigd"]["connections-made-at-arm"]
            assert made["used"] == 1 + channels and made["failed"] == 0, made
            for st in streams:
                peer = [d for d in res["destination-encmigd"]["streams"] if d["name"] == st["name"]][0]
                assert st["records-out"] == peer["records-in"] and st["bytes-out"] == peer["bytes-in"], (st, peer)
            # Guest data in encmigd's memory is locked (the unit grants CAP_IPC_LOCK); nothing is left holding a key.
            assert stats["buffers-not-locked"] == 0, stats
            for d in (sd, dd):
                q = Qmp(d["ctl"])
                wait_for(lambda: q.cmd("query-stats")["keys-held"] == 0, 10, "a key is still held")
                q.close()
        finally:
            env.close()
    return case


def confidentiality(encrypt):
    def case():
        env = Env(MEM)
        try:
            marker = os.urandom(64)
            src = env.qemu("src", marker=marker)
            dst = env.qemu("dst", incoming=True, fill=False)
            if encrypt:
                sd, dd = env.daemon("src-d"), env.daemon("dst-d")
                tap = Mitm(dd["port"], marker=marker)
                res = env.migrate(src, dst, sd, dd, ["--encrypted=required", "--dst-addr", f"127.0.0.1:{tap.port}"])
            else:
                import socket
                s = socket.socket()
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
                s.close()
                tap = Mitm(port, marker=marker)
                res = env.migrate(src, dst, extra=["--encrypted=disabled", "--plain-listen", f"127.0.0.1:{port}",
                                                    "--plain-connect", f"127.0.0.1:{tap.port}"])
            tap.close()
            check_migrated(env, src, dst, res)
            assert tap.bytes > MEM * (1 << 20), f"tap saw only {tap.bytes} bytes"
            if encrypt:
                assert not tap.marker_seen, "marker visible on the wire in encrypted mode"
            else:
                assert tap.marker_seen, "marker not seen in plain mode: the tap is broken"
        finally:
            env.close()
    return case


def retry_succeeds(env, src, sd, dd, name, extra=()):
    dst2 = env.qemu(name, incoming=True, fill=False)
    res = env.migrate(src, dst2, sd, dd, ["--encrypted=required"] + list(extra))
    check_migrated(env, src, dst2, res)


def attack(kind, dst_extra=()):
    """An attacker on the path rewrites the records of the main stream: the
    migration fails, names the cause on both sides, and the VM stays. (A
    truncation is what a broken connection looks like: it resumes, see
    truncate_resumes.)"""
    def case():
        env = Env(MEM)
        try:
            sd, dd, src, dst = two_hosts(env, dst_extra=dst_extra)
            untouched = snapshot_outside_workset(src["mem"])
            mitm = Mitm(dd["port"], attack=kind, at_record=20)
            res = env.migrate(src, dst, sd, dd, ["--encrypted=required", "--dst-addr", f"127.0.0.1:{mitm.port}"])
            mitm.close()
            assert mitm.attacked, "the attack never fired"
            assert res["result"] != "completed", res
            assert res["_rc"] == 1
            assert status(src) == "running", "source VM is not running after the failed migration"
            ops = last_ops(src["serial"])
            wait_for(lambda: last_ops(src["serial"]) > ops, 30, "source guest stopped making progress")
            assert snapshot_outside_workset(src["mem"]) == untouched, "source RAM changed"
            assert sd["proc"].poll() is None and dd["proc"].poll() is None, "a daemon died"
            logs = open(sd["log"]).read() + open(dd["log"]).read()
            mig = res.get("migration-id", "")
            assert mig and f"migration {mig} failed: stream main" in logs, logs
            want = {"flip": "authentication failed", "replay": "counter mismatch", "drop": "counter mismatch"}[kind]
            assert want in logs, f"expected '{want}' in daemon logs:\n{logs}"
            # The destination told the source why, in an ERROR record.
            assert "peer reported an error" in open(sd["log"]).read(), open(sd["log"]).read()
            retry_succeeds(env, src, sd, dd, "dst2")
        finally:
            env.close()
    return case


def truncate_resumes():
    """The man in the middle cuts the main stream after record 20
    (both directions of the first connection); the source reconnects, both
    daemons agree where the destination QEMU stopped, and the migration
    completes byte for byte, one resume on each side."""
    env = Env(MEM)
    try:
        sd, dd, src, dst = two_hosts(env)
        mitm = Mitm(dd["port"], attack="truncate", at_record=20)
        res = env.migrate(src, dst, sd, dd, ["--encrypted=required", "--dst-addr", f"127.0.0.1:{mitm.port}"])
        assert mitm.attacked, "the attack never fired"
        check_migrated(env, src, dst, res)
        assert "protocol 3" in res["reason"], res
        done = "migration " + res["migration-id"] + " completed"
        logs = lambda: open(sd["log"]).read() + open(dd["log"]).read()
        wait_for(lambda: logs().count(done) == 2, 10, "one 'completed' line per daemon")
        mitm.close()
        for side in ("source-encmigd", "destination-encmigd"):
            main = [s for s in res[side]["streams"] if s["name"] == "main"][0]
            assert main["resumes"] >= 1, (side, main)
        assert "stream main: resumed after" in logs(), logs()
    finally:
        env.close()


def version_downgrade():
    """An attacker on the path answers the source's first hello with a forged
    'unsupported version' Alert. One version is spoken and it is bound into
    every key, so there is nothing to fall back to: the migration fails, the
    VM stays, and a retry without the attacker completes."""
    env = Env(MEM)
    try:
        sd, dd, src, dst = two_hosts(env)
        mitm = Mitm(dd["port"], attack="alert-version", attack_conn=-1)  # every connection: made at arm, and again
        res = env.migrate(src, dst, sd, dd, ["--encrypted=required", "--dst-addr", f"127.0.0.1:{mitm.port}"])
        mitm.close()
        assert mitm.attacked, "the attack never fired"
        assert res["result"] != "completed", res
        assert status(src) == "running"
        log = open(sd["log"]).read()
        assert "unsupported protocol version" in log, log
        retry_succeeds(env, src, sd, dd, "dst2")
    finally:
        env.close()


def resume_race(channels):
    """Issue 18's attack, on the wire: a man in the middle that only delays,
    holds and resets TCP makes two resumes of one stream overlap on the
    destination (tests/integration/race_mitm.py): the first resume's DATA is
    held after the source installed it, the first resume is reset towards
    the source only, and its held bytes reach the destination before, during
    or after the second resume. Each migration completes with RAM identical
    byte for byte (or would fail honestly): never a byte twice, never a gap."""
    from race_mitm import RaceMitm

    def case():
        for order in ("before", "during", "after"):
            env = Env(MEM)
            mitm = None
            try:
                sd, dd, src, dst = two_hosts(env)
                index = 1 if channels else 0  # multifd-0, or main
                mitm = RaceMitm(dd["port"], kind=1, index=index, order=order, cut_after=(16 << 20) // (1 + channels))
                extra = ["--encrypted=required", "--dst-addr", f"127.0.0.1:{mitm.port}"]
                if channels:
                    extra += ["--parallel", "--parallel-connections", str(channels)]
                res = env.migrate(src, dst, sd, dd, extra)
                events = [e for _, e in mitm.events]
                assert mitm.conns >= 3 and any(e.startswith("release") for e in events), (order, mitm.conns, events)
                check_migrated(env, src, dst, res)
                name = f"multifd-{index - 1}" if index else "main"
                stream = [st for st in res["destination-encmigd"]["streams"] if st["name"] == name][0]
                assert stream["resumes"] >= 2, (order, stream, events)
                logs = open(sd["log"]).read() + open(dd["log"]).read()
                assert "integrity" not in logs, logs
            except Exception as e:
                raise AssertionError(f"order {order}: {e}") from e
            finally:
                if mitm:
                    mitm.close()
                env.close()
    return case


def integrity_fault(kind):
    """A destination whose delivery repeats or skips DATA record 30 of every
    stream after authenticating it (encmigd --test-fault, as a bug would):
    the integrity checks fail the migration with code 26, named in both
    daemons' outcome lines; the VM stays on the source and migrates again."""
    def case():
        env = Env(MEM)
        try:
            sd, dd, src, dst = two_hosts(env, dst_extra=["--test-fault", f"{kind}:30"])
            res = env.migrate(src, dst, sd, dd, ["--encrypted=required"])
            assert res["result"] != "completed" and res["_rc"] == 1, res
            assert status(src) == "running", "source VM is not running after the failed migration"
            mig = res["migration-id"]
            for d, want in ((dd, "stream integrity check failed"), (sd, "stream integrity check failed")):
                log = open(d["log"]).read()
                assert f"migration {mig} failed: stream main" in log and want in log, log
            dd2 = env.daemon("dst-d2")
            dst2 = env.qemu("dst2", incoming=True, fill=False)
            res = env.migrate(src, dst2, sd, dd2, ["--encrypted=required"])
            check_migrated(env, src, dst2, res)
        finally:
            env.close()
    return case


def daemons_and_fake_qemu(env):
    """Two daemons, a QMP client to each, and a listening UNIX socket in place
    of the destination QEMU (accept() times out after 0.5 s)."""
    import socket
    sd, dd = env.daemon("src-d"), env.daemon("dst-d")
    qemu_path = env.path("fake-qemu.sock")
    fake = socket.socket(socket.AF_UNIX)
    fake.bind(qemu_path)
    fake.listen(4)
    fake.settimeout(0.5)
    return sd, dd, Qmp(sd["ctl"]), Qmp(dd["ctl"]), qemu_path, fake


def preconnect_forged_alert():
    """The connection the source daemon makes when the migration is armed
    gets a forged 'unsupported version' alert from the path. The stream does
    not use it and connects again when QEMU does: the migration completes,
    counted and logged."""
    env = Env(MEM)
    try:
        sd, dd, src, dst = two_hosts(env)
        mitm = Mitm(dd["port"], attack="alert-version")  # the first connection only
        res = env.migrate(src, dst, sd, dd, ["--encrypted=required", "--dst-addr", f"127.0.0.1:{mitm.port}"])
        mitm.close()
        assert mitm.attacked, "the attack never fired"
        check_migrated(env, src, dst, res)
        assert "protocol 3" in res["reason"], res
        q = Qmp(sd["ctl"])
        stats = q.cmd("query-stats")
        q.close()
        assert stats["streams-preconnected"] == 0 and stats["streams-connected-late"] == 1, stats
        log = open(sd["log"]).read()
        assert "stream main: the connection made at arm is not used" in log and "unsupported protocol version" in log, log
    finally:
        env.close()


def preconnect_dropped_resumes():
    """The connection made at arm carries the hello and the confirmation, then
    the path black-holes every record on it: the source finds it silent,
    resumes on a new connection, and the destination, which never got a
    record of that stream, starts the stream there at position 0. The
    migration completes byte for byte; nothing is refused."""
    env = Env(MEM)
    try:
        sd, dd, src, dst = two_hosts(env)
        mitm = Mitm(dd["port"], attack="blackhole", at_record=0)
        res = env.migrate(src, dst, sd, dd, ["--encrypted=required", "--dst-addr", f"127.0.0.1:{mitm.port}"])
        mitm.close()
        assert mitm.attacked, "the attack never fired"
        check_migrated(env, src, dst, res)
        main = [s for s in res["source-encmigd"]["streams"] if s["name"] == "main"][0]
        assert main["resumes"] >= 1, main
        logs = open(sd["log"]).read() + open(dd["log"]).read()
        assert "refused" not in logs and "failed" not in logs, logs
    finally:
        env.close()


def preconnect_unused():
    """Connections made at arm that are never used: the destination does not
    connect to its QEMU for them, opens no stream, and fails nothing when the
    source cancels and closes them; a second migration after them runs."""
    import base64, socket
    env = Env(64)
    try:
        sd, dd, a, b, qemu_path, fake = daemons_and_fake_qemu(env)
        mid, nonce = os.urandom(16).hex(), os.urandom(8).hex()
        key = base64.b64encode(os.urandom(32)).decode()
        b.cmd("migration-arm", id=mid, role="destination", key=key, nonce=nonce, streams=3, **{"qemu-path": qemu_path})
        a.cmd("migration-arm", id=mid, role="source", key=key, nonce=nonce, streams=3, peer=f"127.0.0.1:{dd['port']}",
              **{"peer-protocol": 3, "listen-path": env.path("src.sock")})
        # Three connections made and confirmed: the destination holds them.
        wait_for(lambda: len([l for l in open("/proc/net/tcp").read().splitlines()[1:]
                              if l.split()[3] == "01" and int(l.split()[2].split(":")[1], 16) == dd["port"]]) == 3,
                 10, "three connections made at arm")
        try:
            fake.accept()
            raise AssertionError("the destination connected to QEMU before any record")
        except socket.timeout:
            pass
        assert b.cmd("query-migrations", id=mid)[0]["streams"] == []
        a.cmd("migration-cancel", id=mid)
        time.sleep(1.5)  # the source's reaper closes them; the destination sees them close
        st = b.cmd("query-migrations", id=mid)[0]
        assert st["state"] == "armed" and not st.get("error") and st["streams"] == [], st
        assert b.cmd("query-stats")["failures"] == {}, b.cmd("query-stats")
        try:
            fake.accept()
            raise AssertionError("the destination connected to QEMU for a connection never used")
        except socket.timeout:
            pass
        b.cmd("migration-end", id=mid)
        log = open(dd["log"]).read()
        assert f"migration {mid} failed" not in log, log
        assert dd["proc"].poll() is None and sd["proc"].poll() is None
    finally:
        env.close()


def engines_interoperate(src_engine, dst_engine):
    """Two daemons pinned to different AES-256-GCM libraries: the records one
    seals, the other opens, on every stream; each reports its engine."""
    def case():
        env = Env(MEM)
        try:
            sd, dd, src, dst = two_hosts(env, ["--aead-engine", src_engine], ["--aead-engine", dst_engine])
            for d, want in ((sd, src_engine), (dd, dst_engine)):
                q = Qmp(d["ctl"])
                caps = q.cmd("query-encmig-capabilities")
                q.close()
                assert caps["aead-engine"] == want and caps["aead-engine-pinned"] is True, caps
                assert all(e["known-answers"] == "passed" for e in caps["aead-engines"]), caps
            res = env.migrate(src, dst, sd, dd, ["--encrypted=required", "--parallel", "--parallel-connections", "2"])
            check_migrated(env, src, dst, res)
            assert res["source-encmigd"]["aead-engine"] == src_engine, res["source-encmigd"]
            assert res["destination-encmigd"]["aead-engine"] == dst_engine, res["destination-encmigd"]
        finally:
            env.close()
    return case


def kill_daemon(which):
    def case():
        env = Env(MEM)
        try:
            sd, dd, src, dst = two_hosts(env)
            victim = sd if which == "source" else dd
            result = {}

            def go():
                result["res"] = env.migrate(src, dst, sd, dd, ["--encrypted=required", "--bandwidth", "32"])
            t = threading.Thread(target=go)
            t.start()
            # Kill once data is flowing (QEMU's monitor is busy with encmig, so
            # ask the source daemon, which serves many clients).
            q = Qmp(sd["ctl"])
            wait_for(lambda: sum(m["bytes-out"] for m in q.cmd("query-migrations")) > 16 << 20, 60, "migration did not start")
            q.close()
            os.kill(victim["proc"].pid, signal.SIGKILL)
            t.join(120)
            res = result["res"]
            assert res["result"] != "completed", res
            assert status(src) == "running"
            # encmig lowers QEMU's downtime-limit while data sits in the
            # source daemon's window, and gives it back at the end, however
            # the migration ended.
            q = Qmp(src["qmp"])
            limit = q.cmd("query-migrate-parameters")["downtime-limit"]
            q.close()
            assert limit == 300, f"the source's downtime-limit was left at {limit} ms (QEMU's default, 300)"
            other = dd if which == "source" else sd
            assert other["proc"].poll() is None, "the surviving daemon died"
            # Restart the killed daemon and retry.
            new = env.daemon(victim["name"] + "2")
            retry_succeeds(env, src, new if which == "source" else sd, new if which == "destination" else dd, "dst2")
        finally:
            env.close()
    return case


def order_timeout():
    """The destination hands streams to QEMU in the source's order; a multifd
    channel whose main stream never comes fails the migration after
    --order-timeout, naming the stream, and the source keeps running."""
    env = Env(MEM)
    try:
        sd, dd = env.daemon("src-d"), env.daemon("dst-d", ["--order-timeout", "700"])
        src, dst = env.qemu("src"), env.qemu("dst", incoming=True, fill=False)
        mitm = Mitm(dd["port"], hold_main_s=4)
        res = env.migrate(src, dst, sd, dd, ["--encrypted=required", "--dst-addr", f"127.0.0.1:{mitm.port}",
                                             "--parallel", "--parallel-connections", "2"])
        mitm.close()
        assert res["result"] != "completed" and res["_rc"] == 1, res
        log = open(dd["log"]).read()
        assert "not ready" in log and "multifd-" in log and "waited" in log, log
        assert status(src) == "running"
        assert sd["proc"].poll() is None and dd["proc"].poll() is None, "a daemon died"
        # The source QEMU keeps its multifd setting, so the retry uses it too.
        retry_succeeds(env, src, sd, dd, "dst2", ["--parallel", "--parallel-connections", "2"])
    finally:
        env.close()


def wrong_key():
    # Two daemons armed with different keys for the same migration id. The
    # local "QEMU" ends are plain sockets here: the handshake must fail before
    # the destination touches its QEMU socket.
    import base64, socket
    env = Env(64)
    try:
        sd, dd, a, b, qemu_path, fake = daemons_and_fake_qemu(env)
        mid = os.urandom(16).hex()
        nonce = os.urandom(8).hex()
        b.cmd("migration-arm", id=mid, role="destination", key=base64.b64encode(os.urandom(32)).decode(), nonce=nonce,
              **{"qemu-path": qemu_path})
        a.cmd("migration-arm", id=mid, role="source", key=base64.b64encode(os.urandom(32)).decode(), nonce=nonce,
              peer=f"127.0.0.1:{dd['port']}", **{"listen-path": env.path("src.sock")})
        c = socket.socket(socket.AF_UNIX)
        c.connect(env.path("src.sock"))
        c.sendall(b"QEVM" + b"\0" * 1000)
        c.settimeout(10)
        try:
            assert c.recv(100) == b"", "the source end should be closed"
        except ConnectionResetError:
            pass  # closed with our bytes unread: also a close
        wait_for(lambda: a.cmd("query-migrations", id=mid)[0]["state"] == "failed", 10, "source migration not failed")
        st = a.cmd("query-migrations", id=mid)[0]
        assert "key confirmation failed" in st["error"] and "main" in st["error"], st
        try:
            fake.accept()
            raise AssertionError("destination connected to QEMU despite a wrong key")
        except socket.timeout:
            pass
        # The source sees the bad ServerConfirm first and hangs up. The
        # destination's stream never joined its migration (no key
        # confirmation): that migration is untouched, and the refusal counted.
        time.sleep(0.5)
        assert b.cmd("query-migrations", id=mid)[0]["state"] == "armed", b.cmd("query-migrations", id=mid)
        wait_for(lambda: sum(b.cmd("query-stats")["pre-auth-refused"].values()) >= 1, 10, "refusal not counted")
        # Unknown id and malformed hello: alerts, daemon survives.
        for hello in (b"EMIG\0\3\1\1" + b"\0" * 4 + os.urandom(16) + b"\0" * 36, b"GET / HTTP/1.0\r\n" + b"\0" * 48):
            t = socket.create_connection(("127.0.0.1", dd["port"]))
            t.sendall(hello)
            t.settimeout(5)
            reply = t.recv(64)
            assert reply[:4] == b"EMIA", reply
            t.close()
        assert dd["proc"].poll() is None and sd["proc"].poll() is None
        # The controller saw the failure as a QMP event.
        a.cmd("query-stats")
        assert any(e["event"] == "ENCMIG_MIGRATION_STATE" and e["data"]["state"] == "failed" and e["data"]["id"] == mid
                   for e in a.events), a.events
        a.cmd("migration-end", id=mid)
        b.cmd("migration-end", id=mid)

        # Someone who knows a migration id but not its key: two hellos for
        # main are each answered (the id alone proves nothing), then a forged
        # confirmation gets an alert and a closed socket, and the migration is
        # not touched: the real source can still run it.
        mid2 = os.urandom(16).hex()
        b.cmd("migration-arm", id=mid2, role="destination", key=base64.b64encode(os.urandom(32)).decode(),
              nonce=nonce, **{"qemu-path": qemu_path})
        hello = b"EMIG\0\3\1\1" + b"\0" * 4 + bytes.fromhex(mid2) + os.urandom(32) + b"\0" * 4
        t1 = socket.create_connection(("127.0.0.1", dd["port"]))
        t1.sendall(hello)
        t1.settimeout(5)
        assert len(t1.recv(96)) > 0  # server hello + confirm
        t2 = socket.create_connection(("127.0.0.1", dd["port"]))
        t2.sendall(hello[:28] + os.urandom(32) + b"\0" * 4)
        t2.settimeout(5)
        assert len(t2.recv(96)) > 0, "a second hello for the same stream must not fail anything before confirmation"
        t2.sendall(os.urandom(32))
        reply = read_exact(t2, 64)
        assert reply[:4] == b"EMIA" and b"key confirmation failed" in reply, reply
        time.sleep(0.3)
        st = b.cmd("query-migrations", id=mid2)[0]
        assert st["state"] == "armed" and not st.get("error") and st["streams"] == [], st
        assert b.cmd("query-stats")["pre-auth-refused"]["key-confirmation-failed"] >= 1
        t1.close()
        t2.close()
        b.cmd("migration-end", id=mid2)
        assert dd["proc"].poll() is None
    finally:
        env.close()


def teardown_while_reconnecting():
    """A migration is cancelled while one of its streams is reconnecting (its
    path died: every new connection is refused), three times over, while
    another migration runs on the same daemons and a control client stays
    connected. The daemons once kept a closed socket's number for a stream
    that was reconnecting and shut it down at teardown: whatever had reused
    the number (another migration's socket, a control client) broke. Now
    nothing else is touched: the other migration completes byte for byte,
    the control client still answers, and no key is left."""
    import subprocess
    from harness import ENCMIG
    env = Env(MEM)
    try:
        sd, dd = env.daemon("src-d"), env.daemon("dst-d")
        watcher = Qmp(sd["ctl"])  # a control client that stays connected throughout
        for round_ in range(3):
            s1, d1 = env.qemu(f"a{round_}"), env.qemu(f"a{round_}-dst", incoming=True, fill=False)
            s2, d2 = env.qemu(f"b{round_}"), env.qemu(f"b{round_}-dst", incoming=True, fill=False)
            mitm = Mitm(dd["port"], attack="truncate", at_record=20, refuse_after_attack=True)
            argv = [ENCMIG, "migrate", "--json", "--src-qmp", s1["qmp"], "--dst-qmp", d1["qmp"], "--run-dir", env.dir,
                    "--src-encmigd", sd["ctl"], "--dst-encmigd", dd["ctl"], "--encrypted=required",
                    "--dst-addr", f"127.0.0.1:{mitm.port}", "--bandwidth", "64"]
            p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            wait_for(lambda: mitm.attacked, 60, "the path never died")  # and every reconnect is refused from now on
            # The other migration starts, and new sockets reuse numbers.
            other = {}
            t = threading.Thread(target=lambda: other.update(
                res=env.migrate(s2, d2, sd, dd, ["--encrypted=required", "--bandwidth", "96"])))
            t.start()
            def reconnecting():
                for m in watcher.cmd("query-migrations"):
                    if any(st["state"] == "reconnecting" for st in m["streams"]):
                        return True
                return False
            try:
                wait_for(reconnecting, 30, "no stream reconnecting")
            except AssertionError:
                p.kill()
                out, err = p.communicate()
                raise AssertionError(f"no stream reconnecting: {watcher.cmd('query-migrations')}\n{open(sd['log']).read()}"
                                     f"\n{out[-2000:]!r}\n{err[-2000:]!r}")
            if round_ == 1:
                # The controller ends it instead (migration-end) while the stream
                # is still reconnecting: the key does not outlive the end's
                # grace (5 s), whatever is left of the stream's outage budget.
                mid = [m["id"] for m in watcher.cmd("query-migrations") if m["streams"]][0]
                t0 = time.time()
                watcher.cmd("migration-end", id=mid)
                wait_for(lambda: watcher.cmd("query-stats")["keys-held"] <= 1, 10, "the key outlived migration-end")
                assert time.time() - t0 < 8, time.time() - t0
                wait_for(lambda: f"migration {mid} failed" in open(sd["log"]).read(), 10, "no outcome line")
            p.send_signal(signal.SIGINT)  # encmig cancels the migration on both daemons
            out, err = p.communicate(timeout=60)
            t.join(300)
            mitm.close()
            check_migrated(env, s2, d2, other["res"])
            assert status(s1) == "running", "the cancelled migration's source VM is not running"
            st = watcher.cmd("query-stats")  # the long-lived control client still answers
            wait_for(lambda: watcher.cmd("query-stats")["keys-held"] == 0, 15, "a key is still held")
            q = Qmp(dd["ctl"])
            wait_for(lambda: q.cmd("query-stats")["keys-held"] == 0, 15, "a key is still held on the destination")
            q.close()
            assert sd["proc"].poll() is None and dd["proc"].poll() is None, "a daemon died"
            for vm in (s1, d1, s2, d2):
                env.stop(vm["proc"])
                os.unlink(vm["mem"])
        watcher.close()
    finally:
        env.close()


def concurrent():
    env = Env(MEM)
    try:
        sd, dd = env.daemon("src-d"), env.daemon("dst-d")
        pairs = [(env.qemu(f"src{i}"), env.qemu(f"dst{i}", incoming=True, fill=False)) for i in range(2)]
        results = [None, None]

        def go(i):
            extra = ["--encrypted=required"] + (["--parallel", "--parallel-connections", "2"] if i else [])
            results[i] = env.migrate(pairs[i][0], pairs[i][1], sd, dd, extra)
        ts = [threading.Thread(target=go, args=(i,)) for i in range(2)]
        [t.start() for t in ts]
        [t.join(300) for t in ts]
        for i in range(2):
            check_migrated(env, pairs[i][0], pairs[i][1], results[i])
        assert results[0]["migration-id"] != results[1]["migration-id"]
    finally:
        env.close()


def postcopy():
    """Postcopy through encmigd (QMP-direct): one precopy pass, then the
    switch; the destination (kept paused) ends with RAM identical byte for
    byte, then the guest's counter goes on there."""
    env = Env(MEM)
    try:
        sd, dd, src, dst = two_hosts(env)
        res = env.migrate(src, dst, sd, dd, ["--encrypted=required", "--postcopy", "--postcopy-after-precopy",
                                             "--bandwidth", "128", "--downtime-limit", "1"])
        assert res["encrypted"] is True and res.get("phase") == "postcopy", res
        assert res["bytes"] > (MEM << 20) // 2 and res["downtime-ms"] > 0, res
        check_migrated(env, src, dst, res)
    finally:
        env.close()


def postcopy_preempt():
    """Postcopy with QEMU's preempt channel (x-postcopy-preempt on 7.2,
    postcopy-preempt since 8.0): the extra connection QEMU opens to the
    migration socket is carried as its own encrypted stream,
    "postcopy-preempt", delivered to the destination QEMU after the main
    stream; RAM byte for byte, the guest goes on."""
    env = Env(MEM)
    try:
        sd, dd, src, dst = two_hosts(env)
        res = env.migrate(src, dst, sd, dd, ["--encrypted=required", "--postcopy", "--postcopy-after-precopy",
                                             "--postcopy-preempt", "--bandwidth", "128", "--downtime-limit", "1"])
        assert res["encrypted"] is True and res.get("phase") == "postcopy", res
        for side in ("source-encmigd", "destination-encmigd"):
            names = sorted(s["name"] for s in res[side]["streams"])
            assert names == ["main", "postcopy-preempt"], (side, res[side]["streams"])
        check_migrated(env, src, dst, res)
    finally:
        env.close()


def independent_decoder_captures():
    """The independent decoder (tests/spec_decoder.py, written from
    docs/protocol.md alone) decodes real captures of a real migration with an
    outage. The test drives the migration by hand over QMP, in the order of
    cli/qmp_direct.cc, so that it knows the key. A recording man in the
    middle (wire_capture.RecordingProxy) between the source daemon and the
    destination's data port cuts the main stream's first connection after 8
    client records and half of the 9th, so main resumes on a new connection
    through it and the source sends that record again. Then
    every connection of every stream (main, multifd-0, multifd-1) decodes
    without a violation, with the decoder's state carried across a stream's
    connections; each stream's client direction ends with a FIN whose digest
    the decoder verified; main's plaintext starts with QEMU's "QEVM" and each
    multifd channel's with QEMU's multifd magic, each as long as its FIN
    says; RAM is identical byte for byte. The daemons are armed for one
    stream more than QEMU opens: its connection, made at arm and never used,
    carries the handshake only, and decodes as such."""
    import base64, json, subprocess, sys
    from wire_capture import RecordingProxy
    channels = 2
    env = Env(MEM)
    proxy = None
    try:
        sd, dd, src, dst = two_hosts(env)
        proxy = RecordingProxy(dd["port"], cut_stream=(1, 0), cut_after=8)
        key, nonce, mid = os.urandom(32), os.urandom(8), os.urandom(16)
        a, b, qs, qd = Qmp(sd["ctl"]), Qmp(dd["ctl"]), Qmp(src["qmp"]), Qmp(dst["qmp"])
        # QEMU's parameters, the destination's migrate-incoming, both daemons
        # armed (destination first), the connections made at arm, migrate.
        qs.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
        for q in (qd, qs):
            q.cmd("migrate-set-capabilities", capabilities=[{"capability": "multifd", "state": True}])
            q.cmd("migrate-set-parameters", **{"multifd-channels": channels})
        dst_sock, src_sock = env.path("idc-dst.sock"), env.path("idc-src.sock")
        qd.cmd("migrate-incoming", uri="unix:" + dst_sock)
        arm = dict(id=mid.hex(), key=base64.b64encode(key).decode(), nonce=nonce.hex(), streams=1 + channels + 1)
        b.cmd("migration-arm", role="destination", **arm, **{"qemu-path": dst_sock, "qemu-pid": dst["proc"].pid})
        a.cmd("migration-arm", role="source", peer=f"127.0.0.1:{proxy.port}", **arm,
              **{"peer-protocol": 3, "listen-path": src_sock, "qemu-pid": src["proc"].pid})
        wait_for(lambda: a.cmd("query-migrations", id=mid.hex())[0]["connections-made-at-arm"]["pending"] == 0, 10,
                 "connections made at arm still pending")
        qs.cmd("migrate", uri="unix:" + src_sock)
        why = lambda: (a.cmd("query-migrations", id=mid.hex()), b.cmd("query-migrations", id=mid.hex()))
        wait_for(lambda: qs.cmd("query-migrate").get("status") in ("completed", "failed", "cancelled"), 300,
                 "source migration did not end")
        st = qs.cmd("query-migrate")
        assert st["status"] == "completed", (st, why())
        wait_for(lambda: qd.cmd("query-status")["status"] != "inmigrate", 60, "destination still loading")
        assert qd.cmd("query-status")["status"] == "paused", (qd.cmd("query-status"), qd.cmd("query-migrate"), why())
        es, ed = a.cmd("migration-end", id=mid.hex()), b.cmd("migration-end", id=mid.hex())
        assert proxy.cut, "the proxy never cut the main stream"
        main_src = [s for s in es["streams"] if s["name"] == "main"][0]
        assert main_src["resumes"] >= 1, es
        assert files_equal(src["mem"], dst["mem"]), "destination RAM differs from source RAM"
        before = last_ops(src["serial"])
        qd.cmd("cont")
        wait_for(lambda: last_ops(dst["serial"]) > before, 30, "destination guest did not continue")
        for q in (a, b, qs, qd):
            q.close()
        assert proxy.wait_closed(20), "connections through the proxy still open after migration-end"

        # The captures, decoded by the independent decoder (Debian's python3
        # has python3-cryptography).
        proxy.dump(env.dir, key, nonce, mid)
        py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        t = time.time()
        r = subprocess.run([py, os.path.join(os.path.dirname(os.path.abspath(__file__)), "wire_capture.py"), env.dir],
                           capture_output=True, timeout=600)
        assert r.returncode == 0, r.stderr.decode(errors="replace")
        rep = json.loads(r.stdout)
        print(f"  decoded {len(proxy.conns)} connections, {sum(len(x['c2s']) + len(x['s2c']) for x in proxy.conns)} "
              f"bytes in {time.time() - t:.1f} s", flush=True)
        show = lambda s: json.dumps(s, indent=1)
        assert not rep["unparsed"], rep["unparsed"]
        assert all(s["error"] is None for s in rep["streams"]), show([s for s in rep["streams"] if s["error"]])
        streams = {s["name"]: s for s in rep["streams"] if s["used_connections"]}
        unused = [s for s in rep["streams"] if not s["used_connections"]]
        assert sorted(streams) == sorted(["main"] + [f"multifd-{i}" for i in range(channels)]), show(rep)
        # The spare stream's connection made at arm: hellos and confirmations, no record.
        assert [(s["kind"], s["index"]) for s in unused] == [(1, 1 + channels)], show(unused)
        assert all(c["handshake_complete"] and c["handshake_only"] for c in unused[0]["connections"]), show(unused)
        for name, s in streams.items():
            assert s["error"] is None, f"{name}: {s['error']}\n{show(s)}"
            assert all(c["handshake_complete"] for c in s["connections"]), show(s)
            fin = s["fin"]
            assert fin and s["c2s_ends_with_fin"], f"{name}: the client direction does not end with a FIN\n{show(s)}"
            assert fin["digest"] == s["digest_recomputed"], show(s)
            assert fin["total"] == s["plaintext_length"] > 0 and fin["records"] == s["data_records"], show(s)
            last = [c for c in s["connections"] if not c["handshake_only"]][-1]
            assert last["closed_cleanly"] and last["s2c_ends_with_fin"], f"{name}: no clean end (s7)\n{show(s)}"
            head = bytes.fromhex(s["plaintext_head"])
            assert head.startswith(b"QEVM" if name == "main" else bytes.fromhex("11223344")), (name, head)
        main = streams["main"]
        used = [c for c in main["connections"] if not c["handshake_only"]]
        assert len(used) >= 2 and used[0]["cut"] and used[0]["broken"], show(main)
        assert all(c["resume"] for c in used[1:]), show(main)
        assert main_src["resent-bytes"] > 0, main_src  # the record cut in half, at least
        print(f"  main: {len(used)} connections, {main['plaintext_length']} bytes, source resent "
              f"{main_src['resent-bytes']} bytes, {sum(c['c2s_resent'] for c in used)} DATA records seen twice; " +
              ", ".join(f"{n}: {s['plaintext_length']} bytes" for n, s in sorted(streams.items()) if n != "main"),
              flush=True)
    finally:
        if proxy:
            proxy.close()
        env.close()


CASES = {
    "single-stream": encrypted(0),
    "multifd-2": encrypted(2),
    "multifd-4": encrypted(4),
    "wire-plain-shows-marker": confidentiality(False),
    "wire-encrypted-hides-marker": confidentiality(True),
    "tamper-flip": attack("flip"),
    "tamper-replay": attack("replay"),
    "tamper-drop": attack("drop"),
    "truncate-resumes": truncate_resumes,
    "attack-resume-race-main": resume_race(0),
    "attack-resume-race-multifd": resume_race(2),
    "teardown-while-reconnecting": teardown_while_reconnecting,
    "integrity-repeat-record": integrity_fault("repeat-record"),
    "integrity-skip-record": integrity_fault("skip-record"),
    "attack-version-downgrade": version_downgrade,
    "preconnect-forged-alert": preconnect_forged_alert,
    "preconnect-unused": preconnect_unused,
    "preconnect-dropped-resumes": preconnect_dropped_resumes,
    "engines-libgcrypt-to-openssl": engines_interoperate("libgcrypt", "openssl"),
    "engines-openssl-to-gnutls": engines_interoperate("openssl", "gnutls"),
    "wrong-key-and-bad-hellos": wrong_key,
    "order-timeout": order_timeout,
    "kill-source-daemon": kill_daemon("source"),
    "kill-destination-daemon": kill_daemon("destination"),
    "two-at-once": concurrent,
    "postcopy": postcopy,
    "postcopy-preempt": postcopy_preempt,
    "independent-decoder-captures": independent_decoder_captures,
}

if __name__ == "__main__":
    run(CASES)
