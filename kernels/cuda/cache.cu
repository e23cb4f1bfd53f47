// reshape_and_cache: copies one step's keys and values, [rows, kv_heads * head_dim] in bf16 with
// a row stride (they may be views into a fused QKV output), into the paged cache
// [num_blocks * block_size, kv_heads * head_dim] at each row's slot, converting to the cache dtype.
// Grid: one block per row.
#include "common.cuh"

template <typename C>
__device__ __forceinline__ void write_slots(const bf16* __restrict__ k, const bf16* __restrict__ v,
                                            int64_t k_stride, int64_t v_stride,
                                            C* __restrict__ k_cache, C* __restrict__ v_cache,
                                            const uint32_t* __restrict__ slots, int row_len) {
    const int64_t row = blockIdx.x;
    const uint32_t slot = slots[row];
    if (slot == NO_SLOT) return;
    const bf16* kr = k + row * k_stride;
    const bf16* vr = v + row * v_stride;
    C* kc = k_cache + (int64_t)slot * row_len;
    C* vc = v_cache + (int64_t)slot * row_len;
    for (int i = threadIdx.x; i < row_len; i += blockDim.x) {
        kc[i] = from_float<C>(to_float(kr[i]));
        vc[i] = from_float<C>(to_float(vr[i]));
    }
}

#define RESHAPE_AND_CACHE(NAME, C)                                                              \
    extern "C" __global__ void NAME(const bf16* k, const bf16* v, int64_t k_stride,             \
                                    int64_t v_stride, C* k_cache, C* v_cache,                   \
                                    const uint32_t* slots, int row_len) {                       \
        write_slots<C>(k, v, k_stride, v_stride, k_cache, v_cache, slots, row_len);             \
    }

RESHAPE_AND_CACHE(reshape_and_cache_bf16, bf16)
RESHAPE_AND_CACHE(reshape_and_cache_f16, __half)
RESHAPE_AND_CACHE(reshape_and_cache_f32, float)
