// The rank secret: what a rank process shows the front to be admitted to its group (in its hello
// and its heartbeats, see rank_protocol.h), so that reaching the coordinator's port is not enough
// to join as a rank. The front makes one per server; ranks it starts get it in their environment
// (never on the command line, which `ps` shows), ranks started elsewhere from a file or the
// environment.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tidal {

// The environment variable both `tidal serve` and `tidal rank` read the secret from.
inline constexpr char kRankSecretEnv[] = "TIDAL_RANK_SECRET";
// A secret the operator gives must be at least this long (the front's own are 64 hex digits).
inline constexpr size_t kMinRankSecretSize = 16;

// `num_bytes` random bytes from getrandom(2), as hex digits. Throws tidal::Error when the kernel
// gives none (never on Linux >= 3.17 once the pool is initialised).
std::string random_hex(size_t num_bytes);
// A new secret: 32 random bytes as 64 hex digits.
std::string make_rank_secret();

// A secret from a file or the environment: surrounding whitespace (a trailing newline) dropped;
// an error naming `source` when what is left is shorter than kMinRankSecretSize.
Result<std::string> check_rank_secret(std::string_view secret, const std::string& source);
// The secret in `path` (see check_rank_secret); an error when it cannot be read.
Result<std::string> read_rank_secret_file(const std::string& path);

// The front's secret and where it is, for the log (never the secret itself).
struct FrontRankSecret {
  std::string secret = {};
  std::string where = {};
};

// The front's secret. With `file`: its content when it exists; else `env_value` (when set) or a
// new secret, written to a new file of mode 0600 (it never replaces a file). Without: `env_value`,
// else a new secret that only the ranks this process starts are given (an error when
// `external_ranks`: ranks started elsewhere could not be given it). A file and an environment
// value that differ are an error: ranks given one of them would be refused.
Result<FrontRankSecret> front_rank_secret(const std::string& file, const char* env_value,
                                          bool external_ranks);

// A rank's secret: `file`'s (--rank-secret-file), else `env_value`; an error saying how to give
// it when neither is, or when both are and differ.
Result<std::string> rank_side_secret(const std::string& file, const char* env_value);

}  // namespace tidal
