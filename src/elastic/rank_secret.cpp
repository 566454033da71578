// The rank secret: making it, comparing it, and finding it in a file or the environment.
#include "elastic/rank_secret.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <vector>

#include "common/logging.h"

namespace tidal {
namespace {

// A secret file is one line; anything much larger is the wrong file.
constexpr size_t kMaxSecretFileSize = 4096;

std::string_view trimmed(std::string_view text) {
  constexpr std::string_view kSpace = " \t\r\n";
  const size_t first = text.find_first_not_of(kSpace);
  if (first == std::string_view::npos) return {};
  return text.substr(first, text.find_last_not_of(kSpace) - first + 1);
}

std::string errno_text() {
  return std::strerror(errno);
}

Result<std::string> read_secret_fd(int fd, const std::string& path) {
  std::string content;
  char buffer[512];
  for (;;) {
    const ssize_t got = ::read(fd, buffer, sizeof(buffer));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return Status::invalid_argument(cat("cannot read ", path, ": ", errno_text()));
    if (got == 0) break;
    content.append(buffer, static_cast<size_t>(got));
    if (content.size() > kMaxSecretFileSize) {
      return Status::invalid_argument(
          cat(path, " is over ", kMaxSecretFileSize, " bytes: not a rank secret file"));
    }
  }
  return check_rank_secret(content, path);
}

// Writes `secret` to a new file at `path` with mode 0600. Never replaces a file: `existed` says
// that one was there (made by another process since we looked), for the caller to read.
Status create_secret_file(const std::string& path, const std::string& secret, bool& existed) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  existed = fd < 0 && errno == EEXIST;
  if (fd < 0) return Status::invalid_argument(cat("cannot create ", path, ": ", errno_text()));
  const std::string line = secret + "\n";
  size_t written = 0;
  while (written < line.size()) {
    const ssize_t put = ::write(fd, line.data() + written, line.size() - written);
    if (put < 0 && errno == EINTR) continue;
    if (put <= 0) {
      const std::string why = put < 0 ? errno_text() : std::string("nothing written");
      ::close(fd);
      ::unlink(path.c_str());
      return Status::invalid_argument(cat("cannot write ", path, ": ", why));
    }
    written += static_cast<size_t>(put);
  }
  if (::close(fd) != 0) {
    const std::string why = errno_text();
    ::unlink(path.c_str());
    return Status::invalid_argument(cat("cannot write ", path, ": ", why));
  }
  return Status::ok();
}

// An existing secret file's secret, warning when others than its owner may read it; nullopt
// when there is no file at `path`.
Result<std::optional<std::string>> read_existing_secret_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) return std::optional<std::string>();
  if (fd < 0) return Status::invalid_argument(cat("cannot read ", path, ": ", errno_text()));
  struct stat info {};
  if (::fstat(fd, &info) == 0 && (info.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%03o", static_cast<unsigned>(info.st_mode & 0777));
    log_warning("the rank secret file ", path, " can be read by others than its owner (mode ", mode,
                "); chmod 600 it");
  }
  Result<std::string> secret = read_secret_fd(fd, path);
  ::close(fd);
  if (!secret.is_ok()) return secret.status();
  return std::optional<std::string>(secret.value());
}

}  // namespace

std::string random_hex(size_t num_bytes) {
  std::vector<unsigned char> bytes(num_bytes);
  size_t filled = 0;
  while (filled < num_bytes) {
    const ssize_t got = ::getrandom(bytes.data() + filled, num_bytes - filled, 0);
    if (got < 0 && errno == EINTR) continue;
    TIDAL_CHECK(got > 0, "getrandom failed: ", errno_text());
    filled += static_cast<size_t>(got);
  }
  constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(num_bytes * 2);
  for (const unsigned char byte : bytes) {
    hex.push_back(kDigits[byte >> 4]);
    hex.push_back(kDigits[byte & 0xf]);
  }
  return hex;
}

std::string make_rank_secret() {
  return random_hex(32);
}

Result<std::string> check_rank_secret(std::string_view secret, const std::string& source) {
  const std::string_view kept = trimmed(secret);
  if (kept.size() < kMinRankSecretSize) {
    return Status::invalid_argument(
        cat("the rank secret in ", source, " is ",
            kept.empty() ? std::string("empty") : cat("only ", kept.size(), " characters"),
            "; it needs at least ", kMinRankSecretSize));
  }
  return std::string(kept);
}

Result<std::string> read_rank_secret_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::invalid_argument(cat("cannot read ", path, ": ", errno_text()));
  Result<std::string> secret = read_secret_fd(fd, path);
  ::close(fd);
  return secret;
}

Result<FrontRankSecret> front_rank_secret(const std::string& file, const char* env_value,
                                          bool external_ranks) {
  const bool has_env = env_value != nullptr && *env_value != '\0';
  std::string from_env;
  if (has_env) {
    Result<std::string> checked = check_rank_secret(env_value, kRankSecretEnv);
    if (!checked.is_ok()) return checked.status();
    from_env = checked.value();
  }
  if (file.empty()) {
    if (has_env) return FrontRankSecret{.secret = from_env, .where = cat("from ", kRankSecretEnv)};
    if (external_ranks) {
      return Status::invalid_argument(
          cat("ranks started elsewhere (--scale-spawn external, --local-ranks) must be given this "
              "server's rank secret: name a file for it with --rank-secret-file PATH (made, mode "
              "0600, when missing) or set ",
              kRankSecretEnv));
    }
    return FrontRankSecret{.secret = make_rank_secret(),
                           .where = "made for the ranks this server starts (their environment)"};
  }
  FrontRankSecret found;
  for (int attempt = 0; found.secret.empty(); ++attempt) {
    Result<std::optional<std::string>> existing = read_existing_secret_file(file);
    if (!existing.is_ok()) return existing.status();
    if (existing.value()) {
      found = {.secret = *existing.value(), .where = cat("read from ", file)};
      break;
    }
    const std::string secret = has_env ? from_env : make_rank_secret();
    bool existed = false;
    const Status created = create_secret_file(file, secret, existed);
    if (created.is_ok()) {
      found = {.secret = secret, .where = cat("written to ", file, " (mode 0600)")};
    } else if (!existed || attempt > 0) {  // existed: another process made it meanwhile
      return created;
    }
  }
  if (has_env && from_env != found.secret) {
    return Status::invalid_argument(cat(kRankSecretEnv, " and --rank-secret-file ", file,
                                        " hold different secrets; give one of them"));
  }
  return found;
}

Result<std::string> rank_side_secret(const std::string& file, const char* env_value) {
  const bool has_env = env_value != nullptr && *env_value != '\0';
  if (file.empty()) {
    if (has_env) return check_rank_secret(env_value, kRankSecretEnv);
    return Status::invalid_argument(
        cat("no rank secret: give the front's with --rank-secret-file PATH or in ", kRankSecretEnv,
            " (the front's log says where it keeps it)"));
  }
  Result<std::string> secret = read_rank_secret_file(file);
  if (secret.is_ok() && has_env && trimmed(env_value) != secret.value()) {
    return Status::invalid_argument(cat(kRankSecretEnv, " and --rank-secret-file ", file,
                                        " hold different secrets; give one of them"));
  }
  return secret;
}

}  // namespace tidal
