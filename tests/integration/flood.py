"""An attacker off the path who can only reach a daemon's data port: it holds
idle connections, drip-feeds bytes slowly, sends garbage, and, knowing a
migration id, sends valid hellos with forged key confirmations. Every
socket is closed by close(), called from the tests' finally blocks."""
import os, resource, socket, threading, time


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Flood:
    def __init__(self, port, host="127.0.0.1", idle=1500, slow=200, garbage_threads=2, known_id=None):
        self.target = (host, port)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.socks = []
        self.counts = {"idle": 0, "slow": 0, "garbage": 0, "forged": 0, "failed": 0}
        self.threads = [threading.Thread(target=self._idle, args=(idle,), daemon=True),
                        threading.Thread(target=self._slow, args=(slow,), daemon=True)]
        self.threads += [threading.Thread(target=self._garbage, daemon=True) for _ in range(garbage_threads)]
        if known_id:
            self.threads.append(threading.Thread(target=self._forged, args=(bytes.fromhex(known_id),), daemon=True))
        for t in self.threads:
            t.start()

    def _connect(self):
        s = socket.socket()
        s.setblocking(True)
        s.settimeout(2)
        s.connect(self.target)
        return s

    def _count(self, k):
        with self.lock:
            self.counts[k] += 1

    def _keep(self, s):
        with self.lock:
            self.socks.append(s)

    def _idle(self, n):
        """Connections that never send a byte; reopened when the daemon drops them."""
        while not self.stop.is_set():
            with self.lock:
                live = len(self.socks)
            if live < n:
                try:
                    self._keep(self._connect())
                    self._count("idle")
                except OSError:
                    self._count("failed")
                    time.sleep(0.01)
            else:
                time.sleep(0.05)

    def _slow(self, n):
        """Connections that send one byte of a hello every second."""
        conns = []
        hello = b"EMIG\0\3\1\1" + b"\0" * 56
        while not self.stop.is_set():
            while len(conns) < n and not self.stop.is_set():
                try:
                    conns.append([self._connect(), 0])
                    self._count("slow")
                except OSError:
                    self._count("failed")
                    break
            for c in list(conns):
                try:
                    c[0].send(hello[c[1] % 64:c[1] % 64 + 1])
                    c[1] += 1
                except OSError:
                    c[0].close()
                    conns.remove(c)
            self.stop.wait(1.0)
        for c in conns:
            c[0].close()

    def _garbage(self):
        while not self.stop.is_set():
            try:
                s = self._connect()
                s.sendall(os.urandom(64))
                s.close()
                self._count("garbage")
            except OSError:
                self._count("failed")

    def _forged(self, mid):
        """Valid hellos for a known migration id, then a forged confirmation."""
        while not self.stop.is_set():
            try:
                s = self._connect()
                s.sendall(b"EMIG\0\3\1\1" + b"\0" * 4 + mid + os.urandom(32) + b"\0" * 4)
                s.recv(96)
                s.sendall(os.urandom(32))
                s.close()
                self._count("forged")
            except OSError:
                self._count("failed")
            time.sleep(0.002)

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join(5)
        with self.lock:
            for s in self.socks:
                s.close()
            self.socks = []


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
