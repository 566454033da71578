// Shared by the loader tests: a scratch directory per test and capture of tidal::Error messages.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "common/error.h"

namespace tidal::testing_util {

// A fresh directory under the system temp dir, removed after the test so reruns start clean.
class ScratchDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "tidal_loader_XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  void write_text(const std::string& name, const std::string& text) const {
    std::ofstream out(path(name), std::ios::binary | std::ios::trunc);
    out << text;
    ASSERT_TRUE(out.good()) << path(name);
  }

  std::filesystem::path dir_;
};

// The message of the tidal::Error that `action` throws; a test failure when it throws nothing, so
// an accepted bad input can never pass as an empty message matching nothing.
template <typename Action>
std::string error_of(Action&& action) {
  try {
    action();
  } catch (const Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "expected a tidal::Error";
  return "<no error thrown>";
}

}  // namespace tidal::testing_util
