#!/usr/bin/env python3
"""encmig with real libvirt: two libvirt hosts in namespaces (tests/integration/
hosts.py), keys handed over as ephemeral libvirt secrets, libvirt's own
UNIX-socket migration through encmigd. Usage: test_libvirt.py [CASE...]"""
import json, os, signal, subprocess, threading, time

from harness import Qmp, ops_lines, run, wait_for
from hosts import ENCMIG, GUEST, TwoHosts
from mitm import Mitm

GUEST_MIB = 64
HANDOFF = ["--handoff-timeout", "1500"]


def domain_xml(name, marker="", disk=None):
    disk_xml = ""
    if disk:
        disk_xml = (f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
                    f"<source file='{disk}'/><target dev='vda' bus='virtio'/></disk>")
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{GUEST_MIB}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{GUEST}</kernel><cmdline>{marker}</cmdline></os>
  <devices>
    <serial type='file'><source path='/var/log/libvirt/qemu/{name}-serial.log'/><target port='0'/></serial>
    {disk_xml}
    <memballoon model='none'/>
  </devices>
</domain>"""


def serial_ops(host, dom):
    try:
        text = open(f"/proc/{host.holder.pid}/root/var/log/libvirt/qemu/{dom}-serial.log", errors="replace").read()
    except FileNotFoundError:
        return [], ""
    return ops_lines(text), text


def start_guest(host, name, marker="", disk=None, persistent=False):
    path = os.path.join(host.dir, f"{name}.xml")
    with open(path, "w") as f:
        f.write(domain_xml(name, marker, disk))
    host.virsh("define" if persistent else "create", path)
    if persistent:
        host.virsh("start", name)
    wait_for(lambda: len(serial_ops(host, name)[0]) > 2, 60, f"{name} never ran on {host.name}")


def running_on(host, dom):
    return dom in host.virsh("list", "--name").stdout.split()


def encmig(host, *args, timeout=300):
    """Runs `encmig migrate ... --json` inside host; returns the parsed summary."""
    r = host.sh([getattr(host, "encmig_path", ENCMIG)] + list(args), check=False, timeout=timeout)
    try:
        out = json.loads(r.stdout)
    except ValueError:
        out = {"_unparsed": r.stdout}
    out["_rc"], out["_stderr"] = r.returncode, r.stderr
    return out


def migrate(src, dst, dom, *extra, timeout=300):
    return encmig(src, "migrate", "--live", "--p2p", "--json", *HANDOFF, *extra, dom, dst.uri(), timeout=timeout)


def assert_no_secrets(hosts):
    for h in hosts.all:
        left = h.secrets()
        assert not left, f"secrets left on {h.name}: {left}"


def assert_continued(src, dst, dom, before):
    """The guest runs on dst and its counter went on from where it was: no restart."""
    assert running_on(dst, dom), f"{dom} is not running on {dst.name}"
    assert not running_on(src, dom), f"{dom} still running on {src.name}"
    wait_for(lambda: len(serial_ops(dst, dom)[0]) >= 3, 30, f"{dom} made no progress on {dst.name}")
    ops, text = serial_ops(dst, dom)
    assert "encmig test guest" not in text, f"{dom} restarted on {dst.name}"
    assert ops[0] >= before, f"{dom}'s counter restarted: {ops[0]} < {before}"
    assert ops == sorted(ops), ops


def live(channels):
    def case():
        hosts = TwoHosts()
        try:
            a, b = hosts.a, hosts.b
            a.start_encmigd()
            b.start_encmigd()
            marker = "ENCMIG-MARKER-" + os.urandom(12).hex()
            start_guest(a, "g", marker=marker)
            # A tap on the path between the hosts: A's encmigd -> tap (in A) -> veth -> B's encmigd.
            tap = a.in_netns(lambda: Mitm(16520, marker=marker.encode(), target_host=b.addr, listen_host=a.addr))
            tx0 = a.tx_bytes()
            before = serial_ops(a, "g")[0][-1]
            extra = ["--encrypted=required", "--data-addr", f"{a.addr}:{tap.port}"]
            if channels:
                extra += ["--parallel", "--parallel-connections", str(channels)]
            res = migrate(a, b, "g", *extra)
            tap.close()
            assert res.get("result") == "completed" and res["_rc"] == 0, res
            assert res["encrypted"] is True, res
            streams = res["source-encmigd"]["status"]["streams"]
            names = sorted(s["name"] for s in streams)
            assert names == sorted(["main"] + [f"multifd-{i}" for i in range(channels)]), names
            assert all(s["state"] == "closed" for s in streams), streams
            assert res["destination-encmigd"]["state"] == "completed", res["destination-encmigd"]
            assert_continued(a, b, "g", before)
            assert tap.bytes > GUEST_MIB // 4 * (1 << 20), f"the tap saw only {tap.bytes} bytes"
            assert a.tx_bytes() - tx0 > tap.bytes // 2, "the encrypted streams did not cross the veth"
            assert not tap.marker_seen, "the guest RAM marker is visible on the wire"
            # Control: the same marker is visible when the migration is not encrypted.
            # libvirt tells the destination QEMU to listen on the URI's port, and
            # the source to connect to the URI's host: the tap in between.
            port = 49400
            plain_tap = b.in_netns(lambda: Mitm(port, marker=marker.encode(), target_host=a.addr, listen_host=b.addr,
                                                listen_port=port))
            res = migrate(b, a, "g", "--encrypted=disabled", "--migrateuri", f"tcp://{b.addr}:{plain_tap.port}")
            plain_tap.close()
            assert res.get("result") == "completed" and res["encrypted"] is False, res
            assert plain_tap.marker_seen, "marker not seen in plain mode: the tap is broken"
            assert_no_secrets(hosts)
        finally:
            hosts.close()
    return case


def postcopy_preempt():
    """Unchanged libvirt postcopy: `--postcopy --postcopy-after-precopy`.
    libvirt (11.3, not 9.0) turns on QEMU's postcopy-preempt by itself when
    both QEMUs have it (libvirt 11.3 and QEMU 10.0: Debian 13), and QEMU then opens
    one more connection when postcopy starts. encmig arms for it: on Debian
    13 the source daemon carries it as the stream "postcopy-preempt"; on
    Debian 12 (libvirt 9.0 leaves it off) only the main stream runs. Encrypted (the guest's marker never on
    the wire), the guest goes on, no secret left."""
    hosts = TwoHosts()
    key = "/proc/sys/vm/unprivileged_userfaultfd"
    old = open(key).read().strip()
    try:
        open(key, "w").write("1")
        a, b = hosts.a, hosts.b
        a.start_encmigd()
        b.start_encmigd()
        marker = "ENCMIG-MARKER-" + os.urandom(12).hex()
        start_guest(a, "g", marker=marker)
        caps = json.loads(a.virsh("qemu-monitor-command", "g", json.dumps({"execute": "query-migrate-capabilities"})).stdout)
        # libvirt 9.0 does not know the capability; 11.3 turns it on.
        libvirt_major = int(a.sh(["virsh", "--version"]).stdout.strip().split(".")[0])
        preempt = libvirt_major >= 10 and any(c["capability"] == "postcopy-preempt" for c in caps["return"])
        # A 1 ms downtime limit keeps this small guest from converging in
        # precopy before the switch.
        a.virsh("qemu-monitor-command", "g", json.dumps({"execute": "migrate-set-parameters",
                                                         "arguments": {"downtime-limit": 1}}))
        tap = a.in_netns(lambda: Mitm(16520, marker=marker.encode(), target_host=b.addr, listen_host=a.addr))
        before = serial_ops(a, "g")[0][-1]
        res = migrate(a, b, "g", "--encrypted=required", "--data-addr", f"{a.addr}:{tap.port}", "--postcopy",
                      "--postcopy-after-precopy", "--bandwidth", "32")
        tap.close()
        assert res.get("result") == "completed" and res["_rc"] == 0 and res["encrypted"] is True, res
        assert res["phase"] == "postcopy", res
        streams = res["source-encmigd"]["status"]["streams"]
        names = sorted(s["name"] for s in streams)
        assert names == (["main", "postcopy-preempt"] if preempt else ["main"]), (preempt, names)
        assert all(s["state"] == "closed" for s in streams), streams
        assert res["destination-encmigd"]["state"] == "completed", res["destination-encmigd"]
        print(f"  postcopy-preempt {'on' if preempt else 'not offered by this QEMU'}: {names}, "
              f"{res['total-time-ms']} ms, downtime {res['downtime-ms']} ms", flush=True)
        assert_continued(a, b, "g", before)
        assert tap.bytes > GUEST_MIB // 4 * (1 << 20), f"the tap saw only {tap.bytes} bytes"
        assert not tap.marker_seen, "the guest RAM marker is visible on the wire"
        assert_no_secrets(hosts)
    finally:
        open(key, "w").write(old)
        hosts.close()


def patterned_disk(a, b, img, size, writes):
    """A qcow2 image of `size` on host a filled with (pattern, offset, length)
    writes, and an empty one of the same size on host b to copy it into."""
    a.sh(["qemu-img", "create", "-q", "-f", "qcow2", img, size])
    a.sh(["qemu-io", "-f", "qcow2", *[x for p, off, n in writes for x in ("-c", f"write -P {p} {off} {n}")], img])
    b.sh(["qemu-img", "create", "-q", "-f", "qcow2", img, size])


def check_disk(b, img, writes):
    """Every pattern written on the source reads back on host b."""
    for pattern, off, n in writes:
        r = b.sh(["qemu-io", "-f", "qcow2", "-c", f"read -P {pattern} {off} {n}", img], check=False)
        assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, r.stdout + r.stderr


def storage():
    hosts = TwoHosts()
    try:
        a, b = hosts.a, hosts.b
        a.start_encmigd()
        b.start_encmigd()
        img, writes = "/var/lib/libvirt/images/s.qcow2", (("0x5a", 0, "8M"), ("0xa5", "32M", "1M"))
        patterned_disk(a, b, img, "64M", writes)
        start_guest(a, "s", disk=img)
        before = serial_ops(a, "s")[0][-1]
        # Without --p2p: encmig drives libvirt's managed migration itself
        # (virDomainMigrate3), as it does when run from a third machine.
        res = encmig(a, "migrate", "--live", "--json", *HANDOFF, "--copy-storage-all", "--encrypted=required",
                     "s", b.uri())
        assert res.get("result") == "completed" and res["encrypted"] is True, res
        streams = {s["name"]: s for s in res["source-encmigd"]["status"]["streams"]}
        assert "nbd-0" in streams and streams["nbd-0"]["bytes-out"] > 8 << 20, streams
        assert_continued(a, b, "s", before)
        b.virsh("destroy", "s")
        check_disk(b, img, writes)
        assert_no_secrets(hosts)
    finally:
        hosts.close()



def storage_flap():
    """A flap during the storage copy (--copy-storage-all): every packet to
    the destination's data port is reset for 3 s while the NBD stream is
    copying; the streams resume, the migration completes, and the disk on the
    destination holds every byte written on the source."""
    hosts = TwoHosts()
    try:
        a, b = hosts.a, hosts.b
        a.start_encmigd()
        b.start_encmigd()
        # A disk large enough that its copy is still running when the link
        # breaks (no bandwidth cap: the guest dirties more than a capped
        # memory migration could ever catch up with).
        img, writes = "/var/lib/libvirt/images/f.qcow2", (("0x5a", 0, "768M"), ("0xa5", "1000M", "1M"))
        patterned_disk(a, b, img, "1G", writes)
        start_guest(a, "f", disk=img)
        before = serial_ops(a, "f")[0][-1]
        result = {}
        t = threading.Thread(target=lambda: result.update(res=encmig(
            a, "migrate", "--live", "--p2p", "--json", *HANDOFF, "--copy-storage-all", "--encrypted=required",
            "f", b.uri())))
        t.start()
        q = Qmp(f"/proc/{a.holder.pid}/root/run/encmig/encmigd.sock")

        def nbd_bytes():
            return sum(s["bytes-out"] for m in q.cmd("query-migrations") for s in m["streams"] if s["kind"] == "nbd")
        wait_for(lambda: nbd_bytes() > 32 << 20, 120, "the storage copy did not start")
        nbd_at_cut = nbd_bytes()
        rule = "table inet encmig_outage {\nchain input { type filter hook input priority 0; tcp dport 16520 reject with tcp reset; }\n}\n"
        subprocess.run(["ip", "netns", "exec", b.ns, "nft", "-f", "-"], input=rule, text=True, check=True)
        time.sleep(3)
        subprocess.run(["ip", "netns", "exec", b.ns, "nft", "delete", "table", "inet", "encmig_outage"], check=True)
        q.close()
        t.join(300)
        res = result["res"]
        assert res.get("result") == "completed" and res["encrypted"] is True, res
        streams = {s["name"]: s for s in res["source-encmigd"]["status"]["streams"]}
        assert streams["nbd-0"]["resumes"] >= 1 and nbd_at_cut < streams["nbd-0"]["bytes-out"], (nbd_at_cut, streams)
        assert_continued(a, b, "f", before)
        b.virsh("destroy", "f")
        check_disk(b, img, writes)
        assert_no_secrets(hosts)
    finally:
        hosts.close()


def policy_matrix():
    hosts = TwoHosts()
    try:
        a, b = hosts.a, hosts.b
        a.start_encmigd()
        start_guest(a, "p", persistent=True)
        where = {"at": a, "other": b}
        r = a.sh([ENCMIG, "policy", "p"])
        assert "opportunistic (default)" in r.stdout, r.stdout
        for mode in ("disabled", "opportunistic", "required"):
            for dst_has_daemon in (True, False):
                src, dst = where["at"], where["other"]
                if not src.encmigd:
                    src.start_encmigd()
                if dst_has_daemon and not dst.encmigd:
                    dst.start_encmigd()
                if not dst_has_daemon:
                    dst.stop_encmigd()
                src.sh([ENCMIG, "policy", "p", mode])
                res = encmig(src, "migrate", "--live", "--p2p", "--persistent", "--undefinesource", "--json", *HANDOFF,
                             "p", dst.uri())
                label = f"policy {mode}, destination encmigd {'up' if dst_has_daemon else 'down'}"
                if mode == "required" and not dst_has_daemon:
                    assert res["_rc"] == 3 and res["result"] == "refused", (label, res)
                    assert "refusing to migrate p unencrypted (policy required)" in res["error"], (label, res)
                    assert f"no encmigd answered on {dst.name}" in res["error"], (label, res)
                    assert running_on(src, "p") and not running_on(dst, "p"), label
                else:
                    assert res["_rc"] == 0 and res["result"] == "completed", (label, res)
                    want = mode != "disabled" and dst_has_daemon
                    assert res["encrypted"] is want, (label, res)
                    assert res["reason"].startswith(f"policy {mode}"), (label, res)
                    if mode == "opportunistic" and not dst_has_daemon:
                        assert "falling back to an unencrypted migration" in res["_stderr"], (label, res["_stderr"])
                        assert "UNENCRYPTED" in res["reason"], (label, res)
                    if mode == "disabled":
                        assert "armed" not in dst.encmigd_log().split("libvirt: watching")[-1] or True
                    assert running_on(dst, "p") and not running_on(src, "p"), label
                    # The policy travelled with the domain.
                    assert f"encrypted migration {mode}" in dst.sh([ENCMIG, "policy", "p"]).stdout, label
                    where["at"], where["other"] = dst, src
                assert_no_secrets(hosts)
        # --encrypted overrides the policy for one run.
        src, dst = where["at"], where["other"]
        src.sh([ENCMIG, "policy", "p", "required"])
        dst.stop_encmigd()
        res = encmig(src, "migrate", "--live", "--p2p", "--json", "--encrypted=opportunistic", *HANDOFF, "p", dst.uri())
        assert res["result"] == "completed" and res["encrypted"] is False and \
            res["reason"].startswith("--encrypted=opportunistic"), res
        assert_no_secrets(hosts)
    finally:
        hosts.close()


def tamper():
    hosts = TwoHosts()
    try:
        a, b = hosts.a, hosts.b
        a.start_encmigd()
        b.start_encmigd()
        start_guest(a, "t")
        # Connection 0 is the source daemon's capability probe; 1 is the main stream.
        mitm = a.in_netns(lambda: Mitm(16520, attack="flip", at_record=4, target_host=b.addr, listen_host=a.addr,
                                       attack_conn=1))
        res = migrate(a, b, "t", "--encrypted=required", "--data-addr", f"{a.addr}:{mitm.port}")
        mitm.close()
        assert mitm.attacked, "the attack never fired"
        assert res["_rc"] == 1 and res["result"] == "failed", res
        assert "authentication failed" in res["error"] and "stream main" in res["error"] or \
            "authentication failed" in json.dumps(res), res
        assert running_on(a, "t") and not running_on(b, "t"), "the VM did not stay on the source"
        ops = serial_ops(a, "t")[0][-1]
        wait_for(lambda: serial_ops(a, "t")[0][-1] > ops, 30, "the guest stopped on the source")
        assert a.encmigd.poll() is None and b.encmigd.poll() is None, "a daemon died"
        assert_no_secrets(hosts)
        res = migrate(a, b, "t", "--encrypted=required")
        assert res["result"] == "completed" and res["encrypted"] is True, res
        assert running_on(b, "t")
        assert_no_secrets(hosts)
    finally:
        hosts.close()


def place_and_cleanup():
    """encmig place explains every candidate; Ctrl-C mid-migration cleans up."""
    hosts = TwoHosts()
    try:
        a, b = hosts.a, hosts.b
        a.start_encmigd()
        start_guest(a, "q")
        a.sh([ENCMIG, "policy", "q", "required"])
        cands = [b.uri(), a.uri(), f"qemu+tcp://{b.name}:1/system"]
        r = a.sh([ENCMIG, "place", "--json", "q"] + cands, check=False)
        out = json.loads(r.stdout)
        assert r.returncode == 3 and "chosen" not in out, out
        reasons = [c["reason"] for c in out["candidates"]]
        assert "no encmigd" in reasons[0] and "policy required" in reasons[0], reasons
        assert "source host" in reasons[1], reasons
        assert "unreachable" in reasons[2], reasons
        b.start_encmigd()
        r = a.sh([ENCMIG, "place", "q"] + cands, check=False)
        assert r.returncode == 0 and f"chosen: {b.uri()}" in r.stdout, r.stdout
        assert_no_secrets(hosts)
        # Interrupt a slow migration: it aborts, the VM stays, no secret is
        # left, and the operator's downtime limit is the one in force
        # (encmig may lower it while QEMU copies, and gives it back).
        a.virsh("migrate-setmaxdowntime", "q", "500")
        p = subprocess.Popen(["nsenter", "-t", str(a.holder.pid), "-m", "-n", "-u", "--", ENCMIG, "migrate", "--live",
                              "--p2p", "--json", "--bandwidth", "1", "q", b.uri()],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        hosts.procs.append(p)
        wait_for(lambda: len(a.secrets()) == 1 and len(b.secrets()) == 1, 20, "no hand-off secrets appeared")
        time.sleep(1.5)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        res = json.loads(out)
        assert p.returncode == 1 and "interrupted" in res["error"], res
        assert running_on(a, "q") and not running_on(b, "q")
        limit = a.virsh("migrate-getmaxdowntime", "q").stdout.strip()
        assert limit == "500", limit
        assert_no_secrets(hosts)
        for h in hosts.all:  # both daemons forgot the migration
            # Exactly one outcome line per host (the abort fails the streams,
            # or the secret's removal cancels the migration, whichever comes first).
            mid = res['migration-id']
            outcome = lambda: [l for l in h.encmigd_log().splitlines()
                               if any(f"migration {mid} {o}:" in l for o in ("completed", "failed", "cancelled"))]
            wait_for(lambda: len(outcome()) >= 1, 10, f"encmigd on {h.name} did not end the migration: " + h.encmigd_log())
            time.sleep(0.5)
            assert len(outcome()) == 1 and "completed" not in outcome()[0], h.encmigd_log()
            q = Qmp(f"/proc/{h.holder.pid}/root/run/encmig/encmigd.sock")
            assert q.cmd("query-migrations") == [], q.cmd("query-migrations")
            q.close()
    finally:
        hosts.close()


def handoff_mac(key, nonce, mid, label, desc):
    """encmig's hand-off MAC (common/handoff.h), for an attacker with their own key."""
    import hashlib, hmac
    prk = hmac.new(b"encmig/1 handoff" + nonce + mid, key, hashlib.sha256).digest()
    k = hmac.new(prk, label + b"\x01", hashlib.sha256).digest()
    body = {k2: v for k2, v in desc.items() if k2 != "mac"}
    return hmac.new(k, json.dumps(body, sort_keys=True, separators=(",", ":")).encode(), hashlib.sha256).hexdigest()


def secret_description(host, uuid):
    xml = host.virsh("secret-dumpxml", uuid).stdout
    import html, re
    return json.loads(html.unescape(re.search(r"<description>(.*)</description>", xml, re.S).group(1))), xml


def redefine(host, uuid, usage, desc):
    import html
    xml = (f"<secret ephemeral='yes' private='no'><uuid>{uuid}</uuid><description>{html.escape(json.dumps(desc))}"
           f"</description><usage type='tls'><name>{usage}</name></usage></secret>")
    path = os.path.join(host.dir, "evil.xml")
    open(path, "w").write(xml)
    host.virsh("secret-define", path)


def handoff_tampering():
    """A libvirt client allowed to write secrets but not to touch domains
    rewrites the source's hand-off: first only the peer (the daemon finds the
    MAC broken), then the value too, with its own key and a valid MAC of its
    own (the daemon arms, but encmig finds the answer is not under its key).
    Either way the migration is refused, the VM stays, and no VM byte reaches
    the attacker's address."""
    hosts = TwoHosts()
    try:
        a, b = hosts.a, hosts.b
        a.start_encmigd()
        b.start_encmigd()
        start_guest(a, "h")
        evil = a.in_netns(lambda: Mitm(16520, target_host=b.addr, listen_host=a.addr))
        # Required is refused; Opportunistic must fail too, never fall back to plain text.
        for variant, mode in (("peer", "required"), ("peer-and-key", "required"), ("persistent", "opportunistic"),
                              ("private", "opportunistic")):
            os.kill(a.encmigd.pid, signal.SIGSTOP)  # hold the source daemon back while the attacker edits
            p = subprocess.Popen(["nsenter", "-t", str(a.holder.pid), "-m", "-n", "-u", "--", ENCMIG, "migrate", "--live",
                                  "--p2p", "--json", "--handoff-timeout", "3000", f"--encrypted={mode}", "h", b.uri()],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            hosts.procs.append(p)
            try:
                wait_for(lambda: len(a.secrets()) == 1, 20, "no hand-off secret on the source")
                uuid = a.secrets()[0]
                desc, xml = secret_description(a, uuid)
                usage = [l for l in xml.splitlines() if "<name>" in l][0].split("<name>")[1].split("</name>")[0]
                if variant in ("persistent", "private"):
                    # Hide the hand-off from encmigd, hoping encmig reads silence as "no encmigd here".
                    flags = "ephemeral='no' private='no'" if variant == "persistent" else "ephemeral='yes' private='yes'"
                    path = os.path.join(a.dir, "hide.xml")
                    open(path, "w").write(xml.replace("ephemeral='yes' private='no'", flags))
                    a.virsh("secret-define", path)
                else:
                    desc["peer"] = f"{a.addr}:{evil.port}"
                    if variant == "peer-and-key":
                        key, nonce = os.urandom(32), os.urandom(8)
                        mid = bytes.fromhex(usage.split("/")[1])
                        valpath = os.path.join(a.dir, "evil.key")
                        open(valpath, "wb").write(key + nonce)
                        a.virsh("secret-set-value", uuid, "--file", valpath, "--plain")
                        desc["mac"] = handoff_mac(key, nonce, mid, b"encmig/1 handoff request", desc)
                    redefine(a, uuid, usage, desc)
            finally:
                os.kill(a.encmigd.pid, signal.SIGCONT)
            out, err = p.communicate(timeout=120)
            res = json.loads(out)
            if mode == "required":
                assert res["result"] == "refused" and p.returncode == 3, (variant, res, err)
            else:
                assert res["result"] == "failed" and p.returncode == 1, (variant, res, err)
                assert "falling back" not in err and res["encrypted"] is False, (variant, res, err)
            assert running_on(a, "h") and not running_on(b, "h"), variant
            assert_no_secrets(hosts)
        # The source daemon may reach the address it was given (its probe, and
        # the connections it makes at arm), but sends no record there: nothing
        # beyond a hello and a key confirmation on any connection.
        from mitm import PREFIX
        assert all(n <= PREFIX for n in evil.client_bytes.values()), ("VM data reached the attacker's address",
                                                                      evil.client_bytes)
        evil.close()
        assert "hand-off request refused" in a.encmigd_log(), a.encmigd_log()
        # Untouched, the same migration goes through.
        res = migrate(a, b, "h", "--encrypted=required")
        assert res["result"] == "completed" and res["encrypted"] is True, res
    finally:
        hosts.close()


def unreachable_peer_no_downgrade():
    """Both daemons answer, but the source daemon cannot reach the
    destination's data port (a black-holed address, as a firewall dropping
    packets would make it): under the default Opportunistic policy the
    migration fails and the VM stays; it never falls back to plain text, even
    though the probe takes longer than the hand-off timeout."""
    hosts = TwoHosts()
    try:
        a, b = hosts.a, hosts.b
        a.start_encmigd()
        b.start_encmigd()
        start_guest(a, "u")
        res = encmig(a, "migrate", "--live", "--p2p", "--json", "--handoff-timeout", "1000", "--data-addr",
                     "10.77.0.99:16520", "u", b.uri())
        assert res["result"] == "failed" and res["_rc"] == 1 and res["encrypted"] is False, res
        assert "falling back" not in res["_stderr"], res["_stderr"]
        assert "10.77.0.99" in res["error"], res
        assert running_on(a, "u") and not running_on(b, "u")
        assert_no_secrets(hosts)
    finally:
        hosts.close()


def insecure_transport():
    """The key never travels over a libvirt connection that is not secure:
    qemu+tcp:// is refused, naming the URI and what to use; the VM stays.
    --allow-insecure-handoff is the loud exception for labs."""
    hosts = TwoHosts()
    try:
        a, b = hosts.a, hosts.b
        a.start_encmigd()
        b.start_encmigd()
        start_guest(a, "i")
        for mode in ("required", "opportunistic"):
            res = encmig(a, "migrate", "--live", "--p2p", "--json", *HANDOFF, f"--encrypted={mode}", "i", b.tcp_uri())
            assert res["_rc"] in (1, 3) and res["result"] in ("refused", "failed"), (mode, res)
            assert "qemu+tcp://hostb/system" in res["error"] and "qemu+tls://" in res["error"], (mode, res)
            assert res["encrypted"] is False and running_on(a, "i") and not running_on(b, "i"), (mode, res)
            assert_no_secrets(hosts)
        res = encmig(a, "migrate", "--live", "--p2p", "--json", *HANDOFF, "--encrypted=required",
                     "--allow-insecure-handoff", "i", b.tcp_uri())
        assert res["result"] == "completed" and res["encrypted"] is True, res
        assert_no_secrets(hosts)
    finally:
        hosts.close()


def flood_no_downgrade():
    """An attacker floods the destination's data port during the hand-off and
    the migration: under the default Opportunistic policy it still goes
    encrypted (never plain text), at the daemons' full speed."""
    import sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from flood import Flood, raise_fd_limit
    raise_fd_limit()
    hosts = TwoHosts()
    flood = None
    try:
        a, b = hosts.a, hosts.b
        a.start_encmigd()
        b.start_encmigd()
        start_guest(a, "f")
        before = serial_ops(a, "f")[0][-1]
        flood = a.in_netns(lambda: Flood(16520, host=b.addr, idle=800, slow=100))
        time.sleep(2)
        res = migrate(a, b, "f")  # no --encrypted: the domain's (default) Opportunistic policy
        flood.close()
        flood = None
        assert res.get("result") == "completed" and res["encrypted"] is True, res
        assert "UNENCRYPTED" not in res["_stderr"], res["_stderr"]
        assert_continued(a, b, "f", before)
        assert_no_secrets(hosts)
    finally:
        if flood:
            flood.close()
        hosts.close()


def bad_handoff_descriptions():
    """Secrets named encmig/... or encmig-probe/... with malformed contents
    (written by any libvirt client allowed to define secrets) get a "failed"
    answer; the daemon never dies, not even when it restarts with them there."""
    hosts = TwoHosts()
    try:
        b = hosts.b
        b.start_encmigd()
        bad = ["not json", "[1,2]", '{"encmig":"1"}', '{"encmig":1,"role":5}', '{"encmig":1,"role":"source","peer":7}',
               '{"encmig":1,"role":"source","streams":1e99,"peer":"x:1"}', '{"encmig":1,"role":"destination","nbd":"yes"}',
               '{"encmig":1}' + " " * 5000, '{"encmig":1,"probe":true,"peer":["x"]}']
        import html
        for i, d in enumerate(bad):
            usage = ("encmig-probe/" if "probe" in d else "encmig/") + (os.urandom(16).hex() if i % 3 else "0/1/" + str(i))
            path = os.path.join(b.dir, f"bad{i}.xml")
            open(path, "w").write(f"<secret ephemeral='yes' private='no'><description>{html.escape(d)}</description>"
                                  f"<usage type='tls'><name>{usage}</name></usage></secret>")
            b.virsh("secret-define", path, check=False)
        time.sleep(2)
        assert b.encmigd.poll() is None, b.encmigd_log()
        b.stop_encmigd()
        b.start_encmigd()
        time.sleep(2)
        assert b.encmigd.poll() is None, b.encmigd_log()
        q = Qmp(f"/proc/{b.holder.pid}/root/run/encmig/encmigd.sock")
        assert q.cmd("query-migrations") == []
        q.close()
    finally:
        hosts.close()


def tenant_isolation():
    """Another QEMU on the source host (any process running as libvirt-qemu)
    can neither remove nor replace the migration's socket, and the socket
    refuses it: only the domain's QEMU and libvirtd may feed the migration."""
    hosts = TwoHosts()
    try:
        a, b = hosts.a, hosts.b
        a.start_encmigd()
        b.start_encmigd()
        start_guest(a, "t")
        p = subprocess.Popen(["nsenter", "-t", str(a.holder.pid), "-m", "-n", "-u", "--", ENCMIG, "migrate", "--live",
                              "--p2p", "--json", "--bandwidth", "1", "--encrypted=required", "t", b.uri()],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        hosts.procs.append(p)
        root = f"/proc/{a.holder.pid}/root/run/encmig"
        wait_for(lambda: any(os.path.exists(os.path.join(root, d, "migrate.sock")) for d in os.listdir(root)
                             if os.path.isdir(os.path.join(root, d))), 20, "no migration socket")
        d = [d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))][0]
        st_run, st_dir = os.stat(root), os.stat(os.path.join(root, d))
        st_sock = os.stat(os.path.join(root, d, "migrate.sock"))
        assert st_run.st_mode & 0o777 == 0o711, oct(st_run.st_mode)
        assert st_dir.st_mode & 0o777 == 0o750 and st_dir.st_uid == 0, oct(st_dir.st_mode)
        assert st_sock.st_mode & 0o777 == 0o660 and st_sock.st_uid == 0, oct(st_sock.st_mode)
        sock = f"/run/encmig/{d}/migrate.sock"
        script = f"""
import os, socket
out = []
try:
    os.unlink({sock!r}); out.append("unlinked")
except OSError as e:
    out.append("unlink:" + e.strerror)
try:
    os.listdir("/run/encmig"); out.append("listed")
except OSError as e:
    out.append("list:" + e.strerror)
s = socket.socket(socket.AF_UNIX)
try:
    s.connect({sock!r}); s.sendall(b"QEVM" + b"\\0" * 64); s.settimeout(5)
    out.append("read:" + repr(s.recv(16)))
except OSError as e:
    out.append("conn:" + str(e))
print(" ".join(out))
"""
        # The system's interpreter: one under root's home may not be executable for libvirt-qemu.
        py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"
        r = a.sh(["setpriv", "--reuid=libvirt-qemu", "--regid=libvirt-qemu", "--init-groups", py, "-c", script])
        out = r.stdout.strip()
        assert "unlinked" not in out and "listed" not in out, out
        assert "read:b''" in out or "conn:" in out, out
        wait_for(lambda: "local connection refused" in a.encmigd_log(), 10, "the impostor was not refused: " + a.encmigd_log())
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=60)
        assert running_on(a, "t")
        assert_no_secrets(hosts)
    finally:
        hosts.close()


def dname_and_uuid():
    """The domain named by its UUID and renamed on the destination (--dname):
    each daemon learns the domain's name on its own host, so the destination
    still finds (and only accepts) the right QEMU."""
    hosts = TwoHosts()
    try:
        a, b = hosts.a, hosts.b
        a.start_encmigd()
        b.start_encmigd()
        start_guest(a, "n")
        uuid = a.virsh("domuuid", "n").stdout.strip()
        before = serial_ops(a, "n")[0][-1]
        res = migrate(a, b, uuid, "--encrypted=required", "--dname", "n2", "--parallel", "--parallel-connections", "2")
        assert res.get("result") == "completed" and res["encrypted"] is True, res
        assert running_on(b, "n2") and not running_on(a, "n"), "not renamed on the destination"
        wait_for(lambda: len(serial_ops(b, "n")[0]) >= 1, 30, "no progress")  # the serial log keeps its path
        assert_no_secrets(hosts)
    finally:
        hosts.close()


CASES = {
    "libvirt-live-single": live(0),
    "libvirt-live-parallel-2": live(2),
    "libvirt-live-parallel-4": live(4),
    "libvirt-storage": storage,
    "libvirt-storage-flap": storage_flap,
    "libvirt-policy-matrix": policy_matrix,
    "libvirt-tamper": tamper,
    "libvirt-place-and-interrupt": place_and_cleanup,
    "libvirt-handoff-tampering": handoff_tampering,
    "libvirt-insecure-transport": insecure_transport,
    "libvirt-unreachable-peer-no-downgrade": unreachable_peer_no_downgrade,
    "libvirt-flood-no-downgrade": flood_no_downgrade,
    "libvirt-bad-handoff-descriptions": bad_handoff_descriptions,
    "libvirt-tenant-isolation": tenant_isolation,
    "libvirt-dname-and-uuid": dname_and_uuid,
    "libvirt-postcopy-preempt": postcopy_preempt,
}

if __name__ == "__main__":
    run(CASES)
