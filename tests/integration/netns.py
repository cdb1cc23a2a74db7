"""Network topologies for tests and benchmarks (loopback; two namespaces
joined by a veth pair, optionally shaped by tbf; or joined by bench/wanem
for RTT and a rate cap), and the network failures real links have, made with
nftables and ip-link inside those namespaces: connections reset, existing
connections black-holed while new ones work, the link down.

Only namespaces created here are touched; close() deletes them."""
import os, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from harness import BUILD  # noqa: E402
from unit_confinement import DEBIAN_NET_SYSCTLS  # noqa: E402

WANEM = os.path.join(BUILD, "bench", "wanem")


def sh(*argv, check=True, input=None):
    return subprocess.run(list(argv), check=check, capture_output=True, text=True, input=input)


class Loopback:
    """Both hosts in the root namespace, on 127.0.0.1."""
    name = "loopback"

    def __init__(self):
        self.addr = {"src": "127.0.0.1", "dst": "127.0.0.1"}

    def prefix(self, side):
        return []

    def describe(self):
        return "loopback, unlimited"

    def close(self):
        pass


class _TwoNamespaces:
    def __init__(self, tag):
        self.tag = tag
        self.ns = {"src": f"emb{tag}s", "dst": f"emb{tag}d"}
        self.dev = {}
        for ns in self.ns.values():
            sh("ip", "netns", "del", ns, check=False)
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            # As a stock Debian host: the autotuning ceilings plain QEMU lives with.
            for k, v in DEBIAN_NET_SYSCTLS.items():
                sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{k}={v}")

    def prefix(self, side):
        return ["ip", "netns", "exec", self.ns[side]]

    # ---- what real networks do to connections ----

    def nft(self, side, ruleset):
        """Replaces our table in that namespace with `ruleset` (chains and
        rules of table inet encmig_outage); an empty ruleset removes it."""
        sh("ip", "netns", "exec", self.ns[side], "nft", "delete", "table", "inet", "encmig_outage", check=False)
        if ruleset:
            sh("ip", "netns", "exec", self.ns[side], "nft", "-f", "-",
               input="table inet encmig_outage {\n" + ruleset + "\n}\n")

    def reset_port(self, port):
        """Every packet to the destination's data port is answered with a TCP
        reset, as by a firewall or NAT that lost its state: existing
        connections die, new ones are refused."""
        self.nft("dst", "chain input { type filter hook input priority 0; tcp dport %d reject with tcp reset; }" % port)

    def blackhole_existing(self, port):
        """The connections open now to the destination's data port go silent
        (NAT rebinding, a route change); new connections work. Returns the
        source ports cut."""
        out = sh("ip", "netns", "exec", self.ns["src"], "ss", "-Htn", "state", "established",
                 "dst", f"{self.addr['dst']}:{port}").stdout
        ports = sorted({int(line.split()[2].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()})
        if not ports:
            return []
        s = ", ".join(str(p) for p in ports)
        self.nft("src", "chain output { type filter hook output priority 0; tcp sport { %s } drop; }\n"
                        "chain input { type filter hook input priority 0; tcp dport { %s } drop; }" % (s, s))
        return ports

    def link(self, up):
        """The source host's link to the destination, down or up."""
        sh("ip", "-n", self.ns["src"], "link", "set", self.dev["src"], "up" if up else "down")
        if up and self.dev["src"] == "wan0":
            # A point-to-point address's route comes back with the link.
            sh("ip", "-n", self.ns["src"], "route", "replace", self.addr["dst"], "dev", "wan0", check=False)

    def heal(self):
        """Everything above undone."""
        for side in ("src", "dst"):
            self.nft(side, "")
        self.link(True)

    def close(self):
        for ns in self.ns.values():
            sh("ip", "netns", "del", ns, check=False)


class Veth(_TwoNamespaces):
    """Two namespaces joined by a veth pair, each end shaped by tbf at rate_gbit
    (None: unlimited)."""
    def __init__(self, rate_gbit=None, tag="v"):
        super().__init__(tag)
        self.rate = rate_gbit
        self.name = f"veth-{rate_gbit}g" if rate_gbit else "veth"
        self.addr = {"src": "10.91.0.1", "dst": "10.91.0.2"}
        s, d = self.ns["src"], self.ns["dst"]
        a, b = f"emb{tag}0", f"emb{tag}1"
        sh("ip", "link", "add", a, "netns", s, "type", "veth", "peer", "name", b, "netns", d)
        self.dev = {"src": a, "dst": b}
        for ns, dev, side in ((s, a, "src"), (d, b, "dst")):
            sh("ip", "-n", ns, "addr", "add", f"{self.addr[side]}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            if rate_gbit:
                # burst: enough for the rate at a 1 ms timer; latency bounds the queue.
                burst = max(64 * 1024, int(rate_gbit * 1e9 / 8 / 1000))
                sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                   "rate", f"{int(rate_gbit * 1000)}mbit", "burst", str(burst), "latency", "20ms")

    def describe(self):
        return f"veth with tbf at {self.rate} Gb/s" if self.rate else "veth, unlimited"


class Wan(_TwoNamespaces):
    """Two namespaces joined by bench/wanem: RTT and a bandwidth cap."""
    def __init__(self, rtt_ms, rate_mbit=1000, tag="w"):
        super().__init__(tag)
        self.rtt, self.rate = rtt_ms, rate_mbit
        self.name = f"wan-{rtt_ms}ms"
        self.addr = {"src": "10.92.0.1", "dst": "10.92.0.2"}
        self.dev = {"src": "wan0", "dst": "wan0"}
        self.proc = subprocess.Popen([WANEM, "--ns-a", f"/run/netns/{self.ns['src']}", "--ns-b",
                                      f"/run/netns/{self.ns['dst']}", "--dev", "wan0", "--rate-mbit", str(rate_mbit),
                                      "--delay-ms", str(rtt_ms / 2)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("wanem did not start: " + self.proc.stderr.read())
        for side, peer in (("src", "dst"), ("dst", "src")):
            ns = self.ns[side]
            sh("ip", "-n", ns, "addr", "add", self.addr[side], "peer", self.addr[peer], "dev", "wan0")
            sh("ip", "-n", ns, "link", "set", "wan0", "mtu", "9000", "up")

    def describe(self):
        return f"WAN emulator: {self.rate} Mb/s, RTT {self.rtt} ms"

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        super().close()
