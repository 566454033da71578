// The rank secret: making, comparing, and where the front and a rank find it.
#include "elastic/rank_secret.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "common/secret_compare.h"

namespace tidal {
namespace {

using ::testing::HasSubstr;

class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "rank-secret-XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

void write_file(const std::string& path, const std::string& content) {
  std::ofstream(path) << content;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(RankSecret, IsNewRandomHexEachTime) {
  const std::string first = make_rank_secret();
  EXPECT_EQ(first.size(), 64u);
  EXPECT_EQ(first.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_NE(first, make_rank_secret());
}

TEST(RankSecret, ComparesWholeStrings) {
  EXPECT_TRUE(secrets_equal("0123456789abcdef", "0123456789abcdef"));
  EXPECT_FALSE(secrets_equal("0123456789abcdef", "0123456789abcdeF"));
  EXPECT_FALSE(secrets_equal("0123456789abcdef", "0123456789abcde"));
  EXPECT_FALSE(secrets_equal("0123456789abcdef", "0123456789abcdef0"));
  EXPECT_FALSE(secrets_equal("0123456789abcdef", ""));
  // A secret never matches when there is none to match.
  EXPECT_FALSE(secrets_equal("", ""));
}

TEST(RankSecret, TrimsAndNeedsAMinimumLength) {
  const Result<std::string> kept = check_rank_secret("  0123456789abcdef\n", "test");
  ASSERT_TRUE(kept.is_ok());
  EXPECT_EQ(kept.value(), "0123456789abcdef");
  const Result<std::string> short_one = check_rank_secret("short\n", "FILE");
  ASSERT_FALSE(short_one.is_ok());
  EXPECT_THAT(short_one.status().message(), HasSubstr("in FILE is only 5 characters"));
  EXPECT_THAT(check_rank_secret("\n", "FILE").status().message(), HasSubstr("is empty"));
}

TEST(FrontRankSecret, WritesAMissingFileWithMode0600) {
  const TempDir dir;
  const std::string path = dir.file("secret");
  const Result<FrontRankSecret> made = front_rank_secret(path, nullptr, true);
  ASSERT_TRUE(made.is_ok()) << made.status().message();
  EXPECT_EQ(made.value().secret.size(), 64u);
  EXPECT_THAT(made.value().where, HasSubstr("written to " + path));
  EXPECT_EQ(read_file(path), made.value().secret + "\n");
  struct stat info {};
  ASSERT_EQ(::stat(path.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  // The next server on the same file uses the same secret.
  const Result<FrontRankSecret> again = front_rank_secret(path, nullptr, true);
  ASSERT_TRUE(again.is_ok());
  EXPECT_EQ(again.value().secret, made.value().secret);
  EXPECT_THAT(again.value().where, HasSubstr("read from " + path));
}

TEST(FrontRankSecret, EnvironmentAndFileMustAgree) {
  const TempDir dir;
  const std::string path = dir.file("secret");
  // A missing file gets the environment's secret.
  const Result<FrontRankSecret> made = front_rank_secret(path, "from-the-environment", true);
  ASSERT_TRUE(made.is_ok()) << made.status().message();
  EXPECT_EQ(made.value().secret, "from-the-environment");
  EXPECT_EQ(read_file(path), "from-the-environment\n");
  const Result<FrontRankSecret> clash = front_rank_secret(path, "another-secret-entirely", true);
  ASSERT_FALSE(clash.is_ok());
  EXPECT_THAT(clash.status().message(), HasSubstr("hold different secrets"));
}

TEST(FrontRankSecret, WithoutAFileUsesTheEnvironmentOrMakesOne) {
  const Result<FrontRankSecret> from_env = front_rank_secret("", "from-the-environment", true);
  ASSERT_TRUE(from_env.is_ok());
  EXPECT_EQ(from_env.value().secret, "from-the-environment");
  EXPECT_THAT(from_env.value().where, HasSubstr(kRankSecretEnv));
  // Only ranks of ours: a secret nobody else needs to know.
  const Result<FrontRankSecret> own = front_rank_secret("", nullptr, false);
  ASSERT_TRUE(own.is_ok());
  EXPECT_EQ(own.value().secret.size(), 64u);
  // Ranks started elsewhere could never be given it.
  const Result<FrontRankSecret> none = front_rank_secret("", "", true);
  ASSERT_FALSE(none.is_ok());
  EXPECT_THAT(none.status().message(), HasSubstr("--rank-secret-file"));
  EXPECT_FALSE(front_rank_secret("", "short", true).is_ok());
}

TEST(FrontRankSecret, RefusesAnUnusableFile) {
  const TempDir dir;
  const std::string path = dir.file("secret");
  write_file(path, "\n");
  EXPECT_THAT(front_rank_secret(path, nullptr, true).status().message(), HasSubstr("empty"));
  // A directory where the file should be: not replaced, an error.
  EXPECT_FALSE(front_rank_secret(dir.file(""), nullptr, true).is_ok());
  EXPECT_FALSE(front_rank_secret(dir.file("missing/secret"), nullptr, true).is_ok());
}

TEST(RankSideSecret, FromTheFileOrTheEnvironment) {
  const TempDir dir;
  const std::string path = dir.file("secret");
  write_file(path, "0123456789abcdef0123\n");
  ASSERT_TRUE(rank_side_secret(path, nullptr).is_ok());
  EXPECT_EQ(rank_side_secret(path, nullptr).value(), "0123456789abcdef0123");
  EXPECT_EQ(rank_side_secret(path, "0123456789abcdef0123").value(), "0123456789abcdef0123");
  EXPECT_THAT(rank_side_secret(path, "something-else-entirely").status().message(),
              HasSubstr("hold different secrets"));
  EXPECT_EQ(rank_side_secret("", "from-the-environment").value(), "from-the-environment");
  EXPECT_THAT(rank_side_secret("", nullptr).status().message(),
              HasSubstr("no rank secret: give the front's with --rank-secret-file PATH or in "
                        "TIDAL_RANK_SECRET"));
  EXPECT_THAT(rank_side_secret(dir.file("missing"), nullptr).status().message(),
              HasSubstr("cannot read"));
}

}  // namespace
}  // namespace tidal
