// Seal+open throughput per core through encmig's record layer with each
// AES-256-GCM engine, against raw GnuTLS AES-256-GCM on the same buffer.
// Usage: seal_open_bench [--json] [--seconds S]
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "crypto/aead.h"
#include "crypto/aead_select.h"
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

// encmig: DataSealer::seal then RecordReader::open (DATA, with the stream's
// DataOpener), the relay's calls, with the stream keys on the given engine.
double encmig_rate(size_t n, double budget, AeadEngineId engine) {
  Aead::set_process_engine(engine);
  MigrationSecrets m = std::move(MigrationSecrets::generate().value());
  auto c = ClientHandshake::create(m.clone().value(), wire::Kind::kMigration, 0).value();
  auto s = ServerHandshake::create();
  (void)s.consume(c.hello().data(), c.hello().size());
  (void)s.accept(m);
  (void)c.consume(s.output().data(), s.output().size());
  (void)s.consume(c.confirm().data(), c.confirm().size());
  auto ctl = ControlSealer::create(std::move(c.take_keys().value().tx)).value();
  auto rx = RecordReader::create(std::move(s.take_keys().value().rx)).value();
  wire::Salt salt{};
  auto secret = [&] { return derive_stream_secret(m, wire::Kind::kMigration, 0, Direction::kClientToServer, salt).value(); };
  auto tx = DataSealer::create(secret()).value();
  auto opener = DataOpener::create(secret()).value();
  uint8_t start[wire::kStartRecordSize];
  if (!ctl.seal_start({0, salt}, start).ok() || !rx.open(start, sizeof start, &opener).ok()) std::abort();
  std::vector<uint8_t> rec(n + wire::kRecordOverhead, 1);
  uint64_t bytes = 0, i = 0;
  auto t0 = Clock::now();
  do {
    if (!tx.seal(rec.data(), uint32_t(n)).ok()) std::abort();
    auto st = rx.open(rec.data(), rec.size(), &opener);
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
  for (AeadEngineId id : kAeadEngines)
    if (auto st = aead_known_answers(id); !st) {
      std::fprintf(stderr, "%s\n", st.error().message().c_str());
      return 1;
    }
  if (json) std::printf("{\"unit\":\"bytes/s per core, seal+open\",\"rows\":[");
  else {
    std::printf("%10s %10s", "record", "raw");
    for (AeadEngineId id : kAeadEngines) std::printf(" %10s", aead_engine_name(id));
    std::printf(" %8s %s\n", "best/raw", "best");
  }
  bool first = true;
  for (size_t n : sizes) {
    raw_rate(n, budget / 5);  // warm up
    // Alternate all contenders, three rounds each, and keep the medians: the
    // other core's load drifts, and alternation spreads it over all.
    constexpr size_t kE = std::size(kAeadEngines);
    double r[3], e[kE][3];
    for (int k = 0; k < 3; k++) {
      r[k] = raw_rate(n, budget / 3);
      for (size_t j = 0; j < kE; j++) e[j][k] = encmig_rate(n, budget / 3, kAeadEngines[j]);
    }
    std::sort(r, r + 3);
    double raw = r[1], med[kE];
    size_t best = 0;
    for (size_t j = 0; j < kE; j++) {
      std::sort(e[j], e[j] + 3);
      med[j] = e[j][1];
      if (med[j] > med[best]) best = j;
    }
    if (json) {
      std::printf("%s{\"record\":%zu,\"raw\":%.0f", first ? "" : ",", n, raw);
      for (size_t j = 0; j < kE; j++) std::printf(",\"%s\":%.0f", aead_engine_name(kAeadEngines[j]), med[j]);
      std::printf(",\"best\":\"%s\",\"ratio\":%.3f}", aead_engine_name(kAeadEngines[best]), med[best] / raw);
    } else {
      std::printf("%10zu %10.2f", n, raw / 1e9);
      for (size_t j = 0; j < kE; j++) std::printf(" %10.2f", med[j] / 1e9);
      std::printf(" %8.3f %s\n", med[best] / raw, aead_engine_name(kAeadEngines[best]));
    }
    first = false;
  }
  if (json) std::printf("]}\n");
  else
    std::printf("(GB/s = bytes sealed and opened per second on one core: raw = gnutls_aead_cipher_encryptv2+decryptv2;\n"
                " the engines = encmig's DataSealer::seal + RecordReader::open on that engine)\n");
}
