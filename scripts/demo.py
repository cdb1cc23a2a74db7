#!/usr/bin/env python3
"""The demo: two encmigd daemons and two QEMU 7.2 processes on this machine.
A running 512 MiB guest that keeps dirtying memory moves from one to the
other, encrypted; then the RAM files are compared byte for byte and the
destination guest is resumed."""
import os, subprocess, sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
from harness import ENCMIG, Env, Qmp, files_equal, last_ops, wait_for  # noqa: E402

env = Env(int(os.environ.get("DEMO_MEM_MIB", "512")))
try:
    print("== starting two encmigd daemons and two QEMU 7.2 guests (TCG, file-backed RAM)")
    sd, dd = env.daemon("host-a-encmigd"), env.daemon("host-b-encmigd")
    src = env.qemu("host-a-vm")
    dst = env.qemu("host-b-vm", incoming=True, fill=False)
    print(f"   source guest is running: serial says 'ops {last_ops(src['serial'])}'")
    print("== encmig migrate --encrypted --parallel --parallel-connections 2")
    r = subprocess.run([ENCMIG, "migrate", "--src-qmp", src["qmp"], "--dst-qmp", dst["qmp"],
                        "--src-encmigd", sd["ctl"], "--dst-encmigd", dd["ctl"], "--run-dir", env.dir,
                        "--encrypted", "--parallel", "--parallel-connections", "2"])
    if r.returncode != 0:
        sys.exit("demo: migration failed")
    same = files_equal(src["mem"], dst["mem"])
    print(f"== integrity: destination RAM {'IDENTICAL to' if same else 'DIFFERS from'} source RAM "
          f"({env.mem_mib} MiB compared byte for byte)")
    before = last_ops(src["serial"])
    q = Qmp(dst["qmp"])
    q.cmd("cont")
    q.close()
    wait_for(lambda: last_ops(dst["serial"]) > before, 30, "destination guest did not continue")
    print(f"== destination guest resumed: serial went from 'ops {before}' (source, last) "
          f"to 'ops {last_ops(dst['serial'])}' (destination)")
    print("== RESULT:", "PASS" if same else "FAIL")
    sys.exit(0 if same else 1)
finally:
    env.close()
