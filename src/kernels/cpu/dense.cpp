// CPU reference kernels for the dense ops.
#include "kernels/cpu/dense.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/element.h"

namespace tidal::cpu {

void linear(const float* x, int64_t num_tokens, const WeightMatrix& weight, const void* bias,
            DType bias_dtype, float* out) {
  const int64_t in_features = weight.cols;
  const int64_t out_features = weight.rows;
  // Convert each weight row once and reuse it for every token: weights dominate the bytes.
  thread_local std::vector<float> row;
  row.resize(static_cast<size_t>(in_features));
  float bias_value = 0;
  for (int64_t n = 0; n < out_features; ++n) {
    weight.row(n, row.data());
    if (bias != nullptr) {
      row_to_f32(static_cast<const char*>(bias) + static_cast<size_t>(n) * dtype_size(bias_dtype),
                 bias_dtype, 1, &bias_value);
    }
    for (int64_t t = 0; t < num_tokens; ++t) {
      out[t * out_features + n] = dot(x + t * in_features, row.data(), in_features) + bias_value;
    }
  }
}

void head_linear(const float* x, int64_t num_tokens, int64_t num_heads, int64_t k,
                 const void* weight, DType weight_dtype, int64_t n, bool weight_k_major,
                 float* out) {
  thread_local std::vector<float> head_weight, head_x, head_out, column;
  head_weight.resize(static_cast<size_t>(n * k));
  head_x.resize(static_cast<size_t>(num_tokens * k));
  head_out.resize(static_cast<size_t>(num_tokens * n));
  const size_t head_bytes = static_cast<size_t>(n * k) * dtype_size(weight_dtype);
  for (int64_t h = 0; h < num_heads; ++h) {
    const char* source = static_cast<const char*>(weight) + static_cast<size_t>(h) * head_bytes;
    if (weight_k_major) {
      // [k, n] rows: gathered into [n, k] so each output is the same dot as linear()'s.
      column.resize(static_cast<size_t>(n));
      for (int64_t i = 0; i < k; ++i) {
        row_to_f32(source + static_cast<size_t>(i * n) * dtype_size(weight_dtype), weight_dtype, n,
                   column.data());
        for (int64_t o = 0; o < n; ++o) head_weight[o * k + i] = column[o];
      }
    } else {
      row_to_f32(source, weight_dtype, n * k, head_weight.data());
    }
    for (int64_t t = 0; t < num_tokens; ++t) {
      std::copy_n(x + (t * num_heads + h) * k, k, head_x.data() + t * k);
    }
    linear(head_x.data(), num_tokens,
           {.data = head_weight.data(), .dtype = DType::kF32, .rows = n, .cols = k, .scales = {}},
           nullptr, DType::kF32, head_out.data());
    for (int64_t t = 0; t < num_tokens; ++t) {
      std::copy_n(head_out.data() + t * n, n, out + (t * num_heads + h) * n);
    }
  }
}

void embedding(const void* table, DType table_dtype, int64_t vocab_size, int64_t hidden,
               const int32_t* ids, int64_t num_tokens, float* out) {
  const size_t row_bytes = static_cast<size_t>(hidden) * dtype_size(table_dtype);
  for (int64_t t = 0; t < num_tokens; ++t) {
    if (ids[t] == -1) {
      std::fill_n(out + t * hidden, hidden, 0.0f);  // a padding token
      continue;
    }
    TIDAL_CHECK(ids[t] >= 0 && ids[t] < vocab_size, "token id ", ids[t], " outside vocab of ",
                vocab_size);
    row_to_f32(static_cast<const char*>(table) + static_cast<size_t>(ids[t]) * row_bytes,
               table_dtype, hidden, out + t * hidden);
  }
}

void rms_norm(const float* x, int64_t num_rows, int64_t width, const void* weight,
              DType weight_dtype, float eps, float* out) {
  thread_local std::vector<float> w;
  w.resize(static_cast<size_t>(width));
  row_to_f32(weight, weight_dtype, width, w.data());
  for (int64_t r = 0; r < num_rows; ++r)
    rms_norm_row(x + r * width, width, w.data(), eps, out + r * width);
}

void add(const float* a, const float* b, int64_t count, float* out) {
  for (int64_t i = 0; i < count; ++i) out[i] = a[i] + b[i];
}

void add_sigmoid_gated(const float* a, const float* b, const float* gate_logits, int64_t num_rows,
                       int64_t width, float* out) {
  for (int64_t r = 0; r < num_rows; ++r) {
    const float gate = 1.0f / (1.0f + std::exp(-gate_logits[r]));
    for (int64_t i = r * width; i < (r + 1) * width; ++i) out[i] = a[i] + gate * b[i];
  }
}

void add_rms_norm(float* residual, const float* x, int64_t num_rows, int64_t width,
                  const void* weight, DType weight_dtype, float eps, float* out) {
  thread_local std::vector<float> w;
  w.resize(static_cast<size_t>(width));
  row_to_f32(weight, weight_dtype, width, w.data());
  for (int64_t r = 0; r < num_rows; ++r) {
    float* row = residual + r * width;
    add(row, x + r * width, width, row);
    rms_norm_row(row, width, w.data(), eps, out + r * width);
  }
}

void silu_and_mul(const float* gate_up, int64_t num_tokens, int64_t width, float* out) {
  for (int64_t t = 0; t < num_tokens; ++t) {
    const float* gate = gate_up + t * 2 * width;
    const float* up = gate + width;
    for (int64_t i = 0; i < width; ++i) {
      out[t * width + i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
    }
  }
}

void gather_rows(const float* x, int64_t width, int64_t num_src_rows, const int32_t* row_ids,
                 int64_t num_rows, float* out) {
  for (int64_t r = 0; r < num_rows; ++r) {
    const int64_t src = row_ids[r];
    float* row = out + r * width;
    if (src < 0 || src >= num_src_rows) {
      std::fill_n(row, width, 0.0f);
      continue;
    }
    std::copy_n(x + src * width, width, row);
  }
}

}  // namespace tidal::cpu
