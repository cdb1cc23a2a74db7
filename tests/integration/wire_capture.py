"""Real captures for the independent decoder (tests/spec_decoder.py).

RecordingProxy is a man in the middle between the source daemon and the
destination daemon's data port. It records, per TCP connection and in the
order the connections were accepted, every byte it forwarded in each
direction (what the receiver got, not what the sender wrote). Once, it cuts
the first connection of one stream (kind, index) that carries `cut_after`
client records (START included), when the next one begins to arrive, and
with `cut_partial` it forwards the first half of that one first. Like Mitm's
"truncate", both sockets are then shut down, so the stream resumes on a new
connection, through the proxy.

decode_captures(dir) runs under Debian's /usr/bin/python3 (it needs
python3-cryptography):

    /usr/bin/python3 wire_capture.py DIR

reads DIR/captures.json and the capture files it names, groups the
connections by stream (kind and index from the ClientHello, bytes 6 and
8..12), decodes each stream's connections in order with
spec_decoder.decode_connection (one `state` per stream), and prints one JSON
report on stdout (see decode_captures)."""
import hashlib, json, os, socket, struct, sys, threading

HELLO = 64
CONFIRM = 32


def _read_exact(sock, n):
    out = b""
    while len(out) < n:
        d = sock.recv(n - len(out))
        if not d:
            break
        out += d
    return out


class RecordingProxy:
    def __init__(self, target_port, cut_stream=(1, 0), cut_after=8, cut_partial=True, target_host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.cut_stream, self.cut_after, self.cut_partial = cut_stream, cut_after, cut_partial
        self.cut = False  # the cut happened
        self.conns = []  # in accept order: dict(n, c2s, s2c, kind, index, cut)
        self.lock = threading.Lock()
        self.threads = []
        self.socks = []
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

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

    def wait_closed(self, timeout):
        """Waits until every connection is closed both ways; True if so."""
        import time
        deadline = time.time() + timeout
        for t in list(self.threads):
            t.join(max(0, deadline - time.time()))
        return not any(t.is_alive() for t in self.threads)

    def _start(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        with self.lock:
            self.threads.append(t)
        t.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            with self.lock:
                conn = dict(n=len(self.conns), c2s=bytearray(), s2c=bytearray(), kind=None, index=None, cut=False)
                self.conns.append(conn)
            self._start(self._serve, conn, c)

    @staticmethod
    def _send(dst, buf, data):
        dst.sendall(data)
        buf += data  # only what was forwarded

    @staticmethod
    def _shut(*socks):
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _copy(self, src, dst, buf):
        try:
            while True:
                d = src.recv(1 << 20)
                if not d:
                    break
                self._send(dst, buf, d)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            self._shut(src, dst)

    def _serve(self, conn, c):
        try:
            s = socket.create_connection(self.target)
        except OSError:
            c.close()
            return
        self.socks += [c, s]
        self._start(self._copy, s, c, conn["s2c"])
        try:
            hello = _read_exact(c, HELLO)
            if hello:
                self._send(s, conn["c2s"], hello)
            if len(hello) < HELLO:
                s.shutdown(socket.SHUT_WR)
                return
            conn["kind"], conn["index"] = hello[6], struct.unpack(">I", hello[8:12])[0]
            if self.cut or (conn["kind"], conn["index"]) != tuple(self.cut_stream):
                self._copy(c, s, conn["c2s"])
                return
            # The stream to cut: count its records (START included).
            confirm = _read_exact(c, CONFIRM)
            self._send(s, conn["c2s"], confirm)
            buf, n = bytearray(), 0
            while True:
                d = c.recv(1 << 20)
                if not d:
                    if buf:
                        self._send(s, conn["c2s"], bytes(buf))
                    s.shutdown(socket.SHUT_WR)
                    return
                buf += d
                while n < self.cut_after and len(buf) >= 16:
                    end = 32 + struct.unpack(">I", buf[4:8])[0]
                    if len(buf) < end:
                        break
                    self._send(s, conn["c2s"], bytes(buf[:end]))
                    del buf[:end]
                    n += 1
                if n == self.cut_after and len(buf) >= 16:
                    break
            with self.lock:  # one cut, on the first connection of the stream that gets this far
                cut = not self.cut
                if cut:
                    self.cut = conn["cut"] = True
            if not cut:
                self._send(s, conn["c2s"], bytes(buf))
                self._copy(c, s, conn["c2s"])
                return
            if self.cut_partial:
                # and the first half of the next record: the destination never
                # gets it whole, so the source must send it again.
                part = min(len(buf), max(16, (32 + struct.unpack(">I", buf[4:8])[0]) // 2))
                self._send(s, conn["c2s"], bytes(buf[:part]))
            self._shut(c, s)  # nothing more of this connection reaches the destination
        except OSError:
            self._shut(c, s)

    def dump(self, dirpath, key, nonce, mid):
        """Writes the captures and what the decoder needs; returns the manifest path."""
        man = dict(key=key.hex(), nonce=nonce.hex(), id=mid.hex(), connections=[])
        with self.lock:
            conns = list(self.conns)
        for conn in conns:
            entry = dict(n=conn["n"], cut=conn["cut"])
            for d in ("c2s", "s2c"):
                path = os.path.join(dirpath, f"conn{conn['n']}.{d}")
                with open(path, "wb") as f:
                    f.write(conn[d])
                entry[d] = path
            man["connections"].append(entry)
        path = os.path.join(dirpath, "captures.json")
        with open(path, "w") as f:
            json.dump(man, f)
        return path


def _name(kind, index):
    if kind == 1:
        return "main" if index == 0 else f"multifd-{index - 1}"
    return f"nbd-{index}" if kind == 2 else f"kind{kind}-{index}"


def decode_captures(dirpath):
    """Returns {"streams": [...], "unparsed": [...]}: per stream (kind, index,
    name) its connections in order, each with what the decoder returned
    (record counts per type and direction, resume, closed_cleanly, broken,
    handshake_only) or the decoder's error, and for the stream's c2s DATA:
    the FIN (total, records, digest), the plaintext length, its first 16
    bytes, and whether the digest recomputed here over every DATA tag in
    counter order equals the FIN's."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import spec_decoder as sd
    man = json.load(open(os.path.join(dirpath, "captures.json")))
    key, nonce, mid = (bytes.fromhex(man[k]) for k in ("key", "nonce", "id"))
    streams, unparsed = {}, []
    for c in man["connections"]:
        cb, sb = open(c["c2s"], "rb").read(), open(c["s2c"], "rb").read()
        if len(cb) < HELLO:
            unparsed.append(dict(n=c["n"], c2s_bytes=len(cb), s2c_bytes=len(sb)))
            continue
        streams.setdefault((cb[6], struct.unpack(">I", cb[8:12])[0]), []).append(c["n"])
    out = []
    for (kind, index), ns in sorted(streams.items()):
        state = {}
        rep = dict(kind=kind, index=index, name=_name(kind, index), connections=[], error=None, fin=None)
        length, head, tags, counter = 0, b"", [], 0
        for n in ns:
            c = man["connections"][n]
            cb, sb = open(c["c2s"], "rb").read(), open(c["s2c"], "rb").read()
            label = f"{rep['name']} conn{n}"
            crep = dict(n=n, cut=c["cut"], c2s_bytes=len(cb), s2c_bytes=len(sb), error=None)
            rep["connections"].append(crep)
            had_state = bool(state)
            try:
                r = sd.decode_connection(key, nonce, mid, cb, sb, state, label)
            except Exception as e:  # SpecViolation, PeerError, ValueError, InvalidTag, ...
                crep["error"] = rep["error"] = f"{label}: {type(e).__name__}: {e}"
                break
            # A connection made at arm and never used carries only the
            # handshake: it opens no stream (s12), so it leaves no state.
            crep["handshake_only"] = not r["c2s"] and not r["s2c"]
            if crep["handshake_only"] and not had_state:
                state.clear()
            for k in ("handshake_complete", "resume", "closed_cleanly", "broken"):
                crep[k] = r[k]
            for d in ("c2s", "s2c"):
                types = [x["type"] for x in r[d]]
                crep[d] = {t: types.count(t) for t in sorted(set(types))}
                crep[d + "_first"], crep[d + "_last"] = types[:2], types[-3:]
                crep[d + "_resent"] = sum(1 for x in r[d] if x.get("resent"))
                # "ends with a FIN": a FIN, then nothing but ACKs (s7)
                fin_at = max((i for i, t in enumerate(types) if t == "FIN"), default=None)
                crep[d + "_ends_with_fin"] = fin_at is not None and all(t == "ACK" for t in types[fin_at + 1:])
            for x in r["c2s"]:
                if x["type"] == "DATA" and not x["resent"]:
                    if x["counter"] != counter or x["position"] != length:
                        crep["error"] = rep["error"] = f"{label}: DATA {x['counter']} at {x['position']}, " \
                                                       f"expected {counter} at {length}"
                    if len(head) < 16:
                        head += x["payload"][:16 - len(head)]
                    length += len(x["payload"])
                    tags.append(x["tag"])
                    counter += 1
                elif x["type"] == "FIN":
                    rep["fin"] = dict(total=x["total"], records=x["records"], digest=x["digest"].hex(), conn=n)
            del r
        rep["plaintext_length"], rep["plaintext_head"], rep["data_records"] = length, head.hex(), counter
        rep["digest_recomputed"] = hashlib.sha256(b"".join(tags)).hexdigest()
        used = [c for c in rep["connections"] if not c.get("handshake_only", True) or c["error"]]
        rep["used_connections"] = len(used)
        rep["c2s_ends_with_fin"] = bool(used) and used[-1].get("c2s_ends_with_fin", False)
        out.append(rep)
    return dict(streams=out, unparsed=unparsed)


if __name__ == "__main__":
    print(json.dumps(decode_captures(sys.argv[1])))
