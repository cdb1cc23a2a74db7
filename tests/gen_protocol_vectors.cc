// Prints tests/vectors/protocol_v1.txt, or with "2" protocol_v2.txt.
#include <cstdio>
#include <cstring>

#include "tests/protocol_vectors.h"

int main(int argc, char** argv) {
  const bool v2 = argc > 1 && std::strcmp(argv[1], "2") == 0;
  std::printf("# encmig protocol v%d known answers (docs/protocol.md, \"Test vectors\").\n", v2 ? 2 : 1);
  std::printf("# Regenerate with build/tests/gen_protocol_vectors%s only when the protocol changes.\n\n", v2 ? " 2" : "");
  std::printf("name = %s\n", v2 ? "v2-resumed-migration-stream-1" : "v1-migration-stream-1");
  for (auto& [k, v] : v2 ? encmig::test::compute_protocol_vectors_v2() : encmig::test::compute_protocol_vectors())
    std::printf("%s = %s\n", k.c_str(), v.c_str());
}
