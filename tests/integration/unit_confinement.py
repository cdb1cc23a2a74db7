"""Runs encmigd confined exactly as the shipped systemd unit confines it, for
the parts that decide what it can do and how fast it goes: the capability
bounding set, no-new-privileges, and the resource limits. (The unit's
file-system and namespace protections need systemd as PID 1, which these
machines do not have; they change no code path encmigd takes.)

The settings are read from the unit file itself, so a test or a benchmark
runs what the package ships, not a copy of it."""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_UNIT = os.path.join(HERE, "..", "..", "tools", "systemd", "encmigd.service.in")


def unit_settings(path=None):
    out = {}
    for line in open(path or os.environ.get("ENCMIG_UNIT", SOURCE_UNIT)):
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def unit_prefix(path=None):
    """argv prefix: prlimit (LimitNOFILE, LimitCORE) then setpriv (bounding set, no-new-privs)."""
    s = unit_settings(path)
    argv = ["prlimit"]
    if "LimitNOFILE" in s:
        # systemd may raise the hard limit; this sandbox has no CAP_SYS_RESOURCE,
        # so the unit's value is capped at the hard limit we were given.
        import resource
        n = min(int(s["LimitNOFILE"]), resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        argv.append(f"--nofile={n}:{n}")
    if "LimitCORE" in s:
        argv.append(f"--core={s['LimitCORE']}:{s['LimitCORE']}")
    argv += ["--", "setpriv"]
    caps = s.get("CapabilityBoundingSet", "").split()
    argv.append("--bounding-set=-all" + "".join(",+" + c.lower().removeprefix("cap_") for c in caps))
    if s.get("NoNewPrivileges", "no") == "yes":
        argv.append("--no-new-privs")
    return argv + ["--"]


# Network sysctls as a stock Debian 12 host has them, for the namespaces tests
# and benchmarks create (per network namespace; net.core.[rw]mem_max and the
# congestion control are global and cannot be set from a namespace here).
DEBIAN_NET_SYSCTLS = {
    "net.ipv4.tcp_rmem": "4096 131072 6291456",
    "net.ipv4.tcp_wmem": "4096 16384 4194304",
}
