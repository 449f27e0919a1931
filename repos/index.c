/*
 * The in-memory index (blob id -> pack, offset, length) and index objects.
 *
 * An open-addressing hash table keyed by the blob id's first 8 bytes (ids are
 * HMAC outputs, so uniformly distributed). Not thread safe: the push
 * pipeline only reads it after loading, under its own lock. About 48 bytes
 * per blob; a repository of 10 TB at 64 KiB chunks needs ~8 GB of index, which
 * is the price of global deduplication (the same as restic's).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp/backend.h"
#include "dp/error.h"
#include "format.h"

#define EMPTY UINT32_MAX

static size_t slot_of(const dp_index *ix, const uint8_t id[DP_HASH_LEN])
{
	return (size_t)dp_get_u64(id) & (ix->cap - 1);
}

static int grow(dp_index *ix)
{
	size_t cap = ix->cap ? ix->cap * 2 : 1024;
	dp_blob_loc *slots = malloc(cap * sizeof(*slots));
	if (!slots)
		return dp_error_set(DP_ERROR, "out of memory (index of %zu blobs)", ix->count);
	for (size_t i = 0; i < cap; i++)
		slots[i].pack = EMPTY;
	dp_blob_loc *old = ix->slots;
	size_t oldcap = ix->cap;
	ix->slots = slots;
	ix->cap = cap;
	for (size_t i = 0; i < oldcap; i++) {
		if (old[i].pack == EMPTY)
			continue;
		size_t s = slot_of(ix, old[i].id);
		while (ix->slots[s].pack != EMPTY)
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

int dp_index_add(dp_index *ix, const dp_blob_loc *loc, bool *added)
{
	if ((ix->count + 1) * 4 > ix->cap * 3) {
		int rc = grow(ix);
		if (rc)
			return rc;
	}
	size_t s = slot_of(ix, loc->id);
	while (ix->slots[s].pack != EMPTY) {
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

const dp_blob_loc *dp_index_find(const dp_index *ix, const uint8_t id[DP_HASH_LEN])
{
	if (!ix->cap)
		return NULL;
	size_t s = slot_of(ix, id);
	while (ix->slots[s].pack != EMPTY) {
		if (memcmp(ix->slots[s].id, id, DP_HASH_LEN) == 0)
			return &ix->slots[s];
		s = (s + 1) & (ix->cap - 1);
	}
	return NULL;
}

void dp_index_free(dp_index *ix)
{
	free(ix->slots);
	free(ix->packs);
	memset(ix, 0, sizeof(*ix));
}

/* Appends one index object's plaintext for packs [p0, p1) to out. */
static void encode_packs(const dp_index *ix, const uint32_t *count, const size_t *start,
                         const dp_blob_loc **order, size_t p0, size_t p1, dp_buf *out)
{
	size_t used = 0;
	for (size_t p = p0; p < p1; p++)
		used += count[p] != 0;
	dp_buf_append(out, "DPI1", 4);
	dp_buf_put_u32(out, (uint32_t)used);
	for (size_t p = p0; p < p1; p++) {
		if (!count[p])
			continue;
		dp_buf_append(out, ix->packs[p], DP_HASH_LEN);
		dp_buf_put_u32(out, count[p]);
		for (size_t k = start[p]; k < start[p] + count[p]; k++) {
			const dp_blob_loc *l = order[k];
			dp_buf_append(out, l->id, DP_HASH_LEN);
			dp_buf_put_u32(out, l->offset);
			dp_buf_put_u32(out, l->length);
			dp_buf_put_u32(out, l->raw_length);
		}
	}
}

int dp_index_write(dp_repo *r, const dp_index *ix, uint64_t *bytes_out)
{
	int rc = 0;
	dp_buf plain = {0};
	char id[DP_ID_HEX];
	/* Group by pack: count, then bucket (one pass over the table). */
	uint32_t *count = calloc(ix->npacks + 1, sizeof(*count));
	const dp_blob_loc **order = malloc((ix->count + 1) * sizeof(*order));
	size_t *start = calloc(ix->npacks + 1, sizeof(*start));
	size_t *fill = calloc(ix->npacks + 1, sizeof(*fill));
	if (!count || !order || !start || !fill) {
		rc = dp_error_set(DP_ERROR, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < ix->cap; i++)
		if (ix->slots[i].pack != EMPTY)
			count[ix->slots[i].pack]++;
	for (size_t p = 1; p <= ix->npacks; p++)
		start[p] = start[p - 1] + count[p - 1];
	memcpy(fill, start, (ix->npacks + 1) * sizeof(*fill));
	for (size_t i = 0; i < ix->cap; i++)
		if (ix->slots[i].pack != EMPTY)
			order[fill[ix->slots[i].pack]++] = &ix->slots[i];
	/* Objects of at most DP_INDEX_MAX_ENTRIES blobs (~45 MiB), far below
	 * what one sealed object can hold, and small enough to read in one go. */
	for (size_t p0 = 0; p0 < ix->npacks;) {
		size_t p1 = p0, n = 0;
		while (p1 < ix->npacks && (p1 == p0 || n + count[p1] <= DP_INDEX_MAX_ENTRIES))
			n += count[p1++];
		dp_buf_reset(&plain);
		if ((rc = dp_buf_reserve(&plain, 8 + (p1 - p0) * (DP_HASH_LEN + 4) +
		                                     n * DP_INDEX_ENTRY_LEN)))
			goto out;
		encode_packs(ix, count, start, order, p0, p1, &plain);
		if (n && (rc = dp_object_write(r, "index", "index", plain.data, plain.len, id,
		                               bytes_out)))
			goto out;
		p0 = p1;
	}
out:
	free(count);
	free(order);
	free(start);
	free(fill);
	dp_buf_free(&plain);
	return rc;
}

int dp_index_decode(dp_index *ix, const uint8_t *p, size_t len)
{
	const uint8_t *end = p + len;
	if (len < 8 || memcmp(p, "DPI1", 4) != 0)
		return DP_ECORRUPT;
	uint32_t npacks = dp_get_u32(p + 4);
	p += 8;
	for (uint32_t i = 0; i < npacks; i++) {
		if ((size_t)(end - p) < DP_HASH_LEN + 4)
			return DP_ECORRUPT;
		uint32_t pack;
		int rc = dp_index_add_pack(ix, p, &pack);
		if (rc)
			return rc;
		uint32_t n = dp_get_u32(p + DP_HASH_LEN);
		p += DP_HASH_LEN + 4;
		if ((size_t)(end - p) / DP_INDEX_ENTRY_LEN < n)
			return DP_ECORRUPT;
		for (uint32_t j = 0; j < n; j++, p += DP_INDEX_ENTRY_LEN) {
			dp_blob_loc l = {.pack = pack};
			memcpy(l.id, p, DP_HASH_LEN);
			l.offset = dp_get_u32(p + DP_HASH_LEN);
			l.length = dp_get_u32(p + DP_HASH_LEN + 4);
			l.raw_length = dp_get_u32(p + DP_HASH_LEN + 8);
			if ((rc = dp_index_add(ix, &l, NULL)))
				return rc;
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
