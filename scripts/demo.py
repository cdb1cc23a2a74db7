#!/usr/bin/env python3
"""The demo, in two parts.

1. The operator's path: two libvirt hosts on this machine (network + mount
   namespaces joined by a veth pair, each with its own libvirtd and encmigd).
   A running guest moves from host A to host B with `encmig migrate`, keys
   handed over as ephemeral libvirt secrets; its counter continues on B.
2. The proof: a running 512 MiB guest that keeps dirtying memory moves between
   two QEMU processes (7.2 on Debian 12, 10.0 on Debian 13) through two encmigd daemons (QMP-direct mode); the
   RAM files are compared byte for byte and the destination guest resumes."""
import os, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from harness import ENCMIG, Env, Qmp, files_equal, last_ops, wait_for  # noqa: E402
from hosts import TwoHosts  # noqa: E402
from test_libvirt import running_on, serial_ops, start_guest  # noqa: E402


def libvirt_part():
    print("== part 1: two libvirt hosts (namespaces hosta=10.77.0.1, hostb=10.77.0.2), each with libvirtd + encmigd")
    hosts = TwoHosts()
    try:
        a, b = hosts.a, hosts.b
        a.start_encmigd()
        b.start_encmigd()
        start_guest(a, "demo-vm")
        print(f"   demo-vm is running on hosta: serial says 'ops {serial_ops(a, 'demo-vm')[0][-1]}'")
        print("   $ encmig policy demo-vm required")
        print("   " + a.sh([ENCMIG, "policy", "demo-vm", "required"]).stdout.strip())
        argv = [ENCMIG, "migrate", "--live", "--p2p", "--persistent", "--verbose", "--parallel",
                "--parallel-connections", "2", "demo-vm", b.uri()]
        print("   $ " + " ".join(["encmig"] + argv[1:]))
        r = subprocess.run(["nsenter", "-t", str(a.holder.pid), "-m", "-n", "-u", "--"] + argv)
        ok = r.returncode == 0 and running_on(b, "demo-vm") and not running_on(a, "demo-vm")
        wait_for(lambda: len(serial_ops(b, "demo-vm")[0]) >= 2, 30, "demo-vm made no progress on hostb")
        ops, text = serial_ops(b, "demo-vm")
        restarted = "encmig test guest" in text
        left = a.secrets() + b.secrets()
        print(f"   demo-vm now runs on hostb: serial continues at 'ops {ops[-1]}'"
              f"{' (RESTARTED!)' if restarted else ', no restart'}; libvirt secrets left on the hosts: {len(left)}")
        return ok and not restarted and not left
    finally:
        hosts.close()


def qmp_direct_part():
    env = Env(int(os.environ.get("DEMO_MEM_MIB", "512")))
    try:
        qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.split()[3]
        print(f"== part 2: byte-for-byte proof: two encmigd daemons, two QEMU {qemu} guests, {env.mem_mib} MiB file-backed RAM")
        sd, dd = env.daemon("host-a-encmigd"), env.daemon("host-b-encmigd")
        src = env.qemu("host-a-vm")
        dst = env.qemu("host-b-vm", incoming=True, fill=False)
        print(f"   source guest is running: serial says 'ops {last_ops(src['serial'])}'")
        print("   $ encmig migrate --src-qmp ... --dst-qmp ... --encrypted --parallel --parallel-connections 2")
        r = subprocess.run([ENCMIG, "migrate", "--src-qmp", src["qmp"], "--dst-qmp", dst["qmp"],
                            "--src-encmigd", sd["ctl"], "--dst-encmigd", dd["ctl"], "--run-dir", env.dir,
                            "--encrypted", "--parallel", "--parallel-connections", "2"])
        if r.returncode != 0:
            return False
        same = files_equal(src["mem"], dst["mem"])
        print(f"   integrity: destination RAM {'IDENTICAL to' if same else 'DIFFERS from'} source RAM "
              f"({env.mem_mib} MiB compared byte for byte)")
        before = last_ops(src["serial"])
        q = Qmp(dst["qmp"])
        q.cmd("cont")
        q.close()
        wait_for(lambda: last_ops(dst["serial"]) > before, 30, "destination guest did not continue")
        print(f"   destination guest resumed: serial went from 'ops {before}' (source, last) "
              f"to 'ops {last_ops(dst['serial'])}' (destination)")
        return same
    finally:
        env.close()


ok1 = libvirt_part()
ok2 = qmp_direct_part()
print("== RESULT:", "PASS" if ok1 and ok2 else "FAIL",
      f"(libvirt migration {'ok' if ok1 else 'FAILED'}, byte-for-byte check {'ok' if ok2 else 'FAILED'})")
sys.exit(0 if ok1 and ok2 else 1)
