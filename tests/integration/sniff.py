"""A wire tap that changes nothing: an AF_PACKET socket on a host's veth sees
every TCP segment between the hosts, whoever sends it (encmigd, QEMU,
libvirtd). For the transparent mode, where no proxy can be put in the path
without changing what is tested. Counts payload bytes per TCP port pair and
looks for a marker in each flow's bytes in order (veth neither loses nor
reorders, and a marker split across two segments is still found)."""
import socket, struct, threading, time

ETH_P_ALL = 0x0003


class Sniffer:
    def __init__(self, dev, marker):
        self.marker = marker
        self.flows = {}  # (src, sport, dst, dport) -> [bytes, tail, seen]
        self.first_payload = {}  # (src, sport, dst, dport) -> time.time() of its first payload byte
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, 33, 256 << 20)  # SO_RCVBUFFORCE: drop nothing
        self.sock.bind((dev, 0))
        self.sock.settimeout(0.2)
        self.stopped = False
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stopped:
            try:
                pkt, addr = self.sock.recvfrom(1 << 17)
            except socket.timeout:
                continue
            except OSError:
                return
            self._packet(pkt, addr)

    def _packet(self, pkt, addr):
        if addr[3] == 1:  # ARPHRD_ETHER (veth)
            if len(pkt) < 14:
                return
            eth_type, off = struct.unpack("!H", pkt[12:14])[0], 14
        else:  # a TUN device (bench/wanem): the packet starts at its IP header
            eth_type, off = addr[1], 0
        if eth_type == 0x0800:
            ihl = (pkt[off] & 0x0F) * 4
            if pkt[off + 9] != 6:
                return
            total = struct.unpack("!H", pkt[off + 2:off + 4])[0]
            src, dst = socket.inet_ntop(socket.AF_INET, pkt[off + 12:off + 16]), socket.inet_ntop(socket.AF_INET, pkt[off + 16:off + 20])
            end = off + total
            off += ihl
        elif eth_type == 0x86DD:
            if pkt[off + 6] != 6:
                return
            plen = struct.unpack("!H", pkt[off + 4:off + 6])[0]
            src, dst = socket.inet_ntop(socket.AF_INET6, pkt[off + 8:off + 24]), socket.inet_ntop(socket.AF_INET6, pkt[off + 24:off + 40])
            off += 40
            end = off + plen
        else:
            return
        sport, dport = struct.unpack("!HH", pkt[off:off + 4])
        doff = (pkt[off + 12] >> 4) * 4
        payload = pkt[off + doff:end]
        if not payload:
            return
        with self.lock:
            self.first_payload.setdefault((src, sport, dst, dport), time.time())
            f = self.flows.setdefault((src, sport, dst, dport), [0, b"", False])
            f[0] += len(payload)
            data = f[1] + payload
            if self.marker and self.marker in data:
                f[2] = True
            f[1] = data[-(len(self.marker) - 1):] if self.marker and len(self.marker) > 1 else b""

    def close(self):
        self.stopped = True
        self.t.join(2)
        self.sock.close()

    def bytes_to_port(self, port):
        with self.lock:
            return sum(f[0] for k, f in self.flows.items() if k[3] == port or k[1] == port)

    def bytes_in_range(self, lo, hi, services=(16509, 16514, 16520)):
        """Payload of flows to or from a port in [lo, hi], other than flows of
        a service port whose ephemeral end happens to fall in the range."""
        with self.lock:
            return sum(f[0] for k, f in self.flows.items()
                       if (lo <= k[3] <= hi or lo <= k[1] <= hi) and k[1] not in services and k[3] not in services)

    def marker_flows(self):
        with self.lock:
            return [k for k, f in self.flows.items() if f[2]]
