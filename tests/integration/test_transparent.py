#!/usr/bin/env python3
"""The transparent mode: an unchanged `virsh migrate` (and any libvirt client)
is carried by encmigd as the domain's policy says. Two libvirt hosts as Debian
ships them (QEMU as libvirt-qemu), libvirt over qemu+tls://, encmigd confined
as its unit confines it and started with --transparent. A tap on host a's
veth (tests/integration/sniff.py) sees every byte between the hosts.
Usage: test_transparent.py [CASE...]"""
import json, os, signal, subprocess, time

from harness import Qmp, run, wait_for
from hosts import ENCMIG, TwoHosts
from sniff import Sniffer
from test_libvirt import (assert_continued, assert_no_secrets, patterned_disk, running_on, serial_ops,
                          start_guest)

PORTS = (49152, 49215)


def transparent_args(hosts):
    return ["--transparent", "--handoff-timeout", "1500",
            "--peer-libvirt-uri", f"qemu+tls://%s/system?pkipath={hosts.certs.client_dir}"]


def keep_logs(hosts):
    """On a failure, with ENCMIG_KEEP_LOGS=DIR: the hosts' logs are copied there."""
    if os.environ.get("ENCMIG_KEEP_LOGS"):
        subprocess.run(["cp", "-r", hosts.dir, os.environ["ENCMIG_KEEP_LOGS"]], capture_output=True)


def virsh_migrate(src, dst, dom, *extra, timeout=300):
    """`virsh migrate` exactly as an operator types it: no encmig anywhere."""
    return src.sh(["virsh", "-c", "qemu:///system", "migrate", "--live", "--p2p", *extra, dom, dst.uri()],
                  check=False, timeout=timeout)


def set_policy(host, dom, mode):
    host.sh([getattr(host, "encmig_path", ENCMIG), "policy", "-c", "qemu:///system", dom, mode])


def stats(host):
    q = Qmp(f"/proc/{host.holder.pid}/root/run/encmig/encmigd.sock")
    try:
        return q.cmd("query-stats")["transparent"]
    finally:
        q.close()


def tapped(host, marker):
    return host.in_netns(lambda: Sniffer(host.dev, marker.encode()))


def unchanged_virsh():
    """Encrypted by default (policy opportunistic): single stream, then
    --parallel 4 back; the guest's marker never on the wire, the guest goes on.
    Disabled: plain, untouched, the marker on the wire. Required to a host
    whose encmigd is stopped: the migration fails and the VM stays. Opportunistic
    to that host: plain, and said so. A process that is not a QEMU, connecting
    into the range, is refused."""
    hosts = TwoHosts(debian=True)
    try:
        a, b = hosts.a, hosts.b
        a.start_encmigd(transparent_args(hosts) + ["--metrics-file", "/run/encmig.prom"])
        b.start_encmigd(transparent_args(hosts))
        marker = "ENCMIG-MARKER-" + os.urandom(12).hex()
        start_guest(a, "g", marker=marker)

        # 1. a -> b, unchanged virsh, single stream: encrypted.
        tap = tapped(a, marker)
        before = serial_ops(a, "g")[0][-1]
        r = virsh_migrate(a, b, "g")
        tap.close()
        assert r.returncode == 0, r.stderr
        assert_continued(a, b, "g", before)
        enc = tap.bytes_to_port(16520)
        assert enc > 4 << 20, f"only {enc} bytes between the daemons: not carried by encmigd"
        assert tap.bytes_in_range(*PORTS) == 0, "QEMU's own migration connection crossed the wire"
        assert not tap.marker_flows(), f"the guest RAM marker is on the wire: {tap.marker_flows()}"
        wait_for(lambda: "completed" in a.encmigd_log() and "completed" in b.encmigd_log(), 20,
                 "no outcome line: " + a.encmigd_log()[-2000:] + b.encmigd_log()[-2000:])
        assert "domain g to 10.77.0.2" in a.encmigd_log() and "encrypted" in a.encmigd_log(), a.encmigd_log()
        assert stats(a)["encrypted"] == 1, stats(a)
        wait_for(lambda: not a.secrets() and not b.secrets(), 10, "hand-off secrets left")
        # What an operator and a fleet's monitoring see.
        out = a.sh([getattr(a, "encmig_path", ENCMIG), "status"]).stdout
        assert "transparent mode:" in out and "encrypted=1" in out and "transparent" in out, out
        prom = f"/proc/{a.holder.pid}/root/run/encmig.prom"
        wait_for(lambda: 'encmig_transparent_total{what="encrypted"} 1' in open(prom).read(), 15,
                 "metrics file: " + (open(prom).read() if os.path.exists(prom) else "missing"))
        text = open(prom).read()
        assert "# TYPE encmig_bytes_total counter" in text and 'encmig_bytes_total{direction="out"} 0\n' not in text, text

        # 2. b -> a, --parallel 4: every channel encrypted.
        tap = tapped(b, marker)
        before = serial_ops(b, "g")[0][-1]
        r = virsh_migrate(b, a, "g", "--parallel", "--parallel-connections", "4")
        tap.close()
        assert r.returncode == 0, r.stderr
        assert_continued(b, a, "g", before)
        assert tap.bytes_in_range(*PORTS) == 0 and not tap.marker_flows()
        wait_for(lambda: b.encmigd_log().count(" completed: 5 streams") >= 1, 20, "not 5 streams: " + b.encmigd_log()[-3000:])

        # 3. Disabled: plain text, as without encmig (the control for the tap).
        set_policy(a, "g", "disabled")
        tap = tapped(a, marker)
        r = virsh_migrate(a, b, "g")
        tap.close()
        assert r.returncode == 0, r.stderr
        assert running_on(b, "g")
        assert tap.marker_flows(), "marker not seen in plain mode: the tap is broken"
        assert "policy is disabled" in a.encmigd_log()

        # 4. Required to a host whose encmigd is stopped: fails, the VM stays.
        set_policy(b, "g", "required")
        a.stop_encmigd()
        r = virsh_migrate(b, a, "g", timeout=120)
        assert r.returncode != 0, "a Required migration went through without encmigd on the destination"
        assert running_on(b, "g") and not running_on(a, "g"), "the VM did not stay on the source"
        assert "refused (policy required)" in b.encmigd_log(), b.encmigd_log()[-2000:]
        wait_for(lambda: not b.secrets() and not a.secrets(), 10, "hand-off secrets left")

        # 5. Opportunistic, same host: plain, and said so.
        set_policy(b, "g", "opportunistic")
        r = virsh_migrate(b, a, "g", timeout=120)
        assert r.returncode == 0, r.stderr + b.encmigd_log()[-1500:] + open(os.path.join(b.dir, "libvirtd.log")).read()[-3000:]
        assert running_on(a, "g")
        assert "no encmigd answered on the destination" in b.encmigd_log()
        s = stats(b)
        assert s["plain-no-encmigd"] == 1 and s["refused-policy"] == 1, s
        out = b.sh([getattr(b, "encmig_path", ENCMIG), "status"]).stdout
        assert "refused (policy required)" in out and "no encmigd answered on the destination" in out, out

        # 6. Not a QEMU: a root process connecting into the range is refused.
        r = b.sh(["python3", "-c", "import socket; s = socket.create_connection(('10.77.0.1', 49200), 5);"
                  "s.settimeout(15); print(repr(s.recv(4)))"], check=False, timeout=30)
        assert "b''" in r.stdout or "Error" in r.stderr, (r.stdout, r.stderr)
        wait_for(lambda: "no libvirt domain's QEMU holds it" in b.encmigd_log(), 15, b.encmigd_log()[-2000:])

        # 7. Opportunistic to a host whose encmigd answers but whose data port
        #    is black-holed: fails, never plain.
        a.start_encmigd(transparent_args(hosts))
        b.sh(["nft", "-f", "-"], input="table inet blackhole {\n chain in {\n type filter hook input priority 0;\n"
             " tcp dport 16520 drop\n }\n}\n")
        tap = tapped(a, marker)
        r = virsh_migrate(a, b, "g", timeout=180)
        tap.close()
        b.sh(["nft", "delete", "table", "inet", "blackhole"])
        assert r.returncode != 0, "migrated although the destination's data port was black-holed"
        assert running_on(a, "g") and not running_on(b, "g")
        assert not tap.marker_flows() and tap.bytes_in_range(*PORTS) == 0, "plain text under attack"

        # A clean stop leaves no rule behind.
        b.stop_encmigd()
        assert "encmig" not in b.sh(["nft", "list", "tables"]).stdout
        assert_no_secrets(hosts)
    except BaseException:
        keep_logs(hosts)
        raise
    finally:
        hosts.close()


def check_disk_shared(host, img, writes):
    """check_disk while the guest runs (the test guest never writes its disk)."""
    for pattern, off, n in writes:
        r = host.sh(["qemu-io", "-U", "-r", "-f", "qcow2", "-c", f"read -P {pattern} {off} {n}", img], check=False)
        assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, r.stdout + r.stderr


# OpenStack Nova's call (nova/virt/libvirt/guest.py: migrate -> migrateToURI3),
# with its default flags (live_migration_* in nova.conf), and block migration.
NOVA_CLIENT = """
import sys, libvirt
src, dest_uri, dom_name, block = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
flags = (libvirt.VIR_MIGRATE_UNDEFINE_SOURCE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_PEER2PEER |
         libvirt.VIR_MIGRATE_LIVE)
if block:
    flags |= libvirt.VIR_MIGRATE_NON_SHARED_INC
conn = libvirt.open(src)
dom = conn.lookupByName(dom_name)
params = {libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 0}
if block:
    params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = ["vda"]
dom.migrateToURI3(dest_uri, params, flags)
print("migrated")
"""


def storage_nova_and_tenants():
    """--copy-storage-all in managed direct mode (virsh drives both hosts, no
    --p2p): the main stream and the NBD connection are each carried, the disk
    arrives byte for byte. Back with Nova's own call (migrateToURI3, its flags,
    block migration). Then another domain's QEMU, told to migrate to a port in
    the range where something else listens on the other host (what a
    compromised QEMU could do): the destination's encmigd refuses to relay to a
    listener that is not that domain's QEMU, and nothing reaches it."""
    hosts = TwoHosts(debian=True)
    try:
        a, b = hosts.a, hosts.b
        a.start_encmigd(transparent_args(hosts))
        b.start_encmigd(transparent_args(hosts))
        img, writes = "/var/lib/libvirt/images/s.qcow2", (("0x5a", 0, "8M"), ("0xa5", "32M", "1M"))
        patterned_disk(a, b, img, "64M", writes)
        for h in (a, b):
            h.sh(["chown", "libvirt-qemu:libvirt-qemu", img])
        marker = "ENCMIG-MARKER-" + os.urandom(12).hex()
        start_guest(a, "s", marker=marker, disk=img, persistent=True)

        # Managed direct migration with storage: virsh connects to both hosts.
        tap = tapped(a, marker)
        before = serial_ops(a, "s")[0][-1]
        r = a.sh(["virsh", "-c", "qemu:///system", "migrate", "--live", "--persistent", "--undefinesource",
                  "--copy-storage-all", "s", b.uri()], check=False, timeout=300)
        tap.close()
        assert r.returncode == 0, r.stderr + a.encmigd_log()[-2000:]
        assert_continued(a, b, "s", before)
        assert tap.bytes_in_range(*PORTS) == 0, "a migration or NBD connection crossed the wire in plain text"
        assert not tap.marker_flows(), f"the guest RAM marker is on the wire: {tap.marker_flows()}"
        log = a.encmigd_log()
        assert log.count("encrypted: encmigd on the destination armed") == 2, log[-3000:]  # memory and NBD
        wait_for(lambda: b.encmigd_log().count(" completed: ") == 2, 20, b.encmigd_log()[-3000:])
        check_disk_shared(b, img, writes)

        # Nova's call back, block migration (the image exists on a: --copy-storage-inc).
        py = "/usr/bin/python3"
        before = serial_ops(b, "s")[0][-1]
        tap = tapped(b, marker)
        r = b.sh([py, "-c", NOVA_CLIENT, "qemu:///system", a.uri(), "s", "1"], check=False, timeout=300)
        tap.close()
        assert r.returncode == 0 and "migrated" in r.stdout, r.stdout + r.stderr + b.encmigd_log()[-2000:]
        assert_continued(b, a, "s", before)
        assert tap.bytes_in_range(*PORTS) == 0 and not tap.marker_flows()
        assert b.encmigd_log().count("encrypted: encmigd on the destination armed") == 2, b.encmigd_log()[-3000:]
        assert "s" not in b.virsh("list", "--all", "--name").stdout.split(), "Nova's UNDEFINE_SOURCE not honoured"

        # Another domain's QEMU aims at a port in the range on b, where a root
        # process listens: b's encmigd will not relay there.
        start_guest(a, "evil")
        listener = b.sh(["sh", "-c", "timeout 20 python3 -c \"import socket; s = socket.socket(); "
                         "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('10.77.0.2', 49200)); "
                         "s.listen(); c, _ = s.accept(); c.settimeout(5); print('got', len(c.recv(65536)))\" "
                         "> /tmp/evil-listener.out 2>&1 & echo started"])
        time.sleep(0.5)
        a.virsh("qemu-monitor-command", "evil", json.dumps({"execute": "migrate", "arguments": {"uri": "tcp:10.77.0.2:49200"}}))
        wait_for(lambda: "hand-off refused" in b.encmigd_log() or "refused" in a.encmigd_log().split("domain evil")[-1],
                 20, a.encmigd_log()[-2000:] + b.encmigd_log()[-2000:])
        wait_for(lambda: "domain evil to 10.77.0.2:49200" in a.encmigd_log(), 10, a.encmigd_log()[-2000:])
        line = [l for l in a.encmigd_log().splitlines() if "domain evil to 10.77.0.2:49200" in l][0]
        assert ": refused: " in line and not line.split(": refused: ")[0].endswith("plain"), line
        assert "no domain with UUID" in b.encmigd_log(), b.encmigd_log()[-2000:]
        time.sleep(1)
        out = b.sh(["cat", "/tmp/evil-listener.out"], check=False).stdout
        assert "got" not in out or "got 0" in out, f"bytes reached the other listener: {out}"
        assert running_on(a, "evil")
        wait_for(lambda: not a.secrets() and not b.secrets(), 10, "hand-off secrets left")
    except BaseException:
        keep_logs(hosts)
        raise
    finally:
        hosts.close()


def postcopy_and_restarts():
    """An unchanged `virsh migrate --postcopy`, switched to postcopy by
    `virsh migrate-postcopy` while it runs: encrypted, the return path
    carried. encmigd restarted between migrations: the next one is encrypted.
    encmigd killed during one: that migration fails and the VM stays on the
    source; the table stays, so the next migration fails too (closed, never
    plain) until encmigd is back, then it is encrypted again."""
    hosts = TwoHosts()
    try:
        a, b = hosts.a, hosts.b
        a.start_encmigd(transparent_args(hosts))
        b.start_encmigd(transparent_args(hosts))
        marker = "ENCMIG-MARKER-" + os.urandom(12).hex()
        start_guest(a, "p", marker=marker)
        a.stop_encmigd()
        a.start_encmigd(transparent_args(hosts))  # restarted between migrations

        tap = tapped(a, marker)
        before = serial_ops(a, "p")[0][-1]
        mig = a.spawn(["virsh", "-c", "qemu:///system", "migrate", "--live", "--p2p", "--postcopy", "--bandwidth", "4",
                       "p", b.uri()], "virsh-postcopy.log")
        wait_for(lambda: "encrypted: encmigd on the destination armed" in a.encmigd_log(), 30, a.encmigd_log()[-2000:])
        time.sleep(1)
        a.virsh("migrate-postcopy", "p")
        assert mig.wait(timeout=120) == 0, open(os.path.join(a.dir, "virsh-postcopy.log")).read()
        tap.close()
        assert_continued(a, b, "p", before)
        assert tap.bytes_in_range(*PORTS) == 0 and not tap.marker_flows()
        wait_for(lambda: " completed: " in a.encmigd_log(), 20, a.encmigd_log()[-2000:])

        # b's encmigd killed during the migration back.
        mig = b.spawn(["virsh", "-c", "qemu:///system", "migrate", "--live", "--p2p", "--bandwidth", "2", "p", a.uri()],
                      "virsh-killed.log")
        wait_for(lambda: "encrypted: encmigd on the destination armed" in b.encmigd_log(), 30, b.encmigd_log()[-2000:])
        time.sleep(1)
        b.stop_encmigd(signal.SIGKILL)
        assert mig.wait(timeout=120) != 0, "the migration went on without its encmigd"
        assert running_on(b, "p") and not running_on(a, "p"), "the VM did not stay on the source"
        assert "encmig" in b.sh(["nft", "list", "tables"]).stdout, "a crash must leave the table: fail closed"
        r = virsh_migrate(b, a, "p", timeout=120)
        assert r.returncode != 0 and running_on(b, "p"), "migrated while encmigd was down"
        b.start_encmigd(transparent_args(hosts))
        tap = tapped(b, marker)
        r = virsh_migrate(b, a, "p", timeout=120)
        tap.close()
        assert r.returncode == 0, r.stderr + b.encmigd_log()[-2000:]
        assert running_on(a, "p")
        assert tap.bytes_in_range(*PORTS) == 0 and not tap.marker_flows()
        # The killed daemon's hand-off secret on a holds no key (a's encmigd
        # took it) and goes when a's side of that migration has failed (its
        # outage budget) plus 120 s; every other one is gone.
        wait_for(lambda: not b.secrets() and len(a.secrets()) <= 1, 20, "hand-off secrets left")
    except BaseException:
        keep_logs(hosts)
        raise
    finally:
        hosts.close()


def linux_guest():
    """The Linux guest from Debian's packages, Redis writing its append-only
    file with fsync on a virtio disk, virtio network: an unchanged
    `virsh migrate --p2p --parallel 2 --copy-storage-all`. Every channel and the
    NBD copy are carried encrypted; Redis goes on on the destination."""
    import test_linux_guest as lg
    hosts = lg.setup(disk=True)
    try:
        a, b = hosts.a, hosts.b
        for h in (a, b):
            h.stop_encmigd()
            h.start_encmigd(transparent_args(hosts))
        lg.start(a, "r", disk="/var/lib/libvirt/images/redis.qcow2", cmdline="encmig.keys=20000 encmig.mix=25 encmig.aof=always")
        before = lg.serial(a, "r")[0][-1]
        tap = tapped(a, "")
        r = virsh_migrate(a, b, "r", "--parallel", "--parallel-connections", "2", "--copy-storage-all", timeout=600)
        tap.close()
        assert r.returncode == 0, r.stderr + a.encmigd_log()[-2000:]
        lg.check_continued(a, b, "r", before)
        assert tap.bytes_in_range(*PORTS) == 0, "a migration or NBD connection crossed the wire in plain text"
        assert tap.bytes_to_port(16520) > 32 << 20, tap.bytes_to_port(16520)
        log = a.encmigd_log()
        assert log.count("encrypted: encmigd on the destination armed") == 2, log[-3000:]  # memory + channels, NBD
        wait_for(lambda: " completed: 3 streams" in a.encmigd_log(), 20, a.encmigd_log()[-3000:])
        assert "libvirt-qemu" in b.sh(["ps", "-o", "user=", "-C", "qemu-system-x86_64"]).stdout
        wait_for(lambda: not a.secrets() and not b.secrets(), 10, "hand-off secrets left")
    except BaseException:
        keep_logs(hosts)
        raise
    finally:
        hosts.close()


CASES = {
    "transparent-virsh": unchanged_virsh,
    "transparent-storage-nova-tenants": storage_nova_and_tenants,
    "transparent-postcopy-restarts": postcopy_and_restarts,
    "transparent-linux-guest": linux_guest,
}

if __name__ == "__main__":
    run(CASES)
