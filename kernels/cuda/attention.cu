// Paged attention for any mix of prefill and decode rows.
//
// Each query row knows its sequence (row_seq) and its position (row_pos); it attends causally
// to positions [first, pos] of that sequence through its block table, where first is 0 or the
// start of the sliding window. This step's keys and values are already in the cache, so a
// decode row, a prefill chunk and a prefix-cache hit take the same path, and a row's result
// does not depend on what else is in the batch.
//
// Grid: (rows, num_kv_heads * chunks), where the query heads sharing a KV head are taken
// MAX_GROUP at a time, so each key and value row is read once per group instead of once per
// query head. Block: WARPS warps; warp w takes positions first + w, + WARPS, ... with an online
// softmax per query head; lanes split head_dim (LANE_DIMS elements each, head_dim <= 32 *
// LANE_DIMS); the warps' partial results are merged in shared memory at the end.
#include "common.cuh"

#define WARPS 4
#define MAX_GROUP 8

template <typename C, int LANE_DIMS>
__device__ __forceinline__ void attend(bf16* __restrict__ out, const bf16* __restrict__ q,
                                       int64_t q_stride, const C* __restrict__ k_cache,
                                       const C* __restrict__ v_cache,
                                       const uint32_t* __restrict__ block_tables, int max_blocks,
                                       const uint32_t* __restrict__ row_seq,
                                       const uint32_t* __restrict__ row_pos, int num_heads,
                                       int num_kv_heads, int head_dim, int block_size,
                                       float scale, int window) {
    constexpr int HD = 32 * LANE_DIMS;
    const int64_t row = blockIdx.x;
    const int group = num_heads / num_kv_heads;
    const int chunks = (group + MAX_GROUP - 1) / MAX_GROUP;
    const int kv_head = blockIdx.y / chunks;
    const int head0 = kv_head * group + (blockIdx.y % chunks) * MAX_GROUP;
    const int heads = min(MAX_GROUP, kv_head * group + group - head0);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int pos = (int)row_pos[row];
    const int first = (window > 0 && pos + 1 > window) ? pos + 1 - window : 0;
    const uint32_t* table = block_tables + (int64_t)row_seq[row] * max_blocks;
    const int64_t kv_row = (int64_t)num_kv_heads * head_dim;
    const int64_t kv_off = (int64_t)kv_head * head_dim;

    float qv[MAX_GROUP][LANE_DIMS], acc[MAX_GROUP][LANE_DIMS], m[MAX_GROUP], l[MAX_GROUP];
#pragma unroll
    for (int g = 0; g < MAX_GROUP; ++g) {
        const bf16* qr = q + row * q_stride + (int64_t)(head0 + min(g, heads - 1)) * head_dim;
#pragma unroll
        for (int i = 0; i < LANE_DIMS; ++i) {
            const int d = lane + 32 * i;
            qv[g][i] = (g < heads && d < head_dim) ? to_float(qr[d]) * scale : 0.0f;
            acc[g][i] = 0.0f;
        }
        m[g] = NEG_BIG;
        l[g] = 0.0f;
    }
    for (int t = first + warp; t <= pos; t += WARPS) {
        const int64_t slot = (int64_t)table[t / block_size] * block_size + t % block_size;
        const C* kr = k_cache + slot * kv_row + kv_off;
        const C* vr = v_cache + slot * kv_row + kv_off;
        float kf[LANE_DIMS], vf[LANE_DIMS];
#pragma unroll
        for (int i = 0; i < LANE_DIMS; ++i) {
            const int d = lane + 32 * i;
            kf[i] = d < head_dim ? to_float(kr[d]) : 0.0f;
            vf[i] = d < head_dim ? to_float(vr[d]) : 0.0f;
        }
#pragma unroll
        for (int g = 0; g < MAX_GROUP; ++g) {
            if (g >= heads) break;
            float s = 0.0f;
#pragma unroll
            for (int i = 0; i < LANE_DIMS; ++i) s += qv[g][i] * kf[i];
            s = warp_sum(s);
            const float m_new = fmaxf(m[g], s);
            const float corr = __expf(m[g] - m_new);
            const float p = __expf(s - m_new);
            l[g] = l[g] * corr + p;
#pragma unroll
            for (int i = 0; i < LANE_DIMS; ++i) acc[g][i] = acc[g][i] * corr + p * vf[i];
            m[g] = m_new;
        }
    }

    __shared__ float s_max[WARPS][MAX_GROUP], s_sum[WARPS][MAX_GROUP];
    __shared__ float s_acc[WARPS][MAX_GROUP][HD];
#pragma unroll
    for (int g = 0; g < MAX_GROUP; ++g) {
        if (g >= heads) break;
        if (lane == 0) {
            s_max[warp][g] = m[g];
            s_sum[warp][g] = l[g];
        }
#pragma unroll
        for (int i = 0; i < LANE_DIMS; ++i) s_acc[warp][g][lane + 32 * i] = acc[g][i];
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < heads * head_dim; idx += blockDim.x) {
        const int g = idx / head_dim, d = idx % head_dim;
        float big = NEG_BIG;
#pragma unroll
        for (int w = 0; w < WARPS; ++w) big = fmaxf(big, s_max[w][g]);
        float total = 0.0f, v = 0.0f;
#pragma unroll
        for (int w = 0; w < WARPS; ++w) {
            const float weight = __expf(s_max[w][g] - big);
            total += s_sum[w][g] * weight;
            v += s_acc[w][g][d] * weight;
        }
        out[(row * num_heads + head0 + g) * (int64_t)head_dim + d] = from_float<bf16>(v / total);
    }
}

#define PAGED_ATTENTION(NAME, C, LANE_DIMS)                                                     \
    extern "C" __global__ void __launch_bounds__(WARPS * 32)                                   \
        NAME(bf16* out, const bf16* q, int64_t q_stride, const C* k_cache, const C* v_cache,     \
             const uint32_t* block_tables, int max_blocks, const uint32_t* row_seq,             \
             const uint32_t* row_pos, int num_heads, int num_kv_heads, int head_dim,            \
             int block_size, float scale, int window) {                                         \
        attend<C, LANE_DIMS>(out, q, q_stride, k_cache, v_cache, block_tables, max_blocks,      \
                             row_seq, row_pos, num_heads, num_kv_heads, head_dim, block_size,   \
                             scale, window);                                                    \
    }

// Names: paged_attention_<cache dtype>_<largest head_dim>.
PAGED_ATTENTION(paged_attention_bf16_64, bf16, 2)
PAGED_ATTENTION(paged_attention_bf16_128, bf16, 4)
PAGED_ATTENTION(paged_attention_bf16_256, bf16, 8)
PAGED_ATTENTION(paged_attention_f16_64, __half, 2)
PAGED_ATTENTION(paged_attention_f16_128, __half, 4)
PAGED_ATTENTION(paged_attention_f16_256, __half, 8)
PAGED_ATTENTION(paged_attention_f32_64, float, 2)
PAGED_ATTENTION(paged_attention_f32_128, float, 4)
PAGED_ATTENTION(paged_attention_f32_256, float, 8)
