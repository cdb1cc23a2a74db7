// Prints tests/vectors/protocol_v1.txt.
#include <cstdio>

#include "tests/protocol_vectors.h"

int main() {
  std::printf("# encmig protocol v1 known answers (docs/protocol.md, \"Test vectors\").\n");
  std::printf("# Regenerate with build/tests/gen_protocol_vectors only when the protocol version changes.\n\n");
  std::printf("name = v1-migration-stream-1\n");
  for (auto& [k, v] : encmig::test::compute_protocol_vectors()) std::printf("%s = %s\n", k.c_str(), v.c_str());
}
