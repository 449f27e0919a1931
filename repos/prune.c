/*
 * Prune: mark and sweep under the exclusive lock.
 *
 * Mark: every frame a snapshot names is live (a snapshot that cannot be
 * read stops prune: deleting on an incomplete mark would lose data). A
 * frame is kept whole, with every chunk the index places in it, until no
 * snapshot names it. Sweep, in an order that is safe at any crash point:
 *   1. packs whose live fraction is below the threshold are repacked: their
 *      live frames are read, authenticated and copied, still sealed (a
 *      frame's seal does not depend on its pack), into new packs;
 *   2. one new index naming every live frame and its chunks where they now
 *      are is written;
 *   3. the old index objects are removed;
 *   4. packs with no live blob, repacked packs and orphans (packs no index
 *      names: interrupted pushes) are removed.
 * Before all that, the backend removes what interrupted puts left (posix:
 * temporary files), since under the exclusive lock no put is in progress.
 * A crash before 2 leaves extra packs (orphans, removed next time); between 2
 * and 3 duplicate index entries (harmless); during 4 some dead packs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp/backend.h"
#include "dp/error.h"
#include "format.h"

struct pk {
	uint8_t id[DP_HASH_LEN];
	uint64_t size, live;
	bool indexed, keep, repack;
	uint32_t newidx; /* position in the new index, if kept */
};

struct ctx {
	struct pk *v;
	size_t n, cap;
};

static int add_pack(const char *key, uint64_t size, void *arg)
{
	struct ctx *c = arg;
	const char *slash = strrchr(key, '/');
	uint8_t id[DP_HASH_LEN];
	if (!slash || dp_unhex(id, sizeof(id), slash + 1) != 0)
		return 0; /* not a pack: leave it alone */
	int rc = dp_array_grow(&c->v, &c->cap, c->n, sizeof(*c->v));
	if (rc)
		return rc;
	memset(&c->v[c->n], 0, sizeof(c->v[0]));
	memcpy(c->v[c->n].id, id, DP_HASH_LEN);
	c->v[c->n++].size = size;
	return 0;
}

static int cmp_pk(const void *a, const void *b)
{
	return memcmp(a, b, DP_HASH_LEN);
}

/* A live chunk, with its pack's position in ctx.v and its frame's offset:
 * sorted by both, each pack and frame is one stretch. */
struct live {
	dp_blob_loc l;
	uint32_t pk, offset;
	bool no_chunk; /* stands for a live frame the index places no chunk in */
};

static int cmp_live(const void *a, const void *b)
{
	const struct live *x = a, *y = b;
	if (x->pk != y->pk)
		return x->pk < y->pk ? -1 : 1;
	if (x->offset != y->offset)
		return x->offset < y->offset ? -1 : 1;
	return x->l.inner < y->l.inner ? -1 : x->l.inner > y->l.inner;
}

/* Writes the packer's pack and records its frames and chunks in nix. */
static int flush(dp_repo *r, dp_packer *k, dp_index *nix, dp_prune_report *rep)
{
	uint8_t id[DP_HASH_LEN];
	char key[100];
	if (!k->nframes)
		return 0;
	int rc = dp_packer_finish(r, NULL, k);
	if (!rc)
		rc = dp_pack_id(id, k->data.data, k->data.len);
	if (!rc)
		rc = dp_pack_key(key, sizeof(key), id);
	if (!rc)
		rc = r->b->put(r->b, key, k->data.data, k->data.len);
	if (!rc)
		rc = dp_packer_index(k, id, nix);
	if (!rc)
		rep->packs_written++;
	dp_packer_reset(k);
	return rc;
}

/* Copies the live frame whose chunks are v[0..n) from the pack in buf (its
 * header h) into the packer, after authenticating it. */
static int copy_frame(dp_sealer *s, const dp_frame *f, const struct live *v, size_t n,
                      const dp_pack_header *h, const dp_buf *buf, uint8_t *raw, dp_blob_loc **locs,
                      size_t *locs_cap, dp_packer *k, const char *key)
{
	size_t i = 0;
	while (i < h->nframes && h->frames[i].offset != f->offset)
		i++;
	if (i == h->nframes || memcmp(h->frames[i].id, f->id, DP_HASH_LEN) != 0 ||
	    h->frames[i].length != f->length ||
	    dp_frame_open(s, f->id, buf->data + f->offset, f->length, raw, f->raw_length) != 0)
		return dp_error_set(DP_ECORRUPT,
		                    "prune stopped: pack \"%s\" is corrupted (a live frame at "
		                    "offset %u failed authentication); run 'dp repo check "
		                    "--read-data'",
		                    key, f->offset);
	for (size_t j = 0; j < n; j++) {
		int rc = dp_array_grow(locs, locs_cap, j, sizeof(**locs));
		if (rc)
			return rc;
		(*locs)[j] = v[j].l;
	}
	dp_frame nf = *f;
	return dp_packer_add(k, &nf, buf->data + f->offset, *locs, n, h->raw + h->first[i],
	                     h->first[i + 1] - h->first[i]);
}

int dp_repo_prune(dp_repo *r, double fill_threshold, dp_prune_report *rep)
{
	dp_prune_report local = {0};
	dp_lock *lock = NULL;
	dp_index ix = {0}, nix = {0};
	dp_keylist ikeys = {0};
	struct ctx c = {0};
	dp_snapshot_info *snaps = NULL;
	size_t nsnaps = 0;
	dp_packer k = {0};
	dp_buf buf = {0};
	struct live *live = NULL;
	bool *frame_live = NULL;
	size_t nlive = 0;
	dp_pack_header hdr = {0};
	dp_blob_loc *locs = NULL;
	size_t locs_cap = 0;
	dp_sealer *s = NULL;
	uint8_t *raw = NULL;
	char key[100];
	if (!rep)
		rep = &local;
	memset(rep, 0, sizeof(*rep));
	int rc = dp_lock_acquire(&lock, r, true, "prune");
	if (rc)
		return rc;
	/* With the repository to ourselves no put is in progress: what
	 * interrupted puts left behind (temporary files) can go. */
	static const char *const written[] = {"data/", "index/", "snapshots/"};
	for (size_t i = 0; r->b->cleanup && i < sizeof(written) / sizeof(written[0]); i++)
		if ((rc = r->b->cleanup(r->b, written[i])))
			goto out;

	/* Mark: the frames the snapshots name. */
	if ((rc = dp_index_load(r, &ix, &ikeys)) || (rc = dp_index_map_frames(&ix)))
		goto out;
	if (!(frame_live = calloc(ix.nframes + 1, sizeof(*frame_live)))) {
		rc = dp_error_set(DP_ERROR, "out of memory");
		goto out;
	}
	if ((rc = dp_snapshot_list_strict(r, &snaps, &nsnaps))) {
		dp_error_prefix("prune stopped, nothing was removed (remove a damaged snapshot "
		                "with 'dp-worker rm ID')");
		goto out;
	}
	for (size_t i = 0; i < nsnaps; i++) {
		dp_snapshot snap;
		if ((rc = dp_snapshot_load(r, snaps[i].id, &snap))) {
			dp_error_prefix("prune stopped, nothing was removed");
			goto out;
		}
		size_t missing = 0;
		for (size_t j = 0; j < snap.n; j++) {
			uint32_t fr = dp_index_find_frame(&ix, snap.frame_ids[j]);
			if (fr == DP_INDEX_EMPTY)
				missing++;
			else
				frame_live[fr] = true;
		}
		dp_snapshot_free(&snap);
		if (missing) {
			rc = dp_error_set(
			    DP_ECORRUPT,
			    "prune stopped, nothing was removed: snapshot \"%s\" names "
			    "%zu frames that are in no index; run 'dp repo check'",
			    snaps[i].id, missing);
			goto out;
		}
	}
	if ((rc = r->b->list(r->b, "data/", add_pack, &c)))
		goto out;
	if (c.n)
		qsort(c.v, c.n, sizeof(*c.v), cmp_pk);
	for (size_t i = 0; i < ix.npacks; i++) {
		struct pk *p = bsearch(ix.packs[i], c.v, c.n, sizeof(*c.v), cmp_pk);
		if (p)
			p->indexed = true;
	}
	/* The live frames, each with the chunks the index places in it (all of
	 * them: a live frame is kept whole), or one entry without a chunk if it
	 * has none; each tagged with its pack's position in c.v, then sorted by
	 * pack and frame: one pass per pack below, whatever the repository's
	 * size, and repacking reads each pack once. */
	uint32_t *nchunks = calloc(ix.nframes + 1, sizeof(*nchunks));
	live = malloc((ix.count + ix.nframes + 1) * sizeof(*live));
	if (!live || !nchunks) {
		free(nchunks);
		rc = dp_error_set(DP_ERROR, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < ix.cap; i++) {
		dp_blob_loc l = ix.slots[i];
		if (l.frame == DP_INDEX_EMPTY)
			continue;
		if (!frame_live[l.frame]) {
			rep->blobs_removed++;
			continue;
		}
		nchunks[l.frame]++;
		live[nlive++] = (struct live){.l = l};
	}
	for (uint32_t f = 0; f < ix.nframes; f++)
		if (frame_live[f] && !nchunks[f])
			live[nlive++] = (struct live){.l = {.frame = f}, .no_chunk = true};
	free(nchunks);
	for (size_t i = 0; i < nlive; i++) {
		const dp_frame *f = &ix.frames[live[i].l.frame];
		struct pk *p = bsearch(ix.packs[f->pack], c.v, c.n, sizeof(*c.v), cmp_pk);
		if (!p) {
			char hex[DP_ID_HEX];
			dp_hex(hex, ix.packs[f->pack], DP_HASH_LEN);
			rc = dp_error_set(
			    DP_ECORRUPT,
			    "prune stopped, nothing was removed: pack %s holds live data "
			    "but is missing; run 'dp repo check'",
			    hex);
			goto out;
		}
		live[i].pk = (uint32_t)(p - c.v);
		live[i].offset = f->offset;
		/* The frame's bytes count once towards its pack's live bytes
		 * (frame_live is not needed past this loop). */
		if (frame_live[live[i].l.frame]) {
			frame_live[live[i].l.frame] = false;
			p->live += f->length;
		}
	}
	bool change = ikeys.n > 1;
	for (size_t i = 0; i < c.n; i++) {
		struct pk *p = &c.v[i];
		p->keep = p->indexed && p->live > 0 &&
		          (double)p->live >= fill_threshold * (double)p->size;
		p->repack = p->indexed && p->live > 0 && !p->keep;
		change |= !p->keep;
	}
	change |= rep->blobs_removed > 0;
	if (!change)
		goto out;
	if (nlive)
		qsort(live, nlive, sizeof(*live), cmp_live);

	/* Sweep 1: repack. */
	if ((rc = dp_sealer_new(&s, r)))
		goto out;
	if (!(raw = malloc(dp_frame_max(r)))) {
		rc = dp_error_set(DP_ERROR, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < c.n; i++) {
		if (!c.v[i].keep)
			continue;
		if ((rc = dp_index_add_pack(&nix, c.v[i].id, &c.v[i].newidx)))
			goto out;
	}
	for (size_t at = 0; at < nlive;) {
		struct pk *p = &c.v[live[at].pk];
		size_t end = at;
		while (end < nlive && live[end].pk == live[at].pk)
			end++;
		if (p->repack) {
			dp_pack_key(key, sizeof(key), p->id);
			dp_buf_reset(&buf);
			dp_pack_header_free(&hdr);
			if ((rc = dp_backend_get_all(r->b, key, &buf)) ||
			    (rc = dp_pack_read_header(r, NULL, key, buf.data, buf.len, buf.len,
			                              &hdr)))
				goto out;
			rep->packs_repacked++;
		}
		while (at < end) {
			size_t fe = at;
			while (fe < end && live[fe].l.frame == live[at].l.frame)
				fe++;
			dp_frame f = ix.frames[live[at].l.frame];
			if (live[at].no_chunk)
				at++; /* [at, fe) is now empty: the frame alone */
			if (p->keep) {
				dp_blob_loc l = {.frame = 0};
				f.pack = p->newidx;
				if ((rc = dp_index_add_frame(&nix, &f, &l.frame)))
					goto out;
				for (; at < fe; at++) {
					uint32_t fr = l.frame;
					l = live[at].l;
					l.frame = fr;
					if ((rc = dp_index_add(&nix, &l, NULL)))
						goto out;
				}
				continue;
			}
			if ((rc = copy_frame(s, &f, live + at, fe - at, &hdr, &buf, raw, &locs,
			                     &locs_cap, &k, key)))
				goto out;
			at = fe;
			if (k.data.len >= r->pack_size && (rc = flush(r, &k, &nix, rep)))
				goto out;
		}
	}
	if ((rc = flush(r, &k, &nix, rep)))
		goto out;

	/* Nothing is deleted unless the lock is still ours: a prune judged dead
	 * (paused past the stale limit) may have pushes running beside it. */
	if ((rc = dp_lock_check(lock)))
		goto out;
	/* Sweep 2 and 3: the new index, then the old ones go. */
	if (nix.nframes && (rc = dp_index_write(r, &nix, NULL)))
		goto out;
	for (size_t i = 0; i < ikeys.n; i++)
		if ((rc = r->b->remove(r->b, ikeys.v[i])))
			goto out;

	/* Sweep 4: packs. */
	if ((rc = dp_lock_check(lock)))
		goto out;
	for (size_t i = 0; i < c.n; i++) {
		if (c.v[i].keep)
			continue;
		dp_pack_key(key, sizeof(key), c.v[i].id);
		if ((rc = r->b->remove(r->b, key)))
			goto out;
		rep->bytes_freed += c.v[i].size;
		if (!c.v[i].repack)
			rep->packs_removed++;
	}
out:
	dp_keylist_free(&ikeys);
	free(c.v);
	free(live);
	free(frame_live);
	free(locs);
	dp_pack_header_free(&hdr);
	free(raw);
	dp_sealer_free(s);
	dp_packer_free(&k);
	dp_buf_free(&buf);
	dp_snapshot_info_free(snaps, nsnaps);
	dp_index_free(&ix);
	dp_index_free(&nix);
	dp_lock_release(lock);
	return rc;
}
