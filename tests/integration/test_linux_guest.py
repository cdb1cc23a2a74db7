#!/usr/bin/env python3
"""A real Linux guest (Debian's kernel, busybox, Redis under a GET/SET load,
virtio-net and virtio-blk; scripts/build-linux-guest.sh) migrated with encmig
between two libvirt hosts configured as Debian ships libvirt: QEMU as
libvirt-qemu, dynamic ownership, virtlogd; encmigd confined as its systemd
unit confines it. Usage: test_linux_guest.py [CASE...]"""
import json, os, shutil, subprocess, threading, time

from harness import ops_lines, run, wait_for
from hosts import BUILD, ENCMIG, TwoHosts
from test_libvirt import assert_no_secrets, encmig, running_on

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GUEST_DIR = os.path.join(os.path.abspath(BUILD), "guest-linux")
MEM_MIB = 384


def build_guest():
    subprocess.run(["bash", os.path.join(TOP, "scripts", "build-linux-guest.sh"), GUEST_DIR], check=True,
                   capture_output=True)


def domain_xml(name, disk=None, cmdline="encmig.keys=20000 encmig.mix=50"):
    disk_xml = ""
    if disk:
        disk_xml = (f"<disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none'/>"
                    f"<source file='{disk}'/><target dev='vda' bus='virtio'/></disk>")
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{MEM_MIB}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>
    <kernel>/var/lib/libvirt/images/vmlinuz</kernel><initrd>/var/lib/libvirt/images/initrd.img</initrd>
    <cmdline>console=ttyS0 quiet {cmdline}</cmdline></os>
  <devices>
    <serial type='file'><source path='/var/log/libvirt/qemu/{name}-serial.log'/><target port='0'/></serial>
    {disk_xml}
    <interface type='user'><model type='virtio'/></interface>
    <memballoon model='none'/>
  </devices>
</domain>"""


def serial(host, dom):
    try:
        text = open(f"/proc/{host.holder.pid}/root/var/log/libvirt/qemu/{dom}-serial.log", errors="replace").read()
    except (FileNotFoundError, PermissionError):
        return [], ""
    return ops_lines(text), text


def setup(disk=False):
    build_guest()
    hosts = TwoHosts(debian=True)
    for h in hosts.all:
        images = os.path.join(h.dir, "lib", "images")
        for f in ("vmlinuz", "initrd.img"):
            shutil.copy(os.path.join(GUEST_DIR, f), os.path.join(images, f))
        if disk:
            h.sh(["qemu-img", "create", "-q", "-f", "qcow2", "/var/lib/libvirt/images/redis.qcow2", "128M"])
        h.start_encmigd()
    return hosts


def start(host, name, **kw):
    path = os.path.join(host.dir, f"{name}.xml")
    open(path, "w").write(domain_xml(name, **kw))
    host.virsh("create", path)
    wait_for(lambda: "redis ready" in serial(host, name)[1] and len(serial(host, name)[0]) >= 3, 180,
             f"the Linux guest never got Redis going on {host.name}: " + serial(host, name)[1][-2000:])


def check_continued(src, dst, dom, before):
    """Redis runs on the destination and its command counter went on from
    where it was on the source: the same guest, not a reboot."""
    assert running_on(dst, dom) and not running_on(src, dom)
    wait_for(lambda: len(serial(dst, dom)[0]) >= 3, 60, f"{dom} made no progress on {dst.name}")
    ops, text = serial(dst, dom)
    assert "encmig linux guest" not in text, f"{dom} rebooted on {dst.name}"
    assert ops[0] >= before and ops[-1] > ops[0], (before, ops)
    assert "I/O error" not in text and "EXT4-fs error" not in text, text[-2000:]


def migrate_case(extra, disk=False):
    def case():
        hosts = setup(disk)
        try:
            a, b = hosts.a, hosts.b
            start(a, "r", disk="/var/lib/libvirt/images/redis.qcow2" if disk else None,
                  **({"cmdline": "encmig.keys=20000 encmig.mix=25 encmig.aof=always"} if disk else {}))
            before = serial(a, "r")[0][-1]
            res = encmig(a, "migrate", "--live", "--p2p", "--json", "--encrypted=required", *extra, "r", b.uri(),
                         timeout=600)
            assert res.get("result") == "completed" and res["encrypted"] is True, res
            assert res["bytes"] > MEM_MIB // 8 << 20, res
            check_continued(a, b, "r", before)
            assert_no_secrets(hosts)
            # The source host's QEMU ran as libvirt-qemu, as Debian ships it.
            assert "libvirt-qemu" in b.sh(["ps", "-o", "user=", "-C", "qemu-system-x86_64"]).stdout, \
                b.sh(["ps", "-eo", "user,comm"]).stdout
        finally:
            hosts.close()
    return case


def postcopy():
    """Postcopy as operators run it. On Debian 12, QEMU 7.2 unprivileged
    (libvirt-qemu) needs vm.unprivileged_userfaultfd = 1: with 0, encmig says
    so before and after (the VM stays); with 1, the Redis guest switches to
    postcopy after one precopy pass and goes on on the destination, and the
    summary reports the phase, the bytes and the downtime. On Debian 13,
    QEMU 10 takes /dev/userfaultfd from libvirt 11.3: the sysctl stays 0 (the
    distribution's default), encmig warns of nothing, and libvirt's
    postcopy-preempt channel is carried as its own stream."""
    hosts = setup()
    key = "/proc/sys/vm/unprivileged_userfaultfd"
    old = open(key).read().strip()
    try:
        a, b = hosts.a, hosts.b
        start(a, "p", cmdline="encmig.keys=20000 encmig.mix=0")  # SET only: pages keep changing
        args = ["migrate", "--live", "--p2p", "--json", "--encrypted=required", "--postcopy", "--postcopy-after-precopy",
                "--bandwidth", "64", "p", b.uri()]
        open(key, "w").write("0")
        qemu = a.sh(["qemu-system-x86_64", "--version"]).stdout.split()[3].split(".")
        dev_userfaultfd = (int(qemu[0]), int(qemu[1])) >= (8, 1)
        if not dev_userfaultfd:
            res = encmig(a, *args, timeout=600)
            assert res["result"] == "failed" and "vm.unprivileged_userfaultfd" in res["error"], res
            assert "postcopy may be blocked" in res["_stderr"], res["_stderr"]
            assert running_on(a, "p") and not running_on(b, "p")
            open(key, "w").write("1")
        before = serial(a, "p")[0][-1]
        # --postcopy-after-precopy switches after the first pass.
        # This guest's RAM is mostly zero pages: its first pass is short and
        # could end the migration in precopy before encmig switches. A 1 ms
        # downtime limit in QEMU keeps precopy from converging. Set once,
        # before the migration: monitor commands during it would hold up
        # libvirt's job, and with it the statistics encmig switches by.
        a.virsh("qemu-monitor-command", "p", json.dumps({"execute": "migrate-set-parameters",
                                                        "arguments": {"downtime-limit": 1}}))
        result = {}
        t = threading.Thread(target=lambda: result.update(res=encmig(a, *args, timeout=600)))
        t.start()
        t.join(600)
        res = result["res"]
        assert res.get("result") == "completed" and res["encrypted"] is True, res
        assert res["phase"] == "postcopy", res
        names = sorted(st["name"] for st in res["source-encmigd"]["status"]["streams"])
        if dev_userfaultfd:
            assert "postcopy may be blocked" not in res["_stderr"], res["_stderr"]
            assert names == ["main", "postcopy-preempt"], names
        print(f"  postcopy ({', '.join(names)}): {res['total-time-ms']} ms, downtime {res['downtime-ms']} ms, {res['bytes'] >> 20} MiB"
              f" ({res.get('bytes-from', 'libvirt')}), {res.get('postcopy-requests')} page requests", flush=True)
        assert res["bytes"] > MEM_MIB // 8 << 20 and res["downtime-ms"] > 0, res
        check_continued(a, b, "p", before)
        assert_no_secrets(hosts)
    finally:
        open(key, "w").write(old)
        hosts.close()


CASES = {
    "linux-guest-live": migrate_case([]),
    "linux-guest-parallel": migrate_case(["--parallel", "--parallel-connections", "2"]),
    "linux-guest-storage": migrate_case(["--copy-storage-all"], disk=True),
    "linux-guest-postcopy": postcopy,
}

if __name__ == "__main__":
    run(CASES)
