/*
 * Pull: a snapshot's bytes, in order. Fetch threads read ahead of the reader
 * into a ring of K slots (one maximum chunk each). A fetch thread claims a
 * run of consecutive slots whose blobs lie back to back in one pack (a fresh
 * push stores them that way), reads the run with one ranged get, then opens
 * each blob into its slot: AES-GCM, then zstd. The caller's thread copies
 * from the ring in stream order. Memory is K chunks plus one run buffer per
 * thread, whatever the snapshot size.
 *
 * Network backends (DP_BACKEND_F_PARALLEL) get more fetch threads, since
 * there a thread mostly waits for the network.
 *
 * Every byte handed out has been authenticated (the blob's id is bound to
 * its ciphertext). A missing pack, a failed authentication or a length that
 * does not match stops the pull with an error naming the pack.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp/error.h"
#include "format.h"

#define RUN_MAX_BLOBS 16
#define RUN_MAX_BYTES (4u * 1024 * 1024)

enum { SLOT_EMPTY, SLOT_FETCHING, SLOT_READY };

struct slot {
	uint8_t *buf;
	uint32_t len;
	int state;
};

struct dp_pull {
	dp_repo *r;
	dp_lock *lock;
	dp_snapshot snap;
	dp_index ix;
	struct slot *slots;
	size_t nslots;
	pthread_t *threads;
	int nthreads, started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	size_t next_assign, next_read, read_off;
	bool stop, failed;
	int rc;
	char err[1024];
};

/* The location of blob i, checked against the snapshot; NULL with the
 * error set if it cannot be read. */
static const dp_blob_loc *locate(dp_pull *p, size_t i)
{
	const dp_blob_loc *l = dp_index_find(&p->ix, p->snap.ids[i]);
	if (!l) {
		char hex[DP_ID_HEX];
		dp_hex(hex, p->snap.ids[i], DP_HASH_LEN);
		dp_error_set(DP_ECORRUPT,
		             "blob %s of snapshot \"%s\" is in no index: the repository lost data "
		             "(run 'dp repo check')",
		             hex, p->snap.info.id);
		return NULL;
	}
	if (l->raw_length != p->snap.raw_lengths[i] || l->raw_length > p->r->chunk_max) {
		dp_error_set(
		    DP_ECORRUPT,
		    "blob %zu of snapshot \"%s\": index and snapshot disagree on its length", i,
		    p->snap.info.id);
		return NULL;
	}
	return l;
}

/* Claims blobs [first, first+n) (called with mu held): the next unassigned
 * one, and those after it that lie right behind it in the same pack while
 * their slots are free. */
static int claim_run(dp_pull *p, size_t *first, size_t *n, const dp_blob_loc **locs)
{
	size_t i = p->next_assign;
	const dp_blob_loc *l = locate(p, i);
	if (!l)
		return dp_error_code();
	locs[0] = l;
	uint64_t bytes = l->length;
	size_t k = 1;
	while (k < RUN_MAX_BLOBS && i + k < p->snap.n &&
	       p->slots[(i + k) % p->nslots].state == SLOT_EMPTY) {
		const dp_blob_loc *m = dp_index_find(&p->ix, p->snap.ids[i + k]);
		const dp_blob_loc *prev = locs[k - 1];
		if (!m || m->pack != prev->pack || m->offset != prev->offset + prev->length ||
		    bytes + m->length > RUN_MAX_BYTES)
			break;
		if (!(m = locate(p, i + k)))
			break; /* reported when it is claimed on its own */
		locs[k++] = m;
		bytes += m->length;
	}
	for (size_t j = 0; j < k; j++)
		p->slots[(i + j) % p->nslots].state = SLOT_FETCHING;
	p->next_assign = i + k;
	*first = i;
	*n = k;
	return 0;
}

static int fetch_run(dp_pull *p, dp_sealer *s, dp_buf *buf, size_t first, size_t n,
                     const dp_blob_loc **locs)
{
	char key[100];
	uint64_t off = locs[0]->offset;
	uint64_t len = (uint64_t)locs[n - 1]->offset + locs[n - 1]->length - off;
	dp_pack_key(key, sizeof(key), p->ix.packs[locs[0]->pack]);
	dp_buf_reset(buf);
	int rc = p->r->b->get(p->r->b, key, off, len, buf);
	if (rc == DP_ENOTFOUND)
		return dp_error_set(DP_ECORRUPT, "pack \"%s\" is missing", key);
	if (rc)
		return rc;
	if (buf->len != len)
		return dp_error_set(DP_ECORRUPT, "pack \"%s\" is truncated", key);
	for (size_t j = 0; j < n; j++) {
		const dp_blob_loc *l = locs[j];
		struct slot *sl = &p->slots[(first + j) % p->nslots];
		if (dp_blob_open(s, l->id, buf->data + (l->offset - off), l->length, sl->buf,
		                 l->raw_length, false) != 0)
			return dp_error_set(DP_ECORRUPT,
			                    "pack \"%s\": the blob at offset %u failed "
			                    "authentication: the pack is corrupted",
			                    key, l->offset);
		sl->len = l->raw_length;
	}
	return 0;
}

static void *fetch_main(void *arg)
{
	dp_pull *p = arg;
	dp_sealer *s = NULL;
	dp_buf buf = {0};
	const dp_blob_loc *locs[RUN_MAX_BLOBS];
	int rc = dp_sealer_new(&s, p->r);
	pthread_mutex_lock(&p->mu);
	while (!rc) {
		while (!p->stop && !p->failed && p->next_assign < p->snap.n &&
		       p->slots[p->next_assign % p->nslots].state != SLOT_EMPTY)
			pthread_cond_wait(&p->cv, &p->mu);
		if (p->stop || p->failed || p->next_assign >= p->snap.n)
			break;
		size_t first = 0, n = 0;
		if ((rc = claim_run(p, &first, &n, locs)))
			break;
		pthread_mutex_unlock(&p->mu);
		rc = fetch_run(p, s, &buf, first, n, locs);
		pthread_mutex_lock(&p->mu);
		if (rc)
			break;
		for (size_t j = 0; j < n; j++)
			p->slots[(first + j) % p->nslots].state = SLOT_READY;
		pthread_cond_broadcast(&p->cv);
	}
	if (rc && !p->failed) {
		p->failed = true;
		p->rc = rc;
		snprintf(p->err, sizeof(p->err), "%s", dp_error_last());
	}
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	dp_buf_free(&buf);
	dp_sealer_free(s);
	return NULL;
}

void dp_pull_close(dp_pull *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->started; i++)
		pthread_join(p->threads[i], NULL);
	for (size_t i = 0; p->slots && i < p->nslots; i++)
		free(p->slots[i].buf);
	free(p->slots);
	free(p->threads);
	dp_snapshot_free(&p->snap);
	dp_index_free(&p->ix);
	dp_lock_release(p->lock);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	free(p);
}

int dp_pull_open(dp_pull **out, dp_repo *r, const char *name_or_id)
{
	char id[DP_ID_HEX];
	dp_pull *p = calloc(1, sizeof(*p));
	if (!p)
		return dp_error_set(DP_ERROR, "out of memory");
	p->r = r;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	int rc = dp_lock_acquire(&p->lock, r, false, "pull");
	if (rc || (rc = dp_snapshot_resolve(r, name_or_id, id)) ||
	    (rc = dp_snapshot_load(r, id, &p->snap)) || (rc = dp_index_load(r, &p->ix, NULL)))
		goto fail;
	p->nthreads = dp_repo_nthreads(r);
	if ((r->b->features & DP_BACKEND_F_PARALLEL) && p->nthreads < 8)
		p->nthreads = 8;
	p->nslots = (size_t)p->nthreads * 2 * RUN_MAX_BLOBS;
	p->slots = calloc(p->nslots, sizeof(*p->slots));
	p->threads = calloc((size_t)p->nthreads, sizeof(*p->threads));
	if (!p->slots || !p->threads)
		goto oom;
	for (size_t i = 0; i < p->nslots; i++)
		if (!(p->slots[i].buf = malloc(r->chunk_max ? r->chunk_max : 1)))
			goto oom;
	for (int i = 0; i < p->nthreads; i++, p->started++)
		if (pthread_create(&p->threads[i], NULL, fetch_main, p) != 0) {
			rc = dp_error_set(DP_ERROR, "cannot start fetch threads");
			goto fail;
		}
	*out = p;
	return 0;
oom:
	rc = dp_error_set(DP_ERROR, "out of memory");
fail:
	dp_pull_close(p);
	return rc;
}

const dp_snapshot_info *dp_pull_info(const dp_pull *p)
{
	return &p->snap.info;
}

int dp_pull_read(dp_pull *p, void *buf, size_t cap, size_t *got)
{
	if (cap == 0) /* *got == 0 would read as the end */
		return dp_error_set(DP_EUSAGE, "dp_pull_read needs room for at least one byte");
	uint8_t *o = buf;
	size_t n = 0;
	int rc = 0;
	pthread_mutex_lock(&p->mu);
	while (n < cap && p->next_read < p->snap.n) {
		struct slot *sl = &p->slots[p->next_read % p->nslots];
		while (!p->failed && sl->state != SLOT_READY)
			pthread_cond_wait(&p->cv, &p->mu);
		if (sl->state != SLOT_READY) {
			rc = p->rc;
			dp_error_restore(rc, p->err);
			break;
		}
		size_t k = sl->len - p->read_off;
		if (k > cap - n)
			k = cap - n;
		memcpy(o + n, sl->buf + p->read_off, k);
		n += k;
		p->read_off += k;
		if (p->read_off == sl->len) {
			sl->state = SLOT_EMPTY;
			p->read_off = 0;
			p->next_read++;
			pthread_cond_broadcast(&p->cv);
		}
	}
	pthread_mutex_unlock(&p->mu);
	if (p->r->progress)
		atomic_fetch_add(&p->r->progress->done, n);
	*got = n;
	return rc;
}
