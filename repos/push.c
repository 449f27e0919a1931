/*
 * Push: a byte stream in, a snapshot out. The pipeline:
 *
 *   caller thread      chunk (gear hash) the stream in job slots: read
 *                      into them (dp_push_buffer/filled) or copied there
 *                      (dp_push_write)
 *   N worker threads   chunk ids (keyed BLAKE3), dedup check, then the batch's new
 *                      chunks sealed together as one frame (zstd + AES-GCM)
 *   committer thread   in stream order: record the ids, append the frame to
 *                      the open pack; a full pack goes to the upload queue
 *   M upload threads   name the pack (dp_pack_id) and put it on the backend
 *
 * A job is a batch of consecutive chunks, about DP_FRAME_TARGET of the stream:
 * handing work between threads per batch instead of per chunk keeps the
 * threads computing rather than waking each other (per-chunk hand-offs cost
 * as much system time as the compression itself on this 2-core machine).
 * The batch is also the frame: small chunks deduplicate finely, and their
 * new bytes still compress as one ~1 MiB block.
 *
 * Memory is a fixed set of buffers whatever the stream size: K job slots
 * (raw batch and sealed frame), M+1 pack buffers of the pack size, one
 * gather buffer per worker. Per chunk, the push holds its id and length
 * (36 bytes, until its place is known and it joins a slice of the snapshot)
 * and, for a chunk it stores, an index entry (~60-120 bytes: to find it
 * again later in the stream, and to write the index). Once a window of
 * DP_PUSH_WINDOW chunks has gone by, the pipeline is drained and both are
 * written out (spill): the chunks become slices (40 bytes per stretch of a
 * frame, ~40 KB per GB of a new stream), the index of new chunks an index
 * object, and the push goes on with an empty one. The price: a chunk that
 * comes back in a later window of the same push is stored again (once per
 * window); later pushes find it in the repository's index as usual.
 *
 * One mutex guards the shared state (slot states, sequence counters, pack
 * pool, upload queue, the index of new chunks); each stage waits on its
 * own condition variable. The first error anywhere is kept (code and
 * message) and stops every stage; the caller gets it from write or commit.
 */
#include <assert.h>
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dp/error.h"
#include "format.h"

enum { JOB_FREE, JOB_FILLED, JOB_WORKING, JOB_DONE };

/* The committer's list of the stream's chunks: id, raw length u32. */
#define ENTRY_LEN (DP_HASH_LEN + 4)

struct chunk {
	uint32_t off, len; /* in job.raw */
	uint8_t id[DP_HASH_LEN];
	bool is_new;
};

struct job {
	uint8_t *raw;
	size_t len, cap; /* cap: dp_frame_max */
	size_t chunk_start; /* where the chunk being filled begins */
	struct chunk *chunks;
	size_t n, max;
	/* The frame of the new chunks (frame.length == 0: none is new). */
	dp_frame frame;
	dp_blob_loc *locs; /* its members */
	uint8_t *member_ids;
	size_t nnew;
	uint8_t *sealed;
	size_t sealed_cap;
	int state;
};

struct pack {
	dp_packer k;
	struct pack *next; /* free list / upload queue link */
};

struct dp_push {
	dp_repo *r;
	dp_lock *lock;
	dp_snapshot_info info;
	dp_chunker chunker;
	dp_index known; /* the repository's index when the push began (read only) */
	/* The chunks this push stores: added pending by the workers (dedup
	 * within the push), given their place when their pack is written;
	 * becomes the new index. */
	dp_index fresh;
	uint32_t block; /* > 0: cut every block bytes (dp_push_cut) */
	dp_keylist known_keys; /* the index objects "known" came from */
	struct timespec t0;

	pthread_mutex_t mu;
	pthread_cond_t cv_free, cv_work, cv_done, cv_pack, cv_upload;
	struct job *jobs;
	size_t njobs;
	uint64_t next_fill, next_work, next_commit;
	struct job *cur; /* being filled by the caller */
	bool closing; /* no more jobs will come */
	bool failed;
	int rc;
	char err[1024];

	struct pack *packs; /* all pack buffers */
	size_t npacks;
	struct pack *free_packs; /* pool */
	struct pack *uploads, **uploads_tail;
	bool uploads_closing;

	dp_buf entries; /* the stream's chunks (ENTRY_LEN each), committer only */
	/* The snapshot's slices so far (make_slices); the last one's offset,
	 * valid when nslices > 0; the chunks already turned into slices. */
	dp_buf slices;
	size_t nslices, last_slice;
	uint64_t sliced;
	/* Spilling (take_slot): chunks submitted since the last spill, and the
	 * caller's request that the committer finish its open pack. */
	size_t window, held;
	bool flush;
	pthread_t *workers;
	int nworkers, nuploaders, started_workers, started_uploaders;
	pthread_t committer;
	bool committer_started;

	uint64_t size, blobs, blobs_new, stored;
};

/* Records the calling thread's current error as the push's, once. Call with
 * mu held. */
static void fail_locked(dp_push *p, int rc)
{
	if (!p->failed) {
		p->failed = true;
		p->rc = rc;
		snprintf(p->err, sizeof(p->err), "%s", dp_error_last());
	}
	pthread_cond_broadcast(&p->cv_free);
	pthread_cond_broadcast(&p->cv_work);
	pthread_cond_broadcast(&p->cv_done);
	pthread_cond_broadcast(&p->cv_pack);
	pthread_cond_broadcast(&p->cv_upload);
}

static void fail(dp_push *p, int rc)
{
	pthread_mutex_lock(&p->mu);
	fail_locked(p, rc);
	pthread_mutex_unlock(&p->mu);
}

/* ---- workers: id, dedup, seal ---- */

/* Seals the job's new chunks as one frame into j->sealed. When every chunk
 * is new (a first backup) the frame is j->raw itself; otherwise the new
 * chunks are gathered first. */
static int seal_frame(dp_sealer *s, struct job *j, uint8_t *gather)
{
	const uint8_t *raw = j->raw;
	size_t len = 0;
	j->nnew = 0;
	memset(&j->frame, 0, sizeof(j->frame));
	for (size_t i = 0; i < j->n; i++) {
		const struct chunk *c = &j->chunks[i];
		if (!c->is_new)
			continue;
		dp_blob_loc *l = &j->locs[j->nnew];
		memcpy(l->id, c->id, DP_HASH_LEN);
		memcpy(j->member_ids + j->nnew * DP_HASH_LEN, c->id, DP_HASH_LEN);
		l->inner = (uint32_t)len;
		l->raw_length = c->len;
		j->nnew++;
		len += c->len;
	}
	if (!j->nnew)
		return 0;
	if (j->nnew < j->n) {
		for (size_t i = 0, k = 0; i < j->n; i++)
			if (j->chunks[i].is_new) {
				memcpy(gather + j->locs[k].inner, j->raw + j->chunks[i].off,
				       j->chunks[i].len);
				k++;
			}
		raw = gather;
	}
	size_t sealed_len = 0;
	int rc = dp_frame_id(j->frame.id, j->member_ids, j->nnew);
	if (!rc)
		rc = dp_frame_seal(s, j->frame.id, raw, len, j->sealed, &sealed_len);
	j->frame.length = (uint32_t)sealed_len;
	j->frame.raw_length = (uint32_t)len;
	return rc;
}

static void *worker_main(void *arg)
{
	dp_push *p = arg;
	dp_sealer *s = NULL;
	uint8_t *gather = malloc(dp_frame_max(p->r));
	int rc = gather ? dp_sealer_new(&s, p->r) : dp_error_set(DP_ERROR, "out of memory");
	if (rc) {
		fail(p, rc);
		free(gather);
		return NULL;
	}
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->failed && p->next_work == p->next_fill && !p->closing)
			pthread_cond_wait(&p->cv_work, &p->mu);
		if (p->failed || p->next_work == p->next_fill)
			break;
		struct job *j = &p->jobs[p->next_work++ % p->njobs];
		j->state = JOB_WORKING;
		pthread_mutex_unlock(&p->mu);

		/* Chunk ids 64 at a time (~1 MiB): BLAKE3 fills its lanes
		 * across the chunks of a call. */
		for (size_t i = 0; !rc && i < j->n; i += 64) {
			const uint8_t *raw[64];
			size_t len[64], k = j->n - i < 64 ? j->n - i : 64;
			uint8_t ids[64][DP_HASH_LEN];
			for (size_t c = 0; c < k; c++) {
				raw[c] = j->raw + j->chunks[i + c].off;
				len[c] = j->chunks[i + c].len;
			}
			rc = dp_blob_ids(s, ids, raw, len, k);
			for (size_t c = 0; !rc && c < k; c++)
				memcpy(j->chunks[i + c].id, ids[c], DP_HASH_LEN);
		}
		/* One lock for the batch's dedup decisions. */
		pthread_mutex_lock(&p->mu);
		for (size_t i = 0; !rc && i < j->n; i++) {
			struct chunk *c = &j->chunks[i];
			c->is_new = false;
			if (dp_index_find(&p->known, c->id))
				continue;
			dp_blob_loc l = {.frame = DP_INDEX_PENDING};
			memcpy(l.id, c->id, DP_HASH_LEN);
			rc = dp_index_add(&p->fresh, &l, &c->is_new);
		}
		pthread_mutex_unlock(&p->mu);
		if (!rc)
			rc = seal_frame(s, j, gather);
		pthread_mutex_lock(&p->mu);
		if (rc) {
			fail_locked(p, rc);
			break;
		}
		j->state = JOB_DONE;
		pthread_cond_signal(&p->cv_done); /* only the committer waits on it */
	}
	pthread_mutex_unlock(&p->mu);
	dp_sealer_free(s);
	free(gather);
	return NULL;
}

/* ---- committer: stream order, packing ---- */

/* Seals the header onto the pack and queues it for upload. */
static int pack_finish(dp_push *p, dp_aead *a, struct pack *k)
{
	int rc = dp_packer_finish(p->r, a, &k->k);
	if (rc)
		return rc;
	pthread_mutex_lock(&p->mu);
	k->next = NULL;
	*p->uploads_tail = k;
	p->uploads_tail = &k->next;
	pthread_cond_signal(&p->cv_upload);
	pthread_mutex_unlock(&p->mu);
	return 0;
}

static struct pack *pack_get(dp_push *p)
{
	pthread_mutex_lock(&p->mu);
	while (!p->failed && !p->free_packs)
		pthread_cond_wait(&p->cv_pack, &p->mu);
	struct pack *k = p->failed ? NULL : p->free_packs;
	if (k)
		p->free_packs = k->next;
	pthread_mutex_unlock(&p->mu);
	if (k)
		dp_packer_reset(&k->k);
	return k;
}

static void *committer_main(void *arg)
{
	dp_push *p = arg;
	dp_aead *a = NULL;
	struct pack *k = NULL;
	int rc = dp_aead_new(&a, dp_repo_enc_key(p->r));
	if (rc)
		goto out;
	for (;;) {
		pthread_mutex_lock(&p->mu);
		struct job *j = &p->jobs[p->next_commit % p->njobs];
		while (!p->failed && !(p->next_commit < p->next_fill && j->state == JOB_DONE) &&
		       !(p->next_commit == p->next_fill && (p->closing || p->flush)))
			pthread_cond_wait(&p->cv_done, &p->mu);
		bool idle = p->next_commit == p->next_fill;
		bool flush = !p->failed && idle && p->flush && !p->closing;
		bool stop = p->failed || (idle && !flush);
		pthread_mutex_unlock(&p->mu);
		if (stop)
			break;
		if (flush) {
			/* Every job so far committed: the open pack goes out now,
			 * so that every chunk has its place (spill). */
			if (k) {
				if ((rc = pack_finish(p, a, k)))
					goto out;
				k = NULL;
			}
			pthread_mutex_lock(&p->mu);
			p->flush = false;
			pthread_cond_broadcast(&p->cv_pack);
			pthread_mutex_unlock(&p->mu);
			continue;
		}

		for (size_t i = 0; i < j->n; i++) {
			const struct chunk *c = &j->chunks[i];
			uint8_t e[ENTRY_LEN];
			memcpy(e, c->id, DP_HASH_LEN);
			dp_set_u32(e + DP_HASH_LEN, c->len);
			if ((rc = dp_buf_append(&p->entries, e, sizeof(e))))
				goto out;
			p->size += c->len;
			p->blobs++;
		}
		if (j->nnew) {
			p->blobs_new += j->nnew;
			if (!k && !(k = pack_get(p)))
				goto out;
			if ((rc = dp_packer_add(&k->k, &j->frame, j->sealed, j->locs, j->nnew, NULL,
			                        j->nnew)))
				goto out;
			if (k->k.data.len >= p->r->pack_size) {
				if ((rc = pack_finish(p, a, k)))
					goto out;
				k = NULL;
			}
		}
		if (p->r->progress)
			atomic_fetch_add(&p->r->progress->done, j->len);

		pthread_mutex_lock(&p->mu);
		j->state = JOB_FREE;
		p->next_commit++;
		pthread_cond_signal(&p->cv_free); /* only the caller waits on it */
		pthread_mutex_unlock(&p->mu);
	}
	pthread_mutex_lock(&p->mu);
	bool failed = p->failed;
	pthread_mutex_unlock(&p->mu);
	if (k && k->k.nframes && !failed) {
		rc = pack_finish(p, a, k);
		k = NULL;
	}
out:
	pthread_mutex_lock(&p->mu);
	if (rc)
		fail_locked(p, rc);
	if (k) {
		k->next = p->free_packs;
		p->free_packs = k;
	}
	p->uploads_closing = true;
	pthread_cond_broadcast(&p->cv_upload);
	pthread_mutex_unlock(&p->mu);
	dp_aead_free(a);
	return NULL;
}

/* ---- uploaders ---- */

static void *uploader_main(void *arg)
{
	dp_push *p = arg;
	for (;;) {
		pthread_mutex_lock(&p->mu);
		while (!p->failed && !p->uploads && !p->uploads_closing)
			pthread_cond_wait(&p->cv_upload, &p->mu);
		struct pack *k = p->failed ? NULL : p->uploads;
		if (k) {
			p->uploads = k->next;
			if (!p->uploads)
				p->uploads_tail = &p->uploads;
		}
		pthread_mutex_unlock(&p->mu);
		if (!k)
			break;

		uint8_t id[DP_HASH_LEN];
		char key[100];
		int rc = dp_pack_id(id, k->k.data.data, k->k.data.len);
		if (!rc)
			rc = dp_pack_key(key, sizeof(key), id);
		if (!rc)
			rc = p->r->b->put(p->r->b, key, k->k.data.data, k->k.data.len);

		pthread_mutex_lock(&p->mu);
		if (!rc)
			rc = dp_packer_index(&k->k, id, &p->fresh);
		if (rc) {
			fail_locked(p, rc);
		} else {
			p->stored += k->k.data.len;
			if (p->r->progress)
				atomic_fetch_add(&p->r->progress->stored, k->k.data.len);
		}
		k->next = p->free_packs;
		p->free_packs = k;
		pthread_cond_broadcast(&p->cv_pack);
		pthread_mutex_unlock(&p->mu);
	}
	return NULL;
}

/* ---- the caller's side ---- */

/* The pipeline's buffers (jobs, packs), once its threads are joined. */
static void free_buffers(dp_push *p)
{
	for (size_t i = 0; p->jobs && i < p->njobs; i++) {
		free(p->jobs[i].raw);
		free(p->jobs[i].chunks);
		free(p->jobs[i].sealed);
		free(p->jobs[i].locs);
		free(p->jobs[i].member_ids);
	}
	free(p->jobs);
	p->jobs = NULL;
	for (size_t i = 0; p->packs && i < p->npacks; i++)
		dp_packer_free(&p->packs[i].k);
	free(p->packs);
	p->packs = NULL;
}

static void push_free(dp_push *p)
{
	free_buffers(p);
	free(p->workers);
	dp_index_free(&p->known);
	dp_keylist_free(&p->known_keys);
	dp_index_free(&p->fresh);
	dp_buf_free(&p->entries);
	dp_buf_free(&p->slices);
	free(p->info.meta);
	dp_lock_release(p->lock);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv_free);
	pthread_cond_destroy(&p->cv_work);
	pthread_cond_destroy(&p->cv_done);
	pthread_cond_destroy(&p->cv_pack);
	pthread_cond_destroy(&p->cv_upload);
	free(p);
}

/* Stops the pipeline: no more jobs; waits for every thread. */
static void push_join(dp_push *p)
{
	pthread_mutex_lock(&p->mu);
	p->closing = true;
	pthread_cond_broadcast(&p->cv_work);
	pthread_cond_broadcast(&p->cv_done);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->started_workers; i++)
		pthread_join(p->workers[i], NULL);
	if (p->committer_started)
		pthread_join(p->committer, NULL);
	for (int i = 0; i < p->started_uploaders; i++)
		pthread_join(p->workers[p->nworkers + i], NULL);
	p->started_workers = p->started_uploaders = 0;
	p->committer_started = false;
}

int dp_push_begin(dp_push **out, dp_repo *r, const char *name, const char *kind)
{
	int rc = dp_validate_name(name);
	if (rc)
		return rc;
	if (strcmp(kind, "stream") && strcmp(kind, "file") && strcmp(kind, "tree"))
		return dp_error_set(DP_EUSAGE, "snapshot kind \"%s\" is not stream, file or tree",
		                    kind);
	dp_push *p = calloc(1, sizeof(*p));
	if (!p)
		return dp_error_set(DP_ERROR, "out of memory");
	p->r = r;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv_free, NULL);
	pthread_cond_init(&p->cv_work, NULL);
	pthread_cond_init(&p->cv_done, NULL);
	pthread_cond_init(&p->cv_pack, NULL);
	pthread_cond_init(&p->cv_upload, NULL);
	p->uploads_tail = &p->uploads;
	clock_gettime(CLOCK_MONOTONIC, &p->t0);
	snprintf(p->info.name, sizeof(p->info.name), "%s", name);
	snprintf(p->info.kind, sizeof(p->info.kind), "%s", kind);
	snprintf(p->info.host, sizeof(p->info.host), "%s", r->host);
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	p->info.time = (int64_t)now.tv_sec;
	p->info.nsec = (int32_t)now.tv_nsec;
	dp_chunker_init(&p->chunker, r->gear, r->cut_min, r->cut_avg, r->cut_max);
	p->window = DP_PUSH_WINDOW;

	if ((rc = dp_lock_acquire(&p->lock, r, false, "push")))
		goto fail;
	if ((rc = dp_index_load(r, &p->known, &p->known_keys)))
		goto fail;

	p->nworkers = dp_repo_nthreads(r);
	/* A pack buffer is ~17 MiB of the push's memory. On a path one upload
	 * (write, fsync) takes far less than filling the next pack, so one
	 * uploader and one spare buffer suffice; a network backend keeps more
	 * uploads in flight. */
	p->nuploaders = (r->b->features & DP_BACKEND_F_PARALLEL) ? 3 : 1;
	p->njobs = (size_t)p->nworkers * 2 + 2;
	p->npacks = (size_t)p->nuploaders + 1;
	size_t sealed_cap = dp_frame_sealed_bound(dp_frame_max(r));
	p->jobs = calloc(p->njobs, sizeof(*p->jobs));
	p->packs = calloc(p->npacks, sizeof(*p->packs));
	p->workers = calloc((size_t)(p->nworkers + p->nuploaders), sizeof(*p->workers));
	if (!p->jobs || !p->packs || !p->workers)
		goto oom;
	for (size_t i = 0; i < p->njobs; i++) {
		struct job *j = &p->jobs[i];
		j->cap = dp_frame_max(r); /* DP_FRAME_TARGET + one maximum chunk */
		j->max = j->cap / r->cut_min + 2;
		j->sealed_cap = sealed_cap;
		j->raw = malloc(j->cap);
		j->chunks = malloc(j->max * sizeof(*j->chunks));
		j->sealed = malloc(j->sealed_cap);
		j->locs = malloc(j->max * sizeof(*j->locs));
		j->member_ids = malloc(j->max * DP_HASH_LEN);
		if (!j->raw || !j->chunks || !j->sealed || !j->locs || !j->member_ids)
			goto oom;
	}
	for (size_t i = 0; i < p->npacks; i++) {
		/* Page-aligned: a path backend writes it with O_DIRECT. */
		if (dp_buf_alloc_aligned(&p->packs[i].k.data, r->pack_size + 2 * sealed_cap, 4096))
			goto oom;
		p->packs[i].next = p->free_packs;
		p->free_packs = &p->packs[i];
	}
	for (int i = 0; i < p->nworkers; i++, p->started_workers++)
		if (pthread_create(&p->workers[i], NULL, worker_main, p) != 0)
			goto nothread;
	if (pthread_create(&p->committer, NULL, committer_main, p) != 0)
		goto nothread;
	p->committer_started = true;
	for (int i = 0; i < p->nuploaders; i++, p->started_uploaders++)
		if (pthread_create(&p->workers[p->nworkers + i], NULL, uploader_main, p) != 0)
			goto nothread;
	*out = p;
	return 0;
oom:
	rc = dp_error_set(DP_ERROR, "out of memory setting up the push pipeline");
	goto fail;
nothread:
	rc = dp_error_set(DP_ERROR, "cannot start pipeline threads");
	fail(p, rc);
	push_join(p);
fail:
	push_free(p);
	return rc;
}

void dp_push_set_window(dp_push *p, size_t chunks)
{
	p->window = chunks;
}

int dp_push_set_meta(dp_push *p, const char *json)
{
	cJSON *j = cJSON_Parse(json);
	bool ok = cJSON_IsObject(j);
	cJSON_Delete(j);
	if (!ok)
		return dp_error_set(DP_EUSAGE, "snapshot metadata must be a JSON object");
	char *m = strdup(json);
	if (!m)
		return dp_error_set(DP_ERROR, "out of memory");
	free(p->info.meta);
	p->info.meta = m;
	return 0;
}

static int push_error(dp_push *p)
{
	pthread_mutex_lock(&p->mu);
	int rc = p->rc;
	if (rc)
		dp_error_restore(rc, p->err);
	pthread_mutex_unlock(&p->mu);
	return rc;
}

/* Hands the filled slot to the workers. */
static void submit(dp_push *p)
{
	/* The last chunk ends where the stream ends. */
	struct job *j = p->cur;
	if (j->len > j->chunk_start) {
		j->chunks[j->n++] = (struct chunk){.off = (uint32_t)j->chunk_start,
		                                   .len = (uint32_t)(j->len - j->chunk_start)};
		j->chunk_start = j->len;
	}
	p->held += j->n;
	pthread_mutex_lock(&p->mu);
	p->cur->state = JOB_FILLED;
	p->next_fill++;
	p->cur = NULL;
	pthread_cond_signal(&p->cv_work);
	pthread_mutex_unlock(&p->mu);
}

static int spill(dp_push *p);

/* Waits for the next slot in order to be free; spills first once a window
 * of chunks has gone by. */
static int take_slot(dp_push *p)
{
	if (p->window && p->held >= p->window) {
		int rc = spill(p);
		if (rc)
			return rc;
	}
	pthread_mutex_lock(&p->mu);
	struct job *j = &p->jobs[p->next_fill % p->njobs];
	while (!p->failed && j->state != JOB_FREE)
		pthread_cond_wait(&p->cv_free, &p->mu);
	bool failed = p->failed;
	pthread_mutex_unlock(&p->mu);
	if (failed)
		return push_error(p);
	j->len = 0;
	j->n = 0;
	j->chunk_start = 0;
	p->cur = j;
	return 0;
}

/* Ends the current chunk where the current job's bytes end. */
static void end_chunk(dp_push *p)
{
	struct job *j = p->cur;
	j->chunks[j->n++] = (struct chunk){.off = (uint32_t)j->chunk_start,
	                                   .len = (uint32_t)(j->len - j->chunk_start)};
	j->chunk_start = j->len;
	/* A chunk may not straddle jobs: a new chunk starts only where a whole
	 * maximum chunk still fits. */
	if (j->cap - j->len < p->r->cut_max || j->n + 1 >= j->max)
		submit(p);
}

int dp_push_buffer(dp_push *p, uint8_t **buf, size_t *room)
{
	if (!p->cur) {
		int rc = take_slot(p);
		if (rc)
			return rc;
	}
	struct job *j = p->cur;
	/* At least one byte: a slot whose last chunk reaches its end has been
	 * submitted when that chunk was cut. */
	assert(j->len < j->cap);
	*buf = j->raw + j->len;
	*room = j->cap - j->len;
	return 0;
}

/* Chunks the n bytes the caller put at the end of the current slot. When a
 * cut fills the slot, the bytes after the cut are copied to the next one:
 * fewer than one maximum chunk, as the slot is submitted once less than that
 * is left (more only when the slot runs out of chunk entries first, with
 * blocks smaller than the chunk minimum). */
static int chunk_filled(dp_push *p, size_t n)
{
	struct job *j = p->cur;
	assert(j && n <= j->cap - j->len);
	size_t end = j->len + n; /* the bytes not chunked yet are raw[len, end) */
	while (j->len < end) {
		const uint8_t *d = j->raw + j->len;
		size_t left = end - j->len;
		bool cut;
		size_t k;
		if (p->block) {
			size_t have = j->len - j->chunk_start;
			k = p->block - have < left ? p->block - have : left;
			cut = have + k == p->block;
		} else {
			k = dp_chunker_next(&p->chunker, d, left, &cut);
		}
		j->len += k;
		if (!cut)
			continue;
		size_t at = j->len;
		end_chunk(p);
		if (p->cur || at == end)
			continue;
		/* Submitted with bytes after the cut: the workers only read
		 * raw[0, at), and the slot is not filled again before we take it
		 * back, so the rest can be copied from it once we hold the next. */
		int rc = take_slot(p);
		if (rc)
			return rc;
		memcpy(p->cur->raw, j->raw + at, end - at);
		end -= at;
		j = p->cur;
	}
	return 0;
}

int dp_push_filled(dp_push *p, size_t n)
{
	int rc = chunk_filled(p, n);
	return rc ? rc : push_error(p);
}

int dp_push_write(dp_push *p, const void *data, size_t len)
{
	const uint8_t *d = data;
	while (len > 0) {
		uint8_t *buf;
		size_t room;
		int rc = dp_push_buffer(p, &buf, &room);
		if (rc)
			return rc;
		size_t k = room < len ? room : len;
		memcpy(buf, d, k);
		if ((rc = chunk_filled(p, k)))
			return rc;
		d += k;
		len -= k;
	}
	return push_error(p);
}

int dp_push_cut(dp_push *p, uint32_t block)
{
	if (block > p->r->cut_max)
		return dp_error_set(DP_EUSAGE,
		                    "block size %u exceeds the largest chunk this push cuts (%u)",
		                    block, p->r->cut_max);
	if (p->cur && p->cur->len > p->cur->chunk_start)
		end_chunk(p);
	p->chunker.fp = 0;
	p->chunker.len = 0;
	p->block = block;
	return push_error(p);
}

struct seen {
	dp_push *p;
	bool *present;
};

static int mark_seen(const char *key, uint64_t size, void *arg)
{
	(void)size;
	struct seen *s = arg;
	for (size_t i = 0; i < s->p->known_keys.n; i++)
		if (strcmp(s->p->known_keys.v[i], key) == 0)
			s->present[i] = true;
	return 0;
}

/* Before committing: the chunks this push did not store because the
 * repository already had them must still be there. They are if our lock
 * held all along and every index we deduplicated against still exists
 * (prune replaces indexes before it deletes a pack). */
static int still_valid(dp_push *p)
{
	int rc = dp_lock_check(p->lock);
	if (rc || !p->known_keys.n)
		return rc;
	struct seen s = {p, calloc(p->known_keys.n, sizeof(bool))};
	if (!s.present)
		return dp_error_set(DP_ERROR, "out of memory");
	rc = p->r->b->list(p->r->b, "index/", mark_seen, &s);
	for (size_t i = 0; !rc && i < p->known_keys.n; i++)
		if (!s.present[i])
			rc = dp_error_set(
			    DP_ELOCKED,
			    "a prune removed index \"%s\" while this push ran (its lock "
			    "was taken as stale): nothing was committed; push again",
			    p->known_keys.v[i]);
	free(s.present);
	return rc;
}

/* Turns the chunks in p->entries into the snapshot's slices (format.h),
 * appended to p->slices, and empties the list: each chunk's frame and place,
 * from the repository's index or, for a chunk this push stored, from its own
 * (complete for every chunk committed once the packs holding them are
 * written); chunks that follow each other in a frame make one slice, also
 * across calls. Only when no thread is working: at a spill or the commit. */
static int make_slices(dp_push *p)
{
	const uint8_t *e = p->entries.data;
	size_t n = p->entries.len / ENTRY_LEN;
	for (size_t i = 0; i < n; i++, e += ENTRY_LEN) {
		const dp_index *ix = &p->known;
		const dp_blob_loc *l = dp_index_find(ix, e);
		if (!l) {
			ix = &p->fresh;
			l = dp_index_find(ix, e);
		}
		if (!l || l->frame >= ix->nframes || l->raw_length != dp_get_u32(e + DP_HASH_LEN))
			return dp_error_set(DP_ERROR,
			                    "push: chunk %llu of the stream has no place "
			                    "(internal error); nothing was committed",
			                    (unsigned long long)(p->sliced + i));
		const uint8_t *fid = ix->frames[l->frame].id;
		uint8_t *q = p->slices.data + p->last_slice;
		if (p->nslices && memcmp(q, fid, DP_HASH_LEN) == 0 &&
		    dp_get_u32(q + DP_HASH_LEN) + dp_get_u32(q + DP_HASH_LEN + 4) == l->inner) {
			dp_set_u32(q + DP_HASH_LEN + 4,
			           dp_get_u32(q + DP_HASH_LEN + 4) + l->raw_length);
			continue;
		}
		uint8_t sl[DP_SLICE_LEN];
		memcpy(sl, fid, DP_HASH_LEN);
		dp_set_u32(sl + DP_HASH_LEN, l->inner);
		dp_set_u32(sl + DP_HASH_LEN + 4, l->raw_length);
		size_t at = p->slices.len;
		int rc = dp_buf_append(&p->slices, sl, sizeof(sl));
		if (rc)
			return rc;
		p->last_slice = at;
		p->nslices++;
	}
	p->sliced += n;
	dp_buf_reset(&p->entries);
	return 0;
}

/* Counts the pack buffers back in the pool. Call with mu held. */
static size_t packs_free(const dp_push *p)
{
	size_t n = 0;
	for (const struct pack *k = p->free_packs; k; k = k->next)
		n++;
	return n;
}

/* Writes out what the push holds per chunk once a window of chunks has gone
 * by (see the top): drains the pipeline (every submitted job committed, the
 * open pack finished, every pack written), turns the chunks into slices,
 * writes the index of the chunks stored so far and starts an empty one.
 * Nothing else runs meanwhile: the workers wait for jobs, the committer and
 * the uploaders for work. */
static int spill(dp_push *p)
{
	pthread_mutex_lock(&p->mu);
	p->flush = true;
	pthread_cond_broadcast(&p->cv_done);
	while (!p->failed && (p->flush || p->uploads || packs_free(p) < p->npacks))
		pthread_cond_wait(&p->cv_pack, &p->mu);
	bool failed = p->failed;
	pthread_mutex_unlock(&p->mu);
	if (failed)
		return push_error(p);
	uint64_t written = 0;
	int rc = make_slices(p);
	if (!rc && p->fresh.count)
		rc = dp_index_write(p->r, &p->fresh, &written);
	if (rc) {
		fail(p, rc);
		return rc;
	}
	pthread_mutex_lock(&p->mu);
	dp_index_free(&p->fresh);
	p->stored += written;
	pthread_mutex_unlock(&p->mu);
	p->held = 0;
	return 0;
}

int dp_push_commit(dp_push *p, dp_push_result *res)
{
	char id[DP_ID_HEX];
	dp_buf snap = {0};
	int rc = 0;
	if (p->cur && p->cur->len > 0)
		submit(p);
	p->cur = NULL;
	push_join(p);
	/* From here on memory is freed as soon as it has served: the snapshot
	 * of a long stream is large, and sealing it takes two more copies. */
	free_buffers(p);
	if ((rc = push_error(p)) || (rc = still_valid(p)))
		goto out;
	if ((rc = make_slices(p)))
		goto out;
	dp_buf_free(&p->entries);
	dp_index_free(&p->known);
	if (p->fresh.count && (rc = dp_index_write(p->r, &p->fresh, &p->stored)))
		goto out;
	dp_index_free(&p->fresh);
	p->info.size = p->size;
	p->info.blobs = p->blobs;
	if ((rc = dp_snapshot_encode(&p->info, p->slices.data, p->nslices, &snap)))
		goto out;
	dp_buf_free(&p->slices);
	/* The snapshot last: only now does the backup exist. */
	if ((rc = dp_object_write(p->r, "snapshot", "snapshots", snap.data, snap.len, id,
	                          &p->stored)))
		goto out;
	if (res) {
		struct timespec t1;
		clock_gettime(CLOCK_MONOTONIC, &t1);
		memset(res, 0, sizeof(*res));
		memcpy(res->id, id, DP_ID_HEX);
		res->size = p->size;
		res->stored = p->stored;
		res->blobs = p->blobs;
		res->blobs_new = p->blobs_new;
		res->seconds =
		    (double)(t1.tv_sec - p->t0.tv_sec) + (double)(t1.tv_nsec - p->t0.tv_nsec) / 1e9;
	}
out:
	dp_buf_free(&snap);
	push_free(p);
	return rc;
}

void dp_push_abort(dp_push *p)
{
	if (!p)
		return;
	fail(p, DP_ERROR);
	push_join(p);
	push_free(p);
}
