// Dense kernels: grid-stride elementwise loops and the fallback GEMM launch.
#include "kernels/cuda/dense.cuh"
#include "kernels/cuda/gemm.cuh"

namespace tidal::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void embedding_kernel(const T* __restrict__ table, int64_t vocab_size, int64_t hidden,
                                 const int32_t* __restrict__ ids, int64_t num_tokens,
                                 __nv_bfloat16* __restrict__ out) {
  const int64_t total = num_tokens * hidden;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t id = ids[i / hidden];
    const float value =
        id >= 0 && id < vocab_size ? to_float(table[id * hidden + i % hidden]) : 0.0f;
    out[i] = __float2bfloat16(value);
  }
}

__global__ void add_kernel(const __nv_bfloat16* a, const __nv_bfloat16* b, int64_t count,
                           __nv_bfloat16* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = __float2bfloat16(__bfloat162float(a[i]) + __bfloat162float(b[i]));
  }
}

__global__ void add_sigmoid_gated_kernel(const __nv_bfloat16* a, const __nv_bfloat16* b,
                                         const float* gate_logits, int64_t width, int64_t count,
                                         __nv_bfloat16* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float gate = 1.0f / (1.0f + __expf(-gate_logits[i / width]));
    out[i] = __float2bfloat16(__bfloat162float(a[i]) + gate * __bfloat162float(b[i]));
  }
}

// V is the widest unit that divides the row size and the pointers' alignment.
template <typename V>
__global__ void gather_rows_kernel(const V* __restrict__ x, int64_t row_units, int64_t num_src_rows,
                                   const int32_t* __restrict__ row_ids, int64_t num_rows,
                                   V* __restrict__ out) {
  const int64_t total = num_rows * row_units;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t src = row_ids[i / row_units];
    V value{};
    if (src >= 0 && src < num_src_rows) value = x[src * row_units + i % row_units];
    out[i] = value;
  }
}

template <typename OutT, typename B>
__global__ void add_bias_kernel(OutT* out, int64_t num_rows, int64_t width,
                                const B* __restrict__ bias) {
  const int64_t total = num_rows * width;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    store_float(out + i, to_float(out[i]) + to_float(bias[i % width]));
  }
}

template <typename OutT>
cudaError_t add_bias_impl(OutT* out, int64_t num_rows, int64_t width, const void* bias,
                          ElementType bias_type, cudaStream_t stream) {
  if (num_rows * width == 0) return cudaSuccess;
  return dispatch_element(bias_type, [&](auto tag) {
    using B = decltype(tag);
    add_bias_kernel<OutT, B><<<grid_for(num_rows * width, kThreads), kThreads, 0, stream>>>(
        out, num_rows, width, static_cast<const B*>(bias));
    return cudaGetLastError();
  });
}

template <typename OutT>
cudaError_t linear_fallback_impl(const __nv_bfloat16* x, int64_t num_tokens, int64_t in_features,
                                 const void* weight, ElementType weight_type, int64_t out_features,
                                 OutT* out, cudaStream_t stream) {
  gemm::GemmArgs args;
  args.a = x;
  args.lda = in_features;
  args.num_rows = num_tokens;
  args.b = weight;
  args.n = out_features;
  args.k = in_features;
  args.out = out;
  args.ldo = out_features;
  const int64_t tiles = (num_tokens + gemm::kBlockM - 1) / gemm::kBlockM;
  return gemm::launch<OutT, gemm::Epilogue::kStore>(args, weight_type, tiles, stream);
}

}  // namespace

cudaError_t embedding_bf16(const void* table, ElementType table_type, int64_t vocab_size,
                           int64_t hidden, const int32_t* ids, int64_t num_tokens,
                           __nv_bfloat16* out, cudaStream_t stream) {
  if (num_tokens * hidden == 0) return cudaSuccess;
  return dispatch_element(table_type, [&](auto tag) {
    using T = decltype(tag);
    embedding_kernel<T><<<grid_for(num_tokens * hidden, kThreads), kThreads, 0, stream>>>(
        static_cast<const T*>(table), vocab_size, hidden, ids, num_tokens, out);
    return cudaGetLastError();
  });
}

cudaError_t add_bf16(const __nv_bfloat16* a, const __nv_bfloat16* b, int64_t count,
                     __nv_bfloat16* out, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  add_kernel<<<grid_for(count, kThreads), kThreads, 0, stream>>>(a, b, count, out);
  return cudaGetLastError();
}

cudaError_t add_sigmoid_gated_bf16(const __nv_bfloat16* a, const __nv_bfloat16* b,
                                   const float* gate_logits, int64_t num_rows, int64_t width,
                                   __nv_bfloat16* out, cudaStream_t stream) {
  const int64_t count = num_rows * width;
  if (count == 0) return cudaSuccess;
  add_sigmoid_gated_kernel<<<grid_for(count, kThreads), kThreads, 0, stream>>>(a, b, gate_logits,
                                                                               width, count, out);
  return cudaGetLastError();
}

cudaError_t gather_rows(const void* x, int64_t row_bytes, int64_t num_src_rows,
                        const int32_t* row_ids, int64_t num_rows, void* out, cudaStream_t stream) {
  if (num_rows == 0 || row_bytes == 0) return cudaSuccess;
  const auto alignment =
      static_cast<int64_t>(reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(out)) |
      row_bytes;
  auto run = [&](auto tag) {
    using V = decltype(tag);
    const int64_t units = row_bytes / static_cast<int64_t>(sizeof(V));
    gather_rows_kernel<V><<<grid_for(num_rows * units, kThreads), kThreads, 0, stream>>>(
        static_cast<const V*>(x), units, num_src_rows, row_ids, num_rows, static_cast<V*>(out));
    return cudaGetLastError();
  };
  if (alignment % 16 == 0) return run(int4{});
  if (alignment % 4 == 0) return run(int32_t{});
  if (alignment % 2 == 0) return run(int16_t{});
  return run(int8_t{});
}

cudaError_t add_bias(float* out, int64_t num_rows, int64_t width, const void* bias,
                     ElementType bias_type, cudaStream_t stream) {
  return add_bias_impl(out, num_rows, width, bias, bias_type, stream);
}
cudaError_t add_bias(__nv_bfloat16* out, int64_t num_rows, int64_t width, const void* bias,
                     ElementType bias_type, cudaStream_t stream) {
  return add_bias_impl(out, num_rows, width, bias, bias_type, stream);
}

cudaError_t linear_fallback(const __nv_bfloat16* x, int64_t num_tokens, int64_t in_features,
                            const void* weight, ElementType weight_type, int64_t out_features,
                            float* out, cudaStream_t stream) {
  return linear_fallback_impl(x, num_tokens, in_features, weight, weight_type, out_features, out,
                              stream);
}
cudaError_t linear_fallback(const __nv_bfloat16* x, int64_t num_tokens, int64_t in_features,
                            const void* weight, ElementType weight_type, int64_t out_features,
                            __nv_bfloat16* out, cudaStream_t stream) {
  return linear_fallback_impl(x, num_tokens, in_features, weight, weight_type, out_features, out,
                              stream);
}

}  // namespace tidal::cuda
