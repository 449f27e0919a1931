/*
 * Rebuilding the index from the packs themselves.
 *
 * Every pack carries its own sealed header (format.h), so an index is
 * redundant: if index objects are lost or damaged, the repository can be
 * made whole again by reading each pack's trailer and header (two ranged
 * gets per pack, no blob data) and writing one new index naming every
 * blob of every pack whose header authenticates. Old index objects are
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

/* Reads the header of one pack into ix. Returns 0, or DP_ECORRUPT with the
 * message set for a pack that cannot be used. */
static int index_pack(dp_repo *r, const char *key, uint64_t size, dp_index *ix)
{
	uint8_t id[DP_HASH_LEN];
	dp_buf tail = {0};
	dp_blob_loc *locs = NULL;
	size_t n = 0;
	uint32_t pk;
	const char *slash = strrchr(key, '/');
	int rc;
	if (!slash || dp_unhex(id, sizeof(id), slash + 1) != 0)
		return dp_error_set(DP_ECORRUPT, "\"%s\" is not named like a pack", key);
	if (size < 4 + DP_SEAL_OVERHEAD)
		return dp_error_set(DP_ECORRUPT, "pack \"%s\" is truncated", key);
	if ((rc = r->b->get(r->b, key, size - 4, 4, &tail)))
		goto out;
	uint32_t hlen = dp_get_u32(tail.data);
	if ((uint64_t)hlen + 4 > size) {
		rc = dp_error_set(DP_ECORRUPT, "pack \"%s\" has a malformed header length", key);
		goto out;
	}
	dp_buf_reset(&tail);
	if ((rc = r->b->get(r->b, key, size - 4 - hlen, hlen + 4, &tail)))
		goto out;
	if ((rc = dp_pack_read_header(r, NULL, key, tail.data, tail.len, size, &locs, &n)))
		goto out;
	if ((rc = dp_index_add_pack(ix, id, &pk)))
		goto out;
	for (size_t i = 0; i < n && !rc; i++) {
		locs[i].pack = pk;
		rc = dp_index_add(ix, &locs[i], NULL);
	}
out:
	free(locs);
	dp_buf_free(&tail);
	return rc;
}

int dp_repo_rebuild_index(dp_repo *r, dp_rebuild_report *rep, dp_problem_fn problem_fn, void *arg)
{
	dp_rebuild_report local = {0};
	dp_keylist packs = {0}, old = {0};
	dp_index ix = {0};
	dp_lock *lock = NULL;
	if (!rep)
		rep = &local;
	memset(rep, 0, sizeof(*rep));
	int rc = dp_lock_acquire(&lock, r, true, "rebuild the index");
	if (rc)
		return rc;
	if ((rc = r->b->list(r->b, "data/", dp_keylist_add, &packs)) ||
	    (rc = r->b->list(r->b, "index/", dp_keylist_add, &old)))
		goto out;
	for (size_t i = 0; i < packs.n; i++) {
		rc = index_pack(r, packs.v[i], packs.size[i], &ix);
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
	dp_lock_release(lock);
	return rc;
}
