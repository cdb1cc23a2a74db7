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
    r = host.sh([ENCMIG] + list(args), check=False, timeout=timeout)
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


def storage():
    hosts = TwoHosts()
    try:
        a, b = hosts.a, hosts.b
        a.start_encmigd()
        b.start_encmigd()
        img = "/var/lib/libvirt/images/s.qcow2"
        a.sh(["qemu-img", "create", "-q", "-f", "qcow2", img, "64M"])
        a.sh(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 8M", "-c", "write -P 0xa5 32M 1M", img])
        b.sh(["qemu-img", "create", "-q", "-f", "qcow2", img, "64M"])
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
        for pattern, off, n in (("0x5a", 0, "8M"), ("0xa5", "32M", "1M")):
            r = b.sh(["qemu-io", "-f", "qcow2", "-c", f"read -P {pattern} {off} {n}", img], check=False)
            assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, r.stdout + r.stderr
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
        # Interrupt a slow migration: it aborts, the VM stays, no secret is left.
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
        assert_no_secrets(hosts)
        for h in hosts.all:  # both daemons forgot the migration
            wait_for(lambda: f"{res['migration-id']}: hand-off secret removed" in h.encmigd_log(), 10,
                     f"encmigd on {h.name} did not end the migration: " + h.encmigd_log())
            q = Qmp(f"/proc/{h.holder.pid}/root/run/encmig/encmigd.sock")
            assert q.cmd("query-migrations") == [], q.cmd("query-migrations")
            q.close()
    finally:
        hosts.close()


CASES = {
    "libvirt-live-single": live(0),
    "libvirt-live-parallel-2": live(2),
    "libvirt-live-parallel-4": live(4),
    "libvirt-storage": storage,
    "libvirt-policy-matrix": policy_matrix,
    "libvirt-tamper": tamper,
    "libvirt-place-and-interrupt": place_and_cleanup,
}

if __name__ == "__main__":
    run(CASES)
