// Prints tests/vectors/protocol_v3.txt.
#include <cstdio>

#include "tests/protocol_vectors.h"

int main() {
  std::printf("# encmig protocol version 3 known answers (docs/protocol.md, section 14).\n");
  std::printf("# Regenerate with build/tests/gen_protocol_vectors only when the protocol changes.\n");
  std::printf("# Record fields are named by direction, then control or data, then the counter.\n\n");
  std::printf("name = v3-migration-stream-1\n");
  for (auto& [k, v] : encmig::test::compute_protocol_vectors()) std::printf("%s = %s\n", k.c_str(), v.c_str());
  std::printf("\nname = v3-resumed-migration-stream-1\n");
  for (auto& [k, v] : encmig::test::compute_protocol_vectors_resumed()) std::printf("%s = %s\n", k.c_str(), v.c_str());
}
