// Backend::sample on the CUDA backend against the CPU reference: random logits at vocab 32, 1000
// and 151936, rows 1, 7 and 256, each row greedy or drawn with temperature, top-k, top-p, banned
// ids and logprobs; logits with ties and -inf; every row again through the kernel's global path
// (no shared-memory candidates). Outputs are poisoned first, so an unwritten word fails. Prints
// the kernel's time per call next to a copy of the logits.
//
// Greedy tokens, top-n ids and every row's num_top must be identical and logprobs within 1e-4.
// Drawn tokens are identical wherever the reference is not within float rounding of a top-p
// boundary: both backends divide by the temperature the same way (IEEE) and take the same Gumbel
// draws (logf of the same uniforms; CUDA's and glibc's logf may differ by an ulp, which changes a
// token only where two draws tie within it), but the GPU sums the top-p mass in float in another
// order than the CPU's double, so a row whose cumulative mass lands within rounding of top_p may
// keep one token more or less. Such rows (the reference's token changes when top_p moves by
// 1e-4 relative) are counted apart; the rest must match, and at least 99% overall.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cuda/cuda_backend.h"
#include "kernels/cuda/sampling.cuh"
#include "kernels/sampling_layout.h"
#include "test_rng.h"

namespace tidal {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr int64_t kQwenVocab = 151936;

using testing_util::Rng;

CudaBackend& gpu() {
  static const std::unique_ptr<Backend> backend = make_backend("cuda");
  return dynamic_cast<CudaBackend&>(*backend);
}

enum class Logits {
  kModel,  // a language model's shape: a broad normal, a few ids well above it
  kFlat,   // nearly uniform: top-p keeps most of the vocabulary (the global path)
  kTies,   // values on a 0.5 grid, 10% -inf, some rows constant or nearly all -inf
};

std::vector<float> make_logits(Rng& rng, int64_t rows, int64_t vocab, Logits kind) {
  std::vector<float> logits(static_cast<size_t>(rows * vocab));
  for (int64_t r = 0; r < rows; ++r) {
    float* row = logits.data() + r * vocab;
    for (int64_t i = 0; i < vocab; ++i) {
      switch (kind) {
        case Logits::kModel:
          row[i] = 2.5f * rng.normal();
          break;
        case Logits::kFlat:
          row[i] = rng.uniform(-0.5f, 0.5f);
          break;
        case Logits::kTies:
          row[i] = rng.below(10) == 0 ? -kInf : std::round(4.0f * rng.normal()) * 0.5f;
          break;
      }
    }
    if (kind == Logits::kModel) {
      for (int peak = 0; peak < 8; ++peak) row[rng.below(vocab)] = rng.uniform(8.0f, 16.0f);
    }
    if (kind == Logits::kTies && r % 5 == 3) std::fill(row, row + vocab, 1.5f);
    if (kind == Logits::kTies && r % 5 == 4) {
      std::fill(row, row + vocab, -kInf);
      for (int keep = 0; keep < 3; ++keep) row[rng.below(vocab)] = 0.5f * static_cast<float>(keep);
    }
  }
  return logits;
}

// A mix of what requests ask for; row i takes kind i % 9.
std::vector<SamplingRow> make_rows(Rng& rng, int64_t rows, int64_t vocab,
                                   std::vector<int32_t>& banned) {
  std::vector<SamplingRow> out;
  for (int64_t i = 0; i < rows; ++i) {
    SamplingRow row{.seed = rng.next(), .counter = rng.next() % 4096};
    switch (i % 9) {
      case 0:  // greedy
        break;
      case 1:  // greedy with logprobs
        row.num_top_logprobs = static_cast<int32_t>(i % 21);
        break;
      case 2:  // temperature only
        row.temperature = 0.7f;
        break;
      case 3:  // top-k
        row.temperature = 1.0f;
        row.top_k = 20;
        break;
      case 4:  // Qwen3's defaults, with logprobs
        row.temperature = 0.6f;
        row.top_k = 20;
        row.top_p = 0.95f;
        row.num_top_logprobs = kMaxTopLogprobs;
        break;
      case 5:  // top-p only
        row.temperature = 1.0f;
        row.top_p = 0.9f;
        break;
      case 6:  // a top-k beyond the shared-memory candidates, then top-p
        row.temperature = 1.3f;
        row.top_k = 5000;
        row.top_p = 0.8f;
        break;
      case 7:  // banned ids (the row's best among them, one outside the vocabulary), top-k
        row.temperature = 0.8f;
        row.top_k = 50;
        row.num_top_logprobs = 3;
        break;
      case 8:  // banned ids, greedy, logprobs
        row.num_top_logprobs = 1;
        break;
    }
    if (i % 9 >= 7) {
      row.banned_begin = static_cast<int32_t>(banned.size());
      for (int b = 0; b < 6; ++b) banned.push_back(rng.below(vocab));
      banned.push_back(static_cast<int32_t>(vocab + 3));
      row.banned_count = static_cast<int32_t>(banned.size()) - row.banned_begin;
    }
    out.push_back(row);
  }
  return out;
}

struct Batch {
  int64_t rows = 0;
  int64_t vocab = 0;
  std::vector<float> logits = {};
  std::vector<SamplingRow> config = {};
  std::vector<int32_t> banned = {};
};

Batch make_batch(uint64_t seed, int64_t rows, int64_t vocab, Logits kind) {
  Rng rng(seed);
  Batch batch{.rows = rows, .vocab = vocab, .logits = make_logits(rng, rows, vocab, kind)};
  batch.config = make_rows(rng, rows, vocab, batch.banned);
  // Ban each banned row's greedy token too, so the ban changes the answer.
  for (int64_t r = 0; r < rows; ++r) {
    SamplingRow& row = batch.config[r];
    if (row.banned_count == 0) continue;
    const float* logits = batch.logits.data() + r * vocab;
    batch.banned[row.banned_begin] =
        static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
  }
  return batch;
}

std::vector<SampledToken> sample_on_cpu(const Batch& batch,
                                        const std::vector<SamplingRow>& config) {
  CpuBackend cpu;
  std::vector<SampledToken> out(static_cast<size_t>(batch.rows));
  std::vector<int32_t> banned = batch.banned;
  cpu.sample({.data = const_cast<float*>(batch.logits.data()),
              .dtype = DType::kF32,
              .shape = {batch.rows, batch.vocab}},
             {.data = const_cast<SamplingRow*>(config.data()),
              .dtype = DType::kI32,
              .shape = {batch.rows, kSamplingRowWords}},
             {.data = banned.empty() ? nullptr : banned.data(),
              .dtype = DType::kI32,
              .shape = {static_cast<int64_t>(banned.size())}},
             {.data = out.data(), .dtype = DType::kI32, .shape = {batch.rows, kSampledTokenWords}});
  return out;
}

// The batch's tensors on the GPU.
struct DeviceBatch {
  DeviceBuffer logits;
  DeviceBuffer rows;
  DeviceBuffer banned;
  DeviceBuffer out;
  Tensor logits_t;
  Tensor rows_t;
  Tensor banned_t;
  Tensor out_t;
};

DeviceBatch upload(const Batch& batch) {
  Backend& backend = gpu();
  DeviceBatch d;
  const auto put = [&](DeviceBuffer& buffer, const void* data, size_t bytes) {
    buffer = backend.allocate(std::max<size_t>(bytes, 4));
    backend.copy_from_host(buffer.data(), data, bytes);
  };
  put(d.logits, batch.logits.data(), batch.logits.size() * 4);
  put(d.rows, batch.config.data(), batch.config.size() * sizeof(SamplingRow));
  put(d.banned, batch.banned.data(), batch.banned.size() * 4);
  d.out = backend.allocate(static_cast<size_t>(batch.rows) * sizeof(SampledToken));
  d.logits_t = {.data = d.logits.data(),
                .dtype = DType::kF32,
                .shape = {batch.rows, batch.vocab},
                .device = DeviceKind::kCuda};
  d.rows_t = {.data = d.rows.data(),
              .dtype = DType::kI32,
              .shape = {batch.rows, kSamplingRowWords},
              .device = DeviceKind::kCuda};
  d.banned_t = {.data = batch.banned.empty() ? nullptr : d.banned.data(),
                .dtype = DType::kI32,
                .shape = {static_cast<int64_t>(batch.banned.size())},
                .device = DeviceKind::kCuda};
  d.out_t = {.data = d.out.data(),
             .dtype = DType::kI32,
             .shape = {batch.rows, kSampledTokenWords},
             .device = DeviceKind::kCuda};
  return d;
}

// Fills `out` with 0x7f bytes, which no output word holds: id 2139062143, value 3.4e38.
void poison(const DeviceBatch& d, int64_t rows) {
  const std::vector<uint8_t> pattern(static_cast<size_t>(rows) * sizeof(SampledToken), 0x7f);
  gpu().copy_from_host(d.out.data(), pattern.data(), pattern.size());
}

std::vector<SampledToken> download(const DeviceBatch& d, int64_t rows) {
  std::vector<SampledToken> out(static_cast<size_t>(rows));
  gpu().copy_to_host(out.data(), d.out.data(), out.size() * sizeof(SampledToken));
  return out;
}

// On the global path: every threshold by the search, every draw over the whole row.
void sample_global_path(const DeviceBatch& d, const Batch& batch) {
  ASSERT_EQ(cuda::sample({.logits = static_cast<const float*>(d.logits.data()),
                          .num_rows = batch.rows,
                          .vocab = batch.vocab,
                          .rows = static_cast<const SamplingRow*>(d.rows.data()),
                          .banned = static_cast<const int32_t*>(d.banned_t.data),
                          .num_banned = static_cast<int64_t>(batch.banned.size()),
                          .out = static_cast<SampledToken*>(d.out.data()),
                          .max_candidates = 0},
                         gpu().stream()),
            cudaSuccess);
}

bool close(float a, float b) {
  if (a == b) return true;  // equal infinities
  return std::fabs(a - b) <= 1e-4f;
}

struct Tally {
  int64_t drawn = 0;          // rows with temperature > 0
  int64_t drawn_same = 0;     // of which the same token
  int64_t near_boundary = 0;  // of which the reference moves with top_p
};

Tally& total_tally() {
  static Tally tally;
  return tally;
}

void compare(const std::string& label, const Batch& batch, const std::vector<SampledToken>& got,
             const std::vector<SampledToken>& want) {
  // The reference with top_p moved by 1e-4 relative either way: where its token moves, the row
  // is within rounding of a top-p boundary.
  std::vector<SamplingRow> lower = batch.config;
  std::vector<SamplingRow> higher = batch.config;
  for (size_t r = 0; r < lower.size(); ++r) {
    if (lower[r].top_p < 1.0f) {
      lower[r].top_p *= 1.0f - 1e-4f;
      higher[r].top_p = std::min(higher[r].top_p * (1.0f + 1e-4f), 0.99999994f);
    }
  }
  const std::vector<SampledToken> want_lower = sample_on_cpu(batch, lower);
  const std::vector<SampledToken> want_higher = sample_on_cpu(batch, higher);
  Tally tally;
  int64_t failures = 0;
  for (int64_t r = 0; r < batch.rows; ++r) {
    const SamplingRow& row = batch.config[r];
    const SampledToken& g = got[r];
    const SampledToken& w = want[r];
    std::string what;
    if (row.temperature > 0.0f && w.token >= 0) {
      ++tally.drawn;
      const bool near = want_lower[r].token != w.token || want_higher[r].token != w.token;
      tally.near_boundary += near ? 1 : 0;
      if (g.token == w.token) {
        ++tally.drawn_same;
      } else if (!near) {
        what += " drawn token";
      }
    } else if (g.token != w.token) {
      what += " token";
    }
    if (g.num_top != w.num_top) what += " num_top";
    if (g.token == w.token && !close(g.logprob, w.logprob)) what += " logprob";
    for (int32_t j = 0; j < kMaxTopLogprobs; ++j) {
      if (g.top_ids[j] != w.top_ids[j]) what += " top_ids[" + std::to_string(j) + "]";
      if (!close(g.top_logprobs[j], w.top_logprobs[j])) {
        what += " top_logprobs[" + std::to_string(j) + "]";
      }
    }
    if (!what.empty() && failures++ < 8) {
      ADD_FAILURE() << label << " row " << r << " (kind " << r % 9 << ", T " << row.temperature
                    << ", top_k " << row.top_k << ", top_p " << row.top_p << ", logprobs "
                    << row.num_top_logprobs << "):" << what << "; cuda token " << g.token
                    << " logprob " << g.logprob << " num_top " << g.num_top << " top0 "
                    << g.top_ids[0] << "; cpu token " << w.token << " logprob " << w.logprob
                    << " num_top " << w.num_top << " top0 " << w.top_ids[0];
    }
  }
  std::printf(
      "[op] sample %-34s rows %4lld: drawn %lld, same token %lld, near a top-p boundary "
      "%lld, other mismatches %lld\n",
      label.c_str(), static_cast<long long>(batch.rows), static_cast<long long>(tally.drawn),
      static_cast<long long>(tally.drawn_same), static_cast<long long>(tally.near_boundary),
      static_cast<long long>(failures));
  EXPECT_EQ(failures, 0) << label;
  total_tally().drawn += tally.drawn;
  total_tally().drawn_same += tally.drawn_same;
  total_tally().near_boundary += tally.near_boundary;
}

void run_case(const std::string& label, uint64_t seed, int64_t rows, int64_t vocab, Logits kind) {
  const Batch batch = make_batch(seed, rows, vocab, kind);
  const std::vector<SampledToken> want = sample_on_cpu(batch, batch.config);
  const DeviceBatch d = upload(batch);
  poison(d, rows);
  gpu().sample(d.logits_t, d.rows_t, d.banned_t, d.out_t);
  compare(label, batch, download(d, rows), want);
  poison(d, rows);
  sample_global_path(d, batch);
  compare(label + " global path", batch, download(d, rows), want);
}

TEST(SamplingOp, CudaMatchesCpu) {
  for (const int64_t vocab : {int64_t{32}, int64_t{1000}, kQwenVocab}) {
    for (const int64_t rows : {int64_t{1}, int64_t{7}, int64_t{256}}) {
      const std::string shape = std::to_string(rows) + "x" + std::to_string(vocab);
      run_case("model " + shape, 1000 * vocab + rows, rows, vocab, Logits::kModel);
    }
  }
  run_case("flat 64x151936", 11, 64, kQwenVocab, Logits::kFlat);
  run_case("ties/-inf 45x151936", 12, 45, kQwenVocab, Logits::kTies);
  run_case("ties/-inf 45x1000", 13, 45, 1000, Logits::kTies);
  run_case("ties/-inf 45x31", 14, 45, 31, Logits::kTies);
}

// Runs after CudaMatchesCpu (gtest keeps the order of a file's tests).
TEST(SamplingOp, DrawsAgreeOverall) {
  const Tally& tally = total_tally();
  std::printf("[op] sample drawn tokens: %lld of %lld identical (%lld near a top-p boundary)\n",
              static_cast<long long>(tally.drawn_same), static_cast<long long>(tally.drawn),
              static_cast<long long>(tally.near_boundary));
  if (tally.drawn == 0) GTEST_SKIP() << "run SamplingOp.CudaMatchesCpu first";
  EXPECT_GE(static_cast<double>(tally.drawn_same), 0.99 * static_cast<double>(tally.drawn));
}

// NaN compares false everywhere: a draw can keep no id while the greedy pass (which orders NaN
// above +inf) finds one. Every row kind, on both paths, must still name an id of the vocabulary.
TEST(SamplingOp, NanLogitsGiveAnIdInRange) {
  const int64_t rows = 18;
  const int64_t vocab = 1000;
  Batch batch = make_batch(21, rows, vocab, Logits::kModel);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t r = 0; r < rows; ++r) {
    float* row = batch.logits.data() + r * vocab;
    if (r < 9) {
      std::fill(row, row + vocab, nan);  // every logit NaN
    } else {
      row[r * 7] = nan;  // one NaN, the row's "maximum"
    }
  }
  const DeviceBatch d = upload(batch);
  for (const bool global : {false, true}) {
    poison(d, rows);
    if (global) {
      sample_global_path(d, batch);
    } else {
      gpu().sample(d.logits_t, d.rows_t, d.banned_t, d.out_t);
    }
    const std::vector<SampledToken> got = download(d, rows);
    for (int64_t r = 0; r < rows; ++r) {
      EXPECT_GE(got[r].token, 0) << "row " << r << (global ? " (global path)" : "");
      EXPECT_LT(got[r].token, vocab) << "row " << r << (global ? " (global path)" : "");
    }
  }
  std::printf("[op] sample NaN logits: %lld rows on both paths, every token in range\n",
              static_cast<long long>(rows));
}

TEST(SamplingOp, BadArgumentsThrow) {
  const Batch batch = make_batch(5, 2, 64, Logits::kModel);
  const DeviceBatch d = upload(batch);
  EXPECT_THROW(gpu().sample(d.logits_t, d.rows_t.reshaped({20}), d.banned_t, d.out_t), Error);
  Tensor bf16 = d.logits_t;
  bf16.dtype = DType::kBF16;
  EXPECT_THROW(gpu().sample(bf16, d.rows_t, d.banned_t, d.out_t), Error);
  Tensor huge = d.logits_t;
  huge.shape = {1, cuda::kMaxSampleVocab + 1};
  EXPECT_THROW(gpu().sample(huge, d.rows_t.rows(0, 1), d.banned_t, d.out_t.rows(0, 1)), Error);
}

// The kernel's time per call against a copy of the logits (which reads and writes them once).
TEST(SamplingOp, Timing) {
  const int64_t rows = 256;
  const auto time_us = [&](const std::function<void()>& launch) {
    launch();
    cudaEvent_t start = nullptr;
    cudaEvent_t stop = nullptr;
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
    constexpr int kLaunches = 20;
    cudaEventRecord(start, gpu().stream());
    for (int i = 0; i < kLaunches; ++i) launch();
    cudaEventRecord(stop, gpu().stream());
    cudaEventSynchronize(stop);
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, start, stop);
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    return 1000.0 * ms / kLaunches;
  };
  Batch batch = make_batch(21, rows, kQwenVocab, Logits::kModel);
  const double bytes = static_cast<double>(rows * kQwenVocab * 4);
  DeviceBuffer copy = gpu().allocate(static_cast<size_t>(bytes));
  DeviceBatch d = upload(batch);
  const double copy_us = time_us(
      [&] { gpu().copy_on_device(copy.data(), d.logits.data(), static_cast<size_t>(bytes)); });
  std::printf("[op] sample timing: copy of the logits %dx%lld: %.1f us (%.2f TB/s read+write)\n",
              static_cast<int>(rows), static_cast<long long>(kQwenVocab), copy_us,
              2 * bytes / copy_us * 1e-6);
  const auto report = [&](const char* what, const std::function<void(SamplingRow&, int64_t)>& set) {
    std::vector<SamplingRow> config = batch.config;
    for (int64_t r = 0; r < rows; ++r) {
      config[r] = {.seed = static_cast<uint64_t>(r), .counter = 7};
      set(config[r], r);
    }
    gpu().copy_from_host(d.rows.data(), config.data(), config.size() * sizeof(SamplingRow));
    const double us = time_us([&] { gpu().sample(d.logits_t, d.rows_t, d.banned_t, d.out_t); });
    std::printf("[op] sample timing: %-44s %7.1f us (%.2f TB/s of logits read once)\n", what, us,
                bytes / us * 1e-6);
  };
  report("256 greedy", [](SamplingRow&, int64_t) {});
  report("256 greedy, 20 logprobs", [](SamplingRow& row, int64_t) { row.num_top_logprobs = 20; });
  report("256 temperature 0.7", [](SamplingRow& row, int64_t) { row.temperature = 0.7f; });
  report("256 T 0.6, top-k 20, top-p 0.95 (Qwen3)", [](SamplingRow& row, int64_t) {
    row.temperature = 0.6f;
    row.top_k = 20;
    row.top_p = 0.95f;
  });
  report("256 T 1, top-p 0.9", [](SamplingRow& row, int64_t) {
    row.temperature = 1.0f;
    row.top_p = 0.9f;
  });
  report("256 T 1.3, top-k 5000, top-p 0.8 (global)", [](SamplingRow& row, int64_t) {
    row.temperature = 1.3f;
    row.top_k = 5000;
    row.top_p = 0.8f;
  });
  report("256 mixed (the op test's 9 kinds)",
         [&](SamplingRow& row, int64_t r) { row = batch.config[r]; });
  batch = make_batch(22, 1, kQwenVocab, Logits::kModel);
  d = upload(batch);
  const double one_us = time_us([&] { gpu().sample(d.logits_t, d.rows_t, d.banned_t, d.out_t); });
  std::printf("[op] sample timing: %-44s %7.1f us\n", "1 greedy", one_us);
}

}  // namespace
}  // namespace tidal
