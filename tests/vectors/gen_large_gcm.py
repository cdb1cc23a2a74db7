#!/usr/bin/python3
"""Generates tests/vectors/aes256gcm_large.txt: AES-256-GCM known answers large
enough to run the engines' bulk (AES-NI, VAES, VPCLMULQDQ) code paths, which the
McGrew-Viega cases (at most 64 bytes) never reach.

The answers come from the pure-Python AES-256 (FIPS 197) and GCM (NIST SP
800-38D) below, which share no code with GnuTLS, libgcrypt or OpenSSL; the
script checks itself against tests/vectors/aes256gcm_nist.txt and then the
large answers against python3-cryptography, and refuses to write anything if
they disagree. Slow on purpose (about a minute): run once, by hand.

The plaintext is not stored; it is the rule PT_RULE, which C++ regenerates
(crypto/aead_select.cc, tests/crypto_test.cc). Key, iv and aad are SHA-256 of
fixed labels, so a rerun gives the same file.

Usage: /usr/bin/python3 tests/vectors/gen_large_gcm.py [-o FILE] [--cxx]
  (Debian's python3: it has python3-cryptography. --cxx also prints the
  largest case as the constants in crypto/aead_select.cc.)
"""
import argparse
import hashlib
import os
import sys

# ---------------------------------------------------------------- AES-256 ---


def _xtime(a):
    a <<= 1
    return (a ^ 0x11B) if a & 0x100 else a


def _gmul(a, b):
    r = 0
    while b:
        if b & 1:
            r ^= a
        a = _xtime(a)
        b >>= 1
    return r


def _make_sbox():
    # Multiplicative inverse in GF(2^8), then the affine map (FIPS 197, 5.1.1);
    # computed rather than typed in, so no table typo can hide.
    inv = [0] * 256
    for x in range(1, 256):
        for y in range(1, 256):
            if _gmul(x, y) == 1:
                inv[x] = y
                break
    sbox = []
    for x in range(256):
        b = inv[x]
        s = b
        for i in range(1, 5):
            s ^= ((b << i) | (b >> (8 - i))) & 0xFF
        sbox.append(s ^ 0x63)
    return sbox


SBOX = _make_sbox()
assert SBOX[0x00] == 0x63 and SBOX[0x53] == 0xED and SBOX[0xFF] == 0x16  # FIPS 197, figure 7
MUL2 = [_gmul(x, 2) for x in range(256)]
MUL3 = [_gmul(x, 3) for x in range(256)]


def aes256_expand(key):
    assert len(key) == 32
    nk, nr = 8, 14
    w = [list(key[4 * i:4 * i + 4]) for i in range(nk)]
    rcon = 1
    for i in range(nk, 4 * (nr + 1)):
        t = list(w[i - 1])
        if i % nk == 0:
            t = t[1:] + t[:1]
            t = [SBOX[b] for b in t]
            t[0] ^= rcon
            rcon = _xtime(rcon)
        elif i % nk == 4:
            t = [SBOX[b] for b in t]
        w.append([a ^ b for a, b in zip(w[i - nk], t)])
    # One flat 16-byte list per round, column-major like the state.
    return [sum(w[4 * r:4 * r + 4], []) for r in range(nr + 1)]


def aes256_encrypt_block(rk, block):
    s = [b ^ k for b, k in zip(block, rk[0])]
    for r in range(1, 15):
        s = [SBOX[b] for b in s]
        # ShiftRows: byte (row, col) is s[4 * col + row].
        s = [s[(4 * ((i // 4 + i % 4) % 4)) + i % 4] for i in range(16)]
        if r != 14:
            m = []
            for c in range(4):
                a0, a1, a2, a3 = s[4 * c:4 * c + 4]
                m += [MUL2[a0] ^ MUL3[a1] ^ a2 ^ a3, a0 ^ MUL2[a1] ^ MUL3[a2] ^ a3,
                      a0 ^ a1 ^ MUL2[a2] ^ MUL3[a3], MUL3[a0] ^ a1 ^ a2 ^ MUL2[a3]]
            s = m
        s = [b ^ k for b, k in zip(s, rk[r])]
    return bytes(s)


# FIPS 197, appendix C.3.
assert aes256_encrypt_block(aes256_expand(bytes(range(32))), bytes.fromhex("00112233445566778899aabbccddeeff")) == \
    bytes.fromhex("8ea2b7ca516745bfeafc49904b496089")

# -------------------------------------------------------------------- GCM ---

_R = 0xE1 << 120


def gf128_mul(x, y):
    # SP 800-38D, algorithm 1 (bit 0 is the most significant bit).
    z, v = 0, y
    for i in range(127, -1, -1):
        if (x >> i) & 1:
            z ^= v
        v = (v >> 1) ^ _R if v & 1 else v >> 1
    return z


class Ghash:
    def __init__(self, h):
        self.h = int.from_bytes(h, "big")
        self.y = 0

    def update(self, data):  # zero-padded to a block, as GHASH's inputs are
        for i in range(0, len(data), 16):
            blk = data[i:i + 16].ljust(16, b"\0")
            self.y = gf128_mul(self.y ^ int.from_bytes(blk, "big"), self.h)


def gcm_keystream(rk, iv, n):
    assert len(iv) == 12
    out = bytearray()
    ctr = 2  # J0 = iv || 1 masks the tag; the data starts at inc32(J0)
    while len(out) < n:
        out += aes256_encrypt_block(rk, iv + ctr.to_bytes(4, "big"))
        ctr = (ctr + 1) & 0xFFFFFFFF
    return bytes(out[:n])


def gcm_tag(rk, iv, aad, ct):
    g = Ghash(aes256_encrypt_block(rk, bytes(16)))
    g.update(aad)
    g.update(ct)
    g.update((8 * len(aad)).to_bytes(8, "big") + (8 * len(ct)).to_bytes(8, "big"))
    s = int.from_bytes(aes256_encrypt_block(rk, iv + b"\0\0\0\1"), "big")
    return (g.y ^ s).to_bytes(16, "big")


def gcm_seal(key, iv, aad, pt):
    rk = aes256_expand(key)
    ct = bytes(a ^ b for a, b in zip(pt, gcm_keystream(rk, iv, len(pt))))
    return ct, gcm_tag(rk, iv, aad, ct)


# ------------------------------------------------------------ the vectors ---

PT_RULE = "(i*131 + (i>>8)*7 + (i>>16)*13 + 3) & 0xff"
# The (i>>16) term: without it the plaintext repeats every 64 KiB, and an engine
# that read the wrong 64 KiB window of its input would still match.
LENGTHS = [(4096 + 5, "gcm-large-4101"), (65536, "gcm-large-65536"), ((1 << 20) + 17, "gcm-large-1mib-17")]
SAMPLE_AT = [0, 65536]  # and the last 16 bytes


def plaintext(n):
    return bytes((i * 131 + (i >> 8) * 7 + (i >> 16) * 13 + 3) & 0xFF for i in range(n))


def label(s, n):
    return hashlib.sha256(b"encmig aes256gcm-large " + s).digest()[:n]


KEY, IV, AAD = label(b"key", 32), label(b"iv", 12), label(b"aad", 24)


def check_nist(path):
    cases, cur = [], {}
    for line in open(path):
        line = line.strip()
        if line.startswith("#"):
            continue
        if not line:
            if cur:
                cases.append(cur)
            cur = {}
            continue
        k, v = (x.strip() for x in line.split("=", 1))
        cur[k] = v
    if cur:
        cases.append(cur)
    assert len(cases) == 4
    for c in cases:
        ct, tag = gcm_seal(*(bytes.fromhex(c[f]) for f in ("key", "iv", "aad", "pt")))
        if ct.hex() != c["ct"] or tag.hex() != c["tag"]:
            sys.exit(f"pure-Python GCM fails {c['name']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("-o", "--output", default=os.path.join(here, "aes256gcm_large.txt"))
    ap.add_argument("--cxx", action="store_true", help="also print the largest case as crypto/aead_select.cc's constants")
    args = ap.parse_args()

    check_nist(os.path.join(here, "aes256gcm_nist.txt"))
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # python3-cryptography (Debian)

    n_max = max(n for n, _ in LENGTHS)
    pt = plaintext(n_max)
    rk = aes256_expand(KEY)
    ks = gcm_keystream(rk, IV, n_max)  # a prefix's ciphertext is the prefix of this
    out = [
        "# AES-256-GCM known answers large enough for the engines' bulk code paths",
        "# (AES-NI/VAES/VPCLMULQDQ, many blocks in flight); generated once by",
        "# tests/vectors/gen_large_gcm.py from its own pure-Python AES-256 and GCM and",
        "# cross-checked with python3-cryptography. Not stored: the plaintext, byte i of",
        "# which is pt_rule; ct_sha256 is SHA-256 of the ciphertext alone (no tag).",
        "# ct_at_0, ct_at_65536, ct_last16: 16 ciphertext bytes there, for debugging.",
        "# Fields: key, iv, aad, length, pt_rule, ct_sha256, tag, samples (hex; length decimal).",
    ]
    for n, name in LENGTHS:
        ct = bytes(a ^ b for a, b in zip(pt[:n], ks[:n]))
        tag = gcm_tag(rk, IV, AAD, ct)
        ref = AESGCM(KEY).encrypt(IV, pt[:n], AAD)
        if ref != ct + tag:
            sys.exit(f"{name}: pure-Python GCM and python3-cryptography disagree")
        out += ["", f"name = {name}", f"key = {KEY.hex()}", f"iv = {IV.hex()}", f"aad = {AAD.hex()}", f"length = {n}",
                f"pt_rule = {PT_RULE}", f"ct_sha256 = {hashlib.sha256(ct).hexdigest()}", f"tag = {tag.hex()}"]
        out += [f"ct_at_{o} = {ct[o:o + 16].hex()}" for o in SAMPLE_AT if o + 16 <= n]
        out.append(f"ct_last16 = {ct[-16:].hex()}")
        print(f"{name}: agrees with python3-cryptography", file=sys.stderr)
        if args.cxx and n == n_max:  # the case crypto/aead_select.cc runs at start
            for k, v in (("Key", KEY.hex()), ("Iv", IV.hex()), ("Aad", AAD.hex()),
                         ("CtSha256", hashlib.sha256(ct).hexdigest()), ("Tag", tag.hex())):
                print(f'constexpr const char kLarge{k}[] = "{v}";')
    with open(args.output, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
