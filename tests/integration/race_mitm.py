"""A man in the middle that makes two resumes of one stream overlap on the
destination, the attack of issue 18 (it only delays, holds, drops and resets
TCP connections; it holds no key).

For the target stream (kind, index), connections in the order the source
opens them:
  conn 0 (the stream's first): passed until `cut_after` client bytes went
      through, then reset both ways;
  conn 1 (the first resume): passed until the server's START reached the
      client (so the source installs it and sends DATA on it); then every
      further client byte is held back, and after `hold_bytes` are held (or
      0.5 s), the connection is reset towards the source only: the server
      side stays open, so the destination still believes in it;
  conn 2 (the second resume): passed, and conn 1's held bytes are released
      to the server according to `order`:
        "before": before conn 2's first byte reaches the server;
        "after":  after the server's START on conn 2 reached the client;
        "during": at the same time as conn 2's START;
  every later connection, and every other stream's: passed.
The migration must end with RAM identical byte for byte, or fail honestly."""
import socket, struct, threading, time

PREFIX_C = 32  # ClientConfirm (the ClientHello was read apart, to find the stream)
PREFIX_S = 64 + 32  # ServerHello + ServerConfirm


def rst(sock):
    """Closes with a TCP reset."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass


def records(buf, off):
    """Yields (start, end) of complete records in buf from off."""
    while len(buf) - off >= 16:
        (length,) = struct.unpack(">I", buf[off + 4:off + 8])
        end = off + 32 + length
        if end > len(buf):
            return
        yield off, end
        off = end


class RaceMitm:
    def __init__(self, target_port, kind=1, index=0, order="after", cut_after=20 << 20, hold_bytes=4 << 20,
                 target_host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.kind, self.index, self.order = kind, index, order
        self.cut_after, self.hold_bytes = cut_after, hold_bytes
        self.conns = 0  # connections of the target stream seen
        self.events = []  # what happened, for the test's messages
        self.lock = threading.Lock()
        self.held = bytearray()  # conn 1's client bytes, held
        self.conn1_server = None  # conn 1's socket to the server, kept open
        self.released = threading.Event()
        self.conn2_started = threading.Event()  # conn 2's START reached the server, or is about to
        self.conn2_server_start = threading.Event()  # the server's START on conn 2 reached the client
        self.socks = []
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def note(self, what):
        with self.lock:
            self.events.append((round(time.time(), 3), what))

    def close(self):
        for s in [self.ls] + self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        hello = b""
        try:
            while len(hello) < 64:
                d = c.recv(64 - len(hello))
                if not d:
                    c.close()
                    return
                hello += d
            s = socket.create_connection(self.target)
        except OSError:
            c.close()
            return
        self.socks += [c, s]
        s.sendall(hello)
        kind, index = hello[6], struct.unpack(">I", hello[8:12])[0]
        n = None
        if kind == self.kind and index == self.index:
            with self.lock:
                n = self.conns
                self.conns += 1
        if n is None or n > 2:
            self._plain(c, s)
        elif n == 0:
            self._conn0(c, s)
        elif n == 1:
            self._conn1(c, s)
        else:
            self._conn2(c, s)

    def _plain(self, c, s):
        threading.Thread(target=self._pump, args=(c, s), daemon=True).start()
        threading.Thread(target=self._pump, args=(s, c), daemon=True).start()

    @staticmethod
    def _pump(a, b, hook=None):
        try:
            while True:
                d = a.recv(1 << 20)
                if not d:
                    break
                if hook:
                    d = hook(d)
                if d:
                    b.sendall(d)
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _conn0(self, c, s):
        passed = [0]
        done = threading.Event()

        def hook(d):
            if done.is_set():
                return b""
            passed[0] += len(d)
            if passed[0] >= self.cut_after:
                done.set()
                self.note("conn0: reset both ways")
                rst(c)
                rst(s)
                return b""
            return d
        threading.Thread(target=self._pump, args=(c, s, hook), daemon=True).start()
        threading.Thread(target=self._pump, args=(s, c), daemon=True).start()

    def _conn1(self, c, s):
        self.conn1_server = s
        server_start_seen = threading.Event()
        sbuf = bytearray()

        def from_server(d):
            # The server's START is its first record after the 96-byte flight.
            sbuf.extend(d)
            if not server_start_seen.is_set():
                for _, end in records(sbuf, PREFIX_S):
                    server_start_seen.set()
                    self.note("conn1: server START to the source")
                    break
            return d
        cut = threading.Event()
        cpassed = [0]

        def from_client(d):
            if not server_start_seen.is_set() and not self.held:
                cpassed[0] += len(d)
                return d  # hello, confirm, START: through
            with self.lock:
                self.held.extend(d)
                held = len(self.held)
            if held >= self.hold_bytes and not cut.is_set():
                cut.set()
                self.note(f"conn1: {held} client bytes held; reset towards the source only")
                rst(c)
            return b""

        def deadline():
            time.sleep(0.5)
            if not cut.is_set() and server_start_seen.is_set():
                cut.set()
                self.note(f"conn1: {len(self.held)} client bytes held (0.5 s); reset towards the source only")
                rst(c)
        threading.Thread(target=deadline, daemon=True).start()
        # Client to server: never shut the server side down; it must stay open.
        def c2s():
            try:
                while True:
                    d = c.recv(1 << 20)
                    if not d:
                        break
                    d = from_client(d)
                    if d:
                        s.sendall(d)
            except OSError:
                pass
        threading.Thread(target=c2s, daemon=True).start()
        def s2c():
            try:
                while True:
                    d = s.recv(1 << 20)
                    if not d:
                        break
                    d = from_server(d)
                    try:
                        c.sendall(d)
                    except OSError:
                        pass  # the source side is gone; keep draining the server
            except OSError:
                pass
        threading.Thread(target=s2c, daemon=True).start()

    def _release(self):
        if self.released.is_set():
            return
        self.released.set()
        with self.lock:
            data = bytes(self.held)
        self.note(f"release {len(data)} held bytes of conn1 to the server ({self.order})")
        try:
            if self.conn1_server is not None and data:
                self.conn1_server.sendall(data)
        except OSError as e:
            self.note(f"release failed: {e}")

    def _conn2(self, c, s):
        if self.order == "before":
            self._release()
            time.sleep(0.3)
        cbuf, sbuf = bytearray(), bytearray()

        def from_client(d):
            cbuf.extend(d)
            if self.order == "during" and not self.released.is_set():
                for _ in records(cbuf, PREFIX_C):  # conn 2's START is complete
                    threading.Thread(target=self._release, daemon=True).start()
                    break
            return d

        def from_server(d):
            sbuf.extend(d)
            if self.order == "after" and not self.released.is_set():
                for _ in records(sbuf, PREFIX_S):
                    self.conn2_server_start.set()
                    threading.Timer(0.05, self._release).start()
                    break
            return d
        threading.Thread(target=self._pump, args=(c, s, from_client), daemon=True).start()
        threading.Thread(target=self._pump, args=(s, c, from_server), daemon=True).start()
