/*
 * The in-memory index (chunk id -> frame, place in the frame; frame -> pack,
 * offset, length) and index objects.
 *
 * An open-addressing hash table keyed by the chunk id's first 8 bytes (ids
 * are keyed hashes, so uniformly distributed), plus an array of frames. Not
 * thread safe: the push pipeline only reads it after loading, under its own
 * lock. About 60 bytes per chunk (44 and the table's slack) and 48 per frame;
 * a repository of 10 TB at 16 KiB chunks needs ~40 GB of index, which is the
 * price of global deduplication at that granularity.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp/backend.h"
#include "dp/error.h"
#include "format.h"

#define EMPTY DP_INDEX_EMPTY

/* Where an id's probe starts in a table of cap slots (a power of two): ids
 * are hashes, so their first 8 bytes are uniformly distributed. */
static size_t home(const uint8_t id[DP_HASH_LEN], size_t cap)
{
	return (size_t)dp_get_u64(id) & (cap - 1);
}

static size_t slot_of(const dp_index *ix, const uint8_t id[DP_HASH_LEN])
{
	return home(id, ix->cap);
}

static int grow(dp_index *ix)
{
	size_t cap = ix->cap ? ix->cap * 2 : 1024;
	dp_blob_loc *slots = malloc(cap * sizeof(*slots));
	if (!slots)
		return dp_error_set(DP_ERROR, "out of memory (index of %zu blobs)", ix->count);
	for (size_t i = 0; i < cap; i++)
		slots[i].frame = EMPTY;
	dp_blob_loc *old = ix->slots;
	size_t oldcap = ix->cap;
	ix->slots = slots;
	ix->cap = cap;
	for (size_t i = 0; i < oldcap; i++) {
		if (old[i].frame == EMPTY)
			continue;
		size_t s = slot_of(ix, old[i].id);
		while (ix->slots[s].frame != EMPTY)
			s = (s + 1) & (cap - 1);
		ix->slots[s] = old[i];
	}
	free(old);
	return 0;
}

int dp_index_add_pack(dp_index *ix, const uint8_t pack_id[DP_HASH_LEN], uint32_t *pack_out)
{
	int rc = dp_array_grow(&ix->packs, &ix->packs_cap, ix->npacks, sizeof(*ix->packs));
	if (rc)
		return rc;
	memcpy(ix->packs[ix->npacks], pack_id, DP_HASH_LEN);
	*pack_out = (uint32_t)ix->npacks++;
	return 0;
}

int dp_index_add_frame(dp_index *ix, const dp_frame *f, uint32_t *frame_out)
{
	int rc = dp_array_grow(&ix->frames, &ix->frames_cap, ix->nframes, sizeof(*ix->frames));
	if (rc)
		return rc;
	ix->frames[ix->nframes] = *f;
	*frame_out = (uint32_t)ix->nframes++;
	return 0;
}

int dp_index_add(dp_index *ix, const dp_blob_loc *loc, bool *added)
{
	if ((ix->count + 1) * 4 > ix->cap * 3) {
		int rc = grow(ix);
		if (rc)
			return rc;
	}
	size_t s = slot_of(ix, loc->id);
	while (ix->slots[s].frame != EMPTY) {
		if (memcmp(ix->slots[s].id, loc->id, DP_HASH_LEN) == 0) {
			if (added)
				*added = false;
			return 0;
		}
		s = (s + 1) & (ix->cap - 1);
	}
	ix->slots[s] = *loc;
	ix->count++;
	if (added)
		*added = true;
	return 0;
}

int dp_index_set(dp_index *ix, const dp_blob_loc *loc)
{
	bool added;
	int rc = dp_index_add(ix, loc, &added);
	if (!rc && !added)
		*(dp_blob_loc *)dp_index_find(ix, loc->id) = *loc;
	return rc;
}

const dp_blob_loc *dp_index_find(const dp_index *ix, const uint8_t id[DP_HASH_LEN])
{
	if (!ix->cap)
		return NULL;
	size_t s = slot_of(ix, id);
	while (ix->slots[s].frame != EMPTY) {
		if (memcmp(ix->slots[s].id, id, DP_HASH_LEN) == 0)
			return &ix->slots[s];
		s = (s + 1) & (ix->cap - 1);
	}
	return NULL;
}

int dp_index_map_frames(dp_index *ix)
{
	size_t cap = 1024;
	while (cap < ix->nframes * 2)
		cap *= 2;
	uint32_t *fs = malloc(cap * sizeof(*fs));
	if (!fs)
		return dp_error_set(DP_ERROR, "out of memory (index of %zu frames)", ix->nframes);
	for (size_t i = 0; i < cap; i++)
		fs[i] = EMPTY;
	for (size_t f = 0; f < ix->nframes; f++) {
		size_t s = home(ix->frames[f].id, cap);
		while (fs[s] != EMPTY &&
		       memcmp(ix->frames[fs[s]].id, ix->frames[f].id, DP_HASH_LEN))
			s = (s + 1) & (cap - 1);
		if (fs[s] == EMPTY)
			fs[s] = (uint32_t)f;
	}
	free(ix->fslots);
	ix->fslots = fs;
	ix->fcap = cap;
	return 0;
}

uint32_t dp_index_find_frame(const dp_index *ix, const uint8_t id[DP_HASH_LEN])
{
	if (!ix->fcap)
		return EMPTY;
	size_t s = home(id, ix->fcap);
	while (ix->fslots[s] != EMPTY) {
		if (memcmp(ix->frames[ix->fslots[s]].id, id, DP_HASH_LEN) == 0)
			return ix->fslots[s];
		s = (s + 1) & (ix->fcap - 1);
	}
	return EMPTY;
}

void dp_index_free(dp_index *ix)
{
	free(ix->fslots);
	free(ix->slots);
	free(ix->packs);
	free(ix->frames);
	memset(ix, 0, sizeof(*ix));
}

/* The index grouped for writing: frames bucketed by pack, chunks by frame.
 * fstart/fcount: the frames of pack p are forder[fstart[p] ..+ fcount[p]];
 * cstart/ccount: the chunks of frame f are corder[cstart[f] ..+ ccount[f]].
 * Every frame is written, with or without chunks (format.h: a frame whose
 * chunks the index places elsewhere still holds a snapshot's bytes). */
struct groups {
	uint32_t *fcount, *ccount;
	size_t *fstart, *cstart;
	uint32_t *forder;
	const dp_blob_loc **corder;
};

static void groups_free(struct groups *g)
{
	free(g->fcount);
	free(g->ccount);
	free(g->fstart);
	free(g->cstart);
	free(g->forder);
	free(g->corder);
}

static int groups_make(const dp_index *ix, struct groups *g)
{
	size_t np = ix->npacks + 1, nf = ix->nframes + 1;
	g->fcount = calloc(np, sizeof(*g->fcount));
	g->fstart = calloc(np, sizeof(*g->fstart));
	g->ccount = calloc(nf, sizeof(*g->ccount));
	g->cstart = calloc(nf, sizeof(*g->cstart));
	g->forder = malloc(nf * sizeof(*g->forder));
	g->corder = malloc((ix->count + 1) * sizeof(*g->corder));
	size_t *fill = calloc(nf > np ? nf : np, sizeof(*fill));
	if (!g->fcount || !g->fstart || !g->ccount || !g->cstart || !g->forder || !g->corder ||
	    !fill) {
		free(fill);
		return dp_error_set(DP_ERROR, "out of memory");
	}
	for (size_t i = 0; i < ix->cap; i++) {
		if (ix->slots[i].frame == EMPTY)
			continue;
		if (ix->slots[i].frame >= ix->nframes) {
			free(fill);
			return dp_error_set(DP_ERROR,
			                    "index: a chunk has no place (internal error)");
		}
		g->ccount[ix->slots[i].frame]++;
	}
	for (size_t f = 1; f <= ix->nframes; f++)
		g->cstart[f] = g->cstart[f - 1] + g->ccount[f - 1];
	memcpy(fill, g->cstart, nf * sizeof(*fill));
	for (size_t i = 0; i < ix->cap; i++)
		if (ix->slots[i].frame != EMPTY)
			g->corder[fill[ix->slots[i].frame]++] = &ix->slots[i];
	for (size_t f = 0; f < ix->nframes; f++)
		g->fcount[ix->frames[f].pack]++;
	for (size_t p = 1; p <= ix->npacks; p++)
		g->fstart[p] = g->fstart[p - 1] + g->fcount[p - 1];
	memcpy(fill, g->fstart, np * sizeof(*fill));
	for (size_t f = 0; f < ix->nframes; f++)
		g->forder[fill[ix->frames[f].pack]++] = (uint32_t)f;
	free(fill);
	return 0;
}

/* Appends one index object's plaintext for packs [p0, p1) to out. */
static void encode_packs(const dp_index *ix, const struct groups *g, size_t p0, size_t p1,
                         dp_buf *out)
{
	size_t used = 0;
	for (size_t p = p0; p < p1; p++)
		used += g->fcount[p] != 0;
	dp_buf_append(out, "DPI2", 4);
	dp_buf_put_u32(out, (uint32_t)used);
	for (size_t p = p0; p < p1; p++) {
		if (!g->fcount[p])
			continue;
		dp_buf_append(out, ix->packs[p], DP_HASH_LEN);
		dp_buf_put_u32(out, g->fcount[p]);
		for (size_t k = g->fstart[p]; k < g->fstart[p] + g->fcount[p]; k++) {
			uint32_t f = g->forder[k];
			const dp_frame *fr = &ix->frames[f];
			dp_buf_append(out, fr->id, DP_HASH_LEN);
			dp_buf_put_u32(out, fr->offset);
			dp_buf_put_u32(out, fr->length);
			dp_buf_put_u32(out, fr->raw_length);
			dp_buf_put_u32(out, g->ccount[f]);
			for (size_t c = g->cstart[f]; c < g->cstart[f] + g->ccount[f]; c++) {
				const dp_blob_loc *l = g->corder[c];
				dp_buf_append(out, l->id, DP_HASH_LEN);
				dp_buf_put_u32(out, l->inner);
				dp_buf_put_u32(out, l->raw_length);
			}
		}
	}
}

int dp_index_write(dp_repo *r, const dp_index *ix, uint64_t *bytes_out)
{
	struct groups g = {0};
	dp_buf plain = {0};
	char id[DP_ID_HEX];
	int rc = groups_make(ix, &g);
	/* Objects of at most DP_INDEX_MAX_ENTRIES chunks (~40 MiB), far below
	 * what one sealed object can hold, and small enough to read in one go. */
	for (size_t p0 = 0; !rc && p0 < ix->npacks;) {
		size_t p1 = p0, n = 0, nf = 0;
		while (p1 < ix->npacks) {
			size_t c = 0;
			for (size_t k = g.fstart[p1]; k < g.fstart[p1] + g.fcount[p1]; k++)
				c += g.ccount[g.forder[k]];
			if (p1 > p0 && n + c > DP_INDEX_MAX_ENTRIES)
				break;
			n += c;
			nf += g.fcount[p1++];
		}
		dp_buf_reset(&plain);
		if ((rc = dp_buf_reserve(&plain, 8 + (p1 - p0) * (DP_HASH_LEN + 4) +
		                                     nf * DP_FRAME_HEAD_LEN +
		                                     n * DP_INDEX_ENTRY_LEN)))
			break;
		encode_packs(ix, &g, p0, p1, &plain);
		if (nf)
			rc = dp_object_write(r, "index", "index", plain.data, plain.len, id,
			                     bytes_out);
		p0 = p1;
	}
	groups_free(&g);
	dp_buf_free(&plain);
	return rc;
}

int dp_index_decode(dp_index *ix, const uint8_t *p, size_t len)
{
	const uint8_t *end = p + len;
	if (len < 8 || memcmp(p, "DPI2", 4) != 0)
		return DP_ECORRUPT;
	uint32_t npacks = dp_get_u32(p + 4);
	p += 8;
	for (uint32_t i = 0; i < npacks; i++) {
		if ((size_t)(end - p) < DP_HASH_LEN + 4)
			return DP_ECORRUPT;
		dp_frame f = {.pack = 0};
		int rc = dp_index_add_pack(ix, p, &f.pack);
		if (rc)
			return rc;
		uint32_t nframes = dp_get_u32(p + DP_HASH_LEN);
		p += DP_HASH_LEN + 4;
		for (uint32_t k = 0; k < nframes; k++) {
			if ((size_t)(end - p) < DP_FRAME_HEAD_LEN)
				return DP_ECORRUPT;
			memcpy(f.id, p, DP_HASH_LEN);
			f.offset = dp_get_u32(p + DP_HASH_LEN);
			f.length = dp_get_u32(p + DP_HASH_LEN + 4);
			f.raw_length = dp_get_u32(p + DP_HASH_LEN + 8);
			uint32_t n = dp_get_u32(p + DP_HASH_LEN + 12);
			p += DP_FRAME_HEAD_LEN;
			dp_blob_loc l = {.frame = 0};
			if ((rc = dp_index_add_frame(ix, &f, &l.frame)))
				return rc;
			if ((size_t)(end - p) / DP_INDEX_ENTRY_LEN < n)
				return DP_ECORRUPT;
			for (uint32_t j = 0; j < n; j++, p += DP_INDEX_ENTRY_LEN) {
				memcpy(l.id, p, DP_HASH_LEN);
				l.inner = dp_get_u32(p + DP_HASH_LEN);
				l.raw_length = dp_get_u32(p + DP_HASH_LEN + 4);
				if ((uint64_t)l.inner + l.raw_length > f.raw_length)
					return DP_ECORRUPT;
				if ((rc = dp_index_add(ix, &l, NULL)))
					return rc;
			}
		}
	}
	return p == end ? 0 : DP_ECORRUPT;
}

int dp_index_load(dp_repo *r, dp_index *ix, dp_keylist *keys)
{
	dp_keylist l = {0};
	dp_buf plain = {0};
	int rc = r->b->list(r->b, "index/", dp_keylist_add, &l);
	for (size_t i = 0; rc == 0 && i < l.n; i++) {
		dp_buf_reset(&plain);
		if ((rc = dp_object_read(r, "index", l.v[i], &plain)))
			break;
		rc = dp_index_decode(ix, plain.data, plain.len);
		if (rc == DP_ECORRUPT)
			rc = dp_error_set(DP_ECORRUPT, "index \"%s\" is malformed", l.v[i]);
	}
	dp_buf_free(&plain);
	if (rc == 0 && keys) {
		*keys = l;
		return 0;
	}
	dp_keylist_free(&l);
	return rc;
}
