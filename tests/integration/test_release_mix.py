#!/usr/bin/env python3
"""Rolling upgrade: encrypted migrations between a Debian 12 host (QEMU 7.2,
encmig built on Debian 12: this build) and a Debian 13 host (QEMU 10.0 and
encmig built on Debian 13, in the Debian 13 root of scripts/debian13-root.sh,
entered by pivot_root). Both QEMUs run the machine type they share
(pc-i440fx-7.2). RAM byte for byte, the guest goes on, no key left.

Skipped (77) when ENCMIG_DEBIAN13 is not set (making the root takes minutes
and the Debian archive; the debian13 suite in tests/meson.build sets it), and
on a host that is not Debian 12 (the other side is the Debian 13 root)."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import GUEST, Env, Qmp, check_migrated, run, wait_for  # noqa: E402

MEM = 256
MACHINE = "pc-i440fx-7.2"  # QEMU 7.2's newest; QEMU 10.0 still has it
SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def debian13():
    """(root, build inside it), building this tree there if needed."""
    r = subprocess.run(["bash", os.path.join(SRC, "scripts", "debian13-build.sh"), "tools/encmigd", "tools/encmig"],
                       capture_output=True, text=True)
    assert r.returncode == 0, "cannot build encmig in the Debian 13 root: " + r.stderr[-2000:]
    root, build = r.stdout.split()[-2:]
    return root, build


def migrate(src_release, channels):
    def case():
        root, build13 = debian13()
        env = Env(MEM)
        try:
            # A process of the Debian 13 host: its own mount namespace whose
            # root is the Debian 13 tree, sharing the test's directory (sockets,
            # RAM files) and the guest kernel with the Debian 12 side.
            d13 = ["bash", os.path.join(SRC, "scripts", "debian13-enter.sh"), root, "--bind", f"{env.dir}:{env.dir}",
                   "--bind", f"{os.path.dirname(GUEST)}:{os.path.dirname(GUEST)}", "--"]
            side = {"12": {"prefix": (), "encmigd": None}, "13": {"prefix": d13, "encmigd": build13 + "/tools/encmigd"}}
            s, d = side[src_release], side["13" if src_release == "12" else "12"]
            sd = env.daemon("src-d", prefix=s["prefix"], encmigd=s["encmigd"])
            dd = env.daemon("dst-d", prefix=d["prefix"], encmigd=d["encmigd"])
            src = env.qemu("src", prefix=s["prefix"], machine=MACHINE)
            dst = env.qemu("dst", incoming=True, fill=False, prefix=d["prefix"], machine=MACHINE)
            versions = {}
            for name, vm in (("src", src), ("dst", dst)):
                q = Qmp(vm["qmp"])
                v = q.cmd("query-version")["qemu"]
                versions[name] = (v["major"], v["minor"])
                q.close()
            want = {"12": 7, "13": 10}
            assert versions["src"][0] == want[src_release] and versions["dst"][0] == want["13" if src_release == "12" else "12"], versions
            extra = ["--encrypted=required"] + (["--parallel", "--parallel-connections", str(channels)] if channels else [])
            res = env.migrate(src, dst, sd, dd, extra)
            assert res["encrypted"] is True, res
            check_migrated(env, src, dst, res)
            assert len(res["source-encmigd"]["streams"]) == 1 + channels, res["source-encmigd"]["streams"]
            for dmn in (sd, dd):
                q = Qmp(dmn["ctl"])
                wait_for(lambda: q.cmd("query-stats")["keys-held"] == 0, 10, "a key is still held")
                q.close()
            print(f"QEMU {versions['src']} -> {versions['dst']}: {res['total-time-ms']} ms, downtime {res.get('downtime-ms')} ms")
        finally:
            env.close()
    return case


def libvirt_rolling_upgrade():
    """The rolling upgrade as operators run it, with libvirt over qemu+tls://:
    host a is Debian 12 (libvirt 9.0, QEMU 7.2, encmig built here), host b
    Debian 13 (libvirt 11.3, QEMU 10.0, encmig built there). A guest started
    on 12 (machine pc, which QEMU 7.2 makes pc-i440fx-7.2) with a disk
    migrates to 13 encrypted with --parallel 2 and --copy-storage-all (the
    marker never on the wire, the disk's patterns read back on 13), goes on,
    and migrates back to 12 with Debian 13's encmig, its disk copied into an
    empty image there. A guest started on 13 gets
    QEMU 10's own machine type, which QEMU 7.2 cannot run: the migration to
    12 is refused before any byte moves, the error says why, and the guest
    stays and runs on 13. No secret is left on either host."""
    from hosts import TwoHosts
    from mitm import Mitm
    from test_libvirt import assert_continued, assert_no_secrets, encmig, patterned_disk, running_on, serial_ops, start_guest

    def check_disk_live(h, img, writes):
        """Every pattern reads back on h, the guest still running there (read-only, shared)."""
        for pattern, off, n in writes:
            r = h.sh(["qemu-io", "-U", "-r", "-f", "qcow2", "-c", f"read -P {pattern} {off} {n}", img], check=False)
            assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, (h.name, r.stdout + r.stderr)

    root, build13 = debian13()
    hosts = TwoHosts(root_b=(root, build13))
    try:
        a, b = hosts.a, hosts.b
        versions = {h.name: h.sh(["virsh", "--version"]).stdout.strip() for h in hosts.all}
        assert versions["hosta"].startswith("9.") and versions["hostb"].startswith("11."), versions
        a.start_encmigd()
        b.start_encmigd()
        marker = "ENCMIG-MARKER-" + os.urandom(12).hex()
        img, writes = "/var/lib/libvirt/images/g.qcow2", (("0x5a", 0, "8M"), ("0xa5", "32M", "1M"))
        patterned_disk(a, b, img, "64M", writes)
        start_guest(a, "g", marker=marker, disk=img)
        tap = a.in_netns(lambda: Mitm(16520, marker=marker.encode(), target_host=b.addr, listen_host=a.addr))
        before = serial_ops(a, "g")[0][-1]
        res = encmig(a, "migrate", "--live", "--p2p", "--json", "--encrypted=required", "--data-addr",
                     f"{a.addr}:{tap.port}", "--parallel", "--parallel-connections", "2", "--copy-storage-all",
                     "g", b.uri())
        tap.close()
        assert res.get("result") == "completed" and res["encrypted"] is True, res
        names = sorted(st["name"] for st in res["source-encmigd"]["status"]["streams"])
        assert names == ["main", "multifd-0", "multifd-1", "nbd-0"], names
        check_disk_live(b, img, writes)
        assert not tap.marker_seen and tap.bytes > (1 << 20) * 8, (tap.marker_seen, tap.bytes)
        assert_continued(a, b, "g", before)
        machine = b.virsh("dumpxml", "g").stdout
        assert "pc-i440fx-7.2" in machine, machine
        print(f"  libvirt {versions['hosta']} -> {versions['hostb']}, --parallel 2, --copy-storage-all: {res['total-time-ms']} ms, "
              f"downtime {res['downtime-ms']} ms", flush=True)
        # Back from 13 to 12, with Debian 13's encmig, the disk copied into
        # an empty image on 12.
        before = serial_ops(b, "g")[0][-1]
        a.sh(["qemu-img", "create", "-q", "-f", "qcow2", img, "64M"])
        res = encmig(b, "migrate", "--live", "--p2p", "--json", "--encrypted=required", "--copy-storage-all", "g", a.uri())
        assert res.get("result") == "completed" and res["encrypted"] is True, res
        check_disk_live(a, img, writes)
        assert running_on(a, "g") and not running_on(b, "g")
        wait_for(lambda: serial_ops(a, "g")[0][-1] > before, 30, "the guest made no progress back on 12")
        print(f"  libvirt {versions['hostb']} -> {versions['hosta']}: {res['total-time-ms']} ms, "
              f"downtime {res['downtime-ms']} ms", flush=True)
        # A guest born on 13 has a machine type 12 does not know.
        start_guest(b, "n")
        res = encmig(b, "migrate", "--live", "--p2p", "--json", "--encrypted=required", "n", a.uri())
        assert res.get("result") in ("failed", "refused") and res["_rc"] != 0, res
        assert "machine" in res.get("error", "").lower(), res
        assert running_on(b, "n") and not running_on(a, "n"), "the guest did not stay on 13"
        n0 = serial_ops(b, "n")[0][-1]
        wait_for(lambda: serial_ops(b, "n")[0][-1] > n0, 30, "the guest stopped on 13")
        print(f"  a guest born on 13 to 12: refused, stays: {res.get('error')}", flush=True)
        assert_no_secrets(hosts)
    finally:
        hosts.close()


CASES = {
    "debian12-to-13-multifd": migrate("12", 4),
    "debian13-to-12": migrate("13", 0),
    "libvirt-rolling-upgrade": libvirt_rolling_upgrade,
}

if __name__ == "__main__":
    if not os.environ.get("ENCMIG_DEBIAN13"):
        print("SKIP: set ENCMIG_DEBIAN13=1 to make (once) and use a Debian 13 root")
        sys.exit(77)
    release = next((l.split("=", 1)[1].strip().strip('"') for l in open("/etc/os-release") if l.startswith("VERSION_ID=")), "")
    if release != "12":
        print(f"SKIP: the rolling upgrade runs from a Debian 12 host (this is Debian {release or 'unknown'})")
        sys.exit(77)
    run(CASES)
