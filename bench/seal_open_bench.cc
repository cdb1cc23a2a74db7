// Seal+open throughput per core, against raw GnuTLS AES-256-GCM on the same
// buffer. Usage: seal_open_bench [--json] [--seconds S]
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "migration/handshake.h"
#include "migration/record.h"

using namespace encmig;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Raw GnuTLS: encryptv2 then decryptv2 in place, one fixed key.
double raw_rate(size_t n, double budget) {
  std::vector<uint8_t> key(32, 7), buf(n, 1), aad(16, 0);
  gnutls_datum_t k{key.data(), 32};
  gnutls_aead_cipher_hd_t h;
  if (gnutls_aead_cipher_init(&h, GNUTLS_CIPHER_AES_256_GCM, &k) != 0) return 0;
  uint8_t nonce[12] = {}, tag[16];
  uint64_t bytes = 0;
  auto t0 = Clock::now();
  uint64_t i = 0;
  do {
    std::memcpy(nonce + 4, &i, 8);
    giovec_t a{aad.data(), aad.size()}, d{buf.data(), n};
    size_t tl = 16;
    gnutls_aead_cipher_encryptv2(h, nonce, 12, &a, 1, &d, 1, tag, &tl);
    if (gnutls_aead_cipher_decryptv2(h, nonce, 12, &a, 1, &d, 1, tag, 16) != 0) std::abort();
    bytes += n;
    i++;
  } while ((i & 15) || seconds_since(t0) < budget);
  double s = seconds_since(t0);
  gnutls_aead_cipher_deinit(h);
  return double(bytes) / s;
}

// encmig: RecordSealer::seal_data then RecordOpener::open, the relay's calls.
double encmig_rate(size_t n, double budget) {
  MigrationSecrets m = std::move(MigrationSecrets::generate().value());
  auto c = ClientHandshake::create(m.clone().value(), wire::Kind::kMigration, 0).value();
  auto s = ServerHandshake::create();
  (void)s.consume(c.hello().data(), c.hello().size());
  (void)s.accept(m);
  (void)c.consume(s.output().data(), s.output().size());
  (void)s.consume(c.confirm().data(), c.confirm().size());
  auto tx = RecordSealer::create(std::move(c.take_keys().value().tx)).value();
  auto rx = RecordOpener::create(std::move(s.take_keys().value().rx)).value();
  std::vector<uint8_t> rec(n + wire::kRecordOverhead, 1);
  uint64_t bytes = 0, i = 0;
  auto t0 = Clock::now();
  do {
    if (!tx.seal_data(rec.data() + 16, uint32_t(n), rec.data(), rec.data() + 16 + n).ok()) std::abort();
    auto st = rx.open(rec.data(), rec.size());
    if (!st.ok() || st->consumed != rec.size()) std::abort();
    bytes += n;
    i++;
  } while ((i & 15) || seconds_since(t0) < budget);
  return double(bytes) / seconds_since(t0);
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  double budget = 0.5;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--json") json = true;
    else if (a == "--seconds" && i + 1 < argc) budget = std::stod(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--json] [--seconds S]\n", argv[0]);
      return 2;
    }
  }
  const size_t sizes[] = {4096, 16384, 65536, 262144, 1048576};
  if (json) std::printf("{\"unit\":\"bytes/s per core, seal+open\",\"rows\":[");
  else std::printf("%10s %14s %14s %8s\n", "record", "raw GB/s", "encmig GB/s", "ratio");
  bool first = true;
  for (size_t n : sizes) {
    raw_rate(n, budget / 5);  // warm up
    // Alternate the two, three rounds each, and keep the medians: the other
    // core's load drifts, and alternation spreads it over both.
    double r[3], e[3];
    for (int k = 0; k < 3; k++) r[k] = raw_rate(n, budget / 3), e[k] = encmig_rate(n, budget / 3);
    std::sort(r, r + 3);
    std::sort(e, e + 3);
    double raw = r[1], enc = e[1];
    if (json) {
      std::printf("%s{\"record\":%zu,\"raw\":%.0f,\"encmig\":%.0f,\"ratio\":%.3f}", first ? "" : ",", n, raw, enc, enc / raw);
    } else {
      std::printf("%10zu %14.2f %14.2f %8.3f\n", n, raw / 1e9, enc / 1e9, enc / raw);
    }
    first = false;
  }
  if (json) std::printf("]}\n");
  std::printf("%s", json ? "" : "(GB/s = bytes sealed and opened per second on one core; raw = gnutls_aead_cipher_encryptv2+decryptv2)\n");
}
