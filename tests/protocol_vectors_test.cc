// Fixed key, nonce, id and randoms give exact hello, confirm and record bytes.
#include <gtest/gtest.h>

#include "tests/protocol_vectors.h"

using namespace encmig::test;

TEST(ProtocolVectors, MatchCheckedInFile) {
  auto cases = load_vectors("protocol_v1.txt");
  ASSERT_EQ(cases.size(), 1u);
  auto computed = compute_protocol_vectors();
  for (auto& [k, v] : computed) EXPECT_EQ(cases[0][k], v) << k;
}

TEST(ProtocolVectors, Version2MatchCheckedInFile) {
  auto cases = load_vectors("protocol_v2.txt");
  ASSERT_EQ(cases.size(), 1u);
  auto computed = compute_protocol_vectors_v2();
  for (auto& [k, v] : computed) EXPECT_EQ(cases[0][k], v) << k;
}
