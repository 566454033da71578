// Comparing a secret a peer sent (an API key, a rank secret) with the expected one.
#pragma once

#include <cstddef>
#include <string_view>

namespace tidal {

// Whether `given` is `expected`, in a time that depends only on expected's length: a peer learns
// nothing from how long a refusal takes. An empty `expected` matches nothing.
inline bool secrets_equal(std::string_view expected, std::string_view given) {
  // Every byte of `expected` is compared, whatever `given` holds; volatile keeps the compiler
  // from ending the loop at the first difference.
  volatile unsigned char difference = expected.size() == given.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    const auto theirs = static_cast<unsigned char>(i < given.size() ? given[i] : 0);
    difference = difference | static_cast<unsigned char>(expected[i] ^ theirs);
  }
  return difference == 0 && !expected.empty();
}

}  // namespace tidal
