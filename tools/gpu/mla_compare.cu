// Our latent attention kernel (src/kernels/cuda/latent_attention.cu) beside FlashInfer's Hopper MLA
// kernel (flashinfer/attention/mla_hopper.cuh, from the flashinfer-python wheel's headers) on the
// same paged latent cache, at DeepSeek-V2-Lite's (16 heads) and V3's (128 heads) widths: decode
// batches and the prefill chunks of an 8192-token prompt. Per case it checks that both give the
// same output (bf16, so within a few bf16 ulps) and times both (CUDA events, median of repeats),
// beside the floor: the cache bytes read over the HBM bandwidth measured here (decode), and the
// absorbed form's FLOPs over the bf16 GEMM rate measured here with cuBLAS (prefill).
//   build: cmake -DTIDAL_FLASHINFER_INCLUDE=<dir with flashinfer/> (scripts/gpu/flashinfer.sh)
//   run:   mla_compare [out.json]
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <flashinfer/attention/mla_hopper.cuh>
#include <flashinfer/attention/scheduler.cuh>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/latent_attention.cuh"

namespace {

#define CHECK_CUDA(call)                                                \
  do {                                                                  \
    const cudaError_t status_ = (call);                                 \
    if (status_ != cudaSuccess) {                                       \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, \
                   cudaGetErrorString(status_));                        \
      std::exit(1);                                                     \
    }                                                                   \
  } while (0)

constexpr int kLatentDim = 512;
constexpr int kRopeDim = 64;
constexpr int kBlockSize = 16;  // the engine's default KV block
constexpr int kRepeats = 20;

struct Case {
  std::string kind;  // "decode" or "prefill"
  int heads = 0;
  int seqs = 0;
  int query_len = 0;    // new tokens per sequence
  int context_len = 0;  // cached tokens per sequence after storing (keys each query may see)
};

template <typename T>
T* device_alloc(size_t count) {
  T* pointer = nullptr;
  CHECK_CUDA(cudaMalloc(&pointer, count * sizeof(T)));
  return pointer;
}

// Uniform values of the given standard deviation from a hash of (seed, index), made on the device
// (the largest case holds half a billion values).
__global__ void fill_random_kernel(__nv_bfloat16* out, size_t count, uint32_t seed, float scale) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < count;
       i += size_t{gridDim.x} * blockDim.x) {
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ (uint64_t{seed} << 32);
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    const float unit = static_cast<float>(x >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    out[i] = __float2bfloat16((unit * 2.0f - 1.0f) * 1.7320508f * scale);
  }
}

void fill_random(__nv_bfloat16* device, size_t count, uint32_t seed, float scale) {
  fill_random_kernel<<<1024, 256>>>(device, count, seed, scale);
  CHECK_CUDA(cudaGetLastError());
}

// Median milliseconds of `body` over kRepeats launches, after one warm-up launch.
template <typename Body>
double median_ms(Body&& body) {
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  body();
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<float> times;
  for (int i = 0; i < kRepeats; ++i) {
    CHECK_CUDA(cudaEventRecord(start));
    body();
    CHECK_CUDA(cudaEventRecord(stop));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  std::sort(times.begin(), times.end());
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  return times[times.size() / 2];
}

// Device-to-device copy bandwidth (read + write bytes per second) of a 1 GiB buffer.
double measured_hbm_bytes_per_s() {
  const size_t bytes = size_t{1} << 30;
  char* a = device_alloc<char>(bytes);
  char* b = device_alloc<char>(bytes);
  const double ms = median_ms([&] { CHECK_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDefault)); });
  CHECK_CUDA(cudaFree(a));
  CHECK_CUDA(cudaFree(b));
  return 2.0 * bytes / (ms * 1e-3);
}

// cuBLAS bf16 GEMM rate (f32 accumulation) at 8192^3.
double measured_gemm_flops_per_s() {
  const int n = 8192;
  auto* a = device_alloc<__nv_bfloat16>(size_t{n} * n);
  auto* b = device_alloc<__nv_bfloat16>(size_t{n} * n);
  auto* c = device_alloc<__nv_bfloat16>(size_t{n} * n);
  fill_random(a, size_t{n} * n, 1, 1.0f);
  fill_random(b, size_t{n} * n, 2, 1.0f);
  cublasHandle_t handle;
  cublasCreate(&handle);
  const float one = 1.0f, zero = 0.0f;
  const double ms = median_ms([&] {
    cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a, CUDA_R_16BF, n, b, CUDA_R_16BF,
                 n, &zero, c, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  });
  cublasDestroy(handle);
  CHECK_CUDA(cudaFree(a));
  CHECK_CUDA(cudaFree(b));
  CHECK_CUDA(cudaFree(c));
  return 2.0 * n * n * static_cast<double>(n) / (ms * 1e-3);
}

// FlashInfer's plan for a batch (on the host, copied to its int workspace), and its run.
struct FlashInferMla {
  using Params = flashinfer::MLAParams<__nv_bfloat16, __nv_bfloat16, __nv_bfloat16, int32_t>;
  size_t float_bytes = size_t{256} << 20;
  size_t int_bytes = size_t{64} << 20;
  void* float_workspace = nullptr;
  void* int_workspace = nullptr;
  void* pinned = nullptr;
  flashinfer::MLAPlanInfo plan;

  FlashInferMla() {
    CHECK_CUDA(cudaMalloc(&float_workspace, float_bytes));
    CHECK_CUDA(cudaMalloc(&int_workspace, int_bytes));
    CHECK_CUDA(cudaMallocHost(&pinned, int_bytes));
  }
  ~FlashInferMla() {
    cudaFree(float_workspace);
    cudaFree(int_workspace);
    cudaFreeHost(pinned);
  }

  void make_plan(std::vector<int32_t> query_indptr, std::vector<int32_t> page_indptr,
                 std::vector<int32_t> kv_lens, int heads) {
    size_t staged = 0;
    CHECK_CUDA(flashinfer::MLAPlan<int32_t>(
        float_workspace, float_bytes, int_workspace, pinned, int_bytes, plan, staged,
        query_indptr.data(), page_indptr.data(), kv_lens.data(),
        static_cast<uint32_t>(kv_lens.size()), static_cast<uint32_t>(heads), kLatentDim,
        /*causal=*/true, nullptr));
    // Since 0.7 the plan only stages its tables in the pinned buffer; the caller uploads them.
    CHECK_CUDA(cudaMemcpy(int_workspace, pinned, staged, cudaMemcpyHostToDevice));
  }

  template <typename T>
  T* at(void* base, int64_t offset) {
    return reinterpret_cast<T*>(static_cast<char*>(base) + offset);
  }

  void run(const __nv_bfloat16* q_latent, const __nv_bfloat16* q_rope, const __nv_bfloat16* latents,
           const __nv_bfloat16* rope_keys, const int32_t* page_ids, int heads, float scale,
           __nv_bfloat16* out) {
    Params p{};
    p.q_nope = const_cast<__nv_bfloat16*>(q_latent);
    p.q_pe = const_cast<__nv_bfloat16*>(q_rope);
    p.ckv = const_cast<__nv_bfloat16*>(latents);
    p.kpe = const_cast<__nv_bfloat16*>(rope_keys);
    p.q_indptr = at<int32_t>(int_workspace, plan.q_indptr_offset);
    p.kv_indptr = at<int32_t>(int_workspace, plan.kv_indptr_offset);
    p.partial_indptr = at<int32_t>(int_workspace, plan.partial_indptr_offset);
    p.kv_indices = const_cast<int32_t*>(page_ids);
    p.q_len = at<int32_t>(int_workspace, plan.q_len_offset);
    p.kv_len = at<int32_t>(int_workspace, plan.kv_len_offset);
    p.q_start = at<int32_t>(int_workspace, plan.q_start_offset);
    p.kv_start = at<int32_t>(int_workspace, plan.kv_start_offset);
    p.kv_end = at<int32_t>(int_workspace, plan.kv_end_offset);
    p.work_indptr = at<int32_t>(int_workspace, plan.work_indptr_offset);
    p.merge_packed_offset_start = at<int32_t>(int_workspace, plan.merge_packed_offset_start_offset);
    p.merge_packed_offset_end = at<int32_t>(int_workspace, plan.merge_packed_offset_end_offset);
    p.merge_partial_packed_offset_start =
        at<int32_t>(int_workspace, plan.merge_partial_packed_offset_start_offset);
    p.merge_partial_packed_offset_end =
        at<int32_t>(int_workspace, plan.merge_partial_packed_offset_end_offset);
    p.merge_partial_stride = at<int32_t>(int_workspace, plan.merge_partial_stride_offset);
    p.final_o = out;
    p.final_lse = nullptr;
    p.partial_o = at<__nv_bfloat16>(float_workspace, plan.partial_o_offset);
    p.partial_lse = at<float>(float_workspace, plan.partial_lse_offset);
    p.num_heads = flashinfer::uint_fastdiv(heads);
    p.block_size = flashinfer::uint_fastdiv(kBlockSize);
    p.q_nope_stride_n = heads * kLatentDim;
    p.q_nope_stride_h = kLatentDim;
    p.q_pe_stride_n = heads * kRopeDim;
    p.q_pe_stride_h = kRopeDim;
    p.ckv_stride_page = kBlockSize * kLatentDim;
    p.ckv_stride_n = kLatentDim;
    p.kpe_stride_page = kBlockSize * kRopeDim;
    p.kpe_stride_n = kRopeDim;
    p.o_stride_n = heads * kLatentDim;
    p.o_stride_h = kLatentDim;
    p.return_lse_base_on_e = false;
    p.sm_scale = scale;
    CHECK_CUDA((flashinfer::mla::BatchMLAPageAttentionHopper<flashinfer::MaskMode::kCausal,
                                                             kLatentDim, kRopeDim>(
        p, plan.num_blks_x, plan.num_blks_y, nullptr)));
  }
};

struct Result {
  Case c;
  double ours_ms = 0, flashinfer_ms = 0, floor_ms = 0;
  double max_diff = 0, max_ref = 0;
};

Result run_case(const Case& c, FlashInferMla& flashinfer, double hbm, double gemm) {
  const int tokens = c.seqs * c.query_len;
  const int blocks_per_seq = (c.context_len + kBlockSize - 1) / kBlockSize;
  const int num_blocks = c.seqs * blocks_per_seq;
  auto* q_latent = device_alloc<__nv_bfloat16>(static_cast<size_t>(tokens) * c.heads * kLatentDim);
  auto* q_rope = device_alloc<__nv_bfloat16>(static_cast<size_t>(tokens) * c.heads * kRopeDim);
  auto* latents =
      device_alloc<__nv_bfloat16>(static_cast<size_t>(num_blocks) * kBlockSize * kLatentDim);
  auto* rope_keys =
      device_alloc<__nv_bfloat16>(static_cast<size_t>(num_blocks) * kBlockSize * kRopeDim);
  auto* ours = device_alloc<__nv_bfloat16>(static_cast<size_t>(tokens) * c.heads * kLatentDim);
  auto* theirs = device_alloc<__nv_bfloat16>(static_cast<size_t>(tokens) * c.heads * kLatentDim);
  fill_random(q_latent, static_cast<size_t>(tokens) * c.heads * kLatentDim, 11, 0.5f);
  fill_random(q_rope, static_cast<size_t>(tokens) * c.heads * kRopeDim, 12, 0.5f);
  fill_random(latents, static_cast<size_t>(num_blocks) * kBlockSize * kLatentDim, 13, 1.0f);
  fill_random(rope_keys, static_cast<size_t>(num_blocks) * kBlockSize * kRopeDim, 14, 1.0f);

  // Blocks shuffled, as a cache that has served a while holds them.
  std::vector<int32_t> page_ids(num_blocks);
  std::iota(page_ids.begin(), page_ids.end(), 0);
  std::shuffle(page_ids.begin(), page_ids.end(), std::mt19937(7));
  std::vector<int32_t> query_start(c.seqs + 1), context_lens(c.seqs, c.context_len),
      page_indptr(c.seqs + 1);
  for (int s = 0; s <= c.seqs; ++s) {
    query_start[s] = s * c.query_len;
    page_indptr[s] = s * blocks_per_seq;
  }
  auto* d_pages = device_alloc<int32_t>(num_blocks);
  auto* d_query_start = device_alloc<int32_t>(c.seqs + 1);
  auto* d_context = device_alloc<int32_t>(c.seqs);
  CHECK_CUDA(cudaMemcpy(d_pages, page_ids.data(), num_blocks * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(
      cudaMemcpy(d_query_start, query_start.data(), (c.seqs + 1) * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(d_context, context_lens.data(), c.seqs * 4, cudaMemcpyHostToDevice));

  const float scale = 1.0f / std::sqrt(float{kLatentDim / 4 + kRopeDim});
  const tidal::cuda::LatentAttentionParams params{.q_latent = q_latent,
                                                  .q_rope = q_rope,
                                                  .latents = latents,
                                                  .rope_keys = rope_keys,
                                                  .block_size = kBlockSize,
                                                  .latent_dim = kLatentDim,
                                                  .rope_dim = kRopeDim,
                                                  .num_tokens = tokens,
                                                  .num_heads = c.heads,
                                                  .query_start = d_query_start,
                                                  .context_lens = d_context,
                                                  .block_tables = d_pages,
                                                  .num_seqs = c.seqs,
                                                  .max_blocks_per_seq = blocks_per_seq,
                                                  .max_context_len = c.context_len,
                                                  .scale = scale,
                                                  .out = ours};
  Result r{.c = c};
  r.ours_ms = median_ms([&] { CHECK_CUDA(tidal::cuda::latent_attention_bf16(params, nullptr)); });
  // The plan is host work made once per step (outside a graph); it is not in the timing.
  flashinfer.make_plan(query_start, page_indptr, context_lens, c.heads);
  r.flashinfer_ms = median_ms([&] {
    flashinfer.run(q_latent, q_rope, latents, rope_keys, d_pages, c.heads, scale, theirs);
  });

  const size_t count = static_cast<size_t>(tokens) * c.heads * kLatentDim;
  std::vector<__nv_bfloat16> a(count), b(count);
  CHECK_CUDA(cudaMemcpy(a.data(), ours, count * 2, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(b.data(), theirs, count * 2, cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < count; ++i) {
    const double x = __bfloat162float(a[i]), y = __bfloat162float(b[i]);
    r.max_diff = std::max(r.max_diff, std::abs(x - y));
    r.max_ref = std::max(r.max_ref, std::abs(y));
  }

  // Floors. Decode reads every cached row once per sequence (all heads share it); prefill's
  // absorbed form does 2 * (latent + rope) FLOPs per score and 2 * latent per value row, over the
  // causal pairs of each sequence.
  const double bytes = static_cast<double>(c.seqs) * c.context_len * (kLatentDim + kRopeDim) * 2.0 +
                       2.0 * tokens * c.heads * (2 * kLatentDim + kRopeDim);
  double pairs = 0;
  for (int i = 0; i < c.query_len; ++i) pairs += c.context_len - c.query_len + i + 1;
  const double flops = static_cast<double>(c.seqs) * pairs * c.heads *
                       (2.0 * (kLatentDim + kRopeDim) + 2.0 * kLatentDim);
  r.floor_ms = std::max(bytes / hbm, flops / gemm) * 1e3;

  for (void* p : {static_cast<void*>(q_latent), static_cast<void*>(q_rope),
                  static_cast<void*>(latents), static_cast<void*>(rope_keys),
                  static_cast<void*>(ours), static_cast<void*>(theirs), static_cast<void*>(d_pages),
                  static_cast<void*>(d_query_start), static_cast<void*>(d_context)})
    CHECK_CUDA(cudaFree(p));
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  const double hbm = measured_hbm_bytes_per_s();
  const double gemm = measured_gemm_flops_per_s();
  std::printf("device: %s; measured HBM copy %.0f GB/s, cuBLAS bf16 GEMM %.0f TFLOP/s\n", prop.name,
              hbm / 1e9, gemm / 1e12);

  std::vector<Case> cases;
  for (const int heads : {16, 128}) {
    for (const int context : {1024, 4096}) {
      for (const int batch : {1, 8, 64, 256}) {
        if (heads == 128 && batch == 256 && context == 4096) continue;
        cases.push_back({"decode", heads, batch, 1, context});
      }
    }
    // The chunks of an 8192-token prompt at the server's default 2048 tokens per step, and the
    // prompt in one step.
    for (const int context : {2048, 4096, 6144, 8192})
      cases.push_back({"prefill", heads, 1, 2048, context});
    cases.push_back({"prefill", heads, 1, 8192, 8192});
  }

  FlashInferMla flashinfer;
  std::printf("%-8s %5s %5s %6s %8s | %10s %10s %10s | %8s %8s | %9s\n", "kind", "heads", "seqs",
              "q_len", "context", "ours ms", "FI ms", "floor ms", "ours/fl", "FI/fl", "max diff");
  std::string json = "{\"device\": \"" + std::string(prop.name) +
                     "\", \"hbm_gb_per_s\": " + std::to_string(hbm / 1e9) +
                     ", \"gemm_tflop_per_s\": " + std::to_string(gemm / 1e12) + ", \"cases\": [";
  bool first = true;
  bool all_match = true;
  for (const Case& c : cases) {
    const Result r = run_case(c, flashinfer, hbm, gemm);
    // Both round probabilities and outputs to bf16 differently: a few bf16 ulps of the largest
    // output is agreement; more is a bug in one of them.
    const bool match = r.max_diff <= 0.02 * std::max(1.0, r.max_ref);
    all_match = all_match && match;
    std::printf("%-8s %5d %5d %6d %8d | %10.4f %10.4f %10.4f | %8.2f %8.2f | %9.2e%s\n",
                c.kind.c_str(), c.heads, c.seqs, c.query_len, c.context_len, r.ours_ms,
                r.flashinfer_ms, r.floor_ms, r.ours_ms / r.floor_ms, r.flashinfer_ms / r.floor_ms,
                r.max_diff, match ? "" : "  MISMATCH");
    char line[512];
    std::snprintf(line, sizeof(line),
                  "%s{\"kind\": \"%s\", \"heads\": %d, \"seqs\": %d, \"query_len\": %d, "
                  "\"context_len\": %d, \"ours_ms\": %.5f, \"flashinfer_ms\": %.5f, "
                  "\"floor_ms\": %.5f, \"max_abs_diff\": %.3e, \"max_abs_output\": %.3e}",
                  first ? "" : ", ", c.kind.c_str(), c.heads, c.seqs, c.query_len, c.context_len,
                  r.ours_ms, r.flashinfer_ms, r.floor_ms, r.max_diff, r.max_ref);
    json += line;
    first = false;
  }
  json += "]}\n";
  if (argc > 1) {
    if (FILE* f = std::fopen(argv[1], "w")) {
      std::fputs(json.c_str(), f);
      std::fclose(f);
    }
  }
  return all_match ? 0 : 1;
}
