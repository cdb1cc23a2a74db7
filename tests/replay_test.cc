// The replay check, table-tested.
#include <gtest/gtest.h>

#include "migration/replay.h"

using encmig::check_counter;
using encmig::ErrorCode;

TEST(Replay, Table) {
  struct Row {
    uint64_t expected, received;
    ErrorCode want;
  } rows[] = {
      {0, 0, ErrorCode::kOk},
      {1, 1, ErrorCode::kOk},
      {7, 6, ErrorCode::kCounterMismatch},  // replay of the previous record
      {7, 0, ErrorCode::kCounterMismatch},  // replay of the first record
      {7, 8, ErrorCode::kCounterMismatch},  // a record was dropped
      {7, 9, ErrorCode::kCounterMismatch},  // reordered
      {0, ~0ull, ErrorCode::kCounterMismatch},
      {65535, 65535, ErrorCode::kOk},       // last record of epoch 0
      {65536, 65536, ErrorCode::kOk},       // first record of epoch 1
      {encmig::wire::kMaxRecordsPerDirection - 1, encmig::wire::kMaxRecordsPerDirection - 1, ErrorCode::kOk},
      {encmig::wire::kMaxRecordsPerDirection, encmig::wire::kMaxRecordsPerDirection, ErrorCode::kRecordLimit},
  };
  for (const auto& r : rows) {
    EXPECT_EQ(check_counter(r.expected, r.received), r.want) << r.expected << " " << r.received;
  }
}
