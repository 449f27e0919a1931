/*
 * Rebuilding the index from the packs themselves.
 *
 * Every pack carries its own sealed header (format.h), so an index is
 * redundant: if index objects are lost or damaged, the repository can be
 * made whole again by reading each pack, opening its frames, hashing their
 * chunks (the header lists their lengths, not their ids) and writing one new
 * index naming every chunk of every frame that authenticates. Old index objects are
 * removed only after the new one is written. Packs whose header does not
 * authenticate are reported and left alone (check --read-data and prune
 * deal with them). Runs under the exclusive lock.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp/backend.h"
#include "dp/error.h"
#include "format.h"

/* Reads one pack and adds its frames and chunks to ix. Returns 0, or
 * DP_ECORRUPT with the message set for a pack that cannot be used. */
static int index_pack(dp_repo *r, dp_sealer *s, const char *key, dp_buf *buf, uint8_t *raw,
                      dp_index *ix)
{
	uint8_t id[DP_HASH_LEN];
	dp_pack_header h = {0};
	uint32_t pk;
	const char *slash = strrchr(key, '/');
	int rc, bad = 0;
	if (!slash || dp_unhex(id, sizeof(id), slash + 1) != 0)
		return dp_error_set(DP_ECORRUPT, "\"%s\" is not named like a pack", key);
	dp_buf_reset(buf);
	if ((rc = dp_backend_get_all(r->b, key, buf)) ||
	    (rc = dp_pack_read_header(r, NULL, key, buf->data, buf->len, buf->len, &h)) ||
	    (rc = dp_index_add_pack(ix, id, &pk)))
		goto out;
	for (size_t i = 0; i < h.nframes; i++) {
		dp_frame f = h.frames[i];
		dp_blob_loc l = {.inner = 0};
		if (dp_frame_open(s, f.id, buf->data + f.offset, f.length, raw, f.raw_length) !=
		    0) {
			/* Keep what the other frames hold; report the pack. */
			bad = dp_error_set(DP_ECORRUPT,
			                   "pack \"%s\": the frame at offset %u failed "
			                   "authentication; the chunks of the others were indexed",
			                   key, f.offset);
			continue;
		}
		f.pack = pk;
		if ((rc = dp_index_add_frame(ix, &f, &l.frame)))
			goto out;
		for (uint32_t m = h.first[i]; m < h.first[i + 1]; m++) {
			l.raw_length = h.raw[m];
			if ((rc = dp_blob_id(s, l.id, raw + l.inner, l.raw_length)) ||
			    (rc = dp_index_add(ix, &l, NULL)))
				goto out;
			l.inner += l.raw_length;
		}
	}
	rc = bad;
out:
	dp_pack_header_free(&h);
	return rc;
}

int dp_repo_rebuild_index(dp_repo *r, dp_rebuild_report *rep, dp_problem_fn problem_fn, void *arg)
{
	dp_rebuild_report local = {0};
	dp_keylist packs = {0}, old = {0};
	dp_index ix = {0};
	dp_lock *lock = NULL;
	dp_sealer *s = NULL;
	dp_buf buf = {0};
	uint8_t *raw = NULL;
	if (!rep)
		rep = &local;
	memset(rep, 0, sizeof(*rep));
	int rc = dp_lock_acquire(&lock, r, true, "rebuild the index");
	if (rc)
		return rc;
	if ((rc = r->b->list(r->b, "data/", dp_keylist_add, &packs)) ||
	    (rc = r->b->list(r->b, "index/", dp_keylist_add, &old)) || (rc = dp_sealer_new(&s, r)))
		goto out;
	if (!(raw = malloc(dp_frame_max(r)))) {
		rc = dp_error_set(DP_ERROR, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < packs.n; i++) {
		rc = index_pack(r, s, packs.v[i], &buf, raw, &ix);
		if (rc == DP_ECORRUPT || rc == DP_ENOTFOUND) {
			rep->packs_skipped++;
			if (problem_fn)
				problem_fn(dp_error_last(), arg);
			continue;
		}
		if (rc)
			goto out;
		rep->packs++;
		if (r->progress)
			atomic_fetch_add(&r->progress->done, packs.size[i]);
	}
	rc = 0;
	rep->blobs = ix.count;
	if (ix.count && (rc = dp_index_write(r, &ix, NULL)))
		goto out;
	for (size_t i = 0; i < old.n; i++)
		if ((rc = r->b->remove(r->b, old.v[i])))
			goto out;
	rep->indexes_replaced = old.n;
out:
	dp_keylist_free(&packs);
	dp_keylist_free(&old);
	dp_index_free(&ix);
	dp_sealer_free(s);
	dp_buf_free(&buf);
	free(raw);
	dp_lock_release(lock);
	return rc;
}
