// Fixed key, nonce, id, randoms and salts give exact hello, confirm and record bytes.
#include <gtest/gtest.h>

#include "tests/protocol_vectors.h"

using namespace encmig::test;

TEST(ProtocolVectors, MatchCheckedInFile) {
  auto cases = load_vectors("protocol_v3.txt");
  ASSERT_EQ(cases.size(), 2u);
  for (auto& [k, v] : compute_protocol_vectors()) EXPECT_EQ(cases[0][k], v) << k;
  for (auto& [k, v] : compute_protocol_vectors_resumed()) EXPECT_EQ(cases[1][k], v) << k;
}

// A resent DATA record is the same bytes as the first time: sealed once.
TEST(ProtocolVectors, ResentRecordIsTheSameBytes) {
  auto cases = load_vectors("protocol_v3.txt");
  ASSERT_EQ(cases.size(), 2u);
  EXPECT_EQ(cases[0]["c2s_data1"], cases[1]["c2s_data1"]);
  EXPECT_NE(cases[0]["c2s_control1_fin"], cases[1]["c2s_control1_fin"]);
}
