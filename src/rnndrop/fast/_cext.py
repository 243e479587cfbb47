"""Optional CPU kernels: the LSTM and GRU gate math of a step, the per-step recurrent products
(a small-batch GEMM, ``gemm``) and a blocked transpose; compiled on first use, cached.

A small C file (no torch headers: it builds in about a second with the system C compiler, with
OpenMP where the compiler has it), loaded with ctypes. Each step call does one time step's gate
math in one pass over the (B, H) cells, replacing ~8 (forward) / ~16 (backward) torch ops whose
per-op dispatch and thread wake-up costs dominate the gate math at these sizes. The arithmetic is that of the Triton kernels
(LSTM) and of the torch-op loops in ``_gru`` (GRU); the ``*_step_z`` kernels add zoneout, with
the arithmetic of the zoneout torch-op loops in ``_lstm`` and ``_gru``.

The library is built into ``$RNNDROP_FAST_BUILD_DIR`` (default ``~/.cache/rnndrop/fast``) under a
name that hashes the source, compiler, flags and CPU, written atomically. If there is no C
compiler or the build fails, ``kernels()`` returns None after one warning and the torch-op loops
are used. ``RNNDROP_FAST_CEXT=0`` turns the kernels off.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings

_LIB = None  # None: not tried yet; False: unavailable

SOURCE = r"""
/* Fused LSTM and GRU gate math for one time step (CPU, float32), called through ctypes by
 * _cext.py.
 *
 * The same arithmetic as the Triton kernels in _triton.py: one pass over the (B, H) cells
 * instead of ~8 (forward) / ~16 (backward) separate torch ops. Plain C, no torch headers, so
 * it compiles in well under a second; loops are written to auto-vectorize (-O3 -march=native).
 * exp is a Cephes-style float polynomial (about 1 ulp), branch-free so that it vectorizes.
 */
#include <stdint.h>
#include <string.h>

static inline float fexp(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * r * r + r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &e, 4);
    return p * s;
}

static inline float fsigmoid(float x) { return 1.0f / (1.0f + fexp(-x)); }

static inline float ftanh(float x) {
    float ax = x < 0.0f ? -x : x;
    float e = fexp(-2.0f * ax);
    float t = (1.0f - e) / (1.0f + e);
    return x < 0.0f ? -t : t;
}

/* Threads for the step kernels' rows (set_threads, from torch.get_num_threads() at each
 * recurrence call): OpenMP over the batch rows when there are enough cells to pay for it; each
 * row is computed by one thread, so the result does not depend on the count. Without OpenMP
 * the pragmas are ignored. */
static int g_threads = 1;
void set_threads(int n) { g_threads = n > 0 ? n : 1; }
#define ROWS_PARALLEL _Pragma("omp parallel for num_threads(g_threads) schedule(static) if (g_threads > 1 && B * H >= 8192)")

/* Forward step. Gate k of sample b, unit j is pre[k][b*s_pb + j] (+ x[b*4H + k*H + j] when
 * x != NULL): pre holds the address of each gate's block, in one product's output (tied: the
 * gates side by side, s_pb = 4H) or in one per gate (untied: s_pb = H), so that the per-gate
 * products need not be stacked. Writes A[b, k*H + j] (i, f, g, o after activation), c, h
 * (B, H), and hm = h * m: mode 1 (B, H) mask, mode 2 (4, B, H) untied masks, mode 0 nothing. */
static inline __attribute__((always_inline)) void fwd_row(
        const float *__restrict pi, const float *__restrict pf, const float *__restrict pg,
        const float *__restrict po, const float *__restrict xb,
        const float *__restrict cpb, float *__restrict a, float *__restrict cb,
        float *__restrict hb, long H, const int has_x) {
    for (long j = 0; j < H; j++) {
        float xi = pi[j], xf = pf[j], xg = pg[j], xo = po[j];
        if (has_x) {
            xi += xb[j]; xf += xb[H + j]; xg += xb[2 * H + j]; xo += xb[3 * H + j];
        }
        float i = fsigmoid(xi), f = fsigmoid(xf), g = ftanh(xg), o = fsigmoid(xo);
        float cc = f * cpb[j] + i * g;
        a[j] = i; a[H + j] = f; a[2 * H + j] = g; a[3 * H + j] = o;
        cb[j] = cc;
        hb[j] = o * ftanh(cc);
    }
}

void lstm_fwd_step(const float *const *pre, long s_pb,
                   const float *__restrict x, const float *__restrict cp, float *__restrict A,
                   float *__restrict c, float *__restrict h, const float *__restrict m,
                   float *__restrict hm, long B, long H, int mode) {
    const long n = B * H;
    ROWS_PARALLEL
    for (long b = 0; b < B; b++) {
        const long o = b * s_pb;
        if (x)
            fwd_row(pre[0] + o, pre[1] + o, pre[2] + o, pre[3] + o, x + b * 4 * H, cp + b * H,
                    A + b * 4 * H, c + b * H, h + b * H, H, 1);
        else
            fwd_row(pre[0] + o, pre[1] + o, pre[2] + o, pre[3] + o, x, cp + b * H,
                    A + b * 4 * H, c + b * H, h + b * H, H, 0);
    }
    if (mode == 1) {
        for (long q = 0; q < n; q++) hm[q] = h[q] * m[q];
    } else if (mode == 2) {
        for (int k = 0; k < 4; k++)
            for (long q = 0; q < n; q++) hm[k * n + q] = h[q] * m[k * n + q];
    }
}

/* Backward step. dh = dout + r (mode 0: r[0] (B, H) as is; mode 2: sum_k r[k] * m[k], r[k]
 * the (B, H) product of gate k, m (4, B, H)). Adds dh o (1 - tanh^2 c) to dc, writes the
 * pre-activation gradients dp (B, 4H) and leaves dc * f in dc (the cell gradient carried to
 * step t-1). */
static inline __attribute__((always_inline)) void bwd_row(
        const float *__restrict a, const float *__restrict c, const float *__restrict cp,
        const float *__restrict dout, const float *__restrict r0, const float *__restrict r1,
        const float *__restrict r2, const float *__restrict r3, const float *__restrict m,
        float *__restrict dc, float *__restrict d, long n, long H, const int untied) {
    for (long j = 0; j < H; j++) {
        float rr;
        if (untied)
            rr = r0[j] * m[j] + r1[j] * m[n + j] + r2[j] * m[2 * n + j] + r3[j] * m[3 * n + j];
        else
            rr = r0[j];
        float dh = dout[j] + rr;
        float i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j];
        float tc = ftanh(c[j]);
        float dcc = dc[j] + dh * o * (1.0f - tc * tc);
        d[j] = dcc * g * i * (1.0f - i);
        d[H + j] = dcc * cp[j] * f * (1.0f - f);
        d[2 * H + j] = dcc * i * (1.0f - g * g);
        d[3 * H + j] = dh * tc * o * (1.0f - o);
        dc[j] = dcc * f;
    }
}

void lstm_bwd_step(const float *__restrict A, const float *__restrict c,
                   const float *__restrict cp, const float *__restrict dout,
                   const float *const *r, const float *__restrict m, float *__restrict dc,
                   float *__restrict dp, long B, long H, int mode) {
    const long n = B * H;
    ROWS_PARALLEL
    for (long b = 0; b < B; b++) {
        const long q = b * H;
        if (mode == 2)
            bwd_row(A + 4 * q, c + q, cp + q, dout + q, r[0] + q, r[1] + q, r[2] + q, r[3] + q,
                    m + q, dc + q, dp + 4 * q, n, H, 1);
        else
            bwd_row(A + 4 * q, c + q, cp + q, dout + q, r[0] + q, r[0] + q, r[0] + q, r[0] + q,
                    m, dc + q, dp + 4 * q, n, H, 0);
    }
}

/* GRU forward step (torch.nn.GRU equations). hh gate k (r, z, n) of sample b, unit j is
 * pre[k][b*s_pb + j] = (W_hh (h_{t-1} * m))_k (as in lstm_fwd_step), plus bias[k*H + j] when
 * bias != NULL;
 * x (B, 3H) is the input projection. Writes S[b] = [r, z, n, hn] (B, 4H), h (B, H) and hm as
 * in lstm_fwd_step (mode 1: (B, H) mask, mode 2: (3, B, H) untied masks). */
static inline __attribute__((always_inline)) void gru_fwd_row(
        const float *__restrict pr, const float *__restrict pz, const float *__restrict pn,
        const float *__restrict bias, const float *__restrict xb, const float *__restrict hpb,
        float *__restrict s, float *__restrict hb, long H, const int has_b) {
    for (long j = 0; j < H; j++) {
        float hr = pr[j], hz = pz[j], hn = pn[j];
        if (has_b) {
            hr += bias[j]; hz += bias[H + j]; hn += bias[2 * H + j];
        }
        float r = fsigmoid(xb[j] + hr), z = fsigmoid(xb[H + j] + hz);
        float nn = ftanh(xb[2 * H + j] + r * hn);
        s[j] = r; s[H + j] = z; s[2 * H + j] = nn; s[3 * H + j] = hn;
        hb[j] = nn + z * (hpb[j] - nn);
    }
}

void gru_fwd_step(const float *const *pre, long s_pb, const float *__restrict bias,
                  const float *__restrict x, const float *__restrict hp, float *__restrict S,
                  float *__restrict h, const float *__restrict m, float *__restrict hm,
                  long B, long H, int mode) {
    const long n = B * H;
    ROWS_PARALLEL
    for (long b = 0; b < B; b++) {
        const long o = b * s_pb;
        if (bias)
            gru_fwd_row(pre[0] + o, pre[1] + o, pre[2] + o, bias, x + b * 3 * H, hp + b * H,
                        S + b * 4 * H, h + b * H, H, 1);
        else
            gru_fwd_row(pre[0] + o, pre[1] + o, pre[2] + o, bias, x + b * 3 * H, hp + b * H,
                        S + b * 4 * H, h + b * H, H, 0);
    }
    if (mode == 1) {
        for (long q = 0; q < n; q++) hm[q] = h[q] * m[q];
    } else if (mode == 2) {
        for (int k = 0; k < 3; k++)
            for (long q = 0; q < n; q++) hm[k * n + q] = h[q] * m[k * n + q];
    }
}

/* GRU backward step. dh = dout + r' + dcar, where r' is r (B, H) as is (mode 0) or
 * sum_k r[k] * m[k] over (3, B, H) (mode 2), and dcar (B, H) is dh_{t+1} * z_{t+1}, the
 * gradient carried through h_t = n + z (h_{t-1} - n). Writes the input-projection gradient
 * dx (B, 3H) = [dr, dz, dn_pre], the hidden-projection gradient dg (B, 3H) = [dr, dz, dn_pre r],
 * and leaves dh * z in dcar for step t-1. */
static inline __attribute__((always_inline)) void gru_bwd_row(
        const float *__restrict s, const float *__restrict hpb, const float *__restrict dout,
        const float *__restrict r0, const float *__restrict r1, const float *__restrict r2,
        const float *__restrict m, float *__restrict dcar, float *__restrict dx,
        float *__restrict dg, long n, long H, const int untied) {
    for (long j = 0; j < H; j++) {
        float rr;
        if (untied)
            rr = r0[j] * m[j] + r1[j] * m[n + j] + r2[j] * m[2 * n + j];
        else
            rr = r0[j];
        float dh = dout[j] + rr + dcar[j];
        float rg = s[j], z = s[H + j], nn = s[2 * H + j], hn = s[3 * H + j];
        float dnp = dh * (1.0f - z) * (1.0f - nn * nn);
        float dz = dh * (hpb[j] - nn) * z * (1.0f - z);
        float dr = dnp * hn * rg * (1.0f - rg);
        dx[j] = dr; dx[H + j] = dz; dx[2 * H + j] = dnp;
        dg[j] = dr; dg[H + j] = dz; dg[2 * H + j] = dnp * rg;
        dcar[j] = dh * z;
    }
}

void gru_bwd_step(const float *__restrict S, const float *__restrict hp,
                  const float *__restrict dout, const float *const *r,
                  const float *__restrict m, float *__restrict dcar, float *__restrict dx,
                  float *__restrict dg, long B, long H, int mode) {
    const long n = B * H;
    ROWS_PARALLEL
    for (long b = 0; b < B; b++) {
        const long q = b * H;
        if (mode == 2)
            gru_bwd_row(S + 4 * q, hp + q, dout + q, r[0] + q, r[1] + q, r[2] + q, m + q,
                        dcar + q, dx + 3 * q, dg + 3 * q, n, H, 1);
        else
            gru_bwd_row(S + 4 * q, hp + q, dout + q, r[0] + q, r[0] + q, r[0] + q, m, dcar + q,
                        dx + 3 * q, dg + 3 * q, n, H, 0);
    }
}

/* Zoneout (Krueger et al. 2016) variants of the four steps above; the steps without zoneout are
 * left as they are. d is the step's (B, H) zoneout weight (NULL: none), lerp(a, b, w) =
 * a + w (b - a) exactly at w = 0 and 1 (the formula of torch.lerp). */
static inline float flerp(float a, float b, float w) {
    return w < 0.5f ? a + w * (b - a) : b - (b - a) * (1.0f - w);
}

/* LSTM forward step with zoneout: as lstm_fwd_step, plus hp (B, H) the previous h, zh / zc the
 * hidden / cell zoneout weights (either may be NULL) and ct (B, H), where the candidate cell
 * c~ = f c_{t-1} + i g is written when zc != NULL (tanh(c~) is what the backward needs).
 * h = lerp(o tanh(c~), h_{t-1}, zh), c = lerp(c~, c_{t-1}, zc). */
void lstm_fwd_step_z(const float *const *pre, long s_pb,
                     const float *__restrict x, const float *__restrict cp,
                     const float *__restrict hp, const float *__restrict zh,
                     const float *__restrict zc, float *__restrict A, float *__restrict ct,
                     float *__restrict c, float *__restrict h, const float *__restrict m,
                     float *__restrict hm, long B, long H, int mode) {
    const long n = B * H;
    ROWS_PARALLEL
    for (long b = 0; b < B; b++) {
        const long o = b * s_pb;
        const float *__restrict pi = pre[0] + o, *__restrict pf = pre[1] + o;
        const float *__restrict pg = pre[2] + o, *__restrict po = pre[3] + o;
        const float *xb = x ? x + b * 4 * H : 0;
        float *a = A + b * 4 * H;
        for (long j = 0; j < H; j++) {
            const long q = b * H + j;
            float xi = pi[j], xf = pf[j], xg = pg[j], xo = po[j];
            if (xb) {
                xi += xb[j]; xf += xb[H + j]; xg += xb[2 * H + j]; xo += xb[3 * H + j];
            }
            float i = fsigmoid(xi), f = fsigmoid(xf), g = ftanh(xg), o = fsigmoid(xo);
            float cc = f * cp[q] + i * g;
            a[j] = i; a[H + j] = f; a[2 * H + j] = g; a[3 * H + j] = o;
            float ht = o * ftanh(cc);
            if (zc) {
                ct[q] = cc;
                c[q] = flerp(cc, cp[q], zc[q]);
            } else {
                c[q] = cc;
            }
            h[q] = zh ? flerp(ht, hp[q], zh[q]) : ht;
        }
    }
    if (mode == 1) {
        for (long q = 0; q < n; q++) hm[q] = h[q] * m[q];
    } else if (mode == 2) {
        for (int k = 0; k < 4; k++)
            for (long q = 0; q < n; q++) hm[k * n + q] = h[q] * m[k * n + q];
    }
}

/* LSTM backward step with zoneout. ct: the candidate cells c~ (C itself without cell zoneout),
 * cp: the previous (zoned) cell. carry (B, H): in, zh_{t+1} dh_{t+1}, the part of dh_t that
 * skips step t+1; out, zh_t dh_t for step t-1 (untouched when zh == NULL). dh~ = (1 - zh) dh
 * drives the gates; dc~ = (1 - zc) dc + dh~ o (1 - tanh^2 c~); dc_{t-1} = zc dc + f dc~. */
void lstm_bwd_step_z(const float *__restrict A, const float *__restrict ct,
                     const float *__restrict cp, const float *__restrict dout,
                     const float *const *r, const float *__restrict m,
                     const float *__restrict zh, const float *__restrict zc,
                     float *__restrict carry, float *__restrict dc, float *__restrict dp,
                     long B, long H, int mode) {
    const long n = B * H;
    ROWS_PARALLEL
    for (long b = 0; b < B; b++) {
        const float *a = A + b * 4 * H;
        float *d = dp + b * 4 * H;
        for (long j = 0; j < H; j++) {
            const long q = b * H + j;
            float rr;
            if (mode == 2)
                rr = r[0][q] * m[q] + r[1][q] * m[n + q] + r[2][q] * m[2 * n + q]
                     + r[3][q] * m[3 * n + q];
            else
                rr = r[0][q];
            float dh = dout[q] + rr;
            if (zh) {
                dh += carry[q];
                float skip = dh * zh[q];
                dh -= skip;
                carry[q] = skip;
            }
            float i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j];
            float tc = ftanh(ct[q]);
            float dcq = dc[q], dskip = 0.0f;
            if (zc) {
                dskip = dcq * zc[q];
                dcq -= dskip;
            }
            float dcc = dcq + dh * o * (1.0f - tc * tc);
            d[j] = dcc * g * i * (1.0f - i);
            d[H + j] = dcc * cp[q] * f * (1.0f - f);
            d[2 * H + j] = dcc * i * (1.0f - g * g);
            d[3 * H + j] = dh * tc * o * (1.0f - o);
            dc[q] = dcc * f + dskip;
        }
    }
}

/* GRU forward step with zoneout: as gru_fwd_step, then h = lerp(h~, h_{t-1}, zh). */
void gru_fwd_step_z(const float *const *pre, long s_pb,
                    const float *__restrict bias, const float *__restrict x,
                    const float *__restrict hp, const float *__restrict zh, float *__restrict S,
                    float *__restrict h, const float *__restrict m, float *__restrict hm,
                    long B, long H, int mode) {
    const long n = B * H;
    ROWS_PARALLEL
    for (long b = 0; b < B; b++) {
        const long o = b * s_pb;
        const float *__restrict pr = pre[0] + o, *__restrict pz = pre[1] + o;
        const float *__restrict pn = pre[2] + o;
        const float *xb = x + b * 3 * H;
        float *s = S + b * 4 * H;
        for (long j = 0; j < H; j++) {
            const long q = b * H + j;
            float hr = pr[j], hz = pz[j], hn = pn[j];
            if (bias) {
                hr += bias[j]; hz += bias[H + j]; hn += bias[2 * H + j];
            }
            float rg = fsigmoid(xb[j] + hr), z = fsigmoid(xb[H + j] + hz);
            float nn = ftanh(xb[2 * H + j] + rg * hn);
            s[j] = rg; s[H + j] = z; s[2 * H + j] = nn; s[3 * H + j] = hn;
            h[q] = flerp(nn + z * (hp[q] - nn), hp[q], zh[q]);
        }
    }
    if (mode == 1) {
        for (long q = 0; q < n; q++) hm[q] = h[q] * m[q];
    } else if (mode == 2) {
        for (int k = 0; k < 3; k++)
            for (long q = 0; q < n; q++) hm[k * n + q] = h[q] * m[k * n + q];
    }
}

/* GRU backward step with zoneout: dh = dout + r' + dcar; dh~ = (1 - zh) dh drives the gates as
 * in gru_bwd_step; dcar <- z dh~ + zh dh, the gradient carried to h_{t-1} past W_hh. */
void gru_bwd_step_z(const float *__restrict S, const float *__restrict hp,
                    const float *__restrict dout, const float *const *r,
                    const float *__restrict m, const float *__restrict zh,
                    float *__restrict dcar, float *__restrict dx, float *__restrict dg,
                    long B, long H, int mode) {
    const long n = B * H;
    ROWS_PARALLEL
    for (long b = 0; b < B; b++) {
        const float *s = S + b * 4 * H;
        float *dxb = dx + b * 3 * H, *dgb = dg + b * 3 * H;
        for (long j = 0; j < H; j++) {
            const long q = b * H + j;
            float rr;
            if (mode == 2)
                rr = r[0][q] * m[q] + r[1][q] * m[n + q] + r[2][q] * m[2 * n + q];
            else
                rr = r[0][q];
            float dh = dout[q] + rr + dcar[q];
            float skip = dh * zh[q];
            dh -= skip;
            float rg = s[j], z = s[H + j], nn = s[2 * H + j], hn = s[3 * H + j];
            float dnp = dh * (1.0f - z) * (1.0f - nn * nn);
            float dz = dh * (hp[q] - nn) * z * (1.0f - z);
            float dr = dnp * hn * rg * (1.0f - rg);
            dxb[j] = dr; dxb[H + j] = dz; dxb[2 * H + j] = dnp;
            dgb[j] = dr; dgb[H + j] = dz; dgb[2 * H + j] = dnp * rg;
            dcar[q] = dh * z + skip;
        }
    }
}

/* Small-batch products for the per-step recurrent products, C (M x N) = A (M x K) B (K x N),
 * with M the batch (20 in the PTB recipes) and B the recurrent weight, packed once per call.
 * oneDNN's packed linear ran these at M = 20 below this kernel here (one thread of an AVX-512
 * EPYC, benchmarks/small_gemm.py, H = 650: the tied forward product 784 against 745 us, the
 * four untied backward blocks 1356 against 802 us), and every call through torch costs ~15 us
 * besides (docs/results/scripts/untied_costs.py). A tile is MR rows x 2 vectors of columns,
 * its accumulators held in registers across the whole K loop; B is packed in panels of NR
 * columns (row k of panel p at Bp + (p*K + k)*NR, zero past N) so that the loop reads it
 * sequentially. GCC/Clang vector types: AVX-512 or AVX2 (or SSE) as -march=native allows. */
#if defined(__AVX512F__)
#define GEMM_VL 16
#define GEMM_MR 10
#else
#define GEMM_VL 8
#define GEMM_MR 6
#endif
#define GEMM_NR (2 * GEMM_VL)
/* aligned(4), may_alias: loads through a gvec pointer from any float address */
typedef float gvec __attribute__((vector_size(GEMM_VL * 4), aligned(4), may_alias));

long gemm_nr(void) { return GEMM_NR; }

/* Packs B[k][n] = b[k*s_k + n*s_n] (any strides: W_hh^T for the forward, W_hh for the
 * backward, or one gate block of either) into Bp, ((N + NR - 1) / NR) * K * NR floats. */
void gemm_pack(const float *__restrict b, long s_k, long s_n, long K, long N,
               float *__restrict Bp) {
    const long np = (N + GEMM_NR - 1) / GEMM_NR;
    for (long p = 0; p < np; p++)
        for (long k = 0; k < K; k++) {
            float *row = Bp + (p * K + k) * GEMM_NR;
            for (long c = 0; c < GEMM_NR; c++) {
                const long n = p * GEMM_NR + c;
                row[c] = n < N ? b[k * s_k + n * s_n] : 0.0f;
            }
        }
}

/* The store of a tile's accumulators: columns [0, nc) of rows [0, mr) to C (row stride ldc),
 * times mul (row stride ldm) when mul != NULL. Elements read by subscript: acc is never
 * address-taken, so the compiler can keep it in registers through the K loop. */
#define GEMM_STORE(acc, mr)                                                    \
    for (long i = 0; i < (mr); i++) {                                          \
        float t[GEMM_NR];                                                      \
        for (int l = 0; l < GEMM_VL; l++) {                                    \
            t[l] = acc[i][0][l];                                               \
            t[GEMM_VL + l] = acc[i][1][l];                                     \
        }                                                                      \
        float *c = C + i * ldc;                                                \
        if (mul) {                                                             \
            const float *mm = mul + i * ldm;                                   \
            for (long q = 0; q < nc; q++) c[q] = t[q] * mm[q];                 \
        } else {                                                               \
            for (long q = 0; q < nc; q++) c[q] = t[q];                         \
        }                                                                      \
    }

/* A tile's product: rows [0, rows) of A times one panel, into acc (MR x 2 vectors). */
#define GEMM_ACCUMULATE(acc, rows)                                             \
    const gvec zero = {0};                                                     \
    gvec acc[GEMM_MR][2];                                                      \
    for (int i = 0; i < GEMM_MR; i++) {                                        \
        acc[i][0] = zero;                                                      \
        acc[i][1] = zero;                                                      \
    }                                                                          \
    for (long k = 0; k < K; k++) {                                             \
        const gvec b0 = *(const gvec *)(bp + k * GEMM_NR);                     \
        const gvec b1 = *(const gvec *)(bp + k * GEMM_NR + GEMM_VL);           \
        for (long i = 0; i < (rows); i++) {                                    \
            const float a = A[i * lda + k];                                    \
            acc[i][0] += a * b0;                                               \
            acc[i][1] += a * b1;                                               \
        }                                                                      \
    }

/* One full tile: rows [0, MR) of A (row stride lda) times one panel, stored as GEMM_STORE.
 * Fixed trip counts: the MR x 2 accumulators and the two panel vectors stay in registers. */
static inline __attribute__((always_inline)) void gemm_tile(
        const float *__restrict A, long lda, const float *__restrict bp, long K,
        float *__restrict C, long ldc, const float *__restrict mul, long ldm, long nc) {
    GEMM_ACCUMULATE(acc, GEMM_MR)
    GEMM_STORE(acc, GEMM_MR)
}

/* The last rows of A when M is not a multiple of MR (mr < MR): a separate function, so that
 * its runtime trip count does not keep the full tile's accumulators in memory. */
static __attribute__((noinline)) void gemm_tile_part(
        const float *__restrict A, long lda, const float *__restrict bp, long K,
        float *__restrict C, long ldc, const float *__restrict mul, long ldm, long nc,
        long mr) {
    GEMM_ACCUMULATE(acc, mr)
    GEMM_STORE(acc, mr)
}

/* G products at once, C_g = A_g B_g (times mul, elementwise, when mul != NULL: G = 1), with
 * A_g = A + g*a_gs, C_g = C + g*c_gs and B_g packed at Bp + g*(panels * K * NR): the gate
 * blocks of untied masks in one call. On nthreads OpenMP threads over the G x panels tiles
 * (one where the library was built without OpenMP). */
void gemm(const float *__restrict A, long lda, long a_gs, const float *__restrict Bp, long G,
          long M, long K, long N, float *__restrict C, long ldc, long c_gs,
          const float *__restrict mul, long ldm, int nthreads) {
    const long np = (N + GEMM_NR - 1) / GEMM_NR;
    (void)nthreads;
    #pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1)
    for (long q = 0; q < G * np; q++) {
        const long g = q / np, p = q % np;
        const long n0 = p * GEMM_NR, nc = N - n0 < GEMM_NR ? N - n0 : GEMM_NR;
        const float *bp = Bp + (g * np + p) * K * GEMM_NR;
        const float *a = A + g * a_gs;
        float *c = C + g * c_gs + n0;
        for (long i0 = 0; i0 < M; i0 += GEMM_MR) {
            const long mr = M - i0 < GEMM_MR ? M - i0 : GEMM_MR;
            const float *mi = mul ? mul + i0 * ldm + n0 : 0;
            if (mr == GEMM_MR)
                gemm_tile(a + i0 * lda, lda, bp, K, c + i0 * ldc, ldc, mi, ldm, nc);
            else
                gemm_tile_part(a + i0 * lda, lda, bp, K, c + i0 * ldc, ldc, mi, ldm, nc, mr);
        }
    }
}

/* dst (C, R) = srcᵀ for src (R, C) with row stride ls (unit column stride): the weight
 * gradient's left operand (see _gemm.transposed). Square tiles of 16 x 16 floats keep the reads
 * and the writes of a tile within 16 cache lines each; torch's strided copy walks one of the
 * two a whole row apart, about 2x slower here at (700, 2600). */
void transpose(const float *__restrict src, long R, long C, long ls, float *__restrict dst) {
    enum { BS = 16 };
    #pragma omp parallel for num_threads(g_threads) schedule(static) if (g_threads > 1)
    for (long i0 = 0; i0 < R; i0 += BS) {
        const long i1 = i0 + BS < R ? i0 + BS : R;
        for (long j0 = 0; j0 < C; j0 += BS) {
            const long j1 = j0 + BS < C ? j0 + BS : C;
            if (i1 - i0 == BS && j1 - j0 == BS) {   /* full tile: fixed trip counts vectorize */
                for (long j = 0; j < BS; j++)
                    for (long i = 0; i < BS; i++)
                        dst[(j0 + j) * R + i0 + i] = src[(i0 + i) * ls + j0 + j];
            } else {
                for (long j = j0; j < j1; j++)
                    for (long i = i0; i < i1; i++)
                        dst[j * R + i] = src[i * ls + j];
            }
        }
    }
}
"""

_FLAGS = ["-O3", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math"]


def enabled() -> bool:
    return os.environ.get("RNNDROP_FAST_CEXT", "1") not in ("0", "")


def _cpu_id() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return ""


def _build_dir() -> str:
    d = os.environ.get("RNNDROP_FAST_BUILD_DIR")
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "rnndrop", "fast")
    return d


def _compile(cc: str, path: str) -> None:
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=d) as tmp:
        c_file = os.path.join(tmp, "lstm_kernels.c")
        with open(c_file, "w") as fh:
            fh.write(SOURCE)
        so = os.path.join(tmp, "lib.so")
        err = ""
        # -march=native and OpenMP (for gemm's threads) where the compiler supports them; in
        # the process, -fopenmp binds to the OpenMP runtime torch has loaded (its libgomp)
        for extra in (["-march=native", "-fopenmp"], ["-march=native"], ["-fopenmp"], []):
            res = subprocess.run([cc, *_FLAGS, *extra, "-o", so, c_file, "-lm"],
                                 capture_output=True, text=True, timeout=120)
            if res.returncode == 0:
                os.replace(so, path)  # atomic: concurrent builders agree on the result
                return
            err = (res.stderr or res.stdout).strip().splitlines()[-1:] or [""]
            err = err[0]
        raise RuntimeError(f"{cc} failed: {err}")


def _load():
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("no C compiler found (set CC)")
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout.splitlines()[:1]
    except Exception:
        version = []
    ident = "\0".join([SOURCE, cc, *version, *_FLAGS, _cpu_id()])
    key = hashlib.sha256(ident.encode()).hexdigest()[:16]
    path = os.path.join(_build_dir(), f"lstm_kernels_{key}.so")
    if not os.path.exists(path):
        _compile(cc, path)
    lib = ctypes.CDLL(path)
    P, L, I = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
    lib.lstm_fwd_step.argtypes = [P, L, P, P, P, P, P, P, P, L, L, I]
    lib.lstm_fwd_step.restype = None
    lib.lstm_bwd_step.argtypes = [P, P, P, P, P, P, P, P, L, L, I]
    lib.lstm_bwd_step.restype = None
    lib.gru_fwd_step.argtypes = [P, L, P, P, P, P, P, P, P, L, L, I]
    lib.gru_fwd_step.restype = None
    lib.gru_bwd_step.argtypes = [P, P, P, P, P, P, P, P, L, L, I]
    lib.gru_bwd_step.restype = None
    lib.lstm_fwd_step_z.argtypes = [P, L, P, P, P, P, P, P, P, P, P, P, P, L, L, I]
    lib.lstm_fwd_step_z.restype = None
    lib.lstm_bwd_step_z.argtypes = [P, P, P, P, P, P, P, P, P, P, P, L, L, I]
    lib.lstm_bwd_step_z.restype = None
    lib.gru_fwd_step_z.argtypes = [P, L, P, P, P, P, P, P, P, P, L, L, I]
    lib.gru_fwd_step_z.restype = None
    lib.gru_bwd_step_z.argtypes = [P, P, P, P, P, P, P, P, P, L, L, I]
    lib.gru_bwd_step_z.restype = None
    lib.transpose.argtypes = [P, L, L, L, P]
    lib.transpose.restype = None
    lib.set_threads.argtypes = [I]
    lib.set_threads.restype = None
    lib.gemm_nr.argtypes = []
    lib.gemm_nr.restype = L
    lib.gemm_pack.argtypes = [P, L, L, L, L, P]
    lib.gemm_pack.restype = None
    lib.gemm.argtypes = [P, L, L, P, L, L, L, L, P, L, L, P, L, I]
    lib.gemm.restype = None
    return lib


def kernels():
    """The loaded library, or None (no compiler, build failed, or disabled)."""
    global _LIB
    if not enabled():
        return None
    if _LIB is None:
        try:
            _LIB = _load()
        except Exception as e:  # no compiler, read-only cache, odd platform...
            _LIB = False
            warnings.warn(f"rnndrop.fast: fused CPU kernels unavailable ({type(e).__name__}: {e}); "
                          "using torch ops", RuntimeWarning, stacklevel=2)
    return _LIB or None
