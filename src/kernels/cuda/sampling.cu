// Sampling, one block per row. Pass A finds the greedy token, the row's value range and (for
// logprobs) its log-sum-exp. Rows that need more narrow a cut over the order keys of their logits
// (8 ranges a pass) until at most max_candidates values lie above it, gather those into shared
// memory, sort them, and finish top-k, top-p, top-n and the draw there. A row whose candidates do
// not fit (a large top_k, a flat top-p, many ties) takes the global path: each threshold by the
// same search, narrowed until the values around it fit in shared memory, then the draw over the
// whole row.
#include <cmath>
#include <cstdint>

#include "common/counter_random.h"
#include "kernels/cuda/sampling.cuh"

namespace tidal::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kPivots = 7;           // cuts tried per search pass
constexpr int kSlots = kPivots + 1;  // the range's low end, then the pivots
// Above the largest Gumbel draw, -log(-log(1 - 2^-24)) = 16.64: a value whose s + kGumbelMax is
// below the best draw so far cannot win, and skips its hash and logs.
constexpr float kGumbelMax = 17.0f;
// Below the smallest, -log(-log(2^-24)) = -2.81: the id of the largest s draws at least
// max_s + kGumbelMin, so the winner does too.
constexpr float kGumbelMin = -3.0f;
// Search passes that split the range evenly in value (fast on a bell of logits) before splitting
// it evenly in order keys (which resolves any range in 11 passes).
constexpr int kValuePasses = 4;
constexpr uint32_t kFullMask = 0xffffffffu;

// Order-preserving image of a float, -0 mapped to +0 (the CPU reference compares the same way).
__device__ __forceinline__ uint32_t order_key(float value) {
  uint32_t bits = __float_as_uint(value);
  if ((bits << 1) == 0) bits = 0;
  return (bits & 0x80000000u) != 0 ? ~bits : bits | 0x80000000u;
}
__device__ __forceinline__ float key_value(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) != 0 ? key & 0x7fffffffu : ~key);
}
// Larger is preferred: a larger key, then a lower id. 0 ranks below every id (ids < 2^31) and
// reads back as id -1.
__device__ __forceinline__ uint64_t make_rank(uint32_t key, int32_t id) {
  return (static_cast<uint64_t>(key) << 32) | (0xffffffffu - static_cast<uint32_t>(id));
}
__device__ __forceinline__ int32_t rank_id(uint64_t rank) {
  return static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(rank));
}
__device__ __forceinline__ uint32_t rank_key(uint64_t rank) {
  return static_cast<uint32_t>(rank >> 32);
}

__device__ __forceinline__ float gumbel(uint64_t row_key, int32_t id) {
  return -logf(-logf(counter_random::sampling_uniform_at(row_key, id)));
}

// Block-wide state and reduction scratch (static shared memory).
struct Shared {
  uint64_t scratch[kWarps];
  int32_t slots_i[kWarps][2 * kSlots];
  float slots_f[kWarps][kSlots];
  int32_t slot_sums_i[2 * kSlots];
  float slot_sums_f[kSlots];
  int32_t count;
  float value;
  int32_t top_ids[kMaxTopLogprobs];
  float top_values[kMaxTopLogprobs];
};

struct UMax64 {
  __device__ uint64_t operator()(uint64_t a, uint64_t b) const { return a > b ? a : b; }
};
struct UMin32 {
  __device__ uint32_t operator()(uint32_t a, uint32_t b) const { return a < b ? a : b; }
};
struct UMax32 {
  __device__ uint32_t operator()(uint32_t a, uint32_t b) const { return a > b ? a : b; }
};
struct IMin32 {
  __device__ int32_t operator()(int32_t a, int32_t b) const { return a < b ? a : b; }
};
struct Sum {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return a + b;
  }
};
struct FMax {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

template <typename T, typename Op>
__device__ __forceinline__ T warp_reduce(T value, Op op) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    value = op(value, __shfl_xor_sync(kFullMask, value, offset));
  }
  return value;
}

// Every thread gets op over the block's values, combined in a fixed order (deterministic).
template <typename T, typename Op>
__device__ T block_reduce(T value, Op op, Shared& sh) {
  static_assert(sizeof(T) <= sizeof(uint64_t));
  T* scratch = reinterpret_cast<T*>(sh.scratch);
  value = warp_reduce(value, op);
  __syncthreads();  // earlier readers of the scratch are done
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = value;
  __syncthreads();
  T result = scratch[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) result = op(result, scratch[w]);
  return result;
}

// The sum of the values of the threads before this one; `total` gets the block's sum.
template <typename T>
__device__ T block_exclusive_scan(T value, T& total, Shared& sh) {
  T* scratch = reinterpret_cast<T*>(sh.scratch);
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  T inclusive = value;
#pragma unroll
  for (int offset = 1; offset < 32; offset *= 2) {
    const T other = __shfl_up_sync(kFullMask, inclusive, offset);
    if (lane >= offset) inclusive += other;
  }
  T exclusive = __shfl_up_sync(kFullMask, inclusive, 1);
  if (lane == 0) exclusive = T{};
  __syncthreads();
  if (lane == 31) scratch[warp] = inclusive;
  __syncthreads();
  T before = T{};
  T sum = T{};
  for (int w = 0; w < kWarps; ++w) {
    if (w < warp) before += scratch[w];
    sum += scratch[w];
  }
  total = sum;
  return before + exclusive;
}

// Calls f(id, logit) for every logit of the row, kLoads float4 loads in flight per thread (1 for
// bodies heavy enough to spill registers otherwise).
template <int kLoads = 4, typename F>
__device__ __forceinline__ void for_each_logit(const float* __restrict__ row, int32_t vocab,
                                               bool vec4, F&& f) {
  if (vec4) {
    const auto* row4 = reinterpret_cast<const float4*>(row);
    const int32_t quads = vocab / 4;
    int32_t q = static_cast<int32_t>(threadIdx.x);
    for (; q + (kLoads - 1) * kThreads < quads; q += kLoads * kThreads) {
      float4 values[kLoads];
#pragma unroll
      for (int u = 0; u < kLoads; ++u) values[u] = row4[q + u * kThreads];
#pragma unroll
      for (int u = 0; u < kLoads; ++u) {
        const int32_t id = (q + u * kThreads) * 4;
        f(id, values[u].x);
        f(id + 1, values[u].y);
        f(id + 2, values[u].z);
        f(id + 3, values[u].w);
      }
    }
    for (; q < quads; q += kThreads) {
      const float4 value = row4[q];
      f(q * 4, value.x);
      f(q * 4 + 1, value.y);
      f(q * 4 + 2, value.z);
      f(q * 4 + 3, value.w);
    }
  } else {
    for (int32_t id = static_cast<int32_t>(threadIdx.x); id < vocab; id += kThreads) f(id, row[id]);
  }
}

// A row's view of its logits and banned ids.
struct RowView {
  const float* __restrict__ logits = nullptr;
  int32_t vocab = 0;
  bool vec4 = false;
  const uint32_t* banned_bits = nullptr;  // null: nothing banned
  __device__ bool allowed(int32_t id) const {
    return banned_bits == nullptr || ((banned_bits[id >> 5] >> (id & 31)) & 1u) == 0;
  }
};

struct PassA {
  uint64_t greedy = 0;  // rank of the best allowed logit; 0: none allowed
  int32_t num_allowed = 0;
  uint32_t min_key = 0;
  uint32_t max_key = 0;
  float log_total = 0.0f;  // log-sum-exp of every logit
};

// One read of the row: what every row needs, plus the value range (kRange) and the log-sum-exp
// (kLogprobs) when asked. Greedy rows without logprobs stop here.
template <bool kBanned, bool kRange, bool kLogprobs>
__device__ __noinline__ PassA pass_a(const RowView& row, Shared& sh) {
  uint64_t greedy = 0;
  int32_t num_allowed = 0;
  uint32_t min_key = 0xffffffffu;
  uint32_t max_key = 0;
  float max_logit = -INFINITY;
  float total = 0.0f;  // of exp(logit - max_logit), w = 1 where equal (infinite logits)
  for_each_logit(row.logits, row.vocab, row.vec4, [&](int32_t id, float value) {
    const uint32_t key = order_key(value);
    const bool ok = !kBanned || row.allowed(id);
    if (kBanned) num_allowed += ok ? 1 : 0;
    const uint64_t rank = make_rank(key, id);
    if (ok && rank > greedy) greedy = rank;
    if (kRange) {
      min_key = min(min_key, key);
      max_key = max(max_key, key);
    }
    if (kLogprobs) {
      if (value > max_logit) {
        total = total * expf(max_logit - value) + 1.0f;
        max_logit = value;
      } else {
        total += value == max_logit ? 1.0f : expf(value - max_logit);
      }
    }
  });
  PassA a;
  a.greedy = block_reduce(greedy, UMax64{}, sh);
  a.num_allowed = kBanned ? block_reduce(num_allowed, Sum{}, sh) : row.vocab;
  if (kRange) {
    a.min_key = block_reduce(min_key, UMin32{}, sh);
    a.max_key = block_reduce(max_key, UMax32{}, sh);
  }
  if (kLogprobs) {
    const float block_max = block_reduce(max_logit, FMax{}, sh);
    const float scaled =
        max_logit == block_max ? total : total * expf(max_logit - block_max);  // 0 for -inf
    a.log_total = block_max + logf(block_reduce(scaled, Sum{}, sh));
  }
  return a;
}

template <bool kBanned, bool kRange>
__device__ PassA pass_a(const RowView& row, bool logprobs, Shared& sh) {
  return logprobs ? pass_a<kBanned, kRange, true>(row, sh)
                  : pass_a<kBanned, kRange, false>(row, sh);
}

// A search for the largest cut (an order key) at which the values at or above it still meet the
// goal: at least need_all values, need_members members (allowed ids with s >= floor_s), and with
// kMass a member mass exp(s - max_s) of at least top_p times the members' total.
struct Goal {
  int32_t need_all = 0;
  int32_t need_members = 0;
  float top_p = 1.0f;
  bool floor = false;
  float floor_s = -INFINITY;
  // > 0: stop as soon as the cut holds at most this many values (the candidates fit).
  int32_t cap = 0;
  // > 0: stop as soon as at most this many values lie between the ends of the range.
  int32_t range_cap = 0;
};

// Where a search stopped: the range [key, hi) and what lies at or above each end.
struct Cut {
  uint32_t key = 0;
  uint64_t hi = 0;
  int32_t num_above = 0;  // values with key >= the cut
  int32_t num_at_hi = 0;  // values with key >= hi
  int32_t members_at_hi = 0;
  float mass_at_hi = 0.0f;
  bool measured = false;    // a pass ran: total_mass and target hold
  float total_mass = 0.0f;  // the members' total (kMass)
  float target = 0.0f;      // top_p * total_mass
  bool narrowed = false;    // stopped by range_cap (else the key is exact, or cap was met)
};

__device__ void block_sum_slots(int32_t (&all)[kSlots], int32_t (&members)[kSlots],
                                float (&mass)[kSlots], bool with_mass, Shared& sh) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int warp = static_cast<int>(threadIdx.x) / 32;
#pragma unroll
  for (int j = 0; j < kSlots; ++j) {
    all[j] = warp_reduce(all[j], Sum{});
    members[j] = warp_reduce(members[j], Sum{});
    if (with_mass) mass[j] = warp_reduce(mass[j], Sum{});
  }
  __syncthreads();
  if (lane == 0) {
#pragma unroll
    for (int j = 0; j < kSlots; ++j) {
      sh.slots_i[warp][j] = all[j];
      sh.slots_i[warp][kSlots + j] = members[j];
      sh.slots_f[warp][j] = mass[j];
    }
  }
  __syncthreads();
  if (threadIdx.x < 2 * kSlots) {
    int32_t sum = 0;
    for (int w = 0; w < kWarps; ++w) sum += sh.slots_i[w][threadIdx.x];
    sh.slot_sums_i[threadIdx.x] = sum;
  } else if (threadIdx.x < 3 * kSlots) {
    const int j = static_cast<int>(threadIdx.x) - 2 * kSlots;
    float sum = 0.0f;
    for (int w = 0; w < kWarps; ++w) sum += sh.slots_f[w][j];
    sh.slot_sums_f[j] = sum;
  }
  __syncthreads();
#pragma unroll
  for (int j = 0; j < kSlots; ++j) {
    all[j] = sh.slot_sums_i[j];
    members[j] = sh.slot_sums_i[kSlots + j];
    mass[j] = sh.slot_sums_f[j];
  }
}

// The range [lo, hi) of cuts holds the answer: lo meets the goal (at first the smallest key, where
// everything counts), hi does not. Each pass counts the values at or above 7 pivots spread over
// the range and keeps the sub-range where the goal stops being met: the first passes split the
// range evenly in value, the rest evenly in keys, so 15 passes at most resolve the 32 bits. With
// a cap it stops once the cut at lo holds few enough values, with a range cap once the range does.
template <bool kMass>
__device__ __noinline__ Cut search(const RowView& row, uint32_t min_key, uint32_t max_key,
                                   float temperature, float max_s, const Goal& goal, Shared& sh) {
  uint64_t lo = min_key;
  uint64_t hi = uint64_t{max_key} + 1;
  Cut cut;
  cut.key = min_key;
  cut.hi = hi;
  cut.num_above = row.vocab;
  for (int pass = 0; hi - lo > 1; ++pass) {
    if (goal.cap > 0 && cut.num_above <= goal.cap) break;
    if (goal.range_cap > 0 && cut.num_above - cut.num_at_hi <= goal.range_cap) {
      cut.narrowed = true;
      break;
    }
    const uint64_t width = hi - lo;
    uint32_t pivots[kSlots];
    const float lo_value = key_value(static_cast<uint32_t>(lo));
    const float hi_value = key_value(static_cast<uint32_t>(hi - 1));
    if (pass < kValuePasses && width >= 2 * kSlots && isfinite(lo_value) && isfinite(hi_value)) {
      pivots[0] = static_cast<uint32_t>(lo);
#pragma unroll
      for (int j = 1; j < kSlots; ++j) {
        const double value = lo_value + (static_cast<double>(hi_value) - lo_value) * j / kSlots;
        const uint64_t key = order_key(static_cast<float>(value));
        pivots[j] = static_cast<uint32_t>(key < lo + 1 ? lo + 1 : key > hi - 1 ? hi - 1 : key);
      }
    } else {
#pragma unroll
      for (int j = 0; j < kSlots; ++j) pivots[j] = static_cast<uint32_t>(lo + width * j / kSlots);
    }
    int32_t all[kSlots] = {};
    int32_t members[kSlots] = {};
    float mass[kSlots] = {};
    for_each_logit<1>(row.logits, row.vocab, row.vec4, [&](int32_t id, float value) {
      const uint32_t key = order_key(value);
      if (key < pivots[0]) return;
      bool member = row.allowed(id);
      float weight = 0.0f;
      if (kMass || goal.floor) {
        const float s = value / temperature;
        if (goal.floor) member = member && s >= goal.floor_s;
        if (kMass && member) weight = s == max_s ? 1.0f : expf(s - max_s);
      }
#pragma unroll
      for (int j = 0; j < kSlots; ++j) {
        if (key >= pivots[j]) {
          all[j] += 1;
          members[j] += member ? 1 : 0;
          if (kMass) mass[j] += weight;
        }
      }
    });
    block_sum_slots(all, members, mass, kMass, sh);
    if (!cut.measured) {
      cut.measured = true;
      cut.total_mass = mass[0];
      cut.target = goal.top_p * mass[0];
    }
    cut.num_above = all[0];
#pragma unroll
    for (int j = 1; j < kSlots; ++j) {
      const bool met = all[j] >= goal.need_all && members[j] >= goal.need_members &&
                       (!kMass || mass[j] >= cut.target);
      if (met) {
        if (pivots[j] > lo) {
          lo = pivots[j];
          cut.num_above = all[j];
        }
      } else if (pivots[j] < hi) {
        hi = pivots[j];
        cut.num_at_hi = all[j];
        cut.members_at_hi = members[j];
        cut.mass_at_hi = mass[j];
      }
    }
    cut.key = static_cast<uint32_t>(lo);
    cut.hi = hi;
  }
  return cut;
}

// Gathers the values with key in [lo, hi) into candidates[0, count) as ranks, sorted best first;
// returns the count. The caller made sure it is at most cap (a power of two).
__device__ __noinline__ int32_t gather_sorted(const RowView& row, uint32_t lo, uint64_t hi,
                                              uint64_t* candidates, int32_t cap, Shared& sh) {
  __syncthreads();
  if (threadIdx.x == 0) sh.count = 0;
  __syncthreads();
  for_each_logit(row.logits, row.vocab, row.vec4, [&](int32_t id, float value) {
    const uint32_t key = order_key(value);
    if (key >= lo && key < hi) {
      const int32_t at = atomicAdd(&sh.count, 1);
      if (at < cap) candidates[at] = make_rank(key, id);
    }
  });
  __syncthreads();
  const int32_t count = min(sh.count, cap);
  int32_t padded = 1;
  while (padded < count) padded *= 2;
  for (int32_t i = count + static_cast<int32_t>(threadIdx.x); i < padded; i += kThreads) {
    candidates[i] = 0;
  }
  __syncthreads();
  // Bitonic sort, descending.
  for (int32_t size = 2; size <= padded; size *= 2) {
    for (int32_t stride = size / 2; stride > 0; stride /= 2) {
      for (int32_t i = static_cast<int32_t>(threadIdx.x); i < padded; i += kThreads) {
        const int32_t partner = i ^ stride;
        if (partner > i) {
          const uint64_t a = candidates[i];
          const uint64_t b = candidates[partner];
          const bool descending = (i & size) == 0;
          if (descending ? a < b : a > b) {
            candidates[i] = b;
            candidates[partner] = a;
          }
        }
      }
      __syncthreads();
    }
  }
  return count;
}

// The n best ranks of the whole row, one pass each (when the candidates did not fit).
__device__ __noinline__ void top_by_passes(const RowView& row, int32_t n, Shared& sh) {
  uint64_t previous = 0;
  for (int32_t j = 0; j < n; ++j) {
    uint64_t best = 0;
    for_each_logit(row.logits, row.vocab, row.vec4, [&](int32_t id, float value) {
      const uint64_t rank = make_rank(order_key(value), id);
      if ((j == 0 || rank < previous) && rank > best) best = rank;
    });
    best = block_reduce(best, UMax64{}, sh);
    if (threadIdx.x == 0) {
      sh.top_ids[j] = rank_id(best);
      sh.top_values[j] = key_value(rank_key(best));
    }
    previous = best;
  }
}

// The exact cut of a goal without need_all: the search narrows the range until the values in it
// fit in the candidates (or resolves it), which are then sorted and walked from the top, adding
// to what lies above the range until the goal is met.
template <bool kMass>
__device__ __noinline__ uint32_t exact_cut(const RowView& row, uint32_t min_key, uint32_t max_key,
                                           float temperature, float max_s, Goal goal,
                                           uint64_t* candidates, int32_t cap, Shared& sh) {
  goal.need_all = 0;
  goal.cap = 0;
  goal.range_cap = cap;
  const Cut cut = search<kMass>(row, min_key, max_key, temperature, max_s, goal, sh);
  if (!cut.narrowed) return cut.key;
  const int32_t count = gather_sorted(row, cut.key, cut.hi, candidates, cap, sh);
  const int32_t per_thread = (count + kThreads - 1) / kThreads;
  const int32_t begin = min(count, static_cast<int32_t>(threadIdx.x) * per_thread);
  const int32_t end = min(count, begin + per_thread);
  // A candidate's weight (kMass) and whether it is a member, as the search counted them.
  const auto member_weight = [&](int32_t j, float& weight) {
    const int32_t id = rank_id(candidates[j]);
    const float s = key_value(rank_key(candidates[j])) / temperature;
    const bool member = row.allowed(id) && (!goal.floor || s >= goal.floor_s);
    weight = kMass && member ? (s == max_s ? 1.0f : expf(s - max_s)) : 0.0f;
    return member;
  };
  int32_t members_here = 0;
  float mass_here = 0.0f;
  for (int32_t j = begin; j < end; ++j) {
    float weight = 0.0f;
    members_here += member_weight(j, weight) ? 1 : 0;
    mass_here += weight;
  }
  int32_t members_total = 0;
  float mass_total = 0.0f;
  int32_t members = cut.members_at_hi + block_exclusive_scan(members_here, members_total, sh);
  float mass = kMass ? cut.mass_at_hi + block_exclusive_scan(mass_here, mass_total, sh) : 0.0f;
  // Without a search pass the range is the whole row: its total is the candidates'.
  const float target = cut.measured ? cut.target : goal.top_p * (cut.mass_at_hi + mass_total);
  int32_t first_met = 0x7fffffff;
  for (int32_t j = begin; j < end; ++j) {
    float weight = 0.0f;
    if (!member_weight(j, weight)) continue;
    members += 1;
    mass += weight;
    if (members >= goal.need_members && (!kMass || mass >= target)) {
      first_met = j;
      break;
    }
  }
  first_met = block_reduce(first_met, IMin32{}, sh);
  // None met (the sums round differently from the search's): the range's lowest value, which the
  // search found to meet the goal.
  return rank_key(candidates[first_met < count ? first_met : count - 1]);
}

// Every id's draw s + g over the kept ids of the whole row. A value whose s + kGumbelMax is below
// max_s + kGumbelMin (or this thread's best so far) cannot win: it skips its hash and logs.
__device__ __noinline__ uint64_t draw_over_row(const RowView& row, float temperature, float min_s,
                                               float max_s, uint64_t row_key, Shared& sh) {
  uint64_t best = 0;
  float best_value = max_s + kGumbelMin;
  for_each_logit(row.logits, row.vocab, row.vec4, [&](int32_t id, float value) {
    const float s = value / temperature;
    if (!(s >= min_s) || s + kGumbelMax < best_value || !row.allowed(id)) return;
    const float drawn = s + gumbel(row_key, id);
    const uint64_t rank = make_rank(order_key(drawn), id);
    if (rank > best) {
      best = rank;
      best_value = drawn;
    }
  });
  return block_reduce(best, UMax64{}, sh);
}

__global__ void __launch_bounds__(kThreads, 2) sample_kernel(const SampleParams p) {
  extern __shared__ __align__(16) unsigned char dynamic_shared[];
  __shared__ Shared sh;
  const auto vocab = static_cast<int32_t>(p.vocab);
  const int64_t r = blockIdx.x;
  const SamplingRow config = p.rows[r];
  const int32_t words = (vocab + 31) / 32;
  auto* banned_bits = reinterpret_cast<uint32_t*>(dynamic_shared);
  auto* candidates = reinterpret_cast<uint64_t*>(dynamic_shared + (words * 4 + 15) / 16 * 16);
  const int32_t cap = p.max_candidates;

  // The banned ids as a bitmap over the vocabulary, when the row has any.
  const int64_t banned_begin = max(int64_t{0}, int64_t{config.banned_begin});
  const int64_t banned_end =
      min(p.num_banned, int64_t{config.banned_begin} + max(0, config.banned_count));
  const bool has_banned = p.banned != nullptr && banned_end > banned_begin;
  if (has_banned) {
    for (int32_t w = static_cast<int32_t>(threadIdx.x); w < words; w += kThreads) {
      banned_bits[w] = 0;
    }
    __syncthreads();
    for (int64_t i = banned_begin + threadIdx.x; i < banned_end; i += kThreads) {
      const int32_t id = p.banned[i];
      if (id >= 0 && id < vocab) atomicOr(&banned_bits[id >> 5], 1u << (id & 31));
    }
    __syncthreads();
  }
  RowView row;
  row.logits = p.logits + r * p.vocab;
  row.vocab = vocab;
  row.vec4 = vocab % 4 == 0 && reinterpret_cast<uintptr_t>(row.logits) % 16 == 0;
  row.banned_bits = has_banned ? banned_bits : nullptr;

  const bool random = config.temperature > 0.0f;
  const float temperature = config.temperature;
  const bool logprobs = config.num_top_logprobs >= 0;
  const int32_t num_top = logprobs ? min(min(config.num_top_logprobs, kMaxTopLogprobs), vocab) : 0;
  const bool range = num_top > 0 || (random && (config.top_k > 0 || config.top_p < 1.0f));
  PassA a;
  if (has_banned) {
    a = range ? pass_a<true, true>(row, logprobs, sh) : pass_a<true, false>(row, logprobs, sh);
  } else {
    a = range ? pass_a<false, true>(row, logprobs, sh) : pass_a<false, false>(row, logprobs, sh);
  }
  int32_t token = rank_id(a.greedy);

  const bool draw = random && a.num_allowed > 0;
  const int32_t top_k = draw && config.top_k > 0 && config.top_k < a.num_allowed ? config.top_k : 0;
  const bool top_p = draw && config.top_p < 1.0f;
  const float max_s = key_value(rank_key(a.greedy)) / temperature;

  // Candidates in shared memory: the values at or above a cut that keeps what top-n, top-k and
  // (without top-k) top-p need.
  int32_t num_candidates = 0;
  bool gathered = false;
  float total_mass = 0.0f;  // the allowed ids' mass, from the search (top-p without top-k)
  if ((num_top > 0 || top_k > 0 || top_p) && cap > 0) {
    bool fits = false;
    uint32_t cut = 0;
    if (vocab <= cap) {
      fits = true;
    } else if (top_k <= cap && num_top <= cap) {
      Goal goal;
      goal.need_all = num_top;
      goal.need_members = max(top_k, top_p ? 1 : 0);
      goal.top_p = config.top_p;
      goal.cap = cap;
      const Cut found =
          top_p && top_k == 0
              ? search<true>(row, a.min_key, a.max_key, temperature, max_s, goal, sh)
              : search<false>(row, a.min_key, a.max_key, temperature, max_s, goal, sh);
      fits = found.num_above <= cap;
      cut = found.key;
      total_mass = found.total_mass;
    }
    if (fits) {
      num_candidates = gather_sorted(row, cut, uint64_t{1} << 32, candidates, cap, sh);
      gathered = true;
    }
  }

  if (num_top > 0) {
    if (gathered) {
      if (static_cast<int32_t>(threadIdx.x) < num_top) {
        const uint64_t rank = candidates[threadIdx.x];
        sh.top_ids[threadIdx.x] = rank_id(rank);
        sh.top_values[threadIdx.x] = key_value(rank_key(rank));
      }
    } else {
      top_by_passes(row, num_top, sh);
    }
  }

  if (draw) {
    const uint64_t row_key = counter_random::sampling_row_key(config.seed, config.counter);
    float min_s_k = -INFINITY;  // top-k's threshold on s
    float min_s_p = -INFINITY;  // top-p's
    bool have_k = top_k == 0;
    bool have_p = !top_p;
    bool in_candidates = false;  // every kept id is a candidate
    if (gathered) {
      const auto s_at = [&](int32_t j) { return key_value(rank_key(candidates[j])) / temperature; };
      const bool whole_row = num_candidates == vocab;
      const float s_last = s_at(num_candidates - 1);
      const int32_t per_thread = (num_candidates + kThreads - 1) / kThreads;
      const int32_t begin = min(num_candidates, static_cast<int32_t>(threadIdx.x) * per_thread);
      const int32_t end = min(num_candidates, begin + per_thread);
      bool k_complete = whole_row;  // every id top-k keeps is a candidate
      if (top_k > 0) {
        // The k-th allowed candidate's s; kept ids further down tie with it.
        int32_t allowed_here = 0;
        for (int32_t j = begin; j < end; ++j) allowed_here += row.allowed(rank_id(candidates[j]));
        int32_t allowed_total = 0;
        const int32_t before = block_exclusive_scan(allowed_here, allowed_total, sh);
        if (before < top_k && top_k <= before + allowed_here) {
          int32_t seen = before;
          for (int32_t j = begin; j < end; ++j) {
            if (row.allowed(rank_id(candidates[j])) && ++seen == top_k) {
              sh.value = s_at(j);
              break;
            }
          }
        }
        __syncthreads();
        have_k = allowed_total >= top_k;
        min_s_k = sh.value;
        k_complete = have_k && (whole_row || s_last < min_s_k);
      }
      in_candidates = k_complete;
      if (top_p && (k_complete || top_k == 0)) {
        // Prefix sums of the kept mass in candidate order: the first candidate where the sum
        // reaches top_p of the total sets the threshold.
        const auto weight = [&](int32_t j) {
          const int32_t id = rank_id(candidates[j]);
          const float s = s_at(j);
          if (!row.allowed(id) || !(s >= min_s_k)) return 0.0f;
          return s == max_s ? 1.0f : expf(s - max_s);
        };
        float mass_here = 0.0f;
        for (int32_t j = begin; j < end; ++j) mass_here += weight(j);
        float mass_total = 0.0f;
        const float mass_before = block_exclusive_scan(mass_here, mass_total, sh);
        const float total = k_complete ? mass_total : total_mass;
        const float target = config.top_p * total;
        int32_t first_reached = 0x7fffffff;
        float running = mass_before;
        for (int32_t j = begin; j < end; ++j) {
          const float w = weight(j);
          running += w;
          if (w > 0.0f && running >= target) {
            first_reached = j;
            break;
          }
        }
        first_reached = block_reduce(first_reached, IMin32{}, sh);
        if (first_reached < num_candidates) {
          min_s_p = s_at(first_reached);
          const bool p_complete = whole_row || s_last < min_s_p;
          have_p = k_complete || p_complete;
          in_candidates = have_p;
        } else {
          in_candidates = false;
        }
      }
      if (in_candidates) {
        uint64_t best = 0;
        for (int32_t j = begin; j < end; ++j) {
          const int32_t id = rank_id(candidates[j]);
          const float s = s_at(j);
          if (!row.allowed(id) || !(s >= min_s_k && s >= min_s_p)) continue;
          const uint64_t rank = make_rank(order_key(s + gumbel(row_key, id)), id);
          if (rank > best) best = rank;
        }
        token = rank_id(block_reduce(best, UMax64{}, sh));
      }
    }
    if (!in_candidates) {
      if (!have_k) {
        Goal goal;
        goal.need_members = top_k;
        min_s_k = key_value(exact_cut<false>(row, a.min_key, a.max_key, temperature, max_s, goal,
                                             candidates, cap, sh)) /
                  temperature;
      }
      if (!have_p) {
        Goal goal;
        goal.need_members = 1;
        goal.top_p = config.top_p;
        goal.floor = top_k > 0;
        goal.floor_s = min_s_k;
        min_s_p = key_value(exact_cut<true>(row, a.min_key, a.max_key, temperature, max_s, goal,
                                            candidates, cap, sh)) /
                  temperature;
      }
      token = rank_id(draw_over_row(row, temperature, fmaxf(min_s_k, min_s_p), max_s, row_key, sh));
    }
    // NaN logits compare false everywhere, so a draw can keep no id where the greedy pass (which
    // orders NaN above +inf) found one: take that, never an out-of-range token.
    if (token < 0) token = rank_id(a.greedy);
  }

  __syncthreads();  // the top-n entries in shared memory
  SampledToken* out = p.out + r;
  if (threadIdx.x == 0) {
    out->token = token;
    out->logprob = logprobs && token >= 0 ? row.logits[token] - a.log_total : 0.0f;
    out->num_top = num_top;
  }
  if (threadIdx.x < kMaxTopLogprobs) {
    const bool used = static_cast<int32_t>(threadIdx.x) < num_top;
    out->top_ids[threadIdx.x] = used ? sh.top_ids[threadIdx.x] : 0;
    out->top_logprobs[threadIdx.x] = used ? sh.top_values[threadIdx.x] - a.log_total : 0.0f;
  }
}

}  // namespace

cudaError_t sample(const SampleParams& params, cudaStream_t stream) {
  const int32_t cap = params.max_candidates;
  if (params.vocab <= 0 || params.vocab > kMaxSampleVocab || params.num_rows < 0 ||
      params.num_rows > 0x7fffffff || cap < 0 || cap > kSampleCandidates ||
      (cap & (cap - 1)) != 0) {
    return cudaErrorInvalidValue;
  }
  if (params.num_rows == 0) return cudaSuccess;
  const size_t bitmap_bytes = (static_cast<size_t>(params.vocab + 31) / 32 * 4 + 15) / 16 * 16;
  const size_t shared_bytes = bitmap_bytes + static_cast<size_t>(cap) * sizeof(uint64_t);
  const cudaError_t status = cudaFuncSetAttribute(
      sample_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared_bytes));
  if (status != cudaSuccess) return status;
  sample_kernel<<<static_cast<unsigned>(params.num_rows), kThreads, shared_bytes, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace tidal::cuda
