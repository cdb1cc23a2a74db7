"""Two libvirt "hosts" on one machine, for end-to-end tests and benchmarks.

Each host is a network namespace plus private mount and UTS namespaces, held
open by a `sleep` process. Inside it, its own /run, /etc/libvirt,
/var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt and /etc/hosts are
bind-mounted from a per-host directory, and its own libvirtd (and encmigd)
runs. A veth pair joins the two namespaces (10.77.0.1 <-> 10.77.0.2).

Every process is started here and stopped by PID in TwoHosts.close(), which
also deletes the namespaces and the veth pair. Only addresses inside these
namespaces are used.
"""
import atexit, os, shutil, signal, subprocess, sys, tempfile, time, uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import stop_process  # noqa: E402
from unit_confinement import DEBIAN_NET_SYSCTLS, unit_prefix  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ.get("ENCMIG_BUILD", os.path.join(HERE, "..", "..", "build"))
# The installed package's programs, when ENCMIG_PREFIX names where it was unpacked.
PREFIX = os.environ.get("ENCMIG_PREFIX")
ENCMIGD = os.path.join(PREFIX, "usr/sbin/encmigd") if PREFIX else os.path.abspath(os.path.join(BUILD, "tools", "encmigd"))
ENCMIG = os.path.join(PREFIX, "usr/bin/encmig") if PREFIX else os.path.abspath(os.path.join(BUILD, "tools", "encmig"))
# The installed unit: /lib on Debian 12, /usr/lib from Debian 13 (merged /usr).
UNIT = next((u for u in (os.path.join(PREFIX, d, "systemd/system/encmigd.service") for d in ("lib", "usr/lib"))
             if os.path.exists(u)), None) if PREFIX else None
GUEST = os.path.abspath(os.path.join(BUILD, "tests", "dirty.elf"))
QEMU_CACHE = "/var/tmp/encmig-test-qemu-cache"  # speeds up libvirt's QEMU probe

# libvirt over TLS (qemu+tls://), with certificates made by certtool for the
# test hosts, as operators run it. Plain TCP stays open only so that a test
# can show encmig refusing to hand a key over it.
LIBVIRTD_CONF = """
host_uuid = "{uuid}"
listen_tls = 1
listen_tcp = 1
listen_addr = "{addr}"
auth_tcp = "none"
auth_tls = "none"
auth_unix_rw = "none"
auth_unix_ro = "none"
unix_sock_rw_perms = "0770"
ca_file = "{pki}/cacert.pem"
cert_file = "{pki}/servercert.pem"
key_file = "{pki}/serverkey.pem"
log_outputs = "3:stderr"
"""
# As Debian ships libvirt: QEMU runs as libvirt-qemu with dynamic ownership,
# logs go through virtlogd. Only what two libvirtds on one kernel need changes.
QEMU_CONF_DEBIAN = """
cgroup_controllers = [ ]
migration_host = "{addr}"
migration_address = "{addr}"
"""
QEMU_CONF = """
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
migration_host = "{addr}"
migration_address = "{addr}"
"""


def _run(argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, **kw)


class Host:
    def __init__(self, hosts, name, addr, root=None):
        """root=(ROOT, BUILD): the host runs another Debian release from the
        root of scripts/debian13-root.sh (pivot_root into it, as
        scripts/debian13-enter.sh does), with its own libvirt and QEMU and
        encmig built there in BUILD (a path inside the root)."""
        self.hosts, self.name, self.addr = hosts, name, addr
        self.root = root[0] if root else None
        self.encmigd_path = os.path.join(root[1], "tools", "encmigd") if root else ENCMIGD
        self.encmig_path = os.path.join(root[1], "tools", "encmig") if root else ENCMIG
        self.ns = f"{hosts.prefix}-{name}"
        self.dir = os.path.join(hosts.dir, name)
        self.holder = None
        self.libvirtd = None
        self.virtlogd = None
        self.encmigd = None

    def sh(self, argv, check=True, timeout=120, input=None):
        """Runs argv inside this host; returns CompletedProcess (text)."""
        r = subprocess.run(["nsenter", "-t", str(self.holder.pid), "-m", "-n", "-u", "--"] + list(argv),
                           capture_output=True, text=True, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"{self.name}: {' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def spawn(self, argv, log):
        p = subprocess.Popen(["nsenter", "-t", str(self.holder.pid), "-m", "-n", "-u", "--"] + list(argv),
                             stdout=open(os.path.join(self.dir, log), "ab"), stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.hosts.procs.append(p)
        return p

    def virsh(self, *args, check=True, timeout=120):
        return self.sh(["virsh", "-q", "-c", "qemu:///system"] + list(args), check=check, timeout=timeout)

    def setup(self):
        d = self.dir
        for sub in ("run", "etc-libvirt", "lib", "log", "cache", "disks"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        shutil.copytree((self.root or "") + "/etc/libvirt", os.path.join(d, "etc-libvirt"), dirs_exist_ok=True,
                        symlinks=True)
        auto = os.path.join(d, "etc-libvirt", "qemu", "networks", "autostart")
        shutil.rmtree(auto, ignore_errors=True)
        pki = os.path.join(d, "pki")
        self.hosts.certs.server(self.name, self.addr, pki)
        with open(os.path.join(d, "etc-libvirt", "libvirtd.conf"), "w") as f:
            f.write(LIBVIRTD_CONF.format(uuid=uuid.uuid4(), addr=self.addr, pki=pki))
        with open(os.path.join(d, "etc-libvirt", "qemu.conf"), "w") as f:
            f.write((QEMU_CONF_DEBIAN if self.hosts.debian else QEMU_CONF).format(addr=self.addr))
        with open(os.path.join(d, "hosts"), "w") as f:
            f.write("127.0.0.1 localhost\n")
            for h in self.hosts.all:
                f.write(f"{h.addr} {h.name}\n")
        if os.path.isdir(QEMU_CACHE) and not self.root:
            shutil.copytree(QEMU_CACHE, os.path.join(d, "cache", "qemu"), dirs_exist_ok=True)
        init = f"""set -e
mount -t tmpfs -o mode=755 tmpfs /run
mount --bind {d}/etc-libvirt /etc/libvirt
mount --bind {d}/lib /var/lib/libvirt
mount --bind {d}/log /var/log/libvirt
mount --bind {d}/cache /var/cache/libvirt
mount --bind {d}/hosts /etc/hosts
mkdir -p /var/log/libvirt/qemu /run/libvirt /run/encmig /var/lib/libvirt/images
{"mount --bind /dev/null /dev/kvm" if self.hosts.debian and os.path.exists("/dev/kvm") else ""}
hostname {self.name}
ip link set lo up
touch {d}/ready
exec sleep infinity
"""
        if self.root:
            # The other release's files as this host's root; the test's
            # directory and the guest kernel at the same paths as outside.
            enter = os.path.join(HERE, "..", "..", "scripts", "debian13-enter.sh")
            argv = ["bash", enter, self.root, "--bind", f"{self.hosts.dir}:{self.hosts.dir}",
                    "--bind", f"{os.path.dirname(GUEST)}:{os.path.dirname(GUEST)}", "--", "unshare", "-u", "sh", "-c", init]
        else:
            argv = ["unshare", "-m", "-u", "--propagation", "private", "sh", "-c", init]
        self.holder = subprocess.Popen(["ip", "netns", "exec", self.ns] + argv, start_new_session=True,
                                       stdout=open(os.path.join(d, "holder.log"), "ab"), stderr=subprocess.STDOUT)
        self.hosts.procs.append(self.holder)
        deadline = time.time() + 20
        while not os.path.exists(os.path.join(d, "ready")):
            if self.holder.poll() is not None or time.time() > deadline:
                raise AssertionError(f"{self.name}: namespace holder failed: " +
                                     open(os.path.join(d, "holder.log")).read())
            time.sleep(0.02)
        # sleep is exec'd by sh: the holder PID is the process in the namespaces.
        time.sleep(0.05)

    def start_libvirtd(self):
        if self.hosts.debian:
            self.virtlogd = self.spawn(["/usr/sbin/virtlogd"], "virtlogd.log")
        self.libvirtd = self.spawn(["/usr/sbin/libvirtd", "--listen"], "libvirtd.log")
        deadline = time.time() + 30
        while self.virsh("version", check=False, timeout=30).returncode != 0:
            if self.libvirtd.poll() is not None or time.time() > deadline:
                raise AssertionError(f"{self.name}: libvirtd did not start: " +
                                     open(os.path.join(self.dir, "libvirtd.log")).read()[-2000:])
            time.sleep(0.1)

    def start_encmigd(self, extra=()):
        """encmigd confined exactly as the shipped unit confines it."""
        self.encmigd = self.spawn(unit_prefix(UNIT) + [self.encmigd_path, "--listen", f"{self.addr}:16520"] + list(extra),
                                  "encmigd.log")
        deadline = time.time() + 10
        while not os.path.exists(f"/proc/{self.holder.pid}/root/run/encmig/encmigd.sock"):
            if self.encmigd.poll() is not None or time.time() > deadline:
                raise AssertionError(f"{self.name}: encmigd did not start: " + self.encmigd_log())
            time.sleep(0.02)
        return self.encmigd

    def stop_encmigd(self, sig=signal.SIGTERM):
        if self.encmigd:
            self.hosts.stop(self.encmigd, sig)
            self.encmigd = None

    def encmigd_log(self):
        try:
            return open(os.path.join(self.dir, "encmigd.log"), errors="replace").read()
        except FileNotFoundError:
            return ""

    def in_netns(self, fn):
        """Calls fn() on a thread inside this host's network namespace; threads
        and sockets it creates stay there. Returns fn's result."""
        import ctypes, threading
        out = {}

        def body():
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/proc/{self.holder.pid}/ns/net", os.O_RDONLY)
            try:
                if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            out["v"] = fn()
        t = threading.Thread(target=body)
        t.start()
        t.join()
        if "v" not in out:
            raise AssertionError(f"{self.name}: in_netns failed")
        return out["v"]

    def tx_bytes(self):
        return int(self.sh(["cat", f"/sys/class/net/{self.dev}/statistics/tx_bytes"]).stdout)

    def uri(self):
        """libvirt over TLS, verified against the test CA."""
        return f"qemu+tls://{self.name}/system?pkipath={self.hosts.certs.client_dir}"

    def tcp_uri(self):
        """Plain TCP: not secure; encmig must refuse to hand a key over it."""
        return f"qemu+tcp://{self.name}/system"

    def secrets(self):
        """UUIDs of every libvirt secret on this host."""
        return [l.split()[0] for l in self.virsh("secret-list").stdout.splitlines() if l.strip()]

    def serial_path(self, dom):
        return os.path.join(self.dir, "log", "qemu", f"{dom}-serial.log")


class TestCA:
    """A CA, a server certificate per host and one client certificate, made
    with GnuTLS's certtool, for libvirt's TLS transport."""

    def __init__(self, top):
        self.dir = os.path.join(top, "ca")
        os.makedirs(self.dir)
        self.key = os.path.join(self.dir, "cakey.pem")
        self.cert = os.path.join(self.dir, "cacert.pem")
        self._certtool(["--generate-privkey", "--outfile", self.key])
        self._template("ca.info", "cn = encmig test CA\nca\ncert_signing_key\nexpiration_days = 30\n")
        self._certtool(["--generate-self-signed", "--load-privkey", self.key, "--template",
                        os.path.join(self.dir, "ca.info"), "--outfile", self.cert])
        self.client_dir = os.path.join(top, "pki-client")
        os.makedirs(self.client_dir)
        self._leaf("client", "cn = encmig-test-client\ntls_www_client\nencryption_key\nsigning_key\n"
                   "expiration_days = 30\n", self.client_dir, "client")

    def _template(self, name, text):
        with open(os.path.join(self.dir, name), "w") as f:
            f.write(text)

    def _certtool(self, args):
        _run(["certtool"] + args)

    def _leaf(self, name, template, out_dir, kind):
        os.makedirs(out_dir, exist_ok=True)
        key = os.path.join(out_dir, f"{kind}key.pem")
        self._certtool(["--generate-privkey", "--outfile", key])
        self._template(name + ".info", template)
        self._certtool(["--generate-certificate", "--load-privkey", key, "--load-ca-certificate", self.cert,
                        "--load-ca-privkey", self.key, "--template", os.path.join(self.dir, name + ".info"),
                        "--outfile", os.path.join(out_dir, f"{kind}cert.pem")])
        shutil.copy(self.cert, os.path.join(out_dir, "cacert.pem"))

    def server(self, host, addr, out_dir):
        self._leaf(host, f"organization = encmig tests\ncn = {host}\ndns_name = {host}\nip_address = {addr}\n"
                   "tls_www_server\nencryption_key\nsigning_key\nexpiration_days = 30\n", out_dir, "server")


class TwoHosts:
    def __init__(self, debian=False, wan=None, root_b=None):
        """debian=True: libvirt configured as Debian ships it (QEMU as
        libvirt-qemu, dynamic ownership, virtlogd). wan=(rtt_ms, rate_mbit):
        the hosts are joined by bench/wanem instead of a veth pair.
        root_b=(ROOT, BUILD): host b runs the release in ROOT (Host)."""
        self.debian = debian
        self.wanem = None
        self.dir = tempfile.mkdtemp(prefix="encmig-hosts-")
        self.prefix = "em" + os.path.basename(self.dir)[-6:].replace("_", "x")
        self.procs = []
        self.certs = TestCA(self.dir)
        self.a = Host(self, "hosta", "10.77.0.1")
        self.b = Host(self, "hostb", "10.77.0.2", root=root_b)
        self.all = [self.a, self.b]
        atexit.register(self.close)
        signal.signal(signal.SIGTERM, lambda *_: (self.close(), sys.exit(1)))
        try:
            for h in self.all:
                _run(["ip", "netns", "add", h.ns])
                for k, v in DEBIAN_NET_SYSCTLS.items():  # the network stack as a stock Debian host has it
                    _run(["ip", "netns", "exec", h.ns, "sysctl", "-q", "-w", f"{k}={v}"])
            if wan:
                self._wan_link(*wan)
            else:
                _run(["ip", "link", "add", f"{self.prefix}a", "netns", self.a.ns, "type", "veth", "peer", "name",
                      f"{self.prefix}b", "netns", self.b.ns])
                for h, dev in ((self.a, f"{self.prefix}a"), (self.b, f"{self.prefix}b")):
                    h.dev = dev
                    _run(["ip", "-n", h.ns, "addr", "add", f"{h.addr}/24", "dev", dev])
                    _run(["ip", "-n", h.ns, "link", "set", dev, "up"])
            for h in self.all:
                h.setup()
            for h in self.all:
                h.start_libvirtd()
            if not os.path.isdir(QEMU_CACHE):
                # Warm libvirt's QEMU capability cache once, for later runs.
                self.a.virsh("domcapabilities", "--virttype", "qemu", timeout=120)
                shutil.copytree(os.path.join(self.a.dir, "cache", "qemu"), QEMU_CACHE, dirs_exist_ok=True)
        except BaseException:
            self.close()
            raise

    def _wan_link(self, rtt_ms, rate_mbit):
        wanem = os.path.join(BUILD, "bench", "wanem")
        self.wanem = subprocess.Popen([wanem, "--ns-a", f"/run/netns/{self.a.ns}", "--ns-b", f"/run/netns/{self.b.ns}",
                                       "--dev", "wan0", "--rate-mbit", str(rate_mbit), "--delay-ms", str(rtt_ms / 2)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.procs.append(self.wanem)
        if self.wanem.stdout.readline().strip() != "ready":
            raise AssertionError("wanem did not start: " + self.wanem.stderr.read())
        for h, peer in ((self.a, self.b), (self.b, self.a)):
            h.dev = "wan0"
            _run(["ip", "-n", h.ns, "addr", "add", h.addr, "peer", peer.addr, "dev", "wan0"])
            _run(["ip", "-n", h.ns, "link", "set", "wan0", "mtu", "9000", "up"])

    def stop(self, p, sig=signal.SIGTERM):
        stop_process(p, sig, group=True, grace=15)  # nsenter'd processes lead their own session

    def qemu_pids(self):
        """QEMU processes running inside these hosts' network namespaces."""
        mine = set()
        for h in self.all:
            if h.holder is not None and h.holder.poll() is None:
                mine.add(os.readlink(f"/proc/{h.holder.pid}/ns/net"))
        r = subprocess.run(["pgrep", "qemu-system"], capture_output=True, text=True)
        pids = []
        for pid in (int(x) for x in r.stdout.split()):
            try:
                if os.readlink(f"/proc/{pid}/ns/net") in mine:
                    pids.append(pid)
            except OSError:
                pass
        return pids

    def close(self):
        for h in getattr(self, "all", []):
            if h.holder is not None and h.holder.poll() is None and h.libvirtd is not None:
                for dom in h.sh(["virsh", "-q", "-c", "qemu:///system", "list", "--name"], check=False,
                                timeout=20).stdout.split():
                    h.sh(["virsh", "-c", "qemu:///system", "destroy", dom], check=False, timeout=20)
        leftover = self.qemu_pids() if hasattr(self, "all") else []
        for p in reversed(self.procs):
            try:
                self.stop(p)
            except Exception:
                pass
        self.procs = []
        for pid in leftover:  # QEMU that libvirtd started and left behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for h in getattr(self, "all", []):
            subprocess.run(["ip", "netns", "del", h.ns], capture_output=True)
        subprocess.run(["rm", "-rf", self.dir])
