/*
 * BLAKE3 in keyed mode (https://github.com/BLAKE3-team/BLAKE3-specs), for
 * chunk ids. Written here because Debian 12 packages no C library of it;
 * checked in tests against the b3sum tool and the specification's test
 * vectors.
 *
 * The input is hashed in one call (a chunk of a stream is in memory whole).
 * BLAKE3 splits it into 1 KiB chunks hashed independently, then merges
 * their chaining values pairwise, level by level (an odd one left at the end
 * of a level moves up unchanged), the last merge flagged as the root. That
 * independence is what makes it fast: with AVX-512 (checked at run time)
 * sixteen 1 KiB chunks, or sixteen merges, are compressed at once, one per
 * 32-bit lane; without it the same steps run one at a time.
 *
 * Pure functions of their arguments; thread safe.
 */
#include <stdbool.h>
#include <string.h>

#include "dp/crypto.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX512_PATH 1
#endif

enum {
	CHUNK_START = 1,
	CHUNK_END = 2,
	PARENT = 4,
	ROOT = 8,
	KEYED_HASH = 16,
	BLOCK_LEN = 64,
	CHUNK_LEN = 1024,
	LANES = 16,
};

static const uint32_t IV[8] = {0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
                               0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19};

/* The message word order of each of the 7 rounds: round 0 takes the words
 * in order, each later round applies the permutation to the previous one. */
static const uint8_t SCHEDULE[7][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8},
    {3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1},
    {10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6},
    {12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4},
    {9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7},
    {11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13},
};

static inline uint32_t load32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint32_t rotr(uint32_t x, int n)
{
	return (x >> n) | (x << (32 - n));
}

#define G(a, b, c, d, x, y)                                                                        \
	do {                                                                                       \
		s[a] = s[a] + s[b] + (x);                                                          \
		s[d] = rotr(s[d] ^ s[a], 16);                                                      \
		s[c] = s[c] + s[d];                                                                \
		s[b] = rotr(s[b] ^ s[c], 12);                                                      \
		s[a] = s[a] + s[b] + (y);                                                          \
		s[d] = rotr(s[d] ^ s[a], 8);                                                       \
		s[c] = s[c] + s[d];                                                                \
		s[b] = rotr(s[b] ^ s[c], 7);                                                       \
	} while (0)

/* One compression: cv (8 words) is replaced by the new chaining value. */
static void compress(uint32_t cv[8], const uint8_t block[BLOCK_LEN], uint32_t block_len,
                     uint64_t counter, uint32_t flags)
{
	uint32_t m[16], s[16];
	for (int i = 0; i < 16; i++)
		m[i] = load32(block + 4 * i);
	memcpy(s, cv, 8 * sizeof(uint32_t));
	memcpy(s + 8, IV, 4 * sizeof(uint32_t));
	s[12] = (uint32_t)counter;
	s[13] = (uint32_t)(counter >> 32);
	s[14] = block_len;
	s[15] = flags;
	for (int r = 0; r < 7; r++) {
		const uint8_t *w = SCHEDULE[r];
		G(0, 4, 8, 12, m[w[0]], m[w[1]]);
		G(1, 5, 9, 13, m[w[2]], m[w[3]]);
		G(2, 6, 10, 14, m[w[4]], m[w[5]]);
		G(3, 7, 11, 15, m[w[6]], m[w[7]]);
		G(0, 5, 10, 15, m[w[8]], m[w[9]]);
		G(1, 6, 11, 12, m[w[10]], m[w[11]]);
		G(2, 7, 8, 13, m[w[12]], m[w[13]]);
		G(3, 4, 9, 14, m[w[14]], m[w[15]]);
	}
	for (int i = 0; i < 8; i++)
		cv[i] = s[i] ^ s[i + 8];
}

/* The chaining value of one chunk of len <= CHUNK_LEN bytes (len 0 only for
 * empty input), its final block flagged with last_flags. */
static void chunk_cv(uint32_t cv[8], const uint32_t key[8], const uint8_t *p, size_t len,
                     uint64_t counter, uint32_t last_flags)
{
	uint8_t block[BLOCK_LEN];
	memcpy(cv, key, 8 * sizeof(uint32_t));
	uint32_t flags = KEYED_HASH | CHUNK_START;
	while (len > BLOCK_LEN) {
		compress(cv, p, BLOCK_LEN, counter, flags);
		flags = KEYED_HASH;
		p += BLOCK_LEN;
		len -= BLOCK_LEN;
	}
	memset(block, 0, sizeof(block));
	memcpy(block, p, len);
	compress(cv, block, (uint32_t)len, counter, flags | CHUNK_END | last_flags);
}

/* n independent compressions of `blocks` consecutive blocks each: lane i
 * reads its blocks from in + i * stride, starts from key, counts
 * counter + i * counter_step, and flags its first block with flags |
 * flags_start and its last with flags | flags_end. out: 8 words per lane. */
static void hash_many_portable(const uint8_t *in, size_t stride, size_t n, size_t blocks,
                               const uint32_t key[8], uint64_t counter, uint64_t counter_step,
                               uint32_t flags, uint32_t flags_start, uint32_t flags_end,
                               uint32_t *out)
{
	for (size_t i = 0; i < n; i++) {
		/* out may overlap the input of this lane (merges in place). */
		uint32_t cv[8];
		memcpy(cv, key, sizeof(cv));
		for (size_t b = 0; b < blocks; b++) {
			uint32_t f =
			    flags | (b == 0 ? flags_start : 0) | (b + 1 == blocks ? flags_end : 0);
			compress(cv, in + i * stride + b * BLOCK_LEN, BLOCK_LEN,
			         counter + i * counter_step, f);
		}
		memcpy(out + 8 * i, cv, sizeof(cv));
	}
}

#ifdef HAVE_AVX512_PATH
#define VG(a, b, c, d, x, y)                                                                       \
	do {                                                                                       \
		v[a] = _mm512_add_epi32(_mm512_add_epi32(v[a], v[b]), (x));                        \
		v[d] = _mm512_ror_epi32(_mm512_xor_si512(v[d], v[a]), 16);                         \
		v[c] = _mm512_add_epi32(v[c], v[d]);                                               \
		v[b] = _mm512_ror_epi32(_mm512_xor_si512(v[b], v[c]), 12);                         \
		v[a] = _mm512_add_epi32(_mm512_add_epi32(v[a], v[b]), (y));                        \
		v[d] = _mm512_ror_epi32(_mm512_xor_si512(v[d], v[a]), 8);                          \
		v[c] = _mm512_add_epi32(v[c], v[d]);                                               \
		v[b] = _mm512_ror_epi32(_mm512_xor_si512(v[b], v[c]), 7);                          \
	} while (0)

/* m[w] = word w of the block at row[i] + off, for each lane i: sixteen
 * 64-byte loads, then a 16x16 transpose of 32-bit words (interleave words,
 * then pairs of words, then 128-bit quarters twice). */
__attribute__((target("avx512f"))) static inline void
load_transposed(__m512i m[16], const uint8_t *const row[LANES], size_t off)
{
	__m512i r[16], a[16];
	for (int i = 0; i < 16; i++)
		r[i] = _mm512_loadu_si512(row[i] + off);
	for (int i = 0; i < 16; i += 2) {
		a[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
		a[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
	}
	/* r[4g + j], quarter k: rows 4g..4g+3 of word 4k + j */
	for (int g = 0; g < 4; g++) {
		r[4 * g + 0] = _mm512_unpacklo_epi64(a[4 * g], a[4 * g + 2]);
		r[4 * g + 1] = _mm512_unpackhi_epi64(a[4 * g], a[4 * g + 2]);
		r[4 * g + 2] = _mm512_unpacklo_epi64(a[4 * g + 1], a[4 * g + 3]);
		r[4 * g + 3] = _mm512_unpackhi_epi64(a[4 * g + 1], a[4 * g + 3]);
	}
	for (int j = 0; j < 4; j++) {
		__m512i elo = _mm512_shuffle_i32x4(r[j], r[4 + j], _MM_SHUFFLE(2, 0, 2, 0));
		__m512i ehi = _mm512_shuffle_i32x4(r[j], r[4 + j], _MM_SHUFFLE(3, 1, 3, 1));
		__m512i flo = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], _MM_SHUFFLE(2, 0, 2, 0));
		__m512i fhi = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], _MM_SHUFFLE(3, 1, 3, 1));
		m[j] = _mm512_shuffle_i32x4(elo, flo, _MM_SHUFFLE(2, 0, 2, 0));
		m[8 + j] = _mm512_shuffle_i32x4(elo, flo, _MM_SHUFFLE(3, 1, 3, 1));
		m[4 + j] = _mm512_shuffle_i32x4(ehi, fhi, _MM_SHUFFLE(2, 0, 2, 0));
		m[12 + j] = _mm512_shuffle_i32x4(ehi, fhi, _MM_SHUFFLE(3, 1, 3, 1));
	}
}

/* hash_many_portable for up to 16 lanes at once, one lane per 32-bit
 * element; each block's message words are transposed across lanes. */
__attribute__((target("avx512f"))) static void
hash_many_avx512(const uint8_t *in, size_t stride, size_t n, size_t blocks, const uint32_t key[8],
                 uint64_t counter, uint64_t counter_step, uint32_t flags, uint32_t flags_start,
                 uint32_t flags_end, uint32_t *out)
{
	uint32_t lo[LANES], hi[LANES];
	const uint8_t *row[LANES];
	for (size_t i = 0; i < LANES; i++) {
		uint64_t c = counter + (i < n ? i : 0) * counter_step;
		row[i] = in + (i < n ? i : 0) * stride; /* unused lanes repeat lane 0 */
		lo[i] = (uint32_t)c;
		hi[i] = (uint32_t)(c >> 32);
	}
	const __m512i clo = _mm512_loadu_si512(lo), chi = _mm512_loadu_si512(hi);
	__m512i cv[8], v[16], m[16];
	for (int i = 0; i < 8; i++)
		cv[i] = _mm512_set1_epi32((int)key[i]);
	for (size_t b = 0; b < blocks; b++) {
		load_transposed(m, row, b * BLOCK_LEN);
		uint32_t f = flags | (b == 0 ? flags_start : 0) | (b + 1 == blocks ? flags_end : 0);
		for (int i = 0; i < 8; i++)
			v[i] = cv[i];
		for (int i = 0; i < 4; i++)
			v[8 + i] = _mm512_set1_epi32((int)IV[i]);
		v[12] = clo;
		v[13] = chi;
		v[14] = _mm512_set1_epi32(BLOCK_LEN);
		v[15] = _mm512_set1_epi32((int)f);
		for (int r = 0; r < 7; r++) {
			const uint8_t *w = SCHEDULE[r];
			VG(0, 4, 8, 12, m[w[0]], m[w[1]]);
			VG(1, 5, 9, 13, m[w[2]], m[w[3]]);
			VG(2, 6, 10, 14, m[w[4]], m[w[5]]);
			VG(3, 7, 11, 15, m[w[6]], m[w[7]]);
			VG(0, 5, 10, 15, m[w[8]], m[w[9]]);
			VG(1, 6, 11, 12, m[w[10]], m[w[11]]);
			VG(2, 7, 8, 13, m[w[12]], m[w[13]]);
			VG(3, 4, 9, 14, m[w[14]], m[w[15]]);
		}
		for (int i = 0; i < 8; i++)
			cv[i] = _mm512_xor_si512(v[i], v[i + 8]);
	}
	uint32_t t[8][LANES];
	for (int i = 0; i < 8; i++)
		_mm512_storeu_si512(t[i], cv[i]);
	for (size_t l = 0; l < n; l++)
		for (int i = 0; i < 8; i++)
			out[8 * l + i] = t[i][l];
}
#endif

typedef void hash_many_fn(const uint8_t *, size_t, size_t, size_t, const uint32_t *, uint64_t,
                          uint64_t, uint32_t, uint32_t, uint32_t, uint32_t *);

static hash_many_fn *pick(bool allow_simd)
{
#ifdef HAVE_AVX512_PATH
	if (allow_simd && __builtin_cpu_supports("avx512f"))
		return hash_many_avx512;
#endif
	(void)allow_simd;
	return hash_many_portable;
}

/* Hashes with the given implementation (tests compare both). */
static int keyed(uint8_t out[DP_HASH_LEN], const uint8_t key_bytes[DP_KEY_LEN], const void *data,
                 size_t len, bool allow_simd)
{
	hash_many_fn *many = pick(allow_simd);
	const uint8_t *p = data;
	uint32_t key[8], cv[8];
	for (int i = 0; i < 8; i++)
		key[i] = load32(key_bytes + 4 * i);
	if (len <= CHUNK_LEN) {
		chunk_cv(cv, key, p, len, 0, ROOT);
	} else {
		/* Level 0: the chaining value of every chunk, LANES at a time;
		 * a last partial chunk on its own. Then merge level by level, in
		 * place, until two are left for the root. The stack buffer holds
		 * chunks of up to 256 KiB; longer inputs are merged by
		 * subtree (a left subtree of 256 chunks is complete). */
		uint32_t cvs[2 * 256][8];
		size_t nchunks = (len + CHUNK_LEN - 1) / CHUNK_LEN;
		size_t full = len / CHUNK_LEN;
		size_t n = 0; /* chaining values on the merge stack */
		size_t done = 0;
		/* Subtrees of 256 chunks (complete binary trees) reduce to one
		 * value each; what remains is handled as a whole. */
		while (nchunks - done > 256) {
			size_t k = 0;
			for (; k < 256; k += LANES)
				many(p + (done + k) * CHUNK_LEN, CHUNK_LEN, LANES,
				     CHUNK_LEN / BLOCK_LEN, key, done + k, 1, KEYED_HASH,
				     CHUNK_START, CHUNK_END, cvs[n + k]);
			for (size_t m = 256; m > 1; m /= 2)
				for (size_t i = 0; i < m / 2; i += LANES)
					many((const uint8_t *)cvs[n + 2 * i], 2 * 32,
					     m / 2 - i < LANES ? m / 2 - i : LANES, 1, key, 0, 0,
					     KEYED_HASH | PARENT, 0, 0, cvs[n + i]);
			n++;
			done += 256;
			/* Merge equal-sized subtrees on the stack, as BLAKE3's
			 * incremental hasher does: after the k-th subtree, as many
			 * merges as k has trailing zero bits. */
			for (size_t t = done / 256; t % 2 == 0 && n >= 2; t /= 2) {
				many((const uint8_t *)cvs[n - 2], 2 * 32, 1, 1, key, 0, 0,
				     KEYED_HASH | PARENT, 0, 0, cvs[n - 2]);
				n--;
			}
		}
		/* The rest: chunks [done, nchunks). */
		size_t base = n;
		for (size_t k = done; k < full; k += LANES) {
			size_t lanes = full - k < LANES ? full - k : LANES;
			many(p + k * CHUNK_LEN, CHUNK_LEN, lanes, CHUNK_LEN / BLOCK_LEN, key, k, 1,
			     KEYED_HASH, CHUNK_START, CHUNK_END, cvs[base + k - done]);
		}
		if (full < nchunks)
			chunk_cv(cvs[base + full - done], key, p + full * CHUNK_LEN,
			         len - full * CHUNK_LEN, full, 0);
		size_t m = nchunks - done;
		while (m > 1 && base + m > 2) {
			size_t pairs = m / 2;
			for (size_t i = 0; i < pairs; i += LANES)
				many((const uint8_t *)cvs[base + 2 * i], 2 * 32,
				     pairs - i < LANES ? pairs - i : LANES, 1, key, 0, 0,
				     KEYED_HASH | PARENT, 0, 0, cvs[base + i]);
			if (m % 2)
				memcpy(cvs[base + pairs], cvs[base + m - 1], sizeof(cvs[0]));
			m = pairs + m % 2;
		}
		n = base + m;
		/* The stack: subtrees left to right; merge from the right. */
		while (n > 2) {
			many((const uint8_t *)cvs[n - 2], 2 * 32, 1, 1, key, 0, 0,
			     KEYED_HASH | PARENT, 0, 0, cvs[n - 2]);
			n--;
		}
		uint8_t block[BLOCK_LEN];
		for (int i = 0; i < 8; i++)
			for (int b = 0; b < 4; b++) {
				block[4 * i + b] = (uint8_t)(cvs[0][i] >> (8 * b));
				block[32 + 4 * i + b] = (uint8_t)(cvs[1][i] >> (8 * b));
			}
		memcpy(cv, key, sizeof(cv));
		compress(cv, block, BLOCK_LEN, 0, KEYED_HASH | PARENT | ROOT);
	}
	for (int i = 0; i < 8; i++)
		for (int b = 0; b < 4; b++)
			out[4 * i + b] = (uint8_t)(cv[i] >> (8 * b));
	return 0;
}

int dp_blake3_keyed(uint8_t out[DP_HASH_LEN], const uint8_t key[DP_KEY_LEN], const void *data,
                    size_t len)
{
	return keyed(out, key, data, len, true);
}

int dp_blake3_keyed_portable(uint8_t out[DP_HASH_LEN], const uint8_t key[DP_KEY_LEN],
                             const void *data, size_t len)
{
	return keyed(out, key, data, len, false);
}
