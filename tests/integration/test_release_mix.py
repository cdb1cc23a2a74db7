#!/usr/bin/env python3
"""Rolling upgrade: encrypted migrations between a Debian 12 host (QEMU 7.2,
encmig built on Debian 12: this build) and a Debian 13 host (QEMU 10.0 and
encmig built on Debian 13, in the Debian 13 root of scripts/debian13-root.sh,
entered by pivot_root). Both QEMUs run the machine type they share
(pc-i440fx-7.2). RAM byte for byte, the guest goes on, no key left.

Skipped (77) when ENCMIG_DEBIAN13 is not set: making the root takes minutes
and the Debian archive; `scripts/test.sh --suite release-mix` and
`.ci/run` set it."""
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


CASES = {
    "debian12-to-13-multifd": migrate("12", 4),
    "debian13-to-12": migrate("13", 0),
}

if __name__ == "__main__":
    if not os.environ.get("ENCMIG_DEBIAN13"):
        print("SKIP: set ENCMIG_DEBIAN13=1 to make (once) and use a Debian 13 root")
        sys.exit(77)
    run(CASES)
