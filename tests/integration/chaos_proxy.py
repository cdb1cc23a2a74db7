"""A chaos man in the middle for the soak (tests/integration/test_soak.py).

It sits between two encmigd daemons: the source daemon connects to it (encmig
migrate --dst-addr), it connects to the destination daemon's data port, and
it forwards both directions. It never changes a byte. While `chaos` is on,
each accepted connection gets one fault, picked at random:

- pass: forwarded untouched;
- reset: after a random number of bytes from the client (some inside the
  handshake, most inside the data), both sides get a TCP reset;
- delay: every chunk, both directions, is held a random 0-50 ms for a while
  (1-3 s from the connection's start), in order;
- stall: after a random number of bytes both directions stop being forwarded
  for 0.5-3 s (held, not lost), then everything goes on;
- blackhole: after a random number of bytes, everything in both directions
  is read and thrown away for 0.5-3 s, then both sides get a TCP reset (a
  connection gone silent; the data thrown away is what a resume resends).

One thread per connection, non-blocking sockets and poll(), so a reset is
a real RST (SO_LINGER 0) sent at once, whatever the other direction is doing.
"""
import collections, errno, random, select, socket, struct, threading, time

KINDS = ("pass", "reset", "delay", "stall", "blackhole")
CHUNK = 256 << 10
QUEUE_MAX = 8 << 20  # bytes held per direction before we stop reading (back-pressure)


def rst_close(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class ChaosProxy:
    def __init__(self, target_port, seed, weights=None, target_host="127.0.0.1"):
        self.target = [target_host, target_port]  # the port changes when the daemon is restarted
        self.rng = random.Random(seed)
        self.rng_lock = threading.Lock()
        self.weights = weights or {"pass": 45, "reset": 20, "delay": 15, "stall": 10, "blackhole": 10}
        self.chaos = False
        self.counts = collections.Counter()  # faults picked, by kind
        self.fired = collections.Counter()  # faults that actually happened on the wire
        self.conns = 0
        self.live = set()
        self.lock = threading.Lock()
        self.closed = False
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(128)
        self.port = self.ls.getsockname()[1]
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def retarget(self, port):
        self.target[1] = port

    def close(self):
        self.closed = True
        try:
            self.ls.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.ls.close()
        except OSError:
            pass
        self.acceptor.join(5)
        with self.lock:
            live = list(self.live)
        for c in live:
            c.stop = True
        for c in live:
            c.thread.join(5)

    def _plan(self):
        with self.rng_lock:
            r = self.rng
            if not self.chaos:
                return {"kind": "pass"}
            kinds = list(self.weights)
            kind = r.choices(kinds, [self.weights[k] for k in kinds])[0]
            # Where in the client's bytes the fault starts: sometimes inside the
            # hello and key confirmation (96 bytes) or the first records, mostly
            # in the data (a 32 MiB guest sends 32 MiB and more on the main stream,
            # half that on each of two multifd channels).
            at = r.randrange(0, 4096) if r.random() < 0.25 else r.randrange(4096, 36 << 20)
            return {"kind": kind, "at": at, "for": r.uniform(0.5, 3.0), "delay_for": r.uniform(1.0, 3.0),
                    "rng": random.Random(r.random())}

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            plan = self._plan()
            try:
                s = socket.create_connection(tuple(self.target), timeout=5)
            except OSError:
                rst_close(c)  # the daemon is down (killed, being restarted)
                continue
            with self.lock:
                self.conns += 1
                self.counts[plan["kind"]] += 1
            conn = _Conn(self, c, s, plan)
            with self.lock:
                self.live.add(conn)
            conn.thread.start()


class _Conn:
    def __init__(self, proxy, c, s, plan):
        self.proxy, self.c, self.s, self.plan = proxy, c, s, plan
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _fired(self, what):
        with self.proxy.lock:
            self.proxy.fired[what] += 1

    def _run(self):
        try:
            self._loop()
        except OSError:
            pass
        finally:
            rst_close(self.c)
            rst_close(self.s)
            with self.proxy.lock:
                self.proxy.live.discard(self)

    def _loop(self):
        c, s, plan = self.c, self.s, self.plan
        kind = plan["kind"]
        rng = plan.get("rng")
        for x in (c, s):
            x.setblocking(False)
        start = time.monotonic()
        # Per direction: queue of [release time, bytes], read EOF seen, write side shut.
        q = {c: collections.deque(), s: collections.deque()}  # keyed by the socket the bytes go to
        qbytes = {c: 0, s: 0}
        eof = {c: False, s: False}  # keyed by the socket read from
        shut = {c: False, s: False}
        peer = {c: s, s: c}
        client_bytes = 0
        hold_until = drop_until = None
        last_release = {c: 0.0, s: 0.0}
        poller = select.poll()
        while not self.stop:
            now = time.monotonic()
            if drop_until is not None and now >= drop_until:
                self._fired("blackhole")
                return  # the reset
            timeout = 0.05
            for src in (c, s):
                dst = peer[src]
                mask = 0
                if not eof[src] and qbytes[dst] < QUEUE_MAX:
                    mask |= select.POLLIN
                if q[src]:
                    release = max(q[src][0][0], hold_until or 0)
                    if release <= now:
                        mask |= select.POLLOUT
                    else:
                        timeout = min(timeout, release - now)
                poller.register(src, mask)
            events = poller.poll(max(0, timeout) * 1000)
            now = time.monotonic()
            for fd, ev in events:
                sock = c if fd == c.fileno() else s
                if ev & (select.POLLERR | select.POLLNVAL):
                    return  # a reset from one side: reset the other
                if ev & select.POLLOUT and q[sock]:
                    while q[sock] and max(q[sock][0][0], hold_until or 0) <= now:
                        item = q[sock][0]
                        try:
                            n = sock.send(item[1])
                        except BlockingIOError:
                            break
                        qbytes[sock] -= n
                        if n < len(item[1]):
                            item[1] = item[1][n:]
                            break
                        q[sock].popleft()
                if ev & (select.POLLIN | select.POLLHUP) and not eof[sock]:
                    try:
                        data = sock.recv(CHUNK)
                    except BlockingIOError:
                        continue
                    except OSError:
                        return
                    if not data:
                        eof[sock] = True
                        continue
                    dst = peer[sock]
                    if sock is c:
                        client_bytes += len(data)
                        if kind != "pass" and kind != "delay" and client_bytes >= plan["at"] and \
                                hold_until is None and drop_until is None:
                            if kind == "reset":
                                # Forward what came before the cut, then reset both ways.
                                keep = len(data) - (client_bytes - plan["at"])
                                try:
                                    s.setblocking(True)
                                    s.settimeout(2)
                                    for item in q[s]:
                                        s.sendall(item[1])
                                    s.sendall(data[:max(0, keep)])
                                except OSError:
                                    pass
                                self._fired("reset")
                                return
                            if kind == "stall":
                                hold_until = now + plan["for"]
                                self._fired("stall")
                            if kind == "blackhole":
                                drop_until = now + plan["for"]
                    if drop_until is not None:
                        continue  # thrown away, both directions
                    release = now
                    if kind == "delay" and now - start < plan["delay_for"]:
                        release = max(last_release[dst], now + rng.uniform(0, 0.05))
                        if not plan.get("counted"):
                            plan["counted"] = True
                            self._fired("delay")
                    last_release[dst] = release
                    q[dst].append([release, data])
                    qbytes[dst] += len(data)
            # A side that finished sending: pass its FIN on once its bytes are through.
            for src in (c, s):
                dst = peer[src]
                if eof[src] and not q[dst] and not shut[dst]:
                    shut[dst] = True
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        return
            if shut[c] and shut[s]:
                # Both directions done: close normally (not a reset).
                for x in (c, s):
                    x.setblocking(True)
                    x.close()
                return
