// Fused CPU kernel of the MAW soft router at pair granularity (linear router, float32).
//
// For one tile of query rows of n texts and H heads (depth-major layouts, as in maw.py):
//
//     q  : (n, H, D, T, g)   query depth slices, pre-scaled by 1/sqrt(d_h)
//     kT : (n, H, D, g, Lk)  key depth slices, transposed
//     W  : (H, D, D)         router weight, already divided by tau;  bias : (H, D), same
//
//     S[d]   = <q[d, i], kT[d, :, j]>                 per pair (i, j), never stored for the tile
//     z[e]   = bias[e] + sum_d W[e, d] S[d]            router logits of the (detached) state S
//     w      = softmax_e(z)
//     A[i,j] = D * sum_d w[d] S[d]                     one query row at a time, never stored
//     out    = dropout(softmax_j(A + key_bias)) @ v    (n, H, T, d_h)   <- op ``forward``
//
// The dropout keep-mask (bool, or none) comes from the caller, so PyTorch's generator draws it.
// ``attention_backward`` goes from dout back to q, kT, v and the router in one pass per query row
// (the state is detached, so the router gets gradient through w only), with Abar = A / D:
//
//     dP = dout v^T (times the dropout mask),  dA = P (dP - sum_j P dP)
//     dS[d] = D dA w[d]                  -> dq[d, i, c] = sum_j dS[d] kT[d, c, j],  dkT likewise
//     dz[e] = dS[e] (S[e] - Abar)        -> dW[e, d] = sum_pairs dz[e] S[d],  dbias[e] = sum dz[e]
//
// Every per-pair value lives in registers or in one row's buffer: nothing 5D (and no score
// matrix) is written to memory, so the kernel is bound by the D x D router FLOPs. One task per
// (text, head), run with at::parallel_for. Keys are processed in vectors of JB lanes (GCC/Clang
// vector extensions).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

constexpr int JB = 16;  // keys per vector block (one AVX-512 register of float32)

// JB float32 lanes as one GCC/Clang vector (one AVX-512 register; split into halves or quarters
// on narrower CPUs by the compiler). Scalars broadcast in arithmetic with vectors.
typedef float vf __attribute__((vector_size(JB * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(JB * sizeof(int32_t))));

inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(vf));
  return v;
}
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof(vf)); }
inline vf splat(float x) { return vf{} + x; }
inline vf vmax(vf a, vf b) { return a > b ? a : b; }
inline float hsum(vf v) {
  float s = 0.0f;
  for (int k = 0; k < JB; ++k) s += v[k];
  return s;
}

// 2^t for t <= 0 (up to rounding; t = (z - max z) * log2(e)): 2^t = 2^n * 2^f with n = round(t),
// f in [-1/2, 1/2] (degree-5 minimax fit of 2^f: relative error below 2e-7 evaluated in float32;
// exactly 1 at t = 0). Very negative t gives 0.
inline vf exp2_poly(vf f) {
  vf p = splat(1.3264636738106615e-3f);
  p = p * f + 9.671482266576107e-3f;
  p = p * f + 5.5507336886707864e-2f;
  p = p * f + 2.4022242563800694e-1f;
  p = p * f + 6.931469778298743e-1f;
  return p * f + 1.0f;
}
#if defined(__AVX512F__) && defined(__AVX512DQ__)
inline vf exp2_nonpos(vf t) {  // AVX-512: f = t - round(t) (exact) and the scaling by 2^n, one instruction each
  const vf f = reinterpret_cast<vf>(_mm512_reduce_ps(reinterpret_cast<__m512>(t), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  const vf n = t - f;
  return reinterpret_cast<vf>(_mm512_scalef_ps(reinterpret_cast<__m512>(exp2_poly(f)), reinterpret_cast<__m512>(n)));
}
#else
inline vf exp2_nonpos(vf t) {
  t = vmax(t, splat(-125.0f));  // 2^-125 below: negligible next to the maximum's 1
  const vi n = __builtin_convertvector(t - 0.5f, vi);  // round(t): truncation of t - 1/2 <= 0
  vf p = exp2_poly(t - __builtin_convertvector(n, vf));
  vi bits;
  std::memcpy(&bits, &p, sizeof(vf));
  bits += n << 23;  // times 2^n: add n to the exponent bits
  std::memcpy(&p, &bits, sizeof(vf));
  return p;
}
#endif

// log(x) for x >= 1 (products of softmax normalisers, each in [1, D]). Cephes logf.
inline vf log_ge1(vf x) {
  vi bits;
  std::memcpy(&bits, &x, sizeof(vf));
  vi e = ((bits >> 23) & 0xff) - 126;  // x = m * 2^e, m in [0.5, 1)
  bits = (bits & 0x007fffff) | 0x3f000000;
  vf m;
  std::memcpy(&m, &bits, sizeof(vf));
  const vi small = m < 0.707106781186547524f;  // all-ones (-1) where true
  e = e + small;
  m = small ? m + m - 1.0f : m - 1.0f;
  const vf z = m * m;
  vf y = splat(7.0376836292e-2f);
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  const vf fe = __builtin_convertvector(e, vf);
  y = y + fe * -2.12194440e-4f;
  y = y - z * 0.5f;
  return m + y + fe * 0.693359375f;
}

// Per-task inputs: one (text, head).
struct Task {
  const float* q;      // (D, T, g)
  const float* kT;     // (D, g, Lk)
  const float* W;      // (D, D)
  const float* bias;   // (D)
  int T, g, Lk, nb;    // nb: number of key blocks, ceil(Lk / JB)
};

// Keys in blocks: kb[(jb * rows + r) * JB + jj] = kT[r, jb * JB + jj] (rows = D * g), zero past Lk,
// so one block's D*g vectors are contiguous and padded lanes give S = 0.
inline void block_keys(const Task& t, int rows, float* kb) {
  std::fill(kb, kb + static_cast<int64_t>(t.nb) * rows * JB, 0.0f);
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < t.Lk; ++j) kb[(static_cast<int64_t>(j / JB) * rows + r) * JB + j % JB] = t.kT[static_cast<int64_t>(r) * t.Lk + j];
}

inline void load_row(const Task& t, int rows, int i, float* qi) {
  const int g = t.g;
  for (int r = 0; r < rows; ++r) qi[r] = t.q[(static_cast<int64_t>(r / g) * t.T + i) * g + r % g];
}

constexpr float LOG2E = 1.44269504088896341f;
constexpr float LN2 = 0.693147180559945309f;

// KB consecutive blocks of JB keys (kb: the first block's D*g key vectors; blocks are D*g*JB floats
// apart) of query row qi: the depth scores S[k*D + d] and the router logits z[k*D + e]. Two blocks
// at a time share every broadcast of W between two FMAs (16 accumulators in registers).
template <int D, int KB>
inline void block_logits(const Task& t, const float* qi, const float* kb, vf* S, vf* z) {
  const int g = t.g, rows = D * g;
  if (g == 1) {  // one channel per depth (D = d_h): unrolled, no loop over channels
    for (int k = 0; k < KB; ++k)
#pragma GCC unroll 8
      for (int d = 0; d < D; ++d) S[k * D + d] = qi[d] * load(kb + (k * D + d) * JB);
  } else {
    for (int k = 0; k < KB; ++k)
      for (int d = 0; d < D; ++d) {
        const float* kr = kb + (k * rows + d * g) * JB;
        vf acc = qi[d * g] * load(kr);
        for (int c = 1; c < g; ++c) acc += qi[d * g + c] * load(kr + c * JB);
        S[k * D + d] = acc;
      }
  }
  constexpr int EB = D < 8 ? D : 8;  // independent accumulator chains per block
  for (int e0 = 0; e0 < D; e0 += EB) {
    vf acc[KB][EB];
    for (int k = 0; k < KB; ++k)
      for (int ee = 0; ee < EB; ++ee) acc[k][ee] = splat(t.bias[e0 + ee]);
    for (int d = 0; d < D; ++d)
      for (int ee = 0; ee < EB; ++ee) {
        const float w = t.W[(e0 + ee) * D + d];
        for (int k = 0; k < KB; ++k) acc[k][ee] += w * S[k * D + d];
      }
    for (int k = 0; k < KB; ++k)
      for (int ee = 0; ee < EB; ++ee) z[k * D + e0 + ee] = acc[k][ee];
  }
}

// Sum (or max) of D vectors with 4 independent partial results: a serial chain of D dependent
// adds would cost D latencies per block, more than the block's arithmetic.
template <int D, typename Op>
inline vf reduce_depths(const vf* x, Op op) {
  if constexpr (D < 4) {
    vf r = x[0];
    for (int e = 1; e < D; ++e) r = op(r, x[e]);
    return r;
  } else {
    vf r[4] = {x[0], x[1], x[2], x[3]};
    for (int e = 4; e < D; e += 4)
      for (int k = 0; k < 4; ++k) r[k] = op(r[k], x[e + k]);
    return op(op(r[0], r[1]), op(r[2], r[3]));
  }
}
inline vf add(vf a, vf b) { return a + b; }

// sum_e a[e] * b[e] over D vectors, 4 partial sums.
template <int D>
inline vf dot_depths(const vf* a, const vf* b) {
  vf r[4] = {};
#pragma GCC unroll 64  // fully: r stays in registers (a loop would index it in memory)
  for (int e = 0; e < D; ++e) r[e % 4] += a[e] * b[e];
  return (r[0] + r[1]) + (r[2] + r[3]);
}

// Softmax over depths of one block, in place: logits z (D) -> p = exp(z - max_e z), s = sum_e p.
// With STATS also the first argmax of z (choice) and pt = sum_e p * (z - max z) * log2(e) (for
// the entropy of w: log s - ln2 * pt / s).
template <int D, bool STATS>
inline void depth_softmax(vf* z, vf& s, vi* choice = nullptr, vf* pt = nullptr) {
  const vf m = reduce_depths<D>(z, vmax);
  if constexpr (STATS) {
    // The first maximum: the smallest e with z[e] == m, as the minimum over 4 independent chains
    // (one serial chain of D selects would cost D latencies per block).
    vi ch[4];
    for (int c = 0; c < 4; ++c) ch[c] = vi{} + D;
#pragma GCC unroll 64
    for (int e = D - 1; e >= 0; --e) ch[e % 4] = z[e] == m ? vi{} + e : ch[e % 4];
    const vi c01 = ch[0] < ch[1] ? ch[0] : ch[1], c23 = ch[2] < ch[3] ? ch[2] : ch[3];
    *choice = c01 < c23 ? c01 : c23;
  }
  const vf shift = -LOG2E * m;
  vf te[D];
#pragma GCC unroll 64
  for (int e = 0; e < D; ++e) {
    te[e] = z[e] * LOG2E + shift;  // (z - m) log2(e), one rounding (FMA)
    z[e] = exp2_nonpos(te[e]);
  }
  s = reduce_depths<D>(z, add);
  if constexpr (STATS) *pt = dot_depths<D>(z, te);
}

// Blocks of a row whose softmax normalisers (each in [1, D]) can be multiplied before the product
// may overflow float32: the entropy takes one log per that many blocks, not one per pair.
template <int D>
constexpr int blocks_per_log() {
  int bits = 0;
  while ((1 << bits) < D) ++bits;
  return bits == 0 ? 1 << 20 : 120 / bits;
}

// exp(x) for x <= 0 that underflows to exactly 0 (softmax over keys: padded keys get P = 0).
inline vf exp_keys(vf x) {
  const vf te = x * LOG2E;
  return te < -125.0f ? vf{} : exp2_nonpos(te);
}

// out[r] = inv[r] * (p[r] @ v) for R rows at once: p rows `stride` floats apart (Lk each), v (Lk, dh)
// row-major, dh a multiple of NC * JB, out rows dh floats apart. Every load of v feeds R FMAs (the
// rows share it), in passes of NC vectors of v with the keys in 2 interleaved streams.
template <int R, int NC>
inline void rows_times_v(const float* p, int64_t stride, const float* v, int Lk, int dh, const float* inv, float* out) {
  for (int c0 = 0; c0 < dh; c0 += NC * JB) {
    vf acc[2][R][NC] = {};
    int j = 0;
    for (; j + 2 <= Lk; j += 2)
      for (int s = 0; s < 2; ++s) {
        vf vj[NC];
        for (int c = 0; c < NC; ++c) vj[c] = load(v + static_cast<int64_t>(j + s) * dh + c0 + c * JB);
        for (int r = 0; r < R; ++r) {
          const float pr = p[r * stride + j + s];
          for (int c = 0; c < NC; ++c) acc[s][r][c] += pr * vj[c];
        }
      }
    for (; j < Lk; ++j)
      for (int r = 0; r < R; ++r)
        for (int c = 0; c < NC; ++c) acc[0][r][c] += p[r * stride + j] * load(v + static_cast<int64_t>(j) * dh + c0 + c * JB);
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < NC; ++c) store(out + r * static_cast<int64_t>(dh) + c0 + c * JB, (acc[0][r][c] + acc[1][r][c]) * inv[r]);
  }
}

// The attention tail of the forward for up to ROWS consecutive query rows: their scores a (one row
// of nb * JB floats after another, key bias included, -inf past Lk; overwritten)
// -> out_i = dropout(softmax_j(a_i)) @ v (dh floats each). The rows share each load of v.
struct RowOutput {
  static constexpr int ROWS = 4;
  const float* v;        // (Lk, dh) row-major
  const uint8_t* mask;   // (T, Lk) dropout keep-mask or nullptr
  float scale;           // 1 / (1 - p)
  int dh, Lk, nb;

  // Rows i0 .. i0 + n - 1 (n <= ROWS), row r's scores at a + r * nb * JB.
  void operator()(int i0, int n, float* a, float* out) const {
    const int64_t stride = static_cast<int64_t>(nb) * JB;
    float inv[ROWS];
    for (int r = 0; r < n; ++r) {
      float* ar = a + r * stride;
      vf mx = splat(-INFINITY);
      for (int jb = 0; jb < nb; ++jb) mx = vmax(mx, load(ar + jb * JB));
      float m = mx[0];
      for (int k = 1; k < JB; ++k) m = std::max(m, mx[k]);
      vf z{};
      for (int jb = 0; jb < nb; ++jb) {
        const vf e = exp_keys(load(ar + jb * JB) - m);
        store(ar + jb * JB, e);
        z += e;
      }
      inv[r] = 1.0f / hsum(z);
      if (mask) {
        const uint8_t* mk = mask + static_cast<int64_t>(i0 + r) * Lk;
        for (int j = 0; j < Lk; ++j) ar[j] = mk[j] ? ar[j] : 0.0f;
        inv[r] *= scale;
      }
    }
    float* o = out + static_cast<int64_t>(i0) * dh;
    if (dh % JB == 0) {
      auto times_v = [&]<int R>(int r0) {  // rows r0 .. r0 + R - 1, in passes of 2 vectors of v (or 1)
        if (dh % (2 * JB) == 0)
          rows_times_v<R, 2>(a + r0 * stride, stride, v, Lk, dh, inv + r0, o + r0 * dh);
        else
          rows_times_v<R, 1>(a + r0 * stride, stride, v, Lk, dh, inv + r0, o + r0 * dh);
      };
      if (n == ROWS)
        times_v.template operator()<ROWS>(0);
      else  // the last rows of a tile, one at a time
        for (int r = 0; r < n; ++r) times_v.template operator()<1>(r);
    } else {
      for (int r = 0; r < n; ++r) {
        float* orow = o + r * dh;
        std::fill(orow, orow + dh, 0.0f);
        for (int j = 0; j < Lk; ++j)
          for (int c = 0; c < dh; ++c) orow[c] += a[r * stride + j] * v[static_cast<int64_t>(j) * dh + c];
        for (int c = 0; c < dh; ++c) orow[c] *= inv[r];
      }
    }
  }
};

// Forward of one task: out (T, dh), the attention output of every query row (see RowOutput).
// kbias: (nb * JB) additive key bias, -inf past Lk. With STATS, over the valid units
// (row_valid[i] && key_valid[j]): counts (D) of the chosen depth (first argmax of w) and *ent, the
// sum of the entropies of w.
template <int D, bool STATS>
void forward_task(const Task& t, const RowOutput& tail, const float* kbias, const uint8_t* row_valid,
                  const uint8_t* key_valid, float* out, int64_t* counts, double* ent) {
  const int rows = D * t.g;
  std::vector<float> kb(static_cast<size_t>(t.nb) * rows * JB), qi(rows), kmask(static_cast<size_t>(t.nb) * JB, 0.0f);
  std::vector<float> arows(static_cast<size_t>(RowOutput::ROWS) * t.nb * JB);  // the tail's rows
  block_keys(t, rows, kb.data());
  for (int j = 0; j < t.Lk; ++j) kmask[j] = key_valid[j] ? 1.0f : 0.0f;
  constexpr int K = blocks_per_log<D>();
  // Four counters per depth (no chain of increments to one address) plus a bin D for padded keys.
  int64_t lane_counts[4][D + 1] = {};
  double ent_sum = 0.0;
  for (int i = 0; i < t.T; ++i) {
    load_row(t, rows, i, qi.data());
    const bool stats = STATS && row_valid[i];
    float* arow = arows.data() + static_cast<int64_t>(i % RowOutput::ROWS) * t.nb * JB;
    vf ent_row{}, prod_s = splat(1.0f);
    auto blocks = [&]<int KB>(int jb0) {
      vf S[KB * D], p[KB * D];
      block_logits<D, KB>(t, qi.data(), kb.data() + static_cast<int64_t>(jb0) * rows * JB, S, p);
      for (int k = 0; k < KB; ++k) {
        const int jb = jb0 + k, j0 = jb * JB;
        vf* pk = p + k * D;
        const vf* Sk = S + k * D;
        vf s, pt;
        vi choice;
        if (stats)
          depth_softmax<D, true>(pk, s, &choice, &pt);
        else
          depth_softmax<D, false>(pk, s);
        const vf num = dot_depths<D>(pk, Sk);
        const vf inv = 1.0f / s;
        store(arow + j0, static_cast<float>(D) * num * inv + load(kbias + j0));
        if (stats) {
          const vf km = load(kmask.data() + j0);
          const vi valid = km > 0.0f;
          prod_s *= valid ? s : splat(1.0f);  // sum of log s = log of the product
          ent_row -= km * (LN2 * pt * inv);
          if ((jb + 1) % K == 0 || jb == t.nb - 1) {
            ent_row += log_ge1(prod_s);
            prod_s = splat(1.0f);
          }
          alignas(64) int32_t ch[JB];
          const vi binned = valid ? choice : vi{} + D;
          std::memcpy(ch, &binned, sizeof(ch));
#pragma GCC unroll 16
          for (int jj = 0; jj < JB; ++jj) ++lane_counts[jj % 4][ch[jj]];
        }
      }
    };
    for (int jb = 0; jb < t.nb; jb += 2) {
      if (jb + 1 < t.nb)
        blocks.template operator()<2>(jb);
      else
        blocks.template operator()<1>(jb);
    }
    ent_sum += hsum(ent_row);
    if (i % RowOutput::ROWS == RowOutput::ROWS - 1 || i == t.T - 1) {
      const int i0 = i - i % RowOutput::ROWS;
      tail(i0, i - i0 + 1, arows.data(), out);
    }
  }
  for (int e = 0; e < D; ++e) counts[e] += lane_counts[0][e] + lane_counts[1][e] + lane_counts[2][e] + lane_counts[3][e];
  *ent = ent_sum;
}

// dWv[e][d] += sum over blocks of dz[blk][e] * S[blk][d] (lane-wise; summed over lanes at the end),
// dbv[e] += sum of dz[blk][e]; blocks of D vectors, 4 x 4 register tiles.
template <int D>
void accumulate_router_grad(const vf* dz, const vf* S, int nblocks, vf* dWv, vf* dbv) {
  constexpr int RB = D < 4 ? D : 4;
  for (int e0 = 0; e0 < D; e0 += RB)
    for (int d0 = 0; d0 < D; d0 += RB) {
      vf acc[RB][RB] = {};
      for (int nb = 0; nb < nblocks; ++nb) {
        const vf* a = dz + nb * D + e0;
        const vf* b = S + nb * D + d0;
        for (int r = 0; r < RB; ++r)
          for (int c = 0; c < RB; ++c) acc[r][c] += a[r] * b[c];
      }
      for (int r = 0; r < RB; ++r)
        for (int c = 0; c < RB; ++c) dWv[(e0 + r) * D + d0 + c] += acc[r][c];
    }
  for (int nb = 0; nb < nblocks; ++nb)
    for (int e = 0; e < D; ++e) dbv[e] += dz[nb * D + e];
}

// The attention tail of one task in backward: given Abar (one row), recompute
// P = dropout(softmax_j(D * Abar + key_bias)) and turn dout (the row's output gradient, d_h) into
// dA; accumulates dv. v and dv are blocked like the keys: [jb][c][JB].
struct AttentionTail {
  const float* vb;         // (nb, dh, JB) blocked values
  float* dvb;              // same layout, accumulated
  const float* kbias;      // (nb * JB) additive key bias, -inf-like past Lk
  const uint8_t* mask;     // (T, Lk) dropout keep-mask or nullptr
  const float* dout;       // (T, dh)
  float scale;             // 1 / (1 - p)
  int dh, nb, Lk, D;
  std::vector<vf>* a;      // scratch (nb)
  std::vector<vf>* keep;   // scratch (nb)

  void operator()(int i, const vf* abar, vf* dA) const {
    vf mx = splat(-INFINITY);
    for (int jb = 0; jb < nb; ++jb) {
      (*a)[jb] = static_cast<float>(D) * abar[jb] + load(kbias + jb * JB);
      mx = vmax(mx, (*a)[jb]);
    }
    float m = mx[0];
    for (int k = 1; k < JB; ++k) m = std::max(m, mx[k]);
    vf z{};
    for (int jb = 0; jb < nb; ++jb) {
      (*a)[jb] = exp_keys((*a)[jb] - m);
      z += (*a)[jb];
    }
    const float invz = 1.0f / hsum(z);
    const float* go = dout + static_cast<int64_t>(i) * dh;
    vf rowdot{};
    for (int jb = 0; jb < nb; ++jb) {
      const vf P = (*a)[jb] * invz;
      vf kp = splat(1.0f);
      if (mask) {
        alignas(64) float mk[JB] = {};
        const int n = std::min(JB, Lk - jb * JB);
        for (int jj = 0; jj < n; ++jj) mk[jj] = mask[static_cast<int64_t>(i) * Lk + jb * JB + jj] ? scale : 0.0f;
        kp = load(mk);
      }
      const float* vblk = vb + static_cast<int64_t>(jb) * dh * JB;
      float* dvblk = dvb + static_cast<int64_t>(jb) * dh * JB;
      const vf Pd = P * kp;  // the dropped-out probabilities the forward multiplied with v
      vf dPd{};
      for (int c = 0; c < dh; ++c) {
        dPd += go[c] * load(vblk + c * JB);
        store(dvblk + c * JB, load(dvblk + c * JB) + Pd * go[c]);
      }
      const vf dP = dPd * kp;
      (*a)[jb] = P;
      (*keep)[jb] = dP;
      rowdot += P * dP;
    }
    const float rd = hsum(rowdot);
    for (int jb = 0; jb < nb; ++jb) dA[jb] = (*a)[jb] * ((*keep)[jb] - rd);
  }
};

// Backward of one task, one query row at a time. Pass 1 recomputes the row's per-pair softmax over
// depths, keeping w and S for the row only (2 x D x Lk floats, in cache) and Abar = A / D; the
// attention tail turns the row's dout into dA (and accumulates dv); pass 2 turns dA into
// dq (D, T, g), dkT (D, g, Lk), dW (D, D) and db (D) (float64, added to).
template <int D>
void backward_task(const Task& t, const AttentionTail& row_dA, float* dq, float* dkT, double* dW, double* db) {
  const int g = t.g, rows = D * g;
  const int64_t kn = static_cast<int64_t>(t.nb) * rows * JB;
  std::vector<float> kb(kn), dkb(kn, 0.0f), qi(rows);
  std::vector<vf> dq_acc(rows), Sbuf(static_cast<size_t>(t.nb) * D), wbuf(static_cast<size_t>(t.nb) * D);
  std::vector<vf> dzbuf(static_cast<size_t>(t.nb) * D), abar(t.nb), dA(t.nb);
  std::vector<vf> dWv(static_cast<size_t>(D) * D, vf{}), dbv(D, vf{});
  block_keys(t, rows, kb.data());
  for (int i = 0; i < t.T; ++i) {
    load_row(t, rows, i, qi.data());
    auto pass1 = [&]<int KB>(int jb0) {
      vf* Sb = Sbuf.data() + static_cast<int64_t>(jb0) * D;  // blocks are consecutive: KB * D vectors
      vf* wb = wbuf.data() + static_cast<int64_t>(jb0) * D;
      block_logits<D, KB>(t, qi.data(), kb.data() + static_cast<int64_t>(jb0) * rows * JB, Sb, wb);
      for (int k = 0; k < KB; ++k) {
        vf s;
        depth_softmax<D, false>(wb + k * D, s);
        const vf inv = 1.0f / s;
        for (int e = 0; e < D; ++e) wb[k * D + e] *= inv;
        abar[jb0 + k] = dot_depths<D>(wb + k * D, Sb + k * D);
      }
    };
    for (int jb = 0; jb < t.nb; jb += 2) {  // pass 1
      if (jb + 1 < t.nb)
        pass1.template operator()<2>(jb);
      else
        pass1.template operator()<1>(jb);
    }
    row_dA(i, abar.data(), dA.data());
    std::fill(dq_acc.begin(), dq_acc.end(), vf{});
    for (int jb = 0; jb < t.nb; ++jb) {  // pass 2
      const float* kblk = kb.data() + static_cast<int64_t>(jb) * rows * JB;
      float* dkblk = dkb.data() + static_cast<int64_t>(jb) * rows * JB;
      const vf* Sb = Sbuf.data() + static_cast<int64_t>(jb) * D;
      const vf* wb = wbuf.data() + static_cast<int64_t>(jb) * D;
      vf* dzb = dzbuf.data() + static_cast<int64_t>(jb) * D;
      const vf da = static_cast<float>(D) * dA[jb];
      for (int d = 0; d < D; ++d) {
        const vf dS = da * wb[d];
        dzb[d] = dS * (Sb[d] - abar[jb]);
        for (int c = 0; c < g; ++c) {
          const int r = d * g + c;
          dq_acc[r] += dS * load(kblk + r * JB);
          store(dkblk + r * JB, load(dkblk + r * JB) + dS * qi[r]);
        }
      }
    }
    for (int r = 0; r < rows; ++r) dq[(static_cast<int64_t>(r / g) * t.T + i) * g + r % g] = hsum(dq_acc[r]);
    accumulate_router_grad<D>(dzbuf.data(), Sbuf.data(), t.nb, dWv.data(), dbv.data());
  }
  for (int k = 0; k < D * D; ++k) dW[k] += hsum(dWv[k]);
  for (int e = 0; e < D; ++e) db[e] += hsum(dbv[e]);
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < t.Lk; ++j)
      dkT[static_cast<int64_t>(r) * t.Lk + j] = dkb[(static_cast<int64_t>(j / JB) * rows + r) * JB + j % JB];
}

// ------------------------------------------------------------------------------------ dispatch
void check_inputs(const at::Tensor& q, const at::Tensor& kT, const at::Tensor& W, const at::Tensor& bias) {
  TORCH_CHECK(q.dim() == 5 && kT.dim() == 5, "soft_pair: q (n,H,D,T,g) and kT (n,H,D,g,Lk) expected");
  for (const auto* x : {&q, &kT, &W, &bias}) {
    TORCH_CHECK(x->device().is_cpu() && x->scalar_type() == at::kFloat && x->is_contiguous(),
                "soft_pair: contiguous float32 CPU tensors expected");
  }
  const auto D = q.size(2);
  TORCH_CHECK(kT.size(0) == q.size(0) && kT.size(1) == q.size(1) && kT.size(2) == D && kT.size(3) == q.size(4),
              "soft_pair: q and kT shapes disagree");
  TORCH_CHECK(W.dim() == 3 && W.size(0) == q.size(1) && W.size(1) == D && W.size(2) == D, "soft_pair: W (H,D,D)");
  TORCH_CHECK(bias.dim() == 2 && bias.size(0) == q.size(1) && bias.size(1) == D, "soft_pair: bias (H,D)");
}

Task make_task(const at::Tensor& q, const at::Tensor& kT, const at::Tensor& W, const at::Tensor& bias, int64_t b,
               int64_t h) {
  const int64_t H = q.size(1), D = q.size(2), T = q.size(3), g = q.size(4), Lk = kT.size(4);
  Task t;
  t.q = q.data_ptr<float>() + (b * H + h) * D * T * g;
  t.kT = kT.data_ptr<float>() + (b * H + h) * D * g * Lk;
  t.W = W.data_ptr<float>() + h * D * D;
  t.bias = bias.data_ptr<float>() + h * D;
  t.T = static_cast<int>(T);
  t.g = static_cast<int>(g);
  t.Lk = static_cast<int>(Lk);
  t.nb = static_cast<int>((Lk + JB - 1) / JB);
  return t;
}

template <typename F>
void with_depth(int64_t D, F&& f) {
  switch (D) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 8: f(std::integral_constant<int, 8>{}); break;
    case 16: f(std::integral_constant<int, 16>{}); break;
    case 32: f(std::integral_constant<int, 32>{}); break;
    case 64: f(std::integral_constant<int, 64>{}); break;
    default: TORCH_CHECK(false, "soft_pair: D must be one of 1, 2, 4, 8, 16, 32, 64, got ", D);
  }
}

// Runs f(depth constant, task, text b, Task) for every (text, head) of the tile in parallel, with
// the depth as a compile-time constant.
template <typename F>
void for_each_task(const at::Tensor& q, const at::Tensor& kT, const at::Tensor& W, const at::Tensor& bias, F&& f) {
  const int64_t n = q.size(0), H = q.size(1);
  with_depth(q.size(2), [&](auto dc) {
    at::parallel_for(0, n * H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / H;
        f(dc, task, b, make_task(q, kT, W, bias, b, task % H));
      }
    });
  });
}

// The tail inputs both ops share: v (n,H,Lk,dh), key_bias (n,Lk) additive, mask (n,H,T,Lk) bool
// keep-mask of dropout or empty. Checks them; true when there is a mask.
bool check_tail(const at::Tensor& q, const at::Tensor& kT, const at::Tensor& v, const at::Tensor& key_bias,
                const at::Tensor& mask) {
  const int64_t n = q.size(0), H = q.size(1), T = q.size(3), Lk = kT.size(4);
  for (const auto* x : {&v, &key_bias})
    TORCH_CHECK(x->device().is_cpu() && x->scalar_type() == at::kFloat && x->is_contiguous(),
                "soft_pair: contiguous float32 CPU tensors expected");
  TORCH_CHECK(v.dim() == 4 && v.size(0) == n && v.size(1) == H && v.size(2) == Lk, "soft_pair: v (n,H,Lk,dh)");
  TORCH_CHECK(key_bias.dim() == 2 && key_bias.size(0) == n && key_bias.size(1) == Lk, "soft_pair: key_bias (n,Lk)");
  if (mask.numel() == 0) return false;
  TORCH_CHECK(mask.scalar_type() == at::kBool && mask.is_contiguous() && mask.dim() == 4 && mask.size(0) == n &&
                  mask.size(1) == H && mask.size(2) == T && mask.size(3) == Lk,
              "soft_pair: mask (n,H,T,Lk) bool");
  return true;
}

// Text b's key bias in key blocks: (nb * JB), -inf past Lk.
std::vector<float> blocked_key_bias(const at::Tensor& key_bias, int64_t b, const Task& t) {
  std::vector<float> kbias(static_cast<size_t>(t.nb) * JB, -INFINITY);
  std::copy_n(key_bias.data_ptr<float>() + b * t.Lk, t.Lk, kbias.begin());
  return kbias;
}

const uint8_t* task_mask(const at::Tensor& mask, bool has_mask, int64_t task, const Task& t) {
  return has_mask ? reinterpret_cast<const uint8_t*>(mask.data_ptr<bool>()) + task * t.T * t.Lk : nullptr;
}

// A whole attention tile out = dropout(softmax_j(A + key_bias)) @ v with A the soft pair combine
// -> out (n,H,T,dh), chosen-depth counts (n,H,D) int64 and entropy sums (n,H) float64 over the valid
// units (zeros without stats).
std::tuple<at::Tensor, at::Tensor, at::Tensor> soft_pair_forward(
    const at::Tensor& q, const at::Tensor& kT, const at::Tensor& v, const at::Tensor& key_bias, const at::Tensor& W,
    const at::Tensor& bias, const at::Tensor& row_valid, const at::Tensor& key_valid, const at::Tensor& mask,
    double scale, bool stats) {
  check_inputs(q, kT, W, bias);
  const bool has_mask = check_tail(q, kT, v, key_bias, mask);
  const int64_t n = q.size(0), H = q.size(1), D = q.size(2), T = q.size(3), Lk = kT.size(4), dh = v.size(3);
  TORCH_CHECK(row_valid.scalar_type() == at::kBool && row_valid.is_contiguous() && row_valid.size(0) == n &&
                  row_valid.size(1) == T,
              "soft_pair: row_valid (n, T) bool expected");
  TORCH_CHECK(key_valid.scalar_type() == at::kBool && key_valid.is_contiguous() && key_valid.size(0) == n &&
                  key_valid.size(1) == Lk,
              "soft_pair: key_valid (n, Lk) bool expected");
  auto out = at::empty({n, H, T, dh}, q.options());
  auto counts = at::zeros({n, H, D}, q.options().dtype(at::kLong));
  auto ent = at::zeros({n, H}, q.options().dtype(at::kDouble));
  const auto* rv = reinterpret_cast<const uint8_t*>(row_valid.data_ptr<bool>());
  const auto* kv = reinterpret_cast<const uint8_t*>(key_valid.data_ptr<bool>());
  for_each_task(q, kT, W, bias, [&](auto dc, int64_t task, int64_t b, const Task& t) {
    constexpr int DD = decltype(dc)::value;
    const std::vector<float> kbias = blocked_key_bias(key_bias, b, t);
    const RowOutput tail{v.data_ptr<float>() + task * Lk * dh, task_mask(mask, has_mask, task, t),
                         static_cast<float>(scale), static_cast<int>(dh), t.Lk, t.nb};
    float* ob = out.data_ptr<float>() + task * T * dh;
    int64_t* cb = counts.data_ptr<int64_t>() + task * D;
    double* eb = ent.data_ptr<double>() + task;
    if (stats)
      forward_task<DD, true>(t, tail, kbias.data(), rv + b * T, kv + b * Lk, ob, cb, eb);
    else
      forward_task<DD, false>(t, tail, kbias.data(), rv + b * T, kv + b * Lk, ob, cb, eb);
  });
  return {out, counts, ent};
}

// Backward of the same tile: from dout (n,H,T,dh) -> dq, dkT, dv (n,H,Lk,dh), dW (n,H,D,D),
// dbias (n,H,D) (router gradients float64, per text and head).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> soft_pair_attention_backward(
    const at::Tensor& q, const at::Tensor& kT, const at::Tensor& v, const at::Tensor& key_bias, const at::Tensor& W,
    const at::Tensor& bias, const at::Tensor& mask, double scale, const at::Tensor& dout) {
  check_inputs(q, kT, W, bias);
  const bool has_mask = check_tail(q, kT, v, key_bias, mask);
  const int64_t n = q.size(0), H = q.size(1), D = q.size(2), T = q.size(3), g = q.size(4), Lk = kT.size(4);
  const int64_t dh = v.size(3);
  TORCH_CHECK(dout.device().is_cpu() && dout.scalar_type() == at::kFloat && dout.is_contiguous() && dout.dim() == 4 &&
                  dout.size(0) == n && dout.size(1) == H && dout.size(2) == T && dout.size(3) == dh,
              "soft_pair: dout (n,H,T,dh) contiguous float32 expected");
  auto dq = at::empty_like(q);
  auto dkT = at::empty_like(kT);
  auto dv = at::empty_like(v);
  auto dW = at::zeros({n, H, D, D}, q.options().dtype(at::kDouble));
  auto db = at::zeros({n, H, D}, q.options().dtype(at::kDouble));
  for_each_task(q, kT, W, bias, [&](auto dc, int64_t task, int64_t b, const Task& t) {
    constexpr int DD = decltype(dc)::value;
    const float* vt = v.data_ptr<float>() + task * Lk * dh;
    std::vector<float> vb(static_cast<size_t>(t.nb) * dh * JB, 0.0f), dvb(vb.size(), 0.0f);
    for (int64_t j = 0; j < Lk; ++j)
      for (int64_t c = 0; c < dh; ++c) vb[((j / JB) * dh + c) * JB + j % JB] = vt[j * dh + c];
    const std::vector<float> kbias = blocked_key_bias(key_bias, b, t);
    std::vector<vf> a(t.nb), keep(t.nb);
    const AttentionTail tail{vb.data(), dvb.data(), kbias.data(), task_mask(mask, has_mask, task, t),
                             dout.data_ptr<float>() + task * T * dh, static_cast<float>(scale),
                             static_cast<int>(dh), t.nb, t.Lk, DD, &a, &keep};
    backward_task<DD>(t, tail, dq.data_ptr<float>() + task * D * T * g, dkT.data_ptr<float>() + task * D * g * Lk,
                      dW.data_ptr<double>() + task * D * D, db.data_ptr<double>() + task * D);
    float* dvt = dv.data_ptr<float>() + task * Lk * dh;
    for (int64_t j = 0; j < Lk; ++j)
      for (int64_t c = 0; c < dh; ++c) dvt[j * dh + c] = dvb[((j / JB) * dh + c) * JB + j % JB];
  });
  return {dq, dkT, dv, dW, db};
}

}  // namespace

TORCH_LIBRARY(maw_soft_pair, m) {
  m.def("forward(Tensor q, Tensor kT, Tensor v, Tensor key_bias, Tensor W, Tensor bias, Tensor row_valid,"
        " Tensor key_valid, Tensor mask, float scale, bool stats) -> (Tensor, Tensor, Tensor)");
  m.def("attention_backward(Tensor q, Tensor kT, Tensor v, Tensor key_bias, Tensor W, Tensor bias, Tensor mask,"
        " float scale, Tensor dout) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(maw_soft_pair, CPU, m) {
  m.impl("forward", &soft_pair_forward);
  m.impl("attention_backward", &soft_pair_attention_backward);
}
