"""A man in the middle between two encmigd daemons (or two QEMUs, in plain
mode). It taps every byte (to look for a marker) and can attack record N of
the first connection's client-to-server direction: flip a bit, replay it,
drop it, truncate the stream after it, or black-hole it and all that follow."""
import socket, struct, threading

PREFIX = 64 + 32  # hello + confirm, before the first record


def read_exact(sock, n):
    """Up to n bytes: fewer only if the peer closed first."""
    out = b""
    while len(out) < n:
        d = sock.recv(n - len(out))
        if not d:
            break
        out += d
    return out


class Mitm:
    def __init__(self, target_port, attack=None, at_record=20, marker=None, target_host="127.0.0.1",
                 listen_host="127.0.0.1", listen_port=0, attack_conn=0, hold_main_s=0, record_conn=None,
                 refuse_after_attack=False):
        self.target = (target_host, target_port)
        self.attack, self.at, self.marker = attack, at_record, marker
        self.attack_conn = attack_conn  # which accepted connection to attack (0 = the first, -1 = every one)
        self.hold_main_s = hold_main_s  # delay the main stream (kind 1, index 0) this long
        self.marker_seen = False
        self.bytes = 0
        self.attacked = False
        self.record_conn = record_conn  # keep the client's first bytes of that connection, for replay()
        self.recorded = b""
        self.conn_count = 0
        self.refuse_after_attack = refuse_after_attack  # the path dies for good: new connections are refused
        self.client_bytes = {}  # connection number -> bytes the client sent on it
        self.lock = threading.Lock()
        self.ls = socket.socket()
        self.ls.bind((listen_host, listen_port))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close_listener(self):
        try:
            self.ls.shutdown(socket.SHUT_RDWR)  # wakes the accept thread, so it ends
        except OSError:
            pass
        try:
            self.ls.close()
        except OSError:
            pass

    def close(self):
        self.close_listener()
        for s in self.socks:
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
            if self.hold_main_s:
                threading.Thread(target=self._held, args=(c,), daemon=True).start()
                continue
            s = socket.create_connection(self.target)
            self.socks += [c, s]
            with self.lock:
                n = self.conn_count
                self.conn_count += 1
            attack = self.attack if self.attack_conn in (n, -1) else None
            if attack == "alert-version":
                threading.Thread(target=self._forge_version_alert, args=(c, s), daemon=True).start()
                continue
            threading.Thread(target=self._pipe, args=(c, s, attack, n == self.record_conn, n), daemon=True).start()
            threading.Thread(target=self._pipe, args=(s, c, None), daemon=True).start()

    def _held(self, c):
        """Reads the hello; holds the main stream back, so the destination
        sees its multifd channels first."""
        hello = read_exact(c, 64)
        if len(hello) < 64:
            return
        kind, index = hello[6], struct.unpack(">I", hello[8:12])[0]
        if kind == 1 and index == 0:
            import time
            time.sleep(self.hold_main_s)
        try:
            s = socket.create_connection(self.target)
        except OSError:
            c.close()
            return
        self.socks += [c, s]
        s.sendall(hello)
        threading.Thread(target=self._pipe, args=(c, s, None), daemon=True).start()
        threading.Thread(target=self._pipe, args=(s, c, None), daemon=True).start()

    def _forge_version_alert(self, c, s):
        """Answers the ClientHello with a forged 'unsupported version' Alert,
        as if the destination spoke version 1 only."""
        read_exact(c, 64)
        text = b"this daemon speaks protocol version 1 at most"
        c.sendall(b"EMIA" + struct.pack(">HH", 1, 2) + text.ljust(56, b"\0"))
        self.attacked = True
        for x in (c, s):
            x.close()

    def _scan(self, tail, data):
        if self.marker is None:
            return tail
        window = tail + data
        if self.marker in window:
            self.marker_seen = True
        return window[-(len(self.marker) - 1):]

    def replay(self, port, host="127.0.0.1"):
        """Sends the recorded client bytes on a new connection to the
        server, reads what it answers, and closes."""
        c = socket.create_connection((host, port))
        c.settimeout(5)
        try:
            c.sendall(self.recorded)
            while c.recv(4096):
                pass
        except OSError:
            pass
        finally:
            c.close()

    def _pipe(self, src, dst, attack, keep=False, conn=None):
        buf = bytearray()
        tail = b""
        prefix_left = PREFIX
        record = 0
        dropping = False
        try:
            while True:
                data = src.recv(1 << 20)
                if not data:
                    break
                self.bytes += len(data)
                if conn is not None:
                    with self.lock:
                        self.client_bytes[conn] = self.client_bytes.get(conn, 0) + len(data)
                if keep and len(self.recorded) < 4096:
                    self.recorded += data[:4096 - len(self.recorded)]
                tail = self._scan(tail, data)
                if attack is None:
                    dst.sendall(data)
                    continue
                buf += data
                out = bytearray()
                if prefix_left:
                    n = min(prefix_left, len(buf))
                    out += buf[:n]
                    del buf[:n]
                    prefix_left -= n
                while not prefix_left and len(buf) >= 16:
                    (length,) = struct.unpack(">I", buf[4:8])
                    total = 32 + length
                    if len(buf) < total:
                        break
                    rec = bytes(buf[:total])
                    del buf[:total]
                    if record == self.at and not self.attacked:
                        self.attacked = True
                        if attack == "flip":
                            rec = rec[:20] + bytes([rec[20] ^ 0x10]) + rec[21:]
                        elif attack == "replay":
                            rec = rec + rec
                        elif attack == "drop":
                            rec = b""
                        elif attack == "truncate":
                            if self.refuse_after_attack:
                                self.close_listener()
                            dst.sendall(out + rec)
                            raise ConnectionAbortedError
                        elif attack == "blackhole":
                            dropping = True  # this record and every later one vanish; the connection stays open
                    if dropping:
                        rec = b""
                    out += rec
                    record += 1
                if out:
                    dst.sendall(out)
            dst.shutdown(socket.SHUT_WR)
        except (OSError, ConnectionAbortedError):
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
