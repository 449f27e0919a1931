/*
 * Pull: a snapshot's bytes, in order. Fetch threads read ahead of the reader
 * into a ring of K run buffers. A run is a stretch of consecutive slices of
 * the snapshot (format.h: a slice is a stretch of one frame's bytes), about
 * RUN_RAW bytes, cut where a frame ends so that a frame is rarely needed by
 * two runs. A fetch thread claims the next run, reads the frames it needs
 * (frames that lie back to back in one pack with one ranged get), opens each
 * (AES-GCM, then zstd) and puts the slices in place. A frame whose slices
 * fill a stretch of the run in order (a full push's slices are whole frames)
 * is decompressed straight into the run buffer; other frames go through the
 * thread's frame buffer and are copied out. The caller's thread copies from
 * the ring in stream order. Memory is K run buffers plus a frame buffer and a
 * read buffer per thread, whatever the snapshot size (and the index, and 44
 * bytes per slice).
 *
 * Network backends (DP_BACKEND_F_PARALLEL) get more fetch threads, since
 * there a thread mostly waits for the network.
 *
 * Every byte handed out has been authenticated (the frame id, which the
 * snapshot names, is bound to the frame's ciphertext). A missing pack, a
 * failed authentication or a length that does not match stops the pull with
 * an error naming the pack.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp/error.h"
#include "format.h"

#define RUN_RAW (2u * 1024 * 1024)
#define READ_MAX_BYTES (4u * 1024 * 1024)

enum { RUN_EMPTY, RUN_FETCHING, RUN_READY };

struct run {
	uint8_t *buf; /* the run's bytes, in stream order */
	size_t len, cap;
	size_t first, n; /* slices [first, first + n) of the snapshot */
	const dp_blob_loc **locs;
	size_t locs_cap;
	int state;
};

/* One fetch thread's scratch space. */
struct fetcher {
	dp_sealer *s;
	dp_buf read; /* sealed frames read with one get */
	uint8_t *frame; /* an opened frame, when it is copied out */
	uint32_t frame_in; /* which frame is in it, or DP_INDEX_EMPTY */
	uint32_t *distinct; /* the frames of the run being fetched */
	size_t distinct_cap;
	size_t *pos; /* each slice's place in the run buffer */
	size_t pos_cap;
};

struct dp_pull {
	dp_repo *r;
	dp_lock *lock;
	dp_snapshot snap;
	dp_index ix;
	dp_blob_loc *locs; /* the snapshot's slices, placed (place_slices) */
	struct run *runs;
	size_t nruns;
	pthread_t *threads;
	int nthreads, started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	size_t next_slice; /* the first slice not yet claimed */
	uint64_t next_assign, next_read; /* run sequence numbers */
	size_t read_off;
	bool stop, failed;
	int rc;
	char err[1024];
};

/* Places the snapshot's slices: p->locs[i] is slice i as a location in a
 * frame of the index (its id field unused), checked against the frame. */
static int place_slices(dp_pull *p)
{
	int rc = dp_index_map_frames(&p->ix);
	if (rc)
		return rc;
	if (!(p->locs = malloc((p->snap.n + 1) * sizeof(*p->locs))))
		return dp_error_set(DP_ERROR, "out of memory");
	for (size_t i = 0; i < p->snap.n; i++) {
		bool fits;
		uint32_t fr = dp_slice_frame(&p->ix, &p->snap, i, &fits);
		if (fr == DP_INDEX_EMPTY) {
			char hex[DP_ID_HEX];
			dp_hex(hex, p->snap.frame_ids[i], DP_HASH_LEN);
			return dp_error_set(DP_ECORRUPT,
			                    "frame %s of snapshot \"%s\" is in no index: the "
			                    "repository lost data (run 'dp repo check')",
			                    hex, p->snap.info.id);
		}
		const dp_frame *f = &p->ix.frames[fr];
		if (f->raw_length > dp_frame_max(p->r) || !fits)
			return dp_error_set(
			    DP_ECORRUPT,
			    "slice %zu of snapshot \"%s\" does not fit in its frame "
			    "(index and snapshot disagree)",
			    i, p->snap.info.id);
		p->locs[i] = (dp_blob_loc){
		    .frame = fr, .inner = p->snap.start[i], .raw_length = p->snap.length[i]};
	}
	return 0;
}

/* Claims the next run (called with mu held, its slot empty): slices from
 * next_slice on, up to RUN_RAW bytes and then to the end of the frame the
 * last one is in, never more than the buffer holds. */
static int claim_run(dp_pull *p, struct run *u)
{
	size_t i = p->next_slice, raw = 0;
	u->first = i;
	u->n = 0;
	while (i + u->n < p->snap.n) {
		const dp_blob_loc *l = &p->locs[i + u->n];
		if (u->n && (raw + l->raw_length > u->cap ||
		             (raw >= RUN_RAW && l->frame != u->locs[u->n - 1]->frame)))
			break;
		int rc = dp_array_grow(&u->locs, &u->locs_cap, u->n, sizeof(*u->locs));
		if (rc)
			return rc;
		u->locs[u->n++] = l;
		raw += l->raw_length;
	}
	u->len = raw;
	u->state = RUN_FETCHING;
	p->next_slice = i + u->n;
	p->next_assign++;
	return 0;
}

static int cmp_frame_place(const void *a, const void *b, void *arg)
{
	const dp_index *ix = arg;
	const dp_frame *x = &ix->frames[*(const uint32_t *)a],
	               *y = &ix->frames[*(const uint32_t *)b];
	if (x->pack != y->pack)
		return x->pack < y->pack ? -1 : 1;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Puts frame fr's slices of run u in place; sealed: its sealed bytes, or
 * NULL if it is the one already open in the fetcher's frame buffer. */
static int place_frame(dp_pull *p, struct fetcher *t, struct run *u, uint32_t fr,
                       const uint8_t *sealed, const char *key)
{
	const dp_frame *f = &p->ix.frames[fr];
	/* Straight into the run buffer if its slices there are the whole
	 * frame, in order and back to back. */
	size_t k = 0, at = 0;
	bool direct = false;
	while (k < u->n && u->locs[k]->frame != fr)
		k++;
	if (sealed && k < u->n && u->locs[k]->inner == 0) {
		size_t j = k, want = 0;
		at = t->pos[k];
		while (j < u->n && u->locs[j]->frame == fr && u->locs[j]->inner == want)
			want += u->locs[j++]->raw_length;
		direct = want == f->raw_length;
	}
	if (sealed) {
		uint8_t *dst = direct ? u->buf + at : t->frame;
		if (!direct)
			t->frame_in = DP_INDEX_EMPTY;
		if (dp_frame_open(t->s, f->id, sealed, f->length, dst, f->raw_length) != 0)
			return dp_error_set(DP_ECORRUPT,
			                    "pack \"%s\": the frame at offset %u failed "
			                    "authentication: the pack is corrupted",
			                    key, f->offset);
		if (direct) {
			/* Other slices of the run may use the frame too. */
			for (size_t j = k; j < u->n; j++)
				if (u->locs[j]->frame == fr &&
				    (t->pos[j] < at || t->pos[j] >= at + f->raw_length))
					memcpy(u->buf + t->pos[j], u->buf + at + u->locs[j]->inner,
					       u->locs[j]->raw_length);
			return 0;
		}
		t->frame_in = fr;
	}
	for (size_t j = k; j < u->n; j++)
		if (u->locs[j]->frame == fr)
			memcpy(u->buf + t->pos[j], t->frame + u->locs[j]->inner,
			       u->locs[j]->raw_length);
	return 0;
}

static int fetch_run(dp_pull *p, struct fetcher *t, struct run *u)
{
	char key[100];
	size_t nd = 0;
	int rc = 0;
	while (!rc && t->pos_cap < u->n)
		rc = dp_array_grow(&t->pos, &t->pos_cap, t->pos_cap, sizeof(*t->pos));
	for (size_t j = 0, at = 0; !rc && j < u->n; j++) {
		t->pos[j] = at;
		at += u->locs[j]->raw_length;
	}
	/* The distinct frames, by place in the repository. */
	for (size_t j = 0; !rc && j < u->n; j++) {
		uint32_t fr = u->locs[j]->frame;
		if (j && fr == u->locs[j - 1]->frame)
			continue;
		bool seen = false;
		for (size_t d = 0; d < nd && !seen; d++)
			seen = t->distinct[d] == fr;
		if (seen)
			continue;
		if (!(rc = dp_array_grow(&t->distinct, &t->distinct_cap, nd, sizeof(uint32_t))))
			t->distinct[nd++] = fr;
	}
	if (rc)
		return rc;
	qsort_r(t->distinct, nd, sizeof(uint32_t), cmp_frame_place, &p->ix);
	for (size_t d = 0; d < nd;) {
		const dp_frame *f0 = &p->ix.frames[t->distinct[d]];
		dp_pack_key(key, sizeof(key), p->ix.packs[f0->pack]);
		if (t->distinct[d] == t->frame_in) {
			if ((rc = place_frame(p, t, u, t->distinct[d], NULL, key)))
				return rc;
			d++;
			continue;
		}
		/* Frames right behind it in the same pack come with one read. */
		size_t e = d + 1;
		uint64_t end = (uint64_t)f0->offset + f0->length;
		while (e < nd) {
			const dp_frame *f = &p->ix.frames[t->distinct[e]];
			if (f->pack != f0->pack || f->offset != end ||
			    end + f->length - f0->offset > READ_MAX_BYTES ||
			    t->distinct[e] == t->frame_in)
				break;
			end += f->length;
			e++;
		}
		dp_buf_reset(&t->read);
		rc = p->r->b->get(p->r->b, key, f0->offset, end - f0->offset, &t->read);
		if (rc == DP_ENOTFOUND)
			return dp_error_set(DP_ECORRUPT, "pack \"%s\" is missing", key);
		if (rc)
			return rc;
		if (t->read.len != end - f0->offset)
			return dp_error_set(DP_ECORRUPT, "pack \"%s\" is truncated", key);
		for (; d < e; d++) {
			const dp_frame *f = &p->ix.frames[t->distinct[d]];
			if ((rc = place_frame(p, t, u, t->distinct[d],
			                      t->read.data + (f->offset - f0->offset), key)))
				return rc;
		}
	}
	return 0;
}

static void fetcher_free(struct fetcher *t)
{
	dp_sealer_free(t->s);
	dp_buf_free(&t->read);
	free(t->frame);
	free(t->distinct);
	free(t->pos);
}

static void *fetch_main(void *arg)
{
	dp_pull *p = arg;
	struct fetcher t = {.frame_in = DP_INDEX_EMPTY};
	int rc = dp_sealer_new(&t.s, p->r);
	if (!rc && !(t.frame = malloc(dp_frame_max(p->r))))
		rc = dp_error_set(DP_ERROR, "out of memory");
	pthread_mutex_lock(&p->mu);
	while (!rc) {
		struct run *u = &p->runs[p->next_assign % p->nruns];
		while (!p->stop && !p->failed && p->next_slice < p->snap.n &&
		       u->state != RUN_EMPTY) {
			pthread_cond_wait(&p->cv, &p->mu);
			u = &p->runs[p->next_assign % p->nruns];
		}
		if (p->stop || p->failed || p->next_slice >= p->snap.n)
			break;
		if ((rc = claim_run(p, u)))
			break;
		pthread_mutex_unlock(&p->mu);
		rc = fetch_run(p, &t, u);
		pthread_mutex_lock(&p->mu);
		if (rc)
			break;
		u->state = RUN_READY;
		pthread_cond_broadcast(&p->cv);
	}
	if (rc && !p->failed) {
		p->failed = true;
		p->rc = rc;
		snprintf(p->err, sizeof(p->err), "%s", dp_error_last());
	}
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	fetcher_free(&t);
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
	for (size_t i = 0; p->runs && i < p->nruns; i++) {
		free(p->runs[i].buf);
		free(p->runs[i].locs);
	}
	free(p->runs);
	free(p->threads);
	dp_snapshot_free(&p->snap);
	free(p->locs);
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
	    (rc = dp_snapshot_load(r, id, &p->snap)) || (rc = dp_index_load(r, &p->ix, NULL)) ||
	    (rc = place_slices(p)))
		goto fail;
	p->nthreads = dp_repo_nthreads(r);
	if ((r->b->features & DP_BACKEND_F_PARALLEL) && p->nthreads < 8)
		p->nthreads = 8;
	p->nruns = (size_t)p->nthreads + 2;
	p->runs = calloc(p->nruns, sizeof(*p->runs));
	p->threads = calloc((size_t)p->nthreads, sizeof(*p->threads));
	if (!p->runs || !p->threads)
		goto oom;
	for (size_t i = 0; i < p->nruns; i++) {
		p->runs[i].cap = RUN_RAW + dp_frame_max(r);
		if (!(p->runs[i].buf = malloc(p->runs[i].cap)))
			goto oom;
	}
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
	while (n < cap && (p->next_read < p->next_assign || p->next_slice < p->snap.n)) {
		struct run *u = &p->runs[p->next_read % p->nruns];
		while (!p->failed && !(p->next_read < p->next_assign && u->state == RUN_READY))
			pthread_cond_wait(&p->cv, &p->mu);
		if (p->failed) {
			rc = p->rc;
			dp_error_restore(rc, p->err);
			break;
		}
		size_t k = u->len - p->read_off;
		if (k > cap - n)
			k = cap - n;
		/* The run is ours until it is marked empty. */
		pthread_mutex_unlock(&p->mu);
		memcpy(o + n, u->buf + p->read_off, k);
		pthread_mutex_lock(&p->mu);
		n += k;
		p->read_off += k;
		if (p->read_off == u->len) {
			u->state = RUN_EMPTY;
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
