/* INT4 weights times float activations on x86 CPUs, bound by memory rather than by unpacking.
 *
 * Activations are quantized to int8 in blocks of 32 columns (one float scale per block), and
 * each block's products with the weights' nibbles are summed as integers with the CPU's
 * byte dot-product instructions (AVX-512 VNNI, AVX-VNNI, or AVX2's multiply-add pairs).
 * Weights keep their nibbles as unsigned u = q + 8 so that one instruction multiplies them
 * with signed activation bytes; sum(q * x) = sum(u * x) - 8 * sum(x) per block.
 *
 * Weight layout, written by the Python side: rows in tiles of TILE_ROWS. Per tile and per 8
 * columns k..k+7, each row has 4 bytes; byte j holds u[k + j] in its low nibble and
 * u[k + 4 + j] in its high nibble. One vector load therefore gives 4 consecutive columns for
 * every row of the tile twice over (low and high nibbles), exactly the grouping of 4 bytes
 * that the dot-product instructions sum. Scales are stored per tile and group, TILE_ROWS
 * floats at a time, so one vector load gets the scales of the whole tile.
 *
 * INT8 weights (cg_int8_matmul) use the same tiles with 4 signed bytes per row and 4 columns:
 * one vector load gives 4 consecutive columns of every row of the tile. The VNNI paths turn
 * them into u = q + 128 (flipping the sign bit) and subtract 128 * sum(x) per block; AVX2
 * without VNNI multiplies |q| with x carrying q's sign, which keeps its 16-bit pair sums
 * (at most 2 * 128 * 127) from saturating.
 *
 * Compiled on the machine it runs on (-march=native); cg_isa says which path was compiled.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#define BLOCK 32
#define ROWS_AT_ONCE 4
#ifndef PREFETCH
#define PREFETCH 2048
#endif

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define ISA 3
#define TILE_ROWS 16
typedef __m512i ivec;
typedef __m512 fvec;
#define LOAD(p) _mm512_loadu_si512((const void *)(p))
#define NIBBLES_LOW(v) _mm512_and_si512((v), _mm512_set1_epi8(0x0F))
#define NIBBLES_HIGH(v) _mm512_and_si512(_mm512_srli_epi16((v), 4), _mm512_set1_epi8(0x0F))
#define BROADCAST32(p) _mm512_set1_epi32(*(const int32_t *)(p))
#define DOT(acc, u, x) _mm512_dpbusd_epi32((acc), (u), (x))
#define IZERO() _mm512_setzero_si512()
#define FZERO() _mm512_setzero_ps()
#define ISUB(a, b) _mm512_sub_epi32((a), (b))
#define IADD(a, b) _mm512_add_epi32((a), (b))
#define ISET1(v) _mm512_set1_epi32(v)
#define TOFLOAT(a) _mm512_cvtepi32_ps(a)
#define FMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define FSET1(v) _mm512_set1_ps(v)
#define FLOAD(p) _mm512_loadu_ps(p)
#define FSTORE(p, v) _mm512_storeu_ps((p), (v))
#define FMUL(a, b) _mm512_mul_ps((a), (b))
#define OFFSET8 128
#define DOT8(acc, q, x) DOT((acc), _mm512_xor_si512((q), _mm512_set1_epi8((char)0x80)), (x))
#elif defined(__AVX2__) && defined(__FMA__)
#define TILE_ROWS 8
typedef __m256i ivec;
typedef __m256 fvec;
#define LOAD(p) _mm256_loadu_si256((const __m256i *)(p))
#define NIBBLES_LOW(v) _mm256_and_si256((v), _mm256_set1_epi8(0x0F))
#define NIBBLES_HIGH(v) _mm256_and_si256(_mm256_srli_epi16((v), 4), _mm256_set1_epi8(0x0F))
#define BROADCAST32(p) _mm256_set1_epi32(*(const int32_t *)(p))
#if defined(__AVXVNNI__)
#define ISA 2
#define DOT(acc, u, x) _mm256_dpbusd_avx_epi32((acc), (u), (x))
#define OFFSET8 128
#define DOT8(acc, q, x) DOT((acc), _mm256_xor_si256((q), _mm256_set1_epi8((char)0x80)), (x))
#else
#define ISA 1
/* u <= 15 and |x| <= 128: the pairwise 16-bit sums cannot saturate. */
#define DOT(acc, u, x)                                                                       \
    _mm256_add_epi32((acc), _mm256_madd_epi16(_mm256_maddubs_epi16((u), (x)),                \
                                              _mm256_set1_epi16(1)))
#define OFFSET8 0
#define DOT8(acc, q, x) DOT((acc), _mm256_sign_epi8((q), (q)), _mm256_sign_epi8((x), (q)))
#endif
#define IZERO() _mm256_setzero_si256()
#define FZERO() _mm256_setzero_ps()
#define ISUB(a, b) _mm256_sub_epi32((a), (b))
#define IADD(a, b) _mm256_add_epi32((a), (b))
#define ISET1(v) _mm256_set1_epi32(v)
#define TOFLOAT(a) _mm256_cvtepi32_ps(a)
#define FMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define FSET1(v) _mm256_set1_ps(v)
#define FLOAD(p) _mm256_loadu_ps(p)
#define FSTORE(p, v) _mm256_storeu_ps((p), (v))
#define FMUL(a, b) _mm256_mul_ps((a), (b))
#else
#define ISA 0
#define TILE_ROWS 16
#define OFFSET8 0
#endif

int cg_isa(void) { return ISA; }

int cg_tile_rows(void) { return TILE_ROWS; }

/* x: [m, k] float -> xq: [m, k] int8, scale and offset * sum per block of 32: [m, k / 32]. */
static void quantize_rows(const float *x, int64_t m, int64_t k, int offset, int8_t *xq,
                          float *scale, int32_t *sum8) {
    int64_t blocks = k / BLOCK;
    for (int64_t r = 0; r < m; r++) {
        for (int64_t b = 0; b < blocks; b++) {
            const float *src = x + r * k + b * BLOCK;
            int8_t *dst = xq + r * k + b * BLOCK;
            float top = 0.0f;
            for (int i = 0; i < BLOCK; i++) {
                float a = fabsf(src[i]);
                top = a > top ? a : top;
            }
            float s = top / 127.0f;
            float inverse = s > 0.0f ? 1.0f / s : 0.0f;
            int32_t total = 0;
            for (int i = 0; i < BLOCK; i++) {
                int32_t v = (int32_t)nearbyintf(src[i] * inverse);
                v = v > 127 ? 127 : (v < -127 ? -127 : v);
                dst[i] = (int8_t)v;
                total += v;
            }
            scale[r * blocks + b] = s;
            sum8[r * blocks + b] = offset * total;
        }
    }
}

/* Vector loads per block of 32 columns: a load holds 4 columns of every row of the tile, twice
 * over (low and high nibbles) for INT4. */
#define LOADS_PER_BLOCK(bits) (BLOCK * (bits) / 32)

#if ISA > 0
/* One tile of TILE_ROWS output rows for `rows` activation rows of `bits`-bit weights; `rows`
 * and `bits` are constants in each inlined call, so the accumulators stay in registers and the
 * other width's branch is gone. Two independent dot-product chains per row (INT4: low and high
 * nibbles; INT8: alternate loads). The weights are prefetched ahead: the hardware prefetcher
 * alone leaves batch-1 decode short of the memory's speed. */
static inline __attribute__((always_inline)) void tile_rows(
    const uint8_t *w, const float *wscale, int64_t k, int64_t group, const int8_t *xq,
    const float *xscale, const int32_t *sum8, float *y, int64_t ldy, const int rows,
    const int bits) {
    int64_t blocks = k / BLOCK;
    int64_t blocks_per_group = group / BLOCK;
    fvec out[ROWS_AT_ONCE];
    for (int r = 0; r < rows; r++) out[r] = FZERO();
    for (int64_t g = 0; g < k / group; g++) {
        fvec s = FLOAD(wscale + g * TILE_ROWS);
        for (int64_t b = g * blocks_per_group; b < (g + 1) * blocks_per_group; b++) {
            ivec acc[ROWS_AT_ONCE][2];
            for (int r = 0; r < rows; r++)
                for (int a = 0; a < 2; a++) acc[r][a] = IZERO();
            const uint8_t *chunk = w + b * LOADS_PER_BLOCK(bits) * TILE_ROWS * 4;
            for (int c = 0; c < LOADS_PER_BLOCK(bits); c++) {
                _mm_prefetch((const char *)(chunk + c * TILE_ROWS * 4 + PREFETCH), _MM_HINT_T0);
                ivec v = LOAD(chunk + c * TILE_ROWS * 4);
                if (bits == 4) {
                    ivec low = NIBBLES_LOW(v);
                    ivec high = NIBBLES_HIGH(v);
                    for (int r = 0; r < rows; r++) {
                        const int8_t *xs = xq + r * k + b * BLOCK + c * 8;
                        acc[r][0] = DOT(acc[r][0], low, BROADCAST32(xs));
                        acc[r][1] = DOT(acc[r][1], high, BROADCAST32(xs + 4));
                    }
                } else {
                    for (int r = 0; r < rows; r++) {
                        const int8_t *xs = xq + r * k + b * BLOCK + c * 4;
                        acc[r][c & 1] = DOT8(acc[r][c & 1], v, BROADCAST32(xs));
                    }
                }
            }
            for (int r = 0; r < rows; r++) {
                ivec total = IADD(acc[r][0], acc[r][1]);
                ivec exact = ISUB(total, ISET1(sum8[r * blocks + b]));
                out[r] = FMA(TOFLOAT(exact), FMUL(s, FSET1(xscale[r * blocks + b])), out[r]);
            }
        }
    }
    for (int r = 0; r < rows; r++) FSTORE(y + r * ldy, out[r]);
}
#else
static void tile_rows(const uint8_t *w, const float *wscale, int64_t k, int64_t group,
                      const int8_t *xq, const float *xscale, const int32_t *sum8, float *y,
                      int64_t ldy, const int rows, const int bits) {
    int64_t blocks = k / BLOCK;
    for (int r = 0; r < rows; r++) {
        for (int t = 0; t < TILE_ROWS; t++) {
            float out = 0.0f;
            for (int64_t g = 0; g < k / group; g++) {
                float grouped = 0.0f;
                for (int64_t b = g * (group / BLOCK); b < (g + 1) * (group / BLOCK); b++) {
                    int32_t acc = 0;
                    for (int c = 0; c < LOADS_PER_BLOCK(bits); c++) {
                        const uint8_t *bytes =
                            w + ((b * LOADS_PER_BLOCK(bits) + c) * TILE_ROWS + t) * 4;
                        for (int j = 0; j < 4; j++) {
                            if (bits == 4) {
                                const int8_t *xs = xq + r * k + b * BLOCK + c * 8;
                                acc += (bytes[j] & 0x0F) * xs[j] + (bytes[j] >> 4) * xs[4 + j];
                            } else {
                                const int8_t *xs = xq + r * k + b * BLOCK + c * 4;
                                acc += (int8_t)bytes[j] * xs[j];
                            }
                        }
                    }
                    grouped += (float)(acc - sum8[r * blocks + b]) * xscale[r * blocks + b];
                }
                out += grouped * wscale[g * TILE_ROWS + t];
            }
            y[r * ldy + t] = out;
        }
    }
}
#endif

#define TILE_CALL(rows, bits) tile_rows(tw, ts, k, group, rx, rs, r8, ry, n, rows, bits)

/* y[m, n] = x[m, k] @ W.T for `bits` 4 or 8. w: the tiled weights, n * k * bits / 8 bytes;
 * wscale: n * k / group floats in tile order. k is a multiple of 32 and of group, group a
 * multiple of 32, n a multiple of TILE_ROWS. Returns 0, or -1 when scratch memory cannot be
 * had. */
static int matmul(int bits, const float *x, int64_t m, int64_t k, const uint8_t *w,
                  const float *wscale, int64_t group, int64_t n, float *y, int threads) {
    int64_t blocks = k / BLOCK;
    int8_t *xq = malloc((size_t)(m * k));
    float *xscale = malloc((size_t)(m * blocks) * sizeof(float));
    int32_t *sum8 = malloc((size_t)(m * blocks) * sizeof(int32_t));
    if (!xq || !xscale || !sum8) {
        free(xq);
        free(xscale);
        free(sum8);
        return -1;
    }
    quantize_rows(x, m, k, bits == 4 ? 8 : OFFSET8, xq, xscale, sum8);
    int64_t tiles = n / TILE_ROWS;
    int64_t tile_bytes = (int64_t)TILE_ROWS * k * bits / 8;
    int64_t tile_scales = (int64_t)TILE_ROWS * (k / group);
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t t = 0; t < tiles; t++) {
        const uint8_t *tw = w + t * tile_bytes;
        const float *ts = wscale + t * tile_scales;
        for (int64_t r = 0; r < m; r += ROWS_AT_ONCE) {
            int64_t left = m - r;
            const int8_t *rx = xq + r * k;
            const float *rs = xscale + r * blocks;
            const int32_t *r8 = sum8 + r * blocks;
            float *ry = y + r * n + t * TILE_ROWS;
            int rows = left >= ROWS_AT_ONCE ? ROWS_AT_ONCE : (int)left;
            /* `rows` and `bits` constants in each call, so each call is its own code. */
            if (bits == 4) {
                switch (rows) {
                case 1: TILE_CALL(1, 4); break;
                case 2: TILE_CALL(2, 4); break;
                case 3: TILE_CALL(3, 4); break;
                default: TILE_CALL(4, 4); break;
                }
            } else {
                switch (rows) {
                case 1: TILE_CALL(1, 8); break;
                case 2: TILE_CALL(2, 8); break;
                case 3: TILE_CALL(3, 8); break;
                default: TILE_CALL(4, 8); break;
                }
            }
        }
    }
    free(xq);
    free(xscale);
    free(sum8);
    return 0;
}

int cg_int4_matmul(const float *x, int64_t m, int64_t k, const uint8_t *w, const float *wscale,
                   int64_t group, int64_t n, float *y, int threads) {
    return matmul(4, x, m, k, w, wscale, group, n, y, threads);
}

int cg_int8_matmul(const float *x, int64_t m, int64_t k, const uint8_t *w, const float *wscale,
                   int64_t group, int64_t n, float *y, int threads) {
    return matmul(8, x, m, k, w, wscale, group, n, y, threads);
}
