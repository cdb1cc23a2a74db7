// Choosing the AES-256-GCM engine at start: every engine must reproduce the
// known answers (the NIST GCM test cases with 256-bit keys, and refuse a
// flipped tag bit; then 1 MiB + 17 bytes for the bulk code paths, and refuse a
// flipped ciphertext bit) before it may carry a byte; of those that pass, a
// short seal+open benchmark on 64 KiB records picks the fastest on this CPU. An
// operator may pin one (a FIPS policy naming its module); a pinned engine that
// fails its known answers is an error, not a fallback.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "crypto/aead_engine.h"
#include "crypto/result.h"

namespace encmig {

struct AeadEngineReport {
  AeadEngineId id = AeadEngineId::kGnutls;
  bool kat_passed = false;
  std::string detail;          // why it failed, or empty
  double seal_open_mb_s = 0;   // MB/s of seal then open, one core, 64 KiB records; 0 = not measured
};

struct AeadSelection {
  AeadEngineId chosen = AeadEngineId::kGnutls;
  bool pinned = false;
  std::vector<AeadEngineReport> engines;
  std::string describe() const;  // one log line
};

// Known answers for one engine: an error names the case that failed.
Status aead_known_answers(AeadEngineId id);

// Seal+open throughput of one engine, MB/s, for about `ms` milliseconds.
double aead_self_benchmark(AeadEngineId id, int ms);

// Runs the known answers (and, without a pin, the benchmark) and installs the
// choice with Aead::set_process_engine.
Result<AeadSelection> select_aead_engine(std::optional<AeadEngineId> pin, int bench_ms = 20);

}  // namespace encmig
