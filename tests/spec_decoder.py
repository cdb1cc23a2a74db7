#!/usr/bin/python3
"""An independent decoder of the encmig wire protocol, version 3.

Written from docs/protocol.md and the vector files in tests/vectors/ only,
without looking at any of encmig's source code, to find out whether the
document alone is enough to build an interoperable peer.

    /usr/bin/python3 tests/spec_decoder.py [tests/vectors/protocol_v3.txt]

checks the known answers of section 14 (and the RFC 5869 HKDF vectors),
decodes both vector cases as whole TCP connections with decode_connection(),
runs a set of negative cases built from the same vectors, and prints
"spec decoder: N records verified" (exit 0) or the first failure (exit 1).

Section numbers in comments (e.g. "s6 step 4") refer to docs/protocol.md.
Where the spec left a choice open, the comment says GUESS.
"""

import copy
import hashlib
import hmac
import os
import re
import struct
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# ---------------------------------------------------------------- constants

HELLO_SIZE = 64            # kHelloSize (s3)
CONFIRM_SIZE = 32          # kConfirmSize (s5)
ALERT_SIZE = 64            # s10
PROBE_REPLY_SIZE = 64      # s9
HEADER_SIZE = 16           # s6
TAG_SIZE = 16              # kTagSize
KEY_SIZE, NONCE_SIZE, ID_SIZE, RANDOM_SIZE, SALT_SIZE = 32, 8, 16, 32, 32
HELLO_MAGIC = 0x454D4947   # "EMIG"
ALERT_MAGIC = b"EMIA"
PROBE_MAGIC = b"EMIP"
VERSION = 3
KIND_MIGRATION, KIND_NBD, KIND_PROBE = 1, 2, 3
ROLE_CLIENT, ROLE_SERVER = 1, 2
FLAG_RESUME = 1            # "bit 0"; GUESS resolved by the vectors: the LSB of be32
MAX_PAYLOAD = 1 << 20      # kMaxRecordPayload
MAX_RECORDS = 1 << 48      # kMaxRecordsPerDirection
EPOCH_SHIFT = 16           # kEpochShift

DATA, FIN, ERROR, ACK, START = 1, 2, 3, 4, 5
TYPE_NAMES = {DATA: "DATA", FIN: "FIN", ERROR: "ERROR", ACK: "ACK", START: "START"}
FIN_SIZE, ACK_SIZE, START_SIZE = 48, 8, 40
ERROR_MIN, ERROR_MAX = 2, 256

ERROR_NAMES = {
    1: "bad magic", 2: "unsupported version", 3: "bad stream kind",
    4: "nonzero reserved field / flags", 5: "unknown migration id",
    6: "duplicate stream index", 7: "key confirmation failed",
    8: "server hello mismatch", 9: "record length above limit",
    10: "bad record type", 11: "counter mismatch", 12: "authentication failed",
    13: "truncated", 14: "data after FIN", 15: "bad FIN",
    16: "record limit reached", 17: "peer alert", 18: "peer error",
    19: "cancelled", 20: "not ready", 21: "refused by policy",
    22: "wrong role in hello", 23: "failure on the sender's side",
    24: "start or resume refused", 25: "bad acknowledgement",
    26: "stream integrity check failed",
}


class SpecViolation(Exception):
    """A rule of docs/protocol.md was broken. `code` is the wire error code
    the spec assigns (None where the spec names none)."""

    def __init__(self, code, where, detail):
        self.code = code
        self.where = where
        self.detail = detail
        name = ERROR_NAMES.get(code, "unknown error") if code else "no wire code"
        super().__init__(f"{where}: error {code} ({name}): {detail}")


class PeerAlert(SpecViolation):
    def __init__(self, where, alert):
        self.alert = alert
        super().__init__(17, where, f"peer sent Alert {alert['code']} "
                         f"({ERROR_NAMES.get(alert['code'], 'unknown error')}): {alert['text']!r}")


class PeerError(SpecViolation):
    def __init__(self, where, peer_code, text):
        self.peer_code = peer_code
        self.text = text
        super().__init__(18, where, f"peer sent ERROR {peer_code} "
                         f"({ERROR_NAMES.get(peer_code, 'unknown error')}): {text!r}")


def be32(x):
    return struct.pack(">I", x)


def be64(x):
    return struct.pack(">Q", x)


# ---------------------------------------------------------------- s4 key schedule

def hkdf_extract(salt, ikm):
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def hkdf_expand(prk, info, length):
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


def derive_prk(key, nonce, mid):
    if len(key) != KEY_SIZE or len(nonce) != NONCE_SIZE or len(mid) != ID_SIZE:
        raise ValueError("key, nonce, id must be 32, 8, 16 bytes (s1)")
    return hkdf_extract(b"encmig/1" + nonce + mid, key)


def transcript(client_hello, server_hello):
    return hashlib.sha256(client_hello + server_hello).digest()


def _d(direction):
    assert direction in ("c2s", "s2c")
    return direction.encode("ascii")


def traffic_secret(prk, direction, T):
    label = b"encmig/1 " + _d(direction) + b" traffic"
    assert len(label) == 20
    return hkdf_expand(prk, label + T, 32)


def confirm_value(prk, direction, T):
    label = b"encmig/1 " + _d(direction) + b" confirm"
    assert len(label) == 20
    value = hkdf_expand(prk, label + T, 32)
    # s5: the same as one HMAC over info || 0x01.
    assert value == hmac.new(prk, label + T + b"\x01", hashlib.sha256).digest()
    return value


def stream_secret(prk, direction, kind, index, salt):
    label = b"encmig/3 " + _d(direction) + b" stream"
    assert len(label) == 19
    if len(salt) != SALT_SIZE:
        raise ValueError("salt must be 32 bytes")
    return hkdf_expand(prk, label + bytes([kind]) + be32(index) + salt, 32)


class RecordKeys:
    """Epoch keys and IVs of one secret (traffic_d or stream_d), s4 and s6."""

    def __init__(self, secret):
        self.secret = secret
        self._epochs = {}

    def epoch(self, e):
        if e not in self._epochs:
            if e >= 1 << 32:
                raise ValueError("epoch beyond be32")
            key = hkdf_expand(self.secret, b"encmig/1 key" + be32(e), 32)
            iv = hkdf_expand(self.secret, b"encmig/1 iv" + be32(e), 12)
            self._epochs[e] = (key, iv)
        return self._epochs[e]

    def key_nonce(self, counter):
        key, iv = self.epoch(counter >> EPOCH_SHIFT)
        mask = b"\x00\x00\x00\x00" + be64(counter)
        return key, bytes(a ^ b for a, b in zip(iv, mask))

    def open(self, counter, aad, body):
        key, nonce = self.key_nonce(counter)
        return AESGCM(key).decrypt(nonce, body, aad)   # raises InvalidTag

    def seal(self, counter, aad, plaintext):
        key, nonce = self.key_nonce(counter)
        return AESGCM(key).encrypt(nonce, plaintext, aad)


def make_header(rtype, length, counter, flags=0, reserved=0):
    return struct.pack(">BBHIQ", rtype, flags, reserved, length, counter)


def seal_record(keys, rtype, counter, payload, position=None):
    """Builds a record (used by the self-tests to forge records)."""
    header = make_header(rtype, len(payload), counter)
    aad = header + (be64(position) if rtype == DATA else b"")
    return header + keys.seal(counter, aad, payload)


# ---------------------------------------------------------------- s3 hellos, s9, s10

HELLO_FMT = ">IHBBI16s32sI"
assert struct.calcsize(HELLO_FMT) == HELLO_SIZE


def build_hello(kind, role, index, mid, random, flags, version=VERSION):
    return struct.pack(HELLO_FMT, HELLO_MAGIC, version, kind, role, index, mid, random, flags)


def parse_hello(raw, role, where):
    """Checks in the order of s3: magic, version, kind, role, flags."""
    magic, version, kind, hrole, index, mid, random, flags = struct.unpack(HELLO_FMT, raw)
    if magic != HELLO_MAGIC:
        raise SpecViolation(1, where, f"hello magic {magic:#010x}")
    if version != VERSION:
        raise SpecViolation(2, where, f"hello version {version}")
    if kind not in (KIND_MIGRATION, KIND_NBD, KIND_PROBE):
        raise SpecViolation(3, where, f"hello kind {kind}")
    if hrole != role:
        raise SpecViolation(22, where, f"hello role {hrole}, must be {role}")
    # GUESS: s3 also names a "reserved field" (code 4) but the 64-byte layout
    # has none; only the flags can be checked.
    if flags & ~FLAG_RESUME:
        raise SpecViolation(4, where, f"unknown hello flags {flags:#010x}")
    return dict(kind=kind, index=index, id=mid, random=random, flags=flags, raw=raw)


def parse_alert(raw):
    version, code = struct.unpack(">HH", raw[4:8])
    text = raw[8:64].rstrip(b"\x00").decode("ascii", "replace")
    return dict(version=version, code=code, text=text)


def parse_probe_reply(raw):
    if raw[:4] != PROBE_MAGIC:
        raise SpecViolation(1, "server", "probe reply magic")
    vmin, vmax, ciphers, maxrec = struct.unpack(">HHII", raw[4:16])
    software = raw[16:64].rstrip(b"\x00").decode("ascii", "replace")
    return dict(version_min=vmin, version_max=vmax, ciphers=ciphers,
                max_record_payload=maxrec, software=software)


# ---------------------------------------------------------------- s6 records

def _new_direction_state():
    return dict(
        salt=None,        # the sender's salt (s4), fixed for the stream
        records=[],       # every DATA record the sender sealed, by counter:
                          # dict(counter, position, length, raw, tag)
        fin=None,         # (total, records, digest) once the sender sent its FIN
        acked=0,          # highest position the receiver acknowledged (ACK or START)
    )


def _sent_bytes(ds):
    return sum(r["length"] for r in ds["records"])


def _boundaries(ds):
    """Positions the receiver of this direction may report (s15.2)."""
    b = {r["position"] for r in ds["records"]}
    b.add(_sent_bytes(ds))
    if ds["fin"] is not None:
        b.add(_sent_bytes(ds) + 1)
    return b


class _Direction:
    """The receiver of one direction of one connection."""

    def __init__(self, conn, d, data, offset, secret):
        self.conn = conn
        self.d = d
        self.peer_d = "s2c" if d == "c2s" else "c2s"
        self.sender = "client" if d == "c2s" else "server"
        self.data = data
        self.off = offset
        self.ctrl_keys = RecordKeys(secret)
        self.ctrl_count = 0                  # control records received on this connection
        self.start = None                    # (position, salt) of this sender's START
        self.fin_here = False                # this sender's FIN arrived on this connection
        self.fin_before = False              # its FIN was delivered on an earlier connection
        self.rx_count = None                 # DATA counter the receiver stands at
        self.rx_pos = None                   # DATA position the receiver stands at
        self.stream_keys = None
        self.last_ack = None                 # this sender's START/ACK positions must not go down
        self.acks = []                       # ACK positions this sender sent
        self.records = []                    # decoded records, returned to the caller
        self.end = None                      # "eof" or "truncated"
        self.delivered = dict(count=0, pos=0, tags=[])   # the s6 delivery checks

    @property
    def ds(self):
        return self.conn.state["dirs"][self.d]

    @property
    def peer_ds(self):
        return self.conn.state["dirs"][self.peer_d]

    def where(self, what=""):
        return f"{self.conn.label} {self.d} ({self.sender}) record @{self.off}{what}"

    def set_receiver_position(self, p):
        """p is the receiver's own START position for this direction (s6, s16.2)."""
        if p is None:
            self.rx_count = self.rx_pos = None
            return
        ds = self.ds
        if ds["fin"] is not None and p == _sent_bytes(ds) + 1:
            self.fin_before = True
            self.rx_count, self.rx_pos = len(ds["records"]), _sent_bytes(ds)
        else:
            self.rx_count = sum(1 for r in ds["records"] if r["position"] < p)
            self.rx_pos = p
        self.delivered = dict(count=self.rx_count, pos=self.rx_pos,
                              tags=[r["tag"] for r in ds["records"][:self.rx_count]])

    # -- framing, s6 steps 1 and 2
    def _read(self):
        buf, off = self.data, self.off
        left = len(buf) - off
        if left == 0:
            self.end = "eof"
            return None
        if left >= 4 and buf[off:off + 4] == ALERT_MAGIC:                    # step 1
            if left < ALERT_SIZE:
                self.end = "truncated"
                return None
            raise PeerAlert(self.where(), parse_alert(buf[off:off + ALERT_SIZE]))
        if left < HEADER_SIZE:
            self.end = "truncated"
            return None
        header = buf[off:off + HEADER_SIZE]
        rtype, flags, reserved, length, counter = struct.unpack(">BBHIQ", header)
        w = self.where(f" type {rtype} counter {counter} length {length}")
        if rtype not in TYPE_NAMES:                                          # step 2
            raise SpecViolation(10, w, "record type not 1 to 5")
        if flags or reserved:
            raise SpecViolation(4, w, "flags or reserved not zero")
        if rtype == DATA and length > MAX_PAYLOAD:
            raise SpecViolation(9, w, "DATA above 2^20 bytes")
        if rtype == DATA and length == 0:
            raise SpecViolation(10, w, "DATA of length 0")
        if rtype == FIN and length != FIN_SIZE:
            raise SpecViolation(15, w, "FIN length not 48")
        if rtype == ERROR and not ERROR_MIN <= length <= ERROR_MAX:
            raise SpecViolation(9, w, "ERROR length not 2 to 256")
        if rtype == ACK and length != ACK_SIZE:
            raise SpecViolation(9, w, "ACK length not 8")
        if rtype == START and length != START_SIZE:
            raise SpecViolation(9, w, "START length not 40")
        total = HEADER_SIZE + length + TAG_SIZE
        if left < total:
            self.end = "truncated"
            return None
        raw = buf[off:off + total]
        self.off += total
        return w, rtype, counter, header, raw

    def step(self, first=False):
        got = self._read()
        if got is None:
            return None
        w, rtype, counter, header, raw = got
        body = raw[HEADER_SIZE:]
        # step 3: order, on the header alone
        if self.start is None and rtype not in (START, ERROR):
            raise SpecViolation(24, w, f"{TYPE_NAMES[rtype]} before the peer's START")
        if self.start is not None and rtype == START:
            raise SpecViolation(24, w, "a second START")
        # GUESS: s6 step 3 scopes "after the peer's FIN" to this connection; we
        # also apply it when the FIN was delivered on an earlier connection
        # (the receiver's START said total + 1), else a re-sent DATA or FIN
        # would pass every check.
        if (self.fin_here or self.fin_before) and rtype not in (ACK, ERROR):
            raise SpecViolation(14, w, f"{TYPE_NAMES[rtype]} after the peer's FIN")
        # step 4: counter
        if rtype == DATA:
            if self.rx_count is None:
                # s16.2 step 2: on a resumed connection the client sends nothing
                # after its START until it has the server's; the server sends
                # no DATA before its START, which needs the client's.
                raise SpecViolation(None, w, "DATA although the receiver sent no START "
                                    "on this resumed connection (its position is unknown)")
            if self.rx_count >= MAX_RECORDS:
                raise SpecViolation(16, w, "2^48 DATA records already received")
            if counter != self.rx_count:
                raise SpecViolation(11, w, f"DATA counter {counter}, expected {self.rx_count}")
        else:
            if self.ctrl_count >= MAX_RECORDS:
                raise SpecViolation(16, w, "2^48 control records already received")
            if counter != self.ctrl_count:
                raise SpecViolation(11, w, f"control counter {counter}, expected {self.ctrl_count}")
        # step 5: tag
        try:
            if rtype == DATA:
                payload = self.stream_keys.open(counter, header + be64(self.rx_pos), body)
            else:
                payload = self.ctrl_keys.open(counter, header, body)
        except InvalidTag:
            raise SpecViolation(12, w, "bad tag" + (f" (DATA at position {self.rx_pos})"
                                                    if rtype == DATA else "")) from None
        rec = dict(type=TYPE_NAMES[rtype], counter=counter, raw=raw)
        handler = {DATA: self._data, FIN: self._fin, ERROR: self._error,
                   ACK: self._ack, START: self._start}[rtype]
        handler(w, rec, payload, raw)
        if rtype != DATA:
            self.ctrl_count += 1
        self.records.append(rec)
        return rec

    def _start(self, w, rec, payload, raw):
        p, salt = struct.unpack(">Q", payload[:8])[0], payload[8:]
        rec.update(position=p, salt=salt)
        resume = self.conn.resume
        if not resume and p != 0:
            raise SpecViolation(24, w, f"START({p}) on a connection without RESUME")
        ds, peer = self.ds, self.peer_ds
        if ds["salt"] is None:
            ds["salt"] = salt
        elif ds["salt"] != salt:
            raise SpecViolation(24, w, "START names another salt than the stream's")
        # s16.2 step 4: acked <= p <= sent (+1 after the FIN), at a boundary
        sent = _sent_bytes(peer)
        limit = sent + (1 if peer["fin"] is not None else 0)
        if p < peer["acked"]:
            raise SpecViolation(24, w, f"START({p}) below the acknowledged {peer['acked']}")
        if p > limit:
            raise SpecViolation(24, w, f"START({p}) beyond what the peer sent ({limit})")
        if p not in _boundaries(peer) and p != 0:
            raise SpecViolation(24, w, f"START({p}) inside a DATA record")
        peer["acked"] = max(peer["acked"], p)
        self.last_ack = p
        self.start = (p, salt)
        self.stream_keys = RecordKeys(stream_secret(self.conn.prk, self.d, self.conn.kind,
                                                    self.conn.index, salt))

    def _data(self, w, rec, payload, raw):
        ds = self.ds
        pos, n = self.rx_pos, len(payload)
        tag = raw[-TAG_SIZE:]
        rec.update(position=pos, payload=payload, tag=tag)
        # s6 "Sealed once": a record seen twice is the same bytes.
        if rec["counter"] < len(ds["records"]):
            old = ds["records"][rec["counter"]]
            if old["raw"] != raw or old["position"] != pos:
                raise SpecViolation(None, w, "DATA record re-sent with other bytes than "
                                    "when first sealed (s6 'Sealed once': nonce reuse)")
            rec["resent"] = True
        else:
            assert rec["counter"] == len(ds["records"])
            ds["records"].append(dict(counter=rec["counter"], position=pos, length=n,
                                      raw=raw, tag=tag))
            rec["resent"] = False
        # delivery checks (s6, code 26)
        dv = self.delivered
        if dv["pos"] != pos or dv["count"] != rec["counter"]:
            raise SpecViolation(26, w, "record would be delivered out of place")
        dv["pos"] += n
        dv["count"] += 1
        dv["tags"].append(tag)
        self.rx_count += 1
        self.rx_pos += n
        if dv["pos"] != self.rx_pos or dv["count"] != self.rx_count:
            raise SpecViolation(26, w, "delivered differs from opened")

    def _fin(self, w, rec, payload, raw):
        total, nrec = struct.unpack(">QQ", payload[:16])
        digest = payload[16:]
        rec.update(total=total, records=nrec, digest=digest)
        if total != self.rx_pos or nrec != self.rx_count:                 # step 6
            raise SpecViolation(15, w, f"FIN({total}, {nrec}) but received "
                                f"{self.rx_pos} bytes in {self.rx_count} records")
        dv = self.delivered
        expect = hashlib.sha256(b"".join(dv["tags"])).digest()
        if (total, nrec) != (dv["pos"], dv["count"]) or digest != expect:
            raise SpecViolation(26, w, "FIN total, records or digest differ from what was delivered")
        ds = self.ds
        if ds["fin"] is not None and ds["fin"] != (total, nrec, digest):
            raise SpecViolation(15, w, "FIN differs from the one sent before")
        ds["fin"] = (total, nrec, digest)
        self.fin_here = True

    def _error(self, w, rec, payload, raw):
        code = struct.unpack(">H", payload[:2])[0]
        text = payload[2:].decode("ascii", "replace")
        raise PeerError(w, code, text)

    def _ack(self, w, rec, payload, raw):
        p = struct.unpack(">Q", payload)[0]
        rec.update(position=p)
        if p < self.last_ack:
            raise SpecViolation(25, w, f"ACK({p}) below an earlier ACK or START ({self.last_ack})")
        self.last_ack = p
        self.acks.append((w, p))
        peer = self.peer_ds
        peer["acked"] = max(peer["acked"], p)

    def drain(self):
        while self.step() is not None:
            pass


class _Connection:
    pass


def decode_connection(key, nonce, mid, client_bytes, server_bytes, state, label="connection"):
    """Decodes one TCP connection of a stream, both directions from the hellos.

    `state` is a dict carried across the connections of one stream (pass {}
    for a new stream); it is updated in place. Returns a dict with the decoded
    records per direction ("c2s", "s2c"), whether the handshake completed,
    whether the connection was a resume, and whether it ended cleanly
    (section 7) or is a broken connection (section 16.1). Raises
    SpecViolation (or PeerAlert / PeerError) at the first broken rule.
    """
    result = dict(c2s=[], s2c=[], handshake_complete=False, resume=None,
                  closed_cleanly=False, broken=True)
    cb, sb = bytes(client_bytes), bytes(server_bytes)
    if len(cb) < HELLO_SIZE:
        return result                       # nothing happened yet
    ch = parse_hello(cb[:HELLO_SIZE], ROLE_CLIENT, f"{label} ClientHello")
    if ch["kind"] == KIND_PROBE:
        if ch["index"] != 0 or ch["id"] != bytes(ID_SIZE):
            raise SpecViolation(None, f"{label} ClientHello", "probe hello with index or id set")
        if len(sb) < PROBE_REPLY_SIZE:
            return result
        result["probe"] = parse_probe_reply(sb[:PROBE_REPLY_SIZE])
        result["handshake_complete"] = True
        return result
    if ch["id"] != mid:
        raise SpecViolation(5, f"{label} ClientHello", "unknown migration id")
    if len(sb) >= 4 and sb[:4] == ALERT_MAGIC:
        if len(sb) < ALERT_SIZE:
            return result
        raise PeerAlert(f"{label} server", parse_alert(sb[:ALERT_SIZE]))
    if len(sb) < HELLO_SIZE:
        return result
    sh = parse_hello(sb[:HELLO_SIZE], ROLE_SERVER, f"{label} ServerHello")
    for f in ("kind", "index", "id", "flags"):
        if sh[f] != ch[f]:
            raise SpecViolation(8, f"{label} ServerHello", f"{f} differs from the ClientHello")
    prk = derive_prk(key, nonce, mid)
    T = transcript(ch["raw"], sh["raw"])
    if len(sb) < HELLO_SIZE + CONFIRM_SIZE:
        return result
    if not hmac.compare_digest(sb[HELLO_SIZE:HELLO_SIZE + CONFIRM_SIZE],
                               confirm_value(prk, "s2c", T)):
        raise SpecViolation(7, f"{label} ServerConfirm", "key confirmation failed")
    if len(cb) < HELLO_SIZE + CONFIRM_SIZE:
        return result
    if not hmac.compare_digest(cb[HELLO_SIZE:HELLO_SIZE + CONFIRM_SIZE],
                               confirm_value(prk, "c2s", T)):
        raise SpecViolation(7, f"{label} ClientConfirm", "key confirmation failed")
    result["handshake_complete"] = True

    resume = bool(ch["flags"] & FLAG_RESUME)
    result["resume"] = resume
    if state:
        if (state["kind"], state["index"], state["id"]) != (ch["kind"], ch["index"], mid):
            raise ValueError("state belongs to another stream")
        if not resume:
            raise SpecViolation(6, f"{label}", "a connection without RESUME for a stream that exists")
        state["resumes"] += 1
    else:
        # A new stream; with RESUME only when its first connection broke before
        # its START (s16.2); the client's START must then say 0, which the
        # range check below enforces (nothing was sent).
        state.update(kind=ch["kind"], index=ch["index"], id=mid, resumes=0,
                     dirs=dict(c2s=_new_direction_state(), s2c=_new_direction_state()))

    conn = _Connection()
    conn.state, conn.prk, conn.kind, conn.index = state, prk, ch["kind"], ch["index"]
    conn.resume, conn.label = resume, label
    off = HELLO_SIZE + CONFIRM_SIZE
    c2s = _Direction(conn, "c2s", cb, off, traffic_secret(prk, "c2s", T))
    s2c = _Direction(conn, "s2c", sb, off, traffic_secret(prk, "s2c", T))

    # The first record of each direction (START or ERROR), checked against what
    # the other side sent before this connection.
    c2s.step(first=True)
    if c2s.start is None and c2s.end == "eof" and len(sb) > off:
        # s2: the server sends its START only after it checked the client's.
        if sb[off:off + 1] == bytes([START]):
            raise SpecViolation(None, f"{label} s2c", "server START without the client's START")
    s2c.step(first=True)

    # Receiver positions (s6 START, s16.2): DATA of c2s resumes at the
    # server's START position, DATA of s2c at the client's.
    if s2c.start is not None:
        c2s.set_receiver_position(s2c.start[0])
    else:
        c2s.set_receiver_position(None if resume else 0)
    if c2s.start is not None and s2c.start is not None:
        s2c.set_receiver_position(c2s.start[0])
    else:
        s2c.set_receiver_position(None)

    c2s.drain()
    s2c.drain()

    # ACKs, now that both directions of the capture are known (s15.2): at a
    # boundary of what the ACK's receiver sent (or its total + 1 after its FIN),
    # and never beyond what the ACK's sender received. GUESS: without timing,
    # "what was sent" is everything the peer sent in this capture and before.
    for acker, data_dir in ((c2s, s2c), (s2c, c2s)):
        reach = data_dir.rx_pos if data_dir.rx_pos is not None else 0
        if data_dir.fin_here or data_dir.fin_before:
            reach += 1
        for w, p in acker.acks:
            if p not in _boundaries(acker.peer_ds):
                raise SpecViolation(25, w, f"ACK({p}) beyond what was sent or inside a DATA record")
            if p > reach:
                raise SpecViolation(25, w, f"ACK({p}) beyond what its sender received ({reach})")

    # s7 close condition, per direction: the FIN delivered and acknowledged
    # (ACK or START of total + 1) on this connection.
    def done(dirn, acker):
        fin = dirn.ds["fin"]
        if fin is None or not (dirn.fin_here or dirn.fin_before):
            return False
        ackpos = [p for _, p in acker.acks] + ([acker.start[0]] if acker.start else [])
        return fin[0] + 1 in ackpos

    clean = (c2s.end == "eof" and s2c.end == "eof" and done(c2s, s2c) and done(s2c, c2s))
    result.update(c2s=c2s.records, s2c=s2c.records, closed_cleanly=clean, broken=not clean)
    return result


# ---------------------------------------------------------------- vector files

def read_vector_file(path):
    cases, cur = [], None
    with open(path, encoding="ascii") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            k, _, v = line.partition("=")
            k, v = k.strip(), v.strip()
            if k == "name":
                cur = {"name": v, "_order": []}
                cases.append(cur)
            else:
                cur[k] = v
                cur["_order"].append(k)
    return cases


def check_hkdf_vectors(path):
    n = 0
    for c in read_vector_file(path):
        ikm, salt, info = (bytes.fromhex(c[k]) for k in ("ikm", "salt", "info"))
        prk = hkdf_extract(salt, ikm)
        if prk != bytes.fromhex(c["prk"]):
            raise AssertionError(f"{c['name']}: HKDF-Extract")
        if hkdf_expand(prk, info, int(c["length"])) != bytes.fromhex(c["okm"]):
            raise AssertionError(f"{c['name']}: HKDF-Expand")
        n += 1
    return n


RECORD_NAME = re.compile(r"^(c2s|s2c)_(control|data)(\d+)(?:_(start|ack|fin))?(?:_(\d+))?$")


def check_vector_case(c, streams):
    """Checks one case of protocol_v3.txt record by record, outside
    decode_connection. Returns the number of record vectors verified."""
    name = c["name"]
    h = lambda k: bytes.fromhex(c[k])
    key, nonce, mid = h("key"), h("nonce"), h("migration_id")
    kind, index, flags = int(c["kind"]), int(c["stream_index"]), int(c["flags"])
    if int(c["version"]) != VERSION:
        raise AssertionError(f"{name}: version")
    ch = build_hello(kind, ROLE_CLIENT, index, mid, h("client_random"), flags)
    sh = build_hello(kind, ROLE_SERVER, index, mid, h("server_random"), flags)
    if ch != h("client_hello"):
        raise AssertionError(f"{name}: client_hello differs from the one built from s3")
    if sh != h("server_hello"):
        raise AssertionError(f"{name}: server_hello differs from the one built from s3")
    parse_hello(ch, ROLE_CLIENT, name)
    parse_hello(sh, ROLE_SERVER, name)
    prk = derive_prk(key, nonce, mid)
    T = transcript(ch, sh)
    if confirm_value(prk, "s2c", T) != h("server_confirm"):
        raise AssertionError(f"{name}: server_confirm")
    if confirm_value(prk, "c2s", T) != h("client_confirm"):
        raise AssertionError(f"{name}: client_confirm")
    traffic = {d: RecordKeys(traffic_secret(prk, d, T)) for d in ("c2s", "s2c")}
    salts = {d: h(f"{d}_salt") for d in ("c2s", "s2c")}
    skeys = {d: RecordKeys(stream_secret(prk, d, kind, index, salts[d])) for d in ("c2s", "s2c")}
    stream = streams.setdefault((mid, kind, index, salts["c2s"], salts["s2c"]),
                                {"c2s": [], "s2c": []})   # (position, length, tag) by counter
    start_pos = {}
    verified = 0
    for field in c["_order"]:
        m = RECORD_NAME.match(field)
        if not m:
            continue
        d, cls, num, what, pos_suffix = m.groups()
        num = int(num)
        raw = h(field)
        rtype, flags_, reserved, length, counter = struct.unpack(">BBHIQ", raw[:16])
        if flags_ or reserved or len(raw) != HEADER_SIZE + length + TAG_SIZE or counter != num:
            raise AssertionError(f"{name} {field}: header")
        body = raw[16:]
        if cls == "control":
            want = {"start": START, "ack": ACK, "fin": FIN}[what]
            if rtype != want:
                raise AssertionError(f"{name} {field}: type {rtype}")
            payload = traffic[d].open(counter, raw[:16], body)
            if what == "start":
                p = struct.unpack(">Q", payload[:8])[0]
                if payload[8:] != salts[d] or (pos_suffix is not None and p != int(pos_suffix)):
                    raise AssertionError(f"{name} {field}: START content")
                start_pos[d] = p
            elif what == "ack":
                p = struct.unpack(">Q", payload)[0]
                if pos_suffix is not None and p != int(pos_suffix):
                    raise AssertionError(f"{name} {field}: ACK({p})")
            else:
                total, nrec = struct.unpack(">QQ", payload[:16])
                recs = stream[d]
                exp_total = sum(r[1] for r in recs)
                digest = hashlib.sha256(b"".join(r[2] for r in recs)).digest()
                if (total, nrec) != (exp_total, len(recs)):
                    raise AssertionError(f"{name} {field}: FIN({total}, {nrec})")
                if payload[16:] != digest or digest != h(f"{d}_digest"):
                    raise AssertionError(f"{name} {field}: digest")
        else:
            if rtype != DATA:
                raise AssertionError(f"{name} {field}: type {rtype}")
            recs = stream[d]
            other = "s2c" if d == "c2s" else "c2s"
            if counter < len(recs):                    # seen on an earlier connection
                position = recs[counter][0]
            elif counter == len(recs):
                position = sum(r[1] for r in recs)
            else:
                raise AssertionError(f"{name} {field}: counter gap")
            # Positions on a resumed connection come from the receiver's START.
            first_here = not any(RECORD_NAME.match(f) and RECORD_NAME.match(f).group(2) == "data"
                                 and RECORD_NAME.match(f).group(1) == d
                                 for f in c["_order"][:c["_order"].index(field)])
            if first_here and start_pos.get(other) != position:
                raise AssertionError(f"{name} {field}: first DATA at {position}, "
                                     f"receiver's START says {start_pos.get(other)}")
            payload = skeys[d].open(counter, raw[:16] + be64(position), body)
            if payload != h(f"{field}_plaintext"):
                raise AssertionError(f"{name} {field}: plaintext")
            tag = raw[-TAG_SIZE:]
            if counter < len(recs):
                if recs[counter][2] != tag:
                    raise AssertionError(f"{name} {field}: re-sent record differs")
            else:
                recs.append((position, len(payload), tag))
        verified += 1
    return verified


# ---------------------------------------------------------------- main

def _conn_bytes(c, fields_c, fields_s):
    h = lambda k: bytes.fromhex(c[k])
    cb = h("client_hello") + h("client_confirm") + b"".join(h(f) for f in fields_c)
    sb = h("server_hello") + h("server_confirm") + b"".join(h(f) for f in fields_s)
    return cb, sb


def _expect(code, fn, what):
    try:
        fn()
    except SpecViolation as e:
        if e.code != code:
            raise AssertionError(f"negative case '{what}': got {e}, expected code {code}")
        return 1
    raise AssertionError(f"negative case '{what}': accepted, expected code {code}")


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    path = argv[1] if len(argv) > 1 else os.path.join(here, "vectors", "protocol_v3.txt")
    try:
        check_hkdf_vectors(os.path.join(os.path.dirname(path), "hkdf_rfc5869.txt"))
        cases = {c["name"]: c for c in read_vector_file(path)}
        streams = {}
        n = 0
        for c in cases.values():
            n += check_vector_case(c, streams)

        first = cases["v3-migration-stream-1"]
        resumed = cases["v3-resumed-migration-stream-1"]
        K = lambda c: (bytes.fromhex(c["key"]), bytes.fromhex(c["nonce"]),
                       bytes.fromhex(c["migration_id"]))
        key, nonce, mid = K(first)
        c1 = ["c2s_control0_start_0", "c2s_data0", "c2s_data1", "c2s_control1_fin"]
        s1 = ["s2c_control0_start_0", "s2c_control1_ack_37"]
        c2 = ["c2s_control0_start_0", "c2s_data1", "c2s_control1_fin"]
        s2 = ["s2c_control0_start_22"]

        # Case 1 as one whole connection.
        st_full = {}
        r = decode_connection(key, nonce, mid, *_conn_bytes(first, c1, s1), st_full, "case1")
        assert [x["type"] for x in r["c2s"]] == ["START", "DATA", "DATA", "FIN"]
        assert [x["type"] for x in r["s2c"]] == ["START", "ACK"]
        assert r["c2s"][3]["total"] == 37 and r["c2s"][3]["records"] == 2
        assert r["broken"]          # no server FIN, no ACK(38): not the s7 close condition

        # Case 2 continues a history in which the server delivered only the
        # first record: the first connection broke before its ACK(37).
        st = {}
        r = decode_connection(key, nonce, mid, *_conn_bytes(first, c1, s1[:1]), st, "case1-cut")
        st_cut = copy.deepcopy(st)
        r = decode_connection(key, nonce, mid, *_conn_bytes(resumed, c2, s2), st, "case2")
        assert r["resume"] and [x["type"] for x in r["c2s"]] == ["START", "DATA", "FIN"]
        assert r["c2s"][1]["resent"] and r["c2s"][1]["position"] == 22
        assert r["c2s"][2]["digest"] == bytes.fromhex(resumed["c2s_digest"])
        # The same history where data1 was never sent before the break.
        st_b = {}
        decode_connection(key, nonce, mid, *_conn_bytes(first, c1[:2], s1[:1]), st_b, "case1-short")
        r = decode_connection(key, nonce, mid, *_conn_bytes(resumed, c2, s2), st_b, "case2b")
        assert not r["c2s"][1]["resent"]

        # Negative cases: each must fail with the code the spec gives.
        neg = 0
        h = lambda c, k: bytes.fromhex(c[k])
        dec = lambda c, fc, fs, state=None, mut=None: (lambda: decode_connection(
            key, nonce, mid, *((mut or (lambda a, b: (a, b)))(*_conn_bytes(c, fc, fs))),
            {} if state is None else copy.deepcopy(state), "neg"))
        neg += _expect(24, dec(resumed, c2, s2, st_full), "START(22) below an ACK(37)")
        neg += _expect(24, dec(resumed, c2, s2, {}), "START(22) beyond what was sent")
        neg += _expect(11, dec(first, [c1[0], c1[2]], s1), "dropped DATA record")
        neg += _expect(11, dec(first, [c1[0], c1[1], c1[1]], s1[:1]), "replayed DATA record")
        neg += _expect(11, dec(first, [c1[0], c1[2], c1[1]], s1[:1]), "reordered DATA records")
        neg += _expect(14, dec(first, c1 + [c1[2]], s1), "DATA after FIN")
        neg += _expect(24, dec(first, c1[1:], s1), "DATA before START")
        neg += _expect(24, dec(first, c1[:1] + c1, s1), "second START")

        def flip(at):
            return lambda a, b: (a[:at] + bytes([a[at] ^ 1]) + a[at + 1:], b)
        base = HELLO_SIZE + CONFIRM_SIZE
        neg += _expect(12, dec(first, c1, s1, mut=flip(base + 72 + 30)), "flipped DATA byte")
        neg += _expect(12, dec(first, c1, s1, mut=flip(base + 20)), "flipped START byte")
        neg += _expect(7, dec(first, c1, s1, mut=flip(HELLO_SIZE + 3)), "bad ClientConfirm")
        neg += _expect(2, dec(first, c1, s1, mut=lambda a, b: (a[:5] + b"\x02" + a[6:], b)),
                       "version 2 hello")
        neg += _expect(4, dec(first, c1, s1, mut=lambda a, b: (a[:60] + b"\x80" + a[61:], b)),
                       "unknown hello flag")
        neg += _expect(10, dec(first, c1, s1, mut=lambda a, b: (a[:base] + b"\x07" + a[base + 1:], b)),
                       "record type 7")
        neg += _expect(17, dec(first, c1, s1, mut=lambda a, b: (
            a, b[:base] + b"EMIA\x00\x03\x00\x0c" + bytes(56))), "Alert after the hello")
        neg += _expect(5, lambda: decode_connection(key, nonce, bytes(16),
                                                    *_conn_bytes(first, c1, s1), {}, "neg"),
                       "unknown migration id")
        # Forged (validly sealed) records: what only a key holder could send.
        prk = derive_prk(key, nonce, mid)
        T1 = transcript(h(first, "client_hello"), h(first, "server_hello"))
        s2c_t = RecordKeys(traffic_secret(prk, "s2c", T1))
        c2s_t = RecordKeys(traffic_secret(prk, "c2s", T1))
        c2s_s = RecordKeys(stream_secret(prk, "c2s", 1, 1, h(first, "c2s_salt")))
        ack = lambda p: seal_record(s2c_t, ACK, 1, be64(p))
        add_s = lambda extra: (lambda a, b: (a, b + extra))
        neg += _expect(25, dec(first, c1, s1[:1], mut=add_s(ack(30))), "ACK inside a record")
        neg += _expect(25, dec(first, c1, s1[:1], mut=add_s(ack(39))), "ACK beyond the FIN")
        neg += _expect(25, dec(first, c1, s1[:1], mut=add_s(ack(37) + seal_record(s2c_t, ACK, 2, be64(22)))),
                       "ACK going down")
        neg += _expect(25, dec(first, c1[:2], s1[:1], mut=add_s(ack(37))),
                       "ACK of bytes its sender never got")
        bad_fin = seal_record(c2s_t, FIN, 1, be64(37) + be64(2) + bytes(32))
        neg += _expect(26, dec(first, c1[:3], s1, mut=lambda a, b: (a + bad_fin, b)), "FIN with a wrong digest")
        short_fin = seal_record(c2s_t, FIN, 1, be64(22) + be64(2) + bytes(32))
        neg += _expect(15, dec(first, c1[:3], s1, mut=lambda a, b: (a + short_fin, b)), "FIN with a wrong total")
        err = seal_record(c2s_t, ERROR, 1, struct.pack(">H", 23) + b"I/O error: test")
        neg += _expect(18, dec(first, c1[:2], s1, mut=lambda a, b: (a + err, b)), "ERROR record")
        other = seal_record(c2s_s, DATA, 1, b"another record!", position=22)
        neg += _expect(None, dec(resumed, c2[:1], s2, st,
                                 mut=lambda a, b: (a + other, b)), "re-sealed DATA record")
        nonzero = seal_record(c2s_t, START, 0, be64(5) + h(first, "c2s_salt"))
        neg += _expect(24, dec(first, [], s1[:0], mut=lambda a, b: (a + nonzero, b)),
                       "START(5) without RESUME")
        T2 = transcript(h(resumed, "client_hello"), h(resumed, "server_hello"))
        c2s_t2 = RecordKeys(traffic_secret(prk, "c2s", T2))
        s2c_t2 = RecordKeys(traffic_secret(prk, "s2c", T2))
        neg += _expect(25, dec(resumed, c2[:1], s2, st_cut,
                               mut=add_s(seal_record(s2c_t2, ACK, 1, be64(37)))),
                       "ACK of bytes sent before the break but never received")
        wrong_salt = seal_record(c2s_t2, START, 0, be64(0) + bytes(32))
        neg += _expect(24, lambda: decode_connection(
            key, nonce, mid, *((lambda a, b: (a + wrong_salt, b))(*_conn_bytes(resumed, [], []))),
            copy.deepcopy(st), "neg"), "resume with another salt")
        neg += _expect(6, dec(first, c1, s1, st_full), "second connection without RESUME")
    except (AssertionError, SpecViolation, ValueError, KeyError, InvalidTag) as e:
        print(f"spec decoder: FAILED: {type(e).__name__}: {e}")
        return 1
    print(f"spec decoder: {neg} negative cases rejected with the spec's codes")
    print(f"spec decoder: {n} records verified")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
