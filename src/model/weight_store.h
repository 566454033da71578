// WeightStore: turns checkpoint tensors into device tensors and owns whatever it had to copy. A
// synthetic checkpoint (dummy weights) is filled on the device instead, from counter-based random
// numbers keyed by (seed, tensor name, element index), so any slice of a tensor (an expert in
// whatever slot, on whatever rank) gets the same values as the whole tensor would.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/loader/safetensors.h"
#include "model/quantization_config.h"

namespace tidal {

// An FP8 weight's scales are the tensor named after it with "_scale_inv" (".weight" ->
// ".weight_scale_inv"), F32, BF16 or F16, one per block of the config's weight_block_size.
std::string block_scales_name(const std::string& weight_name);

class WeightStore {
 public:
  // `fp8`: the checkpoint's block quantization (config.fp8); without it an F8_E4M3 weight is
  // refused, since nothing says how its scales are laid out.
  WeightStore(Backend& backend, Checkpoint checkpoint,
              std::optional<Fp8BlockQuantization> fp8 = std::nullopt);

  const Checkpoint& checkpoint() const { return checkpoint_; }
  Backend& backend() const { return *backend_; }

  // The tensor, checked against `shape`, on the device (in place where the backend can read
  // host memory); an F8_E4M3 weight with its block scales (widened to F32). Throws tidal::Error
  // naming the tensor and file on any mismatch.
  Tensor get(const std::string& name, std::initializer_list<int64_t> shape);
  // A device buffer of `shape` and `dtype` owned by the store (for slot-ordered expert weights).
  // kF8E4M3 comes with room for the block scales of each matrix (the last two dims), rows from
  // `split` on (the up projection after the gate's) starting a fresh block row.
  Tensor allocate(DType dtype, std::initializer_list<int64_t> shape, int64_t split = 0);
  // Copies checkpoint matrix `src` ([rows, cols], or matrix `src_matrix` of a [n, rows, cols]
  // stack) into matrix `matrix` of `dst` ([m, rows', cols] or [rows', cols]) from row
  // `first_row`, with its block scales when FP8 (then first_row is 0 or dst's split).
  void copy_matrix_into(const Tensor& dst, int64_t matrix, int64_t first_row, const TensorInfo& src,
                        int64_t src_matrix = 0);
  // Copies `bytes` from byte `src_offset` of a checkpoint tensor into `dst` at `dst_offset`
  // (not for FP8: a byte range does not say which scales go with it).
  void copy_slice_into(const Tensor& dst, size_t dst_offset, const TensorInfo& src,
                       size_t src_offset, size_t bytes);
  // The checkpoint tensor itself, or, for an F8_E4M3 one, its dequantized values in `dtype`,
  // held by the store: for weights that are re-laid out at load (latent
  // attention's per-head splits), whose rows do not keep the checkpoint's blocks.
  const TensorInfo& dequantized(const TensorInfo& tensor, DType dtype);

  size_t bytes_copied() const { return bytes_copied_; }

 private:
  // Fills `bytes` of `dst` from byte `dst_offset` with the dummy values of `src`'s elements from
  // byte `src_offset` on.
  void fill_dummy(const Tensor& dst, size_t dst_offset, const TensorInfo& src, size_t src_offset,
                  size_t bytes);
  // The block quantization an F8_E4M3 tensor needs; throws naming it without one.
  const Fp8BlockQuantization& quantization_of(const TensorInfo& tensor) const;
  // `count` scales of `weight`'s scale tensor from element `first`, to `dst` (device, F32).
  void copy_scales(float* dst, const TensorInfo& weight, int64_t first, int64_t count);
  // The scale tensor of `weight`, checked: [matrices..., row_blocks, col_blocks].
  const TensorInfo& scales_of(const TensorInfo& weight);

  Backend* backend_;
  Checkpoint checkpoint_;
  std::optional<Fp8BlockQuantization> fp8_;
  std::vector<DeviceBuffer> owned_;
  std::vector<std::unique_ptr<TensorInfo>> host_tensors_;  // dequantized(): info and bytes
  std::vector<std::vector<std::byte>> host_bytes_;
  size_t bytes_copied_ = 0;
};

}  // namespace tidal
