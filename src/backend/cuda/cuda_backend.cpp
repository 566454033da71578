// CudaBackend: shape and dtype checks, then the kernels of kernels/cuda and cuBLAS, all on the
// backend's stream. Nothing here synchronises except copy_to_host, synchronize and scratch growth.
#include "backend/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_device.h"
#include "backend/cuda/cuda_op_checks.h"
#include "backend/expert_route_check.h"
#include "backend/qk_norm_rope_check.h"
#include "backend/sampling_check.h"
#include "common/logging.h"
#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/decode_attention.cuh"
#include "kernels/cuda/dense.cuh"
#include "kernels/cuda/expert_route.cuh"
#include "kernels/cuda/flash_attention.cuh"
#include "kernels/cuda/moe.cuh"
#include "kernels/cuda/norm.cuh"
#include "kernels/cuda/random_fill.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/router.cuh"
#include "kernels/cuda/sampling.cuh"

namespace tidal {
namespace {

using cuda_ops::bf16_ptr;
using cuda_ops::expect_bf16;
using cuda_ops::expect_dtype;
using cuda_ops::expect_i32;
using cuda_ops::to_int;

constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;
constexpr size_t kMinAllocation = 256;
// From this many new tokens in a sequence, attention runs as 64-query tensor-core tiles.
constexpr int64_t kFlashMinQueries = 16;

cuda::ElementType element_type(const Tensor& tensor, const char* what) {
  switch (tensor.dtype) {
    case DType::kF32:
      return cuda::ElementType::kF32;
    case DType::kF16:
      return cuda::ElementType::kF16;
    case DType::kBF16:
      return cuda::ElementType::kBF16;
    default:
      TIDAL_FAIL(what, " of dtype ", dtype_name(tensor.dtype),
                 " is not supported on the CUDA backend (F32, F16 or BF16)");
  }
}

int64_t last_dim(const Tensor& tensor) {
  TIDAL_CHECK(!tensor.shape.empty(), "a scalar tensor where rows were expected");
  return tensor.shape.back();
}
int64_t leading_rows(const Tensor& tensor) {
  const int64_t width = last_dim(tensor);
  return width == 0 ? 0 : tensor.num_elements() / width;
}
cuda::PagedKvCache kv_cache_of(const KvCacheLayer& cache) {
  expect_bf16(cache.key, "KV cache keys");
  expect_bf16(cache.value, "KV cache values");
  TIDAL_CHECK(cache.key.shape.size() == 4 && cache.key.shape == cache.value.shape,
              "KV cache pools must be [num_blocks, block_size, kv_heads, head_dim] and alike");
  return {.key = bf16_ptr(cache.key),
          .value = bf16_ptr(cache.value),
          .num_blocks = cache.key.dim(0),
          .block_size = cache.key.dim(1),
          .num_kv_heads = cache.key.dim(2),
          .head_dim = cache.key.dim(3)};
}

}  // namespace

CudaBackend::CudaBackend(int device_index) : device_index_(device_index) {
  const int count = cuda_device_count();
  TIDAL_CHECK(device_index >= 0 && device_index < count, "cuda:", device_index, " requested but ",
              count, " CUDA device(s) found");
  activate();
  try {
    TIDAL_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    TIDAL_CUBLAS_CHECK(cublasCreate(&cublas_));
    TIDAL_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
    // A workspace of our own: cuBLAS then allocates nothing per call (needed for graph capture).
    TIDAL_CUDA_CHECK(cudaMalloc(&cublas_workspace_, kCublasWorkspaceBytes));
    TIDAL_CUBLAS_CHECK(cublasSetWorkspace(cublas_, cublas_workspace_, kCublasWorkspaceBytes));
    // Split-K reductions in f32, never in bf16.
    TIDAL_CUBLAS_CHECK(
        cublasSetMathMode(cublas_, CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION));
  } catch (...) {
    release();  // the destructor does not run for a constructor that throws
    throw;
  }
}

CudaBackend::~CudaBackend() {
  release();
}

void CudaBackend::release() noexcept {
  // Errors are ignored: this never throws, and a failed context frees nothing anyway.
  cudaSetDevice(device_index_);
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  if (cublas_ != nullptr) cublasDestroy(cublas_);
  if (cublas_workspace_ != nullptr) cudaFree(cublas_workspace_);
  if (scratch_ != nullptr) cudaFree(scratch_);
  for (CUgraphExec_st* graph : graphs_) {
    if (graph != nullptr) cudaGraphExecDestroy(graph);
  }
  graphs_.clear();
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
  cublas_ = nullptr;
  cublas_workspace_ = nullptr;
  scratch_ = nullptr;
  stream_ = nullptr;
}

std::string CudaBackend::name() const {
  return cat("cuda:", device_index_);
}

MemoryInfo CudaBackend::memory_info() const {
  activate();
  size_t free_bytes = 0;
  size_t total_bytes = 0;
  TIDAL_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return {.total_bytes = total_bytes, .free_bytes = free_bytes};
}

void CudaBackend::activate() const {
  TIDAL_CUDA_CHECK(cudaSetDevice(device_index_));
}

void* CudaBackend::scratch(size_t bytes) {
  if (bytes <= scratch_bytes_) return scratch_;
  TIDAL_CHECK(!capturing_, "kernel scratch of ", scratch_bytes_, " bytes must grow to ", bytes,
              " inside a graph capture: run the batch eagerly first");
  // The captured graphs read the current buffer: freeing it would leave them reading freed
  // memory. A warm-up runs the worst case before capturing, so this is a sizing bug.
  TIDAL_CHECK(num_live_graphs_ == 0, "kernel scratch of ", scratch_bytes_, " bytes must grow to ",
              bytes, " while ", num_live_graphs_,
              " captured graphs read it: the warm-up's worst case did not cover this step");
  // Kernels still queued may read the old buffer: let them finish before freeing it.
  wait_for_stream("growing the kernel scratch");
  if (scratch_ != nullptr) TIDAL_CUDA_CHECK(cudaFree(scratch_));
  scratch_ = nullptr;
  scratch_bytes_ = 0;
  const size_t grown = std::max(bytes, kMinAllocation);
  TIDAL_CUDA_CHECK(cudaMalloc(&scratch_, grown));
  scratch_bytes_ = grown;
  return scratch_;
}

void* CudaBackend::raw_allocate(size_t bytes) {
  activate();
  void* data = nullptr;
  // Never zero bytes: a null data pointer reads as an empty tensor.
  TIDAL_CUDA_CHECK(cudaMalloc(&data, std::max(bytes, kMinAllocation)));
  return data;
}

void CudaBackend::raw_free(void* data) noexcept {
  cudaSetDevice(device_index_);
  cudaFree(data);
}

void CudaBackend::copy_from_host(void* device_dst, const void* host_src, size_t bytes) {
  if (bytes == 0) return;
  activate();
  // From pageable memory this returns once the source is staged, so the caller may free it.
  TIDAL_CUDA_CHECK(cudaMemcpyAsync(device_dst, host_src, bytes, cudaMemcpyHostToDevice, stream_));
}

void CudaBackend::copy_to_host(void* host_dst, const void* device_src, size_t bytes) {
  if (bytes == 0) return;
  activate();
  TIDAL_CUDA_CHECK(cudaMemcpyAsync(host_dst, device_src, bytes, cudaMemcpyDeviceToHost, stream_));
  wait_for_stream("a copy to the host");
}

bool CudaBackend::pin_host(void* data, size_t bytes) {
  if (bytes == 0) return false;
  activate();
  const cudaError_t status = cudaHostRegister(data, bytes, cudaHostRegisterDefault);
  if (status != cudaSuccess) {
    cudaGetLastError();  // not sticky: clear it so the next call does not report it
    log_warning(name(), ": could not page-lock ", bytes, " bytes of host memory (",
                cudaGetErrorString(status), "); copies through it run at pageable speed");
    return false;
  }
  return true;
}

void CudaBackend::unpin_host(void* data) noexcept {
  cudaSetDevice(device_index_);
  cudaHostUnregister(data);
}

void CudaBackend::copy_on_device(void* dst, const void* src, size_t bytes) {
  if (bytes == 0 || dst == src) return;
  activate();
  TIDAL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
}

void CudaBackend::fill_zero(const Tensor& tensor) {
  if (tensor.num_bytes() == 0) return;
  activate();
  TIDAL_CUDA_CHECK(cudaMemsetAsync(tensor.data, 0, tensor.num_bytes(), stream_));
}

void CudaBackend::fill_random(const Tensor& tensor, const RandomFill& fill) {
  const float step = fill.step();
  const cuda::ElementType type = element_type(tensor, "random fill target");
  if (tensor.num_elements() == 0) return;
  activate();
  TIDAL_CUDA_CHECK(cuda::random_fill(tensor.data, type, tensor.num_elements(), fill.seed,
                                     fill.first_index, fill.center, step, stream_));
}

void CudaBackend::begin_capture() {
  TIDAL_CHECK(!capturing_, "begin_capture() while capturing");
  activate();
  // Thread-local: work that other threads enqueue on their own streams is not pulled in.
  TIDAL_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  capturing_ = true;
}

int64_t CudaBackend::end_capture() {
  TIDAL_CHECK(capturing_, "end_capture() without begin_capture()");
  activate();
  capturing_ = false;
  cudaGraph_t graph = nullptr;
  TIDAL_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t status = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  TIDAL_CUDA_CHECK(status);
  graphs_.push_back(exec);
  ++num_captures_;
  ++num_live_graphs_;
  return static_cast<int64_t>(graphs_.size()) - 1;
}

void CudaBackend::release_graph(int64_t graph) {
  TIDAL_CHECK(graph >= 0 && graph < static_cast<int64_t>(graphs_.size()) &&
                  graphs_[static_cast<size_t>(graph)] != nullptr,
              "release_graph(", graph, "): no such graph");
  activate();
  // A replay of it may still be running on the stream.
  wait_for_stream("releasing a graph");
  TIDAL_CUDA_CHECK(cudaGraphExecDestroy(graphs_[static_cast<size_t>(graph)]));
  graphs_[static_cast<size_t>(graph)] = nullptr;
  --num_live_graphs_;
}

void CudaBackend::replay(int64_t graph) {
  TIDAL_CHECK(graph >= 0 && graph < static_cast<int64_t>(graphs_.size()) &&
                  graphs_[static_cast<size_t>(graph)] != nullptr,
              "replay of graph ", graph, ", which is not held (", graphs_.size(), " captured)");
  activate();
  TIDAL_CUDA_CHECK(cudaGraphLaunch(graphs_[static_cast<size_t>(graph)], stream_));
}

void CudaBackend::synchronize() {
  activate();
  wait_for_stream("synchronize");
}

void CudaBackend::wait_for_stream(const char* what) const {
  // Polled rather than cudaStreamSynchronize: a kernel that never ends (a hung device, a peer
  // gone from under a collective) must end this rank's wait, not hang it. The rank then reports
  // its failure and the front recovers without it. cudaStreamSynchronize spins by default too,
  // so polling costs nothing it did not.
  const auto deadline = std::chrono::steady_clock::now() + kDeviceWaitTimeout;
  for (;;) {
    const cudaError_t state = cudaStreamQuery(stream_);
    if (state == cudaSuccess) return;
    if (state != cudaErrorNotReady) TIDAL_CUDA_CHECK(state);
    if (std::chrono::steady_clock::now() > deadline) {
      TIDAL_FAIL("cuda:", device_index_, ": the device did not finish ", what, " within ",
                 std::chrono::duration_cast<std::chrono::seconds>(kDeviceWaitTimeout).count(),
                 " s (a hung kernel?)");
    }
    std::this_thread::yield();
  }
}

void CudaBackend::embedding(const Tensor& table, const Tensor& ids, const Tensor& out) {
  expect_i32(ids, "token ids");
  expect_bf16(out, "embedding output");
  TIDAL_CHECK(table.shape.size() == 2, "embedding table must be [vocab, hidden]");
  TIDAL_CHECK(out.dim(0) == ids.num_elements() && out.dim(1) == table.dim(1),
              "embedding output shape mismatch");
  activate();
  TIDAL_CUDA_CHECK(cuda::embedding_bf16(table.data, element_type(table, "embedding table"),
                                        table.dim(0), table.dim(1), ids.as<int32_t>(),
                                        ids.num_elements(), bf16_ptr(out), stream_));
}

void CudaBackend::rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) {
  expect_bf16(x, "rms_norm input");
  expect_bf16(out, "rms_norm output");
  TIDAL_CHECK(last_dim(x) == weight.num_elements(), "rms_norm width ", last_dim(x),
              " vs weight of ", weight.num_elements());
  TIDAL_CHECK(out.num_elements() == x.num_elements(), "rms_norm output size mismatch");
  activate();
  TIDAL_CUDA_CHECK(cuda::rms_norm_bf16(bf16_ptr(x), weight.data,
                                       element_type(weight, "rms_norm weight"), leading_rows(x),
                                       last_dim(x), eps, bf16_ptr(out), stream_));
}

void CudaBackend::add(const Tensor& a, const Tensor& b, const Tensor& out) {
  expect_bf16(a, "add operand");
  expect_bf16(b, "add operand");
  expect_bf16(out, "add output");
  TIDAL_CHECK(a.num_elements() == b.num_elements() && a.num_elements() == out.num_elements(),
              "add operands differ in size");
  activate();
  TIDAL_CUDA_CHECK(
      cuda::add_bf16(bf16_ptr(a), bf16_ptr(b), a.num_elements(), bf16_ptr(out), stream_));
}

void CudaBackend::add_sigmoid_gated(const Tensor& a, const Tensor& b, const Tensor& gate_logits,
                                    const Tensor& out) {
  expect_bf16(a, "add_sigmoid_gated operand");
  expect_bf16(b, "add_sigmoid_gated operand");
  expect_bf16(out, "add_sigmoid_gated output");
  TIDAL_CHECK(gate_logits.dtype == DType::kF32, "add_sigmoid_gated: the gate logits must be F32");
  const int64_t rows = a.shape.empty() ? 0 : a.dim(0);
  TIDAL_CHECK(a.num_elements() == b.num_elements() && a.num_elements() == out.num_elements() &&
                  gate_logits.num_elements() == rows,
              "add_sigmoid_gated: a, b and out [tokens, width] and one gate logit per token");
  activate();
  TIDAL_CUDA_CHECK(cuda::add_sigmoid_gated_bf16(
      bf16_ptr(a), bf16_ptr(b), static_cast<const float*>(gate_logits.data), rows,
      rows == 0 ? 0 : a.num_elements() / rows, bf16_ptr(out), stream_));
}

void CudaBackend::add_rms_norm(const Tensor& residual, const Tensor& x, const Tensor& weight,
                               float eps, const Tensor& out) {
  expect_bf16(residual, "add_rms_norm residual");
  expect_bf16(x, "add_rms_norm input");
  expect_bf16(out, "add_rms_norm output");
  TIDAL_CHECK(
      residual.num_elements() == x.num_elements() && residual.num_elements() == out.num_elements(),
      "add_rms_norm operands differ in size");
  TIDAL_CHECK(last_dim(residual) == weight.num_elements(), "add_rms_norm width ",
              last_dim(residual), " vs weight of ", weight.num_elements());
  TIDAL_CHECK(out.data != residual.data, "add_rms_norm: out must not alias the residual");
  activate();
  TIDAL_CUDA_CHECK(cuda::add_rms_norm_bf16(
      bf16_ptr(residual), bf16_ptr(x), weight.data, element_type(weight, "add_rms_norm weight"),
      leading_rows(residual), last_dim(residual), eps, bf16_ptr(out), stream_));
}

void CudaBackend::linear(const Tensor& x, const Tensor& weight, const Tensor* bias,
                         const Tensor& out) {
  expect_bf16(x, "linear input");
  TIDAL_CHECK(out.dtype == DType::kBF16 || out.dtype == DType::kF32,
              "linear output must be BF16 or F32 on the CUDA backend, got ", dtype_name(out.dtype));
  TIDAL_CHECK(weight.shape.size() == 2 && last_dim(x) == weight.dim(1), "linear: input width ",
              last_dim(x), " does not match weight [", weight.dim(0), ", ", weight.dim(1), "]");
  TIDAL_CHECK(last_dim(out) == weight.dim(0) && leading_rows(out) == leading_rows(x),
              "linear output shape mismatch");
  if (bias != nullptr) {
    TIDAL_CHECK(bias->num_elements() == weight.dim(0), "linear bias of ", bias->num_elements(),
                " for ", weight.dim(0), " outputs");
  }
  const int64_t tokens = leading_rows(x);
  const int64_t in_features = weight.dim(1);
  const int64_t out_features = weight.dim(0);
  if (tokens == 0 || out_features == 0) return;
  activate();
  const bool out_f32 = out.dtype == DType::kF32;
  if (weight.dtype == DType::kBF16) {
    // Row-major out[T, N] = x[T, K] w[N, K]^T is column-major out^T[N, T] = w^T x^T: cuBLAS
    // sees w as a K x N column-major matrix to transpose and x as K x T.
    const float alpha = 1.0f;
    const float beta = 0.0f;
    TIDAL_CUBLAS_CHECK(cublasGemmEx(
        cublas_, CUBLAS_OP_T, CUBLAS_OP_N, to_int(out_features, "linear out_features"),
        to_int(tokens, "linear tokens"), to_int(in_features, "linear in_features"), &alpha,
        weight.data, CUDA_R_16BF, to_int(in_features, "linear lda"), x.data, CUDA_R_16BF,
        to_int(in_features, "linear ldb"), &beta, out.data, out_f32 ? CUDA_R_32F : CUDA_R_16BF,
        to_int(out_features, "linear ldc"), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  } else {
    const cuda::ElementType type = element_type(weight, "linear weight");
    if (out_f32) {
      TIDAL_CUDA_CHECK(cuda::linear_fallback(bf16_ptr(x), tokens, in_features, weight.data, type,
                                             out_features, out.as<float>(), stream_));
    } else {
      TIDAL_CUDA_CHECK(cuda::linear_fallback(bf16_ptr(x), tokens, in_features, weight.data, type,
                                             out_features, bf16_ptr(out), stream_));
    }
  }
  if (bias != nullptr) {
    const cuda::ElementType type = element_type(*bias, "linear bias");
    if (out_f32) {
      TIDAL_CUDA_CHECK(
          cuda::add_bias(out.as<float>(), tokens, out_features, bias->data, type, stream_));
    } else {
      TIDAL_CUDA_CHECK(
          cuda::add_bias(bf16_ptr(out), tokens, out_features, bias->data, type, stream_));
    }
  }
}

void CudaBackend::rope(const Tensor& q, const Tensor& k, const Tensor& positions, double theta) {
  expect_i32(positions, "positions");
  expect_bf16(q, "rope q");
  expect_bf16(k, "rope k");
  const int64_t tokens = positions.num_elements();
  TIDAL_CHECK(q.shape.size() == 3 && k.shape.size() == 3 && q.dim(0) == tokens &&
                  k.dim(0) == tokens && q.dim(2) == k.dim(2) && q.dim(2) % 2 == 0,
              "rope: q and k must be [tokens, heads, head_dim] with an even head_dim");
  activate();
  TIDAL_CUDA_CHECK(cuda::rope_bf16(bf16_ptr(q), bf16_ptr(k), positions.as<int32_t>(), tokens,
                                   q.dim(1), k.dim(1), q.dim(2), theta, stream_));
}

void CudaBackend::store_kv(const Tensor& k, const Tensor& v, const Tensor& slot_mapping,
                           const KvCacheLayer& cache) {
  expect_i32(slot_mapping, "slot mapping");
  expect_bf16(k, "store_kv keys");
  expect_bf16(v, "store_kv values");
  expect_bf16(cache.key, "KV cache keys");
  expect_bf16(cache.value, "KV cache values");
  // The pools may differ in their last two dims (MLA: latents and rotary keys), not in slots.
  TIDAL_CHECK(cache.key.shape.size() == 4 && cache.value.shape.size() == 4 &&
                  cache.key.dim(0) == cache.value.dim(0) && cache.key.dim(1) == cache.value.dim(1),
              "store_kv: KV cache pools must be [num_blocks, block_size, heads, dim] of the same "
              "blocks");
  const int64_t tokens = slot_mapping.num_elements();
  const int64_t key_width = cache.key.dim(2) * cache.key.dim(3);
  const int64_t value_width = cache.value.dim(2) * cache.value.dim(3);
  TIDAL_CHECK(k.num_elements() == tokens * key_width && v.num_elements() == tokens * value_width,
              "store_kv: keys/values of ", k.num_elements(), "/", v.num_elements(),
              " elements for ", tokens, " tokens of key width ", key_width, " and value width ",
              value_width);
  activate();
  TIDAL_CUDA_CHECK(cuda::store_kv_bf16(bf16_ptr(k), bf16_ptr(v), tokens, slot_mapping.as<int32_t>(),
                                       {.key = bf16_ptr(cache.key),
                                        .value = bf16_ptr(cache.value),
                                        .num_slots = cache.key.dim(0) * cache.key.dim(1),
                                        .key_width = key_width,
                                        .value_width = value_width},
                                       stream_));
}

void CudaBackend::qk_norm_rope_store(const Tensor& q, const Tensor& k, const Tensor& v,
                                     const Tensor& q_norm_weight, const Tensor& k_norm_weight,
                                     float eps, const Tensor& positions, double theta,
                                     const Tensor& slot_mapping, const KvCacheLayer& cache) {
  expect_bf16(q, "qk_norm_rope_store q");
  expect_bf16(k, "qk_norm_rope_store k");
  expect_bf16(v, "qk_norm_rope_store v");
  expect_i32(positions, "positions");
  expect_i32(slot_mapping, "slot mapping");
  const cuda::PagedKvCache layout = kv_cache_of(cache);
  const int64_t tokens =
      check_qk_norm_rope_store_shapes(q, k, v, q_norm_weight, k_norm_weight, positions,
                                      slot_mapping, layout.num_kv_heads, layout.head_dim);
  TIDAL_CHECK(layout.head_dim % 2 == 0, "qk_norm_rope_store: head_dim ", layout.head_dim,
              " is odd");
  // The fused kernel takes one weight dtype and heads of one element per thread of rms_norm's
  // block; anything else runs the chain it stands for.
  if (q_norm_weight.dtype != k_norm_weight.dtype || layout.head_dim > cuda::kMaxAttentionHeadDim) {
    rms_norm(q, q_norm_weight, eps, q);
    rms_norm(k, k_norm_weight, eps, k);
    rope(q, k, positions, theta);
    store_kv(k, v, slot_mapping, cache);
    return;
  }
  activate();
  TIDAL_CUDA_CHECK(
      cuda::qk_norm_rope_store_bf16({.q = bf16_ptr(q),
                                     .k = bf16_ptr(k),
                                     .v = bf16_ptr(v),
                                     .q_norm = q_norm_weight.data,
                                     .k_norm = k_norm_weight.data,
                                     .norm_type = element_type(q_norm_weight, "q/k norm weight"),
                                     .eps = eps,
                                     .positions = positions.as<int32_t>(),
                                     .theta = theta,
                                     .slot_mapping = slot_mapping.as<int32_t>(),
                                     .cache = layout,
                                     .num_tokens = tokens,
                                     .num_heads = q.dim(1)},
                                    stream_));
}

void CudaBackend::paged_attention(const Tensor& q, const KvCacheLayer& cache,
                                  const AttentionInputs& inputs, float scale, const Tensor& out) {
  expect_bf16(q, "attention query");
  expect_bf16(out, "attention output");
  expect_i32(inputs.query_start, "query_start");
  expect_i32(inputs.context_lens, "context_lens");
  expect_i32(inputs.block_tables, "block_tables");
  const cuda::PagedKvCache layout = kv_cache_of(cache);
  TIDAL_CHECK(q.shape.size() == 3 && q.dim(2) == layout.head_dim && out.shape == q.shape,
              "attention: q and out must be [tokens, heads, ", layout.head_dim, "]");
  TIDAL_CHECK(layout.head_dim <= cuda::kMaxAttentionHeadDim, "attention head_dim ", layout.head_dim,
              " exceeds the kernel's ", cuda::kMaxAttentionHeadDim);
  TIDAL_CHECK(layout.num_kv_heads > 0 && q.dim(1) % layout.num_kv_heads == 0,
              "attention: ", q.dim(1), " heads over ", layout.num_kv_heads, " KV heads");
  TIDAL_CHECK(inputs.num_seqs == 0 || inputs.block_tables.shape.size() == 2,
              "block_tables must be [num_seqs, max_blocks_per_seq]");
  const cuda::PagedAttentionParams params{
      .q = bf16_ptr(q),
      .cache = layout,
      .num_tokens = q.dim(0),
      .num_heads = q.dim(1),
      .query_start = inputs.query_start.as<int32_t>(),
      .context_lens = inputs.context_lens.as<int32_t>(),
      .block_tables = inputs.block_tables.as<int32_t>(),
      .num_seqs = inputs.num_seqs,
      .max_blocks_per_seq = inputs.num_seqs == 0 ? 0 : inputs.block_tables.dim(1),
      .scale = scale,
      .out = bf16_ptr(out)};
  activate();
  // One new token per sequence (decode): split-KV, a block per (sequence, KV head, split) for
  // the whole query group, its partials in the scratch (consumed by the merge before the next op
  // on the stream reuses it). Many (prefill, chunked prefill): the tensor-core tiles. Otherwise
  // one block per (token, head).
  if (cuda::decode_attention_supports(params, inputs.max_query_len)) {
    const size_t bytes = cuda::decode_attention_workspace_bytes(params);
    TIDAL_CUDA_CHECK(cuda::decode_attention_bf16(params, scratch(bytes), bytes, stream_));
  } else if (inputs.max_query_len >= kFlashMinQueries && cuda::flash_attention_supports(params)) {
    TIDAL_CUDA_CHECK(cuda::flash_attention_bf16(params, inputs.max_query_len, stream_));
  } else {
    TIDAL_CUDA_CHECK(cuda::paged_attention_bf16(params, stream_));
  }
}

void CudaBackend::silu_and_mul(const Tensor& gate_up, const Tensor& out) {
  expect_bf16(gate_up, "silu_and_mul input");
  expect_bf16(out, "silu_and_mul output");
  TIDAL_CHECK(last_dim(gate_up) == 2 * last_dim(out) && leading_rows(gate_up) == leading_rows(out),
              "silu_and_mul widths mismatch");
  activate();
  TIDAL_CUDA_CHECK(cuda::silu_and_mul_bf16(bf16_ptr(gate_up), leading_rows(gate_up), last_dim(out),
                                           bf16_ptr(out), stream_));
}

void CudaBackend::router_topk(const Tensor& logits, const RouterSpec& spec,
                              const Tensor& topk_weights, const Tensor& topk_ids) {
  expect_dtype(logits, DType::kF32, "router logits");
  expect_dtype(topk_weights, DType::kF32, "top-k weights");
  expect_i32(topk_ids, "top-k ids");
  TIDAL_CHECK(logits.shape.size() == 2 && topk_ids.shape.size() == 2 &&
                  topk_ids.shape == topk_weights.shape && topk_ids.dim(0) == logits.dim(0),
              "router_topk: logits [tokens, experts], weights and ids [tokens, k]");
  const int64_t experts = logits.dim(1);
  const int64_t k = topk_ids.dim(1);
  TIDAL_CHECK(k > 0 && k <= experts, "top-k of ", k, " over ", experts, " experts");
  TIDAL_CHECK(experts <= cuda::kMaxRouterExperts && k <= cuda::kMaxRouterTopk,
              "router_topk on CUDA takes at most ", cuda::kMaxRouterExperts,
              " experts and k <= ", cuda::kMaxRouterTopk, ", got ", experts, " and ", k);
  const int64_t groups = spec.num_groups;
  TIDAL_CHECK(groups >= 1 && experts % groups == 0, "router_topk: ", experts,
              " experts do not split into ", groups, " equal groups");
  TIDAL_CHECK(groups <= cuda::kMaxRouterGroups, "router_topk on CUDA takes at most ",
              cuda::kMaxRouterGroups, " expert groups, got ", groups);
  TIDAL_CHECK(spec.topk_groups >= 1 && spec.topk_groups <= groups, "router_topk: keeps ",
              spec.topk_groups, " of ", groups, " expert groups");
  TIDAL_CHECK(groups == 1 || k <= spec.topk_groups * (experts / groups), "router_topk: top-", k,
              " from ", spec.topk_groups, " groups of ", experts / groups, " experts");
  TIDAL_CHECK(groups == 1 || !spec.group_score_top2_sum || experts / groups >= 2,
              "router_topk: a group's top-2 score needs groups of two experts or more, got ",
              experts / groups);
  const float* bias = nullptr;
  if (spec.selection_bias != nullptr) {
    expect_dtype(*spec.selection_bias, DType::kF32, "router selection bias");
    TIDAL_CHECK(spec.selection_bias->num_elements() == experts, "router_topk: selection bias of ",
                spec.selection_bias->num_elements(), " for ", experts, " experts");
    bias = spec.selection_bias->as<float>();
  }
  activate();
  TIDAL_CUDA_CHECK(cuda::router_topk_f32({.logits = logits.as<float>(),
                                          .num_tokens = logits.dim(0),
                                          .num_experts = experts,
                                          .k = k,
                                          .sigmoid = spec.sigmoid,
                                          .selection_bias = bias,
                                          .num_groups = groups,
                                          .topk_groups = spec.topk_groups,
                                          .group_score_top2_sum = spec.group_score_top2_sum,
                                          .renormalize = spec.renormalize,
                                          .scaling = spec.scaling,
                                          .topk_weights = topk_weights.as<float>(),
                                          .topk_ids = topk_ids.as<int32_t>()},
                                         stream_));
}

void CudaBackend::moe_experts(const Tensor& x, const Tensor& topk_slots, const Tensor& topk_weights,
                              const ExpertSlots& experts, const Tensor& out) {
  expect_bf16(x, "MoE input");
  expect_bf16(out, "MoE output");
  expect_i32(topk_slots, "top-k slots");
  expect_dtype(topk_weights, DType::kF32, "top-k weights");
  TIDAL_CHECK(experts.gate_up.dtype == experts.down.dtype, "expert weights of mixed dtypes");
  TIDAL_CHECK(x.shape.size() == 2 && out.shape == x.shape,
              "MoE input/output must be [tokens, hidden]");
  TIDAL_CHECK(topk_slots.shape.size() == 2 && topk_slots.shape == topk_weights.shape &&
                  topk_slots.dim(0) == x.dim(0),
              "MoE top-k slots and weights must be [tokens, k]");
  TIDAL_CHECK(experts.gate_up.shape.size() == 3 && experts.down.shape.size() == 3,
              "expert slots must be [slots, 2 * intermediate, hidden] and [slots, hidden, "
              "intermediate]");
  const int64_t tokens = x.dim(0);
  const int64_t hidden = x.dim(1);
  const int64_t k = topk_slots.dim(1);
  const int64_t slots = experts.gate_up.dim(0);
  const int64_t inter = experts.down.dim(2);
  TIDAL_CHECK(experts.gate_up.dim(1) == 2 * inter && experts.gate_up.dim(2) == hidden &&
                  experts.down.dim(0) == slots && experts.down.dim(1) == hidden,
              "expert weight shapes do not match hidden ", hidden, " and intermediate ", inter);
  if (tokens == 0) return;
  activate();
  const size_t bytes = cuda::moe_experts_workspace_bytes(tokens, k, slots, hidden, inter);
  void* workspace = scratch(bytes);
  TIDAL_CUDA_CHECK(
      cuda::moe_experts_bf16({.x = bf16_ptr(x),
                              .num_tokens = tokens,
                              .hidden = hidden,
                              .intermediate = inter,
                              .k = k,
                              .topk_slots = topk_slots.as<int32_t>(),
                              .topk_weights = topk_weights.as<float>(),
                              .gate_up = experts.gate_up.data,
                              .down = experts.down.data,
                              .weight_type = element_type(experts.gate_up, "expert weights"),
                              .num_slots = slots,
                              .out = bf16_ptr(out)},
                             workspace, scratch_bytes_, stream_));
}

void CudaBackend::moe_combine(const Tensor& expert_out, const Tensor& topk_weights,
                              const Tensor& out) {
  expect_bf16(expert_out, "expert outputs");
  expect_bf16(out, "moe_combine output");
  expect_dtype(topk_weights, DType::kF32, "top-k weights");
  TIDAL_CHECK(
      topk_weights.shape.size() == 2 && out.shape.size() == 2 && topk_weights.dim(0) == out.dim(0),
      "moe_combine: weights [tokens, k] and output [tokens, hidden]");
  TIDAL_CHECK(
      expert_out.dim(0) == topk_weights.num_elements() && last_dim(expert_out) == out.dim(1),
      "moe_combine: ", expert_out.dim(0), " expert rows for ", topk_weights.num_elements(),
      " weights");
  activate();
  TIDAL_CUDA_CHECK(cuda::moe_combine_bf16(bf16_ptr(expert_out), topk_weights.as<float>(),
                                          out.dim(0), topk_weights.dim(1), out.dim(1),
                                          bf16_ptr(out), stream_));
}

void CudaBackend::gather_rows(const Tensor& x, const Tensor& row_ids, const Tensor& out) {
  expect_i32(row_ids, "row ids");
  TIDAL_CHECK(x.dtype == out.dtype, "gather_rows: ", dtype_name(x.dtype), " rows into a ",
              dtype_name(out.dtype), " output");
  TIDAL_CHECK(!x.shape.empty() && !out.shape.empty() && out.dim(0) == row_ids.num_elements(),
              "gather_rows: output must have one row per id");
  const int64_t src_rows = x.dim(0);
  const int64_t row_bytes = src_rows == 0 ? 0 : static_cast<int64_t>(x.num_bytes()) / src_rows;
  TIDAL_CHECK(out.dim(0) == 0 || static_cast<int64_t>(out.num_bytes()) / out.dim(0) == row_bytes,
              "gather_rows: rows of different widths");
  activate();
  TIDAL_CUDA_CHECK(cuda::gather_rows(x.data, row_bytes, src_rows, row_ids.as<int32_t>(),
                                     row_ids.num_elements(), out.data, stream_));
}

void CudaBackend::route_experts(const Tensor& topk_ids, const ExpertRoute& route,
                                const Tensor& send_tokens, const Tensor& send_slots,
                                const Tensor& positions) {
  check_route_experts_args(topk_ids, route, send_tokens, send_slots, positions);
  const bool has_token_ids = route.token_ids.data != nullptr;
  const bool has_load_counts = route.load_counts.data != nullptr;
  TIDAL_CHECK(route.num_ranks <= cuda::kMaxRouteRanks, "route_experts over ", route.num_ranks,
              " ranks; the kernel takes at most ", cuda::kMaxRouteRanks);
  activate();
  TIDAL_CUDA_CHECK(cuda::route_experts(
      {.topk_ids = topk_ids.as<int32_t>(),
       .num_tokens = topk_ids.dim(0),
       .k = topk_ids.dim(1),
       .replica_count = route.replica_count.as<int32_t>(),
       .replica_slots = route.replica_slots.as<int32_t>(),
       .num_experts = route.replica_count.num_elements(),
       .replica_width = route.replica_slots.dim(1),
       .slots_per_rank = route.slots_per_rank,
       .num_ranks = route.num_ranks,
       .capacity = route.capacity,
       .send_tokens = send_tokens.as<int32_t>(),
       .send_slots = send_slots.as<int32_t>(),
       .positions = positions.as<int32_t>(),
       .token_ids = has_token_ids ? route.token_ids.as<int32_t>() : nullptr,
       .load_counts = has_load_counts ? route.load_counts.as<int32_t>() : nullptr},
      stream_));
}

void CudaBackend::sample(const Tensor& logits, const Tensor& rows, const Tensor& banned,
                         const Tensor& out) {
  check_sample_args(logits, rows, banned, out);
  TIDAL_CHECK(logits.dim(1) <= cuda::kMaxSampleVocab, "sample: vocabulary of ", logits.dim(1),
              "; the kernel takes at most ", cuda::kMaxSampleVocab);
  activate();
  TIDAL_CUDA_CHECK(cuda::sample({.logits = logits.as<float>(),
                                 .num_rows = logits.dim(0),
                                 .vocab = logits.dim(1),
                                 .rows = static_cast<const SamplingRow*>(rows.data),
                                 .banned = banned.as<int32_t>(),
                                 .num_banned = num_banned_ids(banned),
                                 .out = static_cast<SampledToken*>(out.data)},
                                stream_));
}

}  // namespace tidal
