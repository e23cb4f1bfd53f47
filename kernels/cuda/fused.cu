// Element-wise passes fused so each reads its input once: residual add + RMSNorm, rotary
// embedding, and the SiLU-gated product of the MLP. All take bf16 activations and compute in f32.
#include "common.cuh"

// residual_out = x + add (add may be null), rounded to bf16 as the residual stream is;
// out = residual_out * rsqrt(mean(residual_out^2) + eps) * weight.
// Grid: one block per row; blockDim.x a multiple of 32.
extern "C" __global__ void add_rms_norm_bf16(const bf16* __restrict__ x, const bf16* __restrict__ add,
                                             bf16* __restrict__ residual_out, bf16* __restrict__ out,
                                             const bf16* __restrict__ weight, int cols, float eps) {
    const int64_t base = (int64_t)blockIdx.x * cols;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float r = to_float(x[base + c]);
        if (add != nullptr) r += to_float(add[base + c]);
        const bf16 rb = from_float<bf16>(r);
        if (residual_out != nullptr) residual_out[base + c] = rb;
        r = to_float(rb);
        ss += r * r;
    }
    const float inv = rsqrtf(block_sum(ss) / (float)cols + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float r = to_float(x[base + c]);
        if (add != nullptr) r += to_float(add[base + c]);
        r = to_float(from_float<bf16>(r));
        out[base + c] = from_float<bf16>(r * inv * to_float(weight[c]));
    }
}

// Rotary embedding in the rotate-half layout: for each head, dims j and j + half turn by the
// row's angle j. x is [rows, heads * head_dim] with a row stride; out is contiguous. cos and sin
// are [rows, half] in f32; dims at or past 2 * half are copied unchanged.
// Grid: one block per row.
extern "C" __global__ void rotary_bf16(const bf16* __restrict__ x, int64_t x_stride,
                                       bf16* __restrict__ out, const float* __restrict__ cos,
                                       const float* __restrict__ sin, int heads, int head_dim,
                                       int half) {
    const int64_t row = blockIdx.x;
    const bf16* xr = x + row * x_stride;
    bf16* o = out + row * (int64_t)heads * head_dim;
    const float* c = cos + row * half;
    const float* s = sin + row * half;
    for (int i = threadIdx.x; i < heads * head_dim; i += blockDim.x) {
        const int h = i / head_dim, d = i % head_dim;
        const bf16* xh = xr + (int64_t)h * head_dim;
        float v;
        if (d < half) {
            v = to_float(xh[d]) * c[d] - to_float(xh[d + half]) * s[d];
        } else if (d < 2 * half) {
            const int j = d - half;
            v = to_float(xh[d]) * c[j] + to_float(xh[j]) * s[j];
        } else {
            v = to_float(xh[d]);
        }
        o[i] = from_float<bf16>(v);
    }
}

// out[r, j] = silu(gate_up[r, j]) * gate_up[r, inter + j]: the gate and up projections come
// from one fused matmul. Grid: enough blocks to cover rows * inter.
extern "C" __global__ void silu_mul_bf16(const bf16* __restrict__ gate_up, bf16* __restrict__ out,
                                         int64_t rows, int inter) {
    const int64_t n = rows * inter;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / inter, j = i % inter;
        const float g = to_float(gate_up[r * 2 * inter + j]);
        const float u = to_float(gate_up[r * 2 * inter + inter + j]);
        out[i] = from_float<bf16>(g / (1.0f + __expf(-g)) * u);
    }
}
