/*
 * Content-defined chunking, FastCDC style: a gear rolling hash
 * (fp = fp << 1 + gear[byte]) tested against a mask on its top bits, with
 * normalised chunking (a harder mask before the average size, an easier one
 * after) and cut-point skipping (no hashing before the minimum size).
 *
 * The gear table is derived from the repository's secret chunker seed, so
 * chunk boundaries do not reveal content to someone who only sees sizes.
 * Stateless apart from dp_chunker itself; one dp_chunker per stream.
 */
#include <string.h>

#include "format.h"

void dp_chunker_gear(uint64_t gear[256], const uint8_t seed[DP_KEY_LEN])
{
	dp_mac *m = NULL;
	uint8_t h[DP_HASH_LEN];
	if (dp_mac_new(&m, seed) != 0) {
		/* Only out of memory gets here; a zero table still chunks (at max
		 * size), and the caller's next allocation reports the failure. */
		memset(gear, 0, 256 * sizeof(uint64_t));
		return;
	}
	for (uint32_t i = 0; i < 256 / 4; i++) {
		uint8_t ctr[4];
		dp_set_u32(ctr, i);
		dp_mac_compute(m, h, ctr, sizeof(ctr));
		for (int j = 0; j < 4; j++)
			gear[i * 4 + j] = dp_get_u64(h + 8 * j);
	}
	dp_wipe(h, sizeof(h));
	dp_mac_free(m);
}

static uint64_t top_mask(unsigned bits)
{
	if (bits == 0)
		return 0;
	if (bits >= 64)
		return ~0ull;
	return ((1ull << bits) - 1) << (64 - bits);
}

void dp_chunker_init(dp_chunker *c, const uint64_t *gear, uint32_t min, uint32_t avg, uint32_t max)
{
	unsigned bits = 0;
	while ((1u << (bits + 1)) <= avg)
		bits++;
	*c = (dp_chunker){.gear = gear, .min = min, .avg = avg, .max = max};
	/* Normalisation level 2, as in the FastCDC paper. */
	c->mask_s = top_mask(bits + 2);
	c->mask_l = top_mask(bits > 2 ? bits - 2 : 1);
}

/* Scans p[i..lim) with the given mask. The fingerprint after byte k is
 * fp_k = 2 fp_{k-1} + gear[p[k]]; four bytes are taken per step, each of the
 * four fingerprints computed from the one before the step (fp_4 = 16 fp +
 * 8 g0 + 4 g1 + 2 g2 + g3, the gear terms summed off the chain), so the
 * dependency chain is a shift and two adds per four bytes, and one branch
 * tests all four. Returns the index just past a cut point, or lim with
 * none. Cut points are those of the byte-at-a-time definition (repo_test
 * checks it). */
static inline size_t scan(const uint64_t *gear, const uint8_t *p, size_t i, size_t lim,
                          uint64_t mask, uint64_t *fpp, bool *found)
{
	uint64_t fp = *fpp;
	for (; i + 4 <= lim; i += 4) {
		uint64_t g0 = gear[p[i]], g1 = gear[p[i + 1]], g2 = gear[p[i + 2]],
		         g3 = gear[p[i + 3]];
		uint64_t t01 = (g0 << 1) + g1, t23 = (g2 << 1) + g3;
		uint64_t f1 = (fp << 1) + g0;
		uint64_t f2 = (fp << 2) + t01;
		uint64_t f3 = (f2 << 1) + g2;
		uint64_t f4 = (fp << 4) + (t01 << 2) + t23;
		if ((f1 & mask) && (f2 & mask) && (f3 & mask) && (f4 & mask)) {
			fp = f4;
			continue;
		}
		size_t k = !(f1 & mask) ? 1 : !(f2 & mask) ? 2 : !(f3 & mask) ? 3 : 4;
		*fpp = k == 1 ? f1 : k == 2 ? f2 : k == 3 ? f3 : f4;
		*found = true;
		return i + k;
	}
	for (; i < lim; i++) {
		fp = (fp << 1) + gear[p[i]];
		if (!(fp & mask)) {
			*fpp = fp;
			*found = true;
			return i + 1;
		}
	}
	*fpp = fp;
	return i;
}

size_t dp_chunker_next(dp_chunker *c, const uint8_t *p, size_t n, bool *cut)
{
	uint64_t fp = c->fp;
	size_t base = c->len; /* bytes of this chunk before p[0] */
	size_t i = 0, lim;
	bool found = false;
	*cut = false;

	/* Cut-point skipping: nothing before the minimum size is hashed. */
	if (base < c->min)
		i = n < c->min - base ? n : c->min - base;
	/* Before the average size: the harder mask. */
	lim = base < c->avg ? c->avg - base : 0;
	if (lim > n)
		lim = n;
	if (i < lim)
		i = scan(c->gear, p, i, lim, c->mask_s, &fp, &found);
	/* After it: the easier one, up to the maximum. */
	if (!found) {
		lim = base < c->max ? c->max - base : 0;
		if (lim > n)
			lim = n;
		if (i < lim)
			i = scan(c->gear, p, i, lim, c->mask_l, &fp, &found);
	}
	if (found || base + i >= c->max)
		goto cut;
	c->fp = fp;
	c->len = (uint32_t)(base + i);
	return i;
cut:
	*cut = true;
	c->fp = 0;
	c->len = 0;
	return i;
}
