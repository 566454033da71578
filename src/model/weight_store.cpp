// WeightStore: zero-copy views on the CPU backend, uploads elsewhere, device fills for dummy
// weights.
#include "model/weight_store.h"

#include <cstring>

#include "common/counter_random.h"
#include "model/loader/safetensors_writer.h"

namespace tidal {
namespace {

// Dummy values small enough that activations stay finite through any number of layers: norm
// weights near 1 (RMSNorm keeps each layer's input at unit scale), every other weight in
// [-2^-5, 2^-5) (std ~0.018, about Hugging Face's initializer_range of 0.02). An FP8 weight
// spans [-256, 256) of its range and its block scales are 2^-13 (with a jitter below their
// precision), so that it dequantizes to the same interval.
RandomFill dummy_fill(const TensorInfo& tensor, uint64_t seed, int64_t first_index) {
  const uint64_t name_seed = counter_random::hash_name(tensor.name.c_str(), seed);
  if (tensor.dtype == DType::kF8E4M3) {
    return {.seed = name_seed, .first_index = first_index, .center = 0.0f, .half_width = 256.0f};
  }
  if (tensor.name.ends_with("_scale_inv")) {
    return {
        .seed = name_seed, .first_index = first_index, .center = 0x1p-13f, .half_width = 0x1p-40f};
  }
  const bool is_norm = tensor.name.ends_with("norm.weight");
  return {.seed = name_seed,
          .first_index = first_index,
          .center = is_norm ? 1.0f : 0.0f,
          .half_width = is_norm ? 0.0625f : 0.03125f};
}

}  // namespace

std::string block_scales_name(const std::string& weight_name) {
  return weight_name + "_scale_inv";
}

WeightStore::WeightStore(Backend& backend, Checkpoint checkpoint,
                         std::optional<Fp8BlockQuantization> fp8)
    : backend_(&backend), checkpoint_(std::move(checkpoint)), fp8_(std::move(fp8)) {
  if (fp8_) return;
  // Up front, naming the tensor: without a quantization_config nothing says how its scales are
  // laid out.
  for (const std::string& name : checkpoint_.names()) {
    const TensorInfo* tensor = checkpoint_.find(name);
    if (tensor->dtype == DType::kF8E4M3) quantization_of(*tensor);
  }
}

Tensor WeightStore::get(const std::string& name, std::initializer_list<int64_t> shape) {
  const TensorInfo& info = checkpoint_.tensor(name, shape);
  if (info.dtype == DType::kF8E4M3) {
    TIDAL_CHECK(shape.size() == 2, info.file, ": FP8 tensor '", name, "' is not a matrix");
    const Tensor tensor = allocate(DType::kF8E4M3, shape);
    copy_matrix_into(tensor, 0, 0, info);
    return tensor;
  }
  Tensor tensor{
      .data = nullptr, .dtype = *info.dtype, .shape = shape, .device = backend_->device()};
  if (backend_->shares_host_memory() && !checkpoint_.is_synthetic()) {
    // Read-only mapping: ops never write weights, so dropping const here is safe.
    tensor.data = const_cast<std::byte*>(info.data.data());
    return tensor;
  }
  owned_.push_back(backend_->allocate(info.data.size()));
  tensor.data = owned_.back().data();
  if (checkpoint_.is_synthetic()) {
    fill_dummy(tensor, 0, info, 0, info.data.size());
    return tensor;
  }
  backend_->copy_from_host(tensor.data, info.data.data(), info.data.size());
  bytes_copied_ += info.data.size();
  return tensor;
}

Tensor WeightStore::allocate(DType dtype, std::initializer_list<int64_t> shape, int64_t split) {
  Tensor tensor{.data = nullptr, .dtype = dtype, .shape = shape, .device = backend_->device()};
  owned_.push_back(backend_->allocate(tensor.num_bytes()));
  tensor.data = owned_.back().data();
  if (dtype == DType::kF8E4M3) {
    TIDAL_CHECK(fp8_.has_value(), "FP8 weights without a quantization_config");
    TIDAL_CHECK(tensor.shape.size() >= 2, "FP8 weights of fewer than two dims");
    const int64_t rows = tensor.shape[tensor.shape.size() - 2];
    const int64_t cols = tensor.shape.back();
    tensor.scales = {.data = nullptr,
                     .block_rows = fp8_->block_rows,
                     .block_cols = fp8_->block_cols,
                     .split = split};
    const int64_t matrices = tensor.num_elements() / (rows * cols);
    const auto bytes = static_cast<size_t>(matrices * tensor.scales.per_matrix(rows, cols)) * 4;
    owned_.push_back(backend_->allocate(bytes));
    tensor.scales.data = static_cast<float*>(owned_.back().data());
  }
  return tensor;
}

const Fp8BlockQuantization& WeightStore::quantization_of(const TensorInfo& tensor) const {
  if (!fp8_) {
    TIDAL_FAIL(tensor.file, ": tensor '", tensor.name,
               "' is F8_E4M3 but config.json has no quantization_config saying how it is scaled");
  }
  return *fp8_;
}

const TensorInfo& WeightStore::scales_of(const TensorInfo& weight) {
  const Fp8BlockQuantization& fp8 = quantization_of(weight);
  const size_t dims = weight.shape.size();
  TIDAL_CHECK(dims >= 2, weight.file, ": FP8 tensor '", weight.name, "' is not a matrix");
  std::vector<int64_t> expected(weight.shape.begin(), weight.shape.end() - 2);
  expected.push_back(BlockScales::blocks(weight.shape[dims - 2], fp8.block_rows));
  expected.push_back(BlockScales::blocks(weight.shape[dims - 1], fp8.block_cols));
  const TensorInfo& scales = checkpoint_.tensor(block_scales_name(weight.name), expected);
  TIDAL_CHECK(
      scales.dtype == DType::kF32 || scales.dtype == DType::kBF16 || scales.dtype == DType::kF16,
      scales.file, ": tensor '", scales.name, "' is ", scales.dtype_name,
      "; block scales are F32, BF16 or F16");
  return scales;
}

void WeightStore::copy_scales(float* dst, const TensorInfo& weight, int64_t first, int64_t count) {
  const TensorInfo& scales = scales_of(weight);
  const Tensor target{.data = dst,
                      .dtype = DType::kF32,
                      .shape = {count},
                      .device = backend_->device(),
                      .scales = {}};
  if (checkpoint_.is_synthetic()) {
    fill_dummy(target, 0, scales, static_cast<size_t>(first) * dtype_size(*scales.dtype),
               static_cast<size_t>(count) * 4);
    return;
  }
  const std::vector<float> values =
      decode_floats(scales, static_cast<size_t>(first), static_cast<size_t>(count));
  backend_->copy_from_host(dst, values.data(), values.size() * 4);
  bytes_copied_ += values.size() * dtype_size(*scales.dtype);
}

void WeightStore::copy_matrix_into(const Tensor& dst, int64_t matrix, int64_t first_row,
                                   const TensorInfo& src, int64_t src_matrix) {
  const size_t src_dims = src.shape.size();
  TIDAL_CHECK(src_dims == 2 || src_dims == 3, src.file, ": tensor '", src.name,
              "' is not a matrix or a stack of them");
  TIDAL_CHECK(dst.shape.size() == 2 || dst.shape.size() == 3, "copy into a tensor of ",
              dst.shape.size(), " dims");
  const int64_t rows = src.shape[src_dims - 2];
  const int64_t cols = src.shape[src_dims - 1];
  const int64_t dst_rows = dst.shape[dst.shape.size() - 2];
  TIDAL_CHECK(cols == dst.shape.back() && first_row + rows <= dst_rows, src.file, ": tensor '",
              src.name, "' does not fit the rows it is loaded into");
  const size_t element = dtype_size(dst.dtype);
  copy_slice_into(dst, static_cast<size_t>((matrix * dst_rows + first_row) * cols) * element, src,
                  static_cast<size_t>(src_matrix * rows * cols) * element,
                  static_cast<size_t>(rows * cols) * element);
  if (dst.dtype != DType::kF8E4M3) return;
  const BlockScales& scales = dst.scales;
  TIDAL_CHECK(first_row == 0 || first_row == scales.split, src.file, ": FP8 tensor '", src.name,
              "' loaded from row ", first_row, ", not at a projection's start");
  const int64_t row_blocks = BlockScales::blocks(rows, scales.block_rows);
  const int64_t col_blocks = scales.col_blocks(cols);
  // A stack's gate and up as one tensor ([n, 2 * inter, cols]) shares blocks between them unless
  // inter is a multiple of the block: refused then, never mixed up.
  TIDAL_CHECK(
      scales.row_block(first_row + rows - 1) - scales.row_block(first_row) + 1 == row_blocks,
      src.file, ": FP8 tensor '", src.name, "' has blocks of ", scales.block_rows,
      " rows that straddle its gate and up projections");
  copy_scales(scales.data + matrix * scales.per_matrix(dst_rows, cols) +
                  scales.row_block(first_row) * col_blocks,
              src, src_matrix * row_blocks * col_blocks, row_blocks * col_blocks);
}

void WeightStore::copy_slice_into(const Tensor& dst, size_t dst_offset, const TensorInfo& src,
                                  size_t src_offset, size_t bytes) {
  TIDAL_CHECK(src.dtype == dst.dtype, src.file, ": tensor '", src.name, "' is ", src.dtype_name,
              " but the other weights of its layer are ", dtype_name(dst.dtype));
  TIDAL_CHECK(src_offset + bytes <= src.data.size() && dst_offset + bytes <= dst.num_bytes(),
              "weight copy out of bounds");
  if (checkpoint_.is_synthetic()) {
    fill_dummy(dst, dst_offset, src, src_offset, bytes);
    return;
  }
  backend_->copy_from_host(static_cast<char*>(dst.data) + dst_offset, src.data.data() + src_offset,
                           bytes);
  bytes_copied_ += bytes;
}

const TensorInfo& WeightStore::dequantized(const TensorInfo& tensor, DType dtype) {
  if (tensor.dtype != DType::kF8E4M3) return tensor;
  TIDAL_CHECK(!checkpoint_.is_synthetic(), "dummy weights: '", tensor.name,
              "' must be made in the model's dtype, not FP8");
  const Fp8BlockQuantization& fp8 = quantization_of(tensor);
  const TensorInfo& scale_info = scales_of(tensor);
  TIDAL_CHECK(tensor.shape.size() == 2, tensor.file, ": FP8 tensor '", tensor.name,
              "' is not a matrix");
  const std::vector<float> scales = decode_floats(scale_info);
  const int64_t rows = tensor.shape[0];
  const int64_t cols = tensor.shape[1];
  const int64_t col_blocks = BlockScales::blocks(cols, fp8.block_cols);
  std::vector<float> values(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const float scale =
          scales[static_cast<size_t>((r / fp8.block_rows) * col_blocks + c / fp8.block_cols)];
      values[static_cast<size_t>(r * cols + c)] =
          fp8_e4m3_to_f32(static_cast<uint8_t>(tensor.data[static_cast<size_t>(r * cols + c)])) *
          scale;
    }
  }
  host_bytes_.push_back(encode_floats(values, dtype));
  auto info = std::make_unique<TensorInfo>(tensor);
  info->dtype = dtype;
  info->dtype_name = std::string(dtype_name(dtype));
  info->data = host_bytes_.back();
  host_tensors_.push_back(std::move(info));
  return *host_tensors_.back();
}

void WeightStore::fill_dummy(const Tensor& dst, size_t dst_offset, const TensorInfo& src,
                             size_t src_offset, size_t bytes) {
  const size_t element = dtype_size(dst.dtype);
  TIDAL_CHECK(dst_offset % element == 0 && src_offset % element == 0 && bytes % element == 0,
              "dummy weights: a slice of '", src.name, "' not on element boundaries");
  const Tensor slice{.data = static_cast<char*>(dst.data) + dst_offset,
                     .dtype = dst.dtype,
                     .shape = {static_cast<int64_t>(bytes / element)},
                     .device = dst.device};
  backend_->fill_random(slice, dummy_fill(src, checkpoint_.synthetic_seed(),
                                          static_cast<int64_t>(src_offset / element)));
}

}  // namespace tidal
