// genq::decode_attention: one decoding step's attention on a CPU, fused: each (slot, head) writes its new key and
// value into its ring of the cache, then attends its query to the ring's keys (scores, softmax and the weighted sum
// of values in one pass), in float32. PyTorch's index_copy_ + baddbmm + softmax + bmm on the same views spend most
// of a wide batch's step there (128 small matrix-vector products each, and a softmax between them); this reads
// each key and value once, with AVX2, and only the keys a slot has written.
// Built and loaded by genq.core.models.gpt.kernels; slots.py calls it where it loaded, else torch's calls.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

// exp of 8 floats (Cephes' polynomial, as avx_mathfun has it; relative error ~1e-7); -inf gives 0.
__attribute__((target("avx2,fma"))) inline __m256 exp8(__m256 x) {
  const __m256 zero = _mm256_setzero_ps(), keep = _mm256_cmp_ps(x, _mm256_set1_ps(-INFINITY), _CMP_NEQ_OQ);
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f)), _mm256_set1_ps(-88.3762626647949f));
  __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_add_ps(_mm256_fmadd_ps(y, _mm256_mul_ps(x, x), x), _mm256_set1_ps(1.0f));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(0x7f)), 23);
  return _mm256_blendv_ps(zero, _mm256_mul_ps(y, _mm256_castsi256_ps(e)), keep);
}

__attribute__((target("avx2,fma"))) inline float sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// The 8 sums of a0..a7's lanes, in order: the dot products of one query with 8 keys.
__attribute__((target("avx2,fma"))) inline __m256 sums8(__m256 a0, __m256 a1, __m256 a2, __m256 a3, __m256 a4,
                                                         __m256 a5, __m256 a6, __m256 a7) {
  __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7));
  return _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20), _mm256_permute2f128_ps(t0, t1, 0x31));
}

// One (slot, head): q (hs), keys and values (width, hs): the rows of its ring written so far, out (hs). scores: room
// for width rounded up to 8.
__attribute__((target("avx2,fma"))) void attend(const float* q, const float* keys, const float* values, float* out,
                                                float* scores, int64_t width, int64_t hs, float scale) {
  const int64_t padded = (width + 7) & ~int64_t(7);
  const __m256 sc = _mm256_set1_ps(scale);
  __m256 best = _mm256_set1_ps(-INFINITY);
  for (int64_t j = 0; j < padded; j += 8) {
    __m256 a[8];
    for (int i = 0; i < 8; i++) a[i] = _mm256_setzero_ps();
    const int64_t n = std::min<int64_t>(8, width - j);  // below 8 at the end alone: no key read past width
    for (int64_t d = 0; d < hs; d += 8) {
      const __m256 qd = _mm256_loadu_ps(q + d);
      if (n == 8) {
        for (int i = 0; i < 8; i++) a[i] = _mm256_fmadd_ps(qd, _mm256_loadu_ps(keys + (j + i) * hs + d), a[i]);
      } else {
        for (int i = 0; i < 8; i++)
          if (i < n) a[i] = _mm256_fmadd_ps(qd, _mm256_loadu_ps(keys + (j + i) * hs + d), a[i]);
      }
    }
    __m256 s = _mm256_mul_ps(sums8(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]), sc);
    if (n < 8) {  // the lanes past width weigh 0
      alignas(32) float m[8];
      for (int i = 0; i < 8; i++) m[i] = i < n ? 0.0f : -INFINITY;
      s = _mm256_add_ps(s, _mm256_load_ps(m));
    }
    _mm256_storeu_ps(scores + j, s);
    best = _mm256_max_ps(best, s);
  }
  alignas(32) float b[8];
  _mm256_store_ps(b, best);
  float top = b[0];
  for (int i = 1; i < 8; i++) top = std::max(top, b[i]);
  __m256 total = _mm256_setzero_ps();
  for (int64_t j = 0; j < padded; j += 8) {
    const __m256 p = exp8(_mm256_sub_ps(_mm256_loadu_ps(scores + j), _mm256_set1_ps(top)));
    _mm256_storeu_ps(scores + j, p);
    total = _mm256_add_ps(total, p);
  }
  const __m256 inv = _mm256_set1_ps(1.0f / sum8(total));
  int64_t d = 0;
  for (; d + 32 <= hs; d += 32) {  // four accumulators: four independent chains of multiply-adds
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t j = 0; j < width; j++) {
      const __m256 p = _mm256_broadcast_ss(scores + j);
      const float* row = values + j * hs + d;
      a0 = _mm256_fmadd_ps(p, _mm256_loadu_ps(row), a0);
      a1 = _mm256_fmadd_ps(p, _mm256_loadu_ps(row + 8), a1);
      a2 = _mm256_fmadd_ps(p, _mm256_loadu_ps(row + 16), a2);
      a3 = _mm256_fmadd_ps(p, _mm256_loadu_ps(row + 24), a3);
    }
    _mm256_storeu_ps(out + d, _mm256_mul_ps(a0, inv));
    _mm256_storeu_ps(out + d + 8, _mm256_mul_ps(a1, inv));
    _mm256_storeu_ps(out + d + 16, _mm256_mul_ps(a2, inv));
    _mm256_storeu_ps(out + d + 24, _mm256_mul_ps(a3, inv));
  }
  for (; d < hs; d += 8) {
    __m256 a0 = _mm256_setzero_ps();
    for (int64_t j = 0; j < width; j++) a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(scores + j),
                                                               _mm256_loadu_ps(values + j * hs + d), a0);
    _mm256_storeu_ps(out + d, _mm256_mul_ps(a0, inv));
  }
}

// qkv (S, 3 nh, hs): the step's queries, keys (normalised and turned by RoPE) and values, each row contiguous; kv one
// layer of the cache, (2, S, nh, W, hs); pos (S,): each slot's position. Slot s's new key and value go to row
// pos % W of its rings, and its query attends to the rows written so far, min(pos + 1, W) of them (a ring that has
// not wrapped yet is written from row 0 on; one that has is full). Returns (S nh, hs): softmax(q k^T scale) v.
at::Tensor decode_attention(const at::Tensor& qkv, at::Tensor& kv, const at::Tensor& pos, double scale) {
  TORCH_CHECK(qkv.dim() == 3 && kv.dim() == 5 && pos.dim() == 1, "decode_attention: qkv (S, 3 nh, hs), "
              "kv (2, S, nh, W, hs), pos (S,)");
  TORCH_CHECK(qkv.scalar_type() == at::kFloat && kv.scalar_type() == at::kFloat, "decode_attention: float32 tensors only");
  TORCH_CHECK(pos.scalar_type() == at::kLong, "decode_attention: pos holds int64 positions");
  TORCH_CHECK(qkv.stride(2) == 1 && kv.is_contiguous() && pos.is_contiguous(),
              "decode_attention: contiguous tensors (qkv's rows may be apart)");
  const int64_t S = kv.size(1), nh = kv.size(2), W = kv.size(3), hs = kv.size(4);
  TORCH_CHECK(qkv.size(0) == S && qkv.size(1) == 3 * nh && qkv.size(2) == hs && pos.size(0) == S && hs % 8 == 0,
              "decode_attention: shapes do not match (hs a multiple of 8)");
  const int64_t* pp = pos.data_ptr<int64_t>();
  int64_t widest = 1;
  for (int64_t s = 0; s < S; s++) {
    TORCH_CHECK(pp[s] >= 0, "decode_attention: a negative position");
    widest = std::max(widest, std::min(pp[s] + 1, W));
  }
  at::Tensor out = at::empty({S * nh, hs}, qkv.options());
  const float* qp = qkv.data_ptr<float>();
  float *kp = kv.data_ptr<float>(), *op = out.data_ptr<float>();
  const int64_t ring = W * hs, values = S * nh * ring, slot_stride = qkv.stride(0), head_stride = qkv.stride(1);
  // one (slot, head) per iteration: it alone writes and reads its rings; small batches stay on the calling thread
  at::parallel_for(0, S * nh, std::max<int64_t>(1, 16384 / (widest * hs)), [&](int64_t lo, int64_t hi) {
    std::vector<float> scores((widest + 7) & ~int64_t(7));
    for (int64_t b = lo; b < hi; b++) {
      const int64_t s = b / nh, h = b % nh, p = pp[s];
      const float* row = qp + s * slot_stride + h * head_stride;  // the query; its key nh rows on, its value 2 nh
      float *keys = kp + b * ring, *vals = kp + values + b * ring;
      std::copy(row + nh * head_stride, row + nh * head_stride + hs, keys + (p % W) * hs);
      std::copy(row + 2 * nh * head_stride, row + 2 * nh * head_stride + hs, vals + (p % W) * hs);
      attend(row, keys, vals, op + b * hs, scores.data(), std::min(p + 1, W), hs, static_cast<float>(scale));
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(genq, m) {
  m.def("decode_attention(Tensor qkv, Tensor(a!) kv, Tensor pos, float scale) -> Tensor");
  m.impl("decode_attention", c10::DispatchKey::CPU, &decode_attention);
}
