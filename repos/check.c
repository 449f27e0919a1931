/*
 * dp repo check: is every object readable and every reference satisfied?
 *
 * Structure (always): each index and snapshot object is read, its id checked
 * and decrypted; every pack an index names exists and is long enough; every
 * frame a snapshot names is indexed and holds its slice. With read_data:
 * every indexed pack is read whole, its id (dp_pack_id) checked, its header
 * authenticated, every frame opened and the ids of its chunks recomputed;
 * each must be where the index says, and every frame and chunk the index
 * places in a pack must be found there. Packs no index names are reported
 * as unreferenced (an interrupted push leaves them; prune removes them),
 * which is not an error. Problems go to the caller's callback, one line
 * each.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp/backend.h"
#include "dp/error.h"
#include "format.h"

struct pack_obj {
	uint8_t id[DP_HASH_LEN];
	uint64_t size;
	uint64_t need; /* bytes the index says it has at least */
	bool indexed, read;
};

struct ctx {
	dp_repo *r;
	dp_check_report *rep;
	dp_problem_fn fn;
	void *arg;
	struct pack_obj *packs;
	size_t npacks, cap;
};

static void problem(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(struct ctx *c, const char *fmt, ...)
{
	char msg[1200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	c->rep->errors++;
	if (c->fn)
		c->fn(msg, c->arg);
}

static int add_pack(const char *key, uint64_t size, void *arg)
{
	struct ctx *c = arg;
	const char *slash = strrchr(key, '/');
	uint8_t id[DP_HASH_LEN];
	if (!slash || dp_unhex(id, sizeof(id), slash + 1) != 0) {
		problem(c, "unexpected object \"%s\" under data/", key);
		return 0;
	}
	int rc = dp_array_grow(&c->packs, &c->cap, c->npacks, sizeof(*c->packs));
	if (rc)
		return rc;
	struct pack_obj *o = &c->packs[c->npacks++];
	memset(o, 0, sizeof(*o));
	memcpy(o->id, id, DP_HASH_LEN);
	o->size = size;
	return 0;
}

static int cmp_pack(const void *a, const void *b)
{
	return memcmp(a, b, DP_HASH_LEN);
}

static struct pack_obj *find_pack(struct ctx *c, const uint8_t id[DP_HASH_LEN])
{
	return bsearch(id, c->packs, c->npacks, sizeof(*c->packs), cmp_pack);
}

/* Without reading a pack: its last 4 bytes give the sealed header's length,
 * and every indexed frame must end before the header. Catches a pack cut
 * short anywhere, also inside its header. */
static int check_trailer(struct ctx *c, struct pack_obj *o)
{
	char key[100];
	dp_buf t = {0};
	if (o->size < o->need || o->need < 4 + DP_SEAL_OVERHEAD)
		return 0; /* already reported as truncated */
	dp_pack_key(key, sizeof(key), o->id);
	int rc = c->r->b->get(c->r->b, key, o->size - 4, 4, &t);
	if (rc == DP_ERROR || rc == DP_ETRANSIENT) {
		dp_buf_free(&t);
		return rc;
	}
	if (rc || t.len != 4) {
		problem(c, "pack \"%s\": %s", key, rc ? dp_error_last() : "short read");
	} else {
		uint64_t hlen = dp_get_u32(t.data);
		if (hlen < DP_SEAL_OVERHEAD || hlen + 4 > o->size ||
		    o->need - 4 - DP_SEAL_OVERHEAD > o->size - 4 - hlen)
			problem(c,
			        "pack \"%s\" is truncated or damaged: its header length does not "
			        "fit its size (%llu bytes)",
			        key, (unsigned long long)o->size);
	}
	dp_buf_free(&t);
	return 0;
}

/* With read_data: the chunks the index places in packs that were read and
 * found there (one flag per index slot). */
struct seen {
	const dp_index *ix;
	bool *found;
	bool *frame_found; /* one per index frame */
};

/* Opens every frame of the pack in buf and checks each chunk against the
 * index. */
static void check_frames(struct ctx *c, dp_sealer *s, struct seen *sn, const char *key,
                         const uint8_t pack_id[DP_HASH_LEN], const dp_buf *buf, uint8_t *raw)
{
	dp_pack_header h;
	if (dp_pack_read_header(c->r, NULL, key, buf->data, buf->len, buf->len, &h) != 0) {
		problem(c, "%s", dp_error_last());
		return;
	}
	for (size_t i = 0; i < h.nframes; i++) {
		const dp_frame *f = &h.frames[i];
		uint32_t fr = dp_index_find_frame(sn->ix, f->id);
		const dp_frame *g = fr == DP_INDEX_EMPTY ? NULL : &sn->ix->frames[fr];
		if (g && g->offset == f->offset && g->length == f->length &&
		    g->raw_length == f->raw_length &&
		    memcmp(sn->ix->packs[g->pack], pack_id, DP_HASH_LEN) == 0)
			sn->frame_found[fr] = true;
		if (dp_frame_open(s, f->id, buf->data + f->offset, f->length, raw, f->raw_length) !=
		    0) {
			problem(c, "pack \"%s\": the frame at offset %u failed authentication", key,
			        f->offset);
			continue;
		}
		uint32_t inner = 0;
		for (uint32_t m = h.first[i]; m < h.first[i + 1]; m++) {
			uint8_t id[DP_HASH_LEN];
			uint32_t len = h.raw[m];
			dp_blob_id(s, id, raw + inner, len);
			const dp_blob_loc *l = dp_index_find(sn->ix, id);
			if (l) {
				const dp_frame *xf = &sn->ix->frames[l->frame];
				if (memcmp(sn->ix->packs[xf->pack], pack_id, DP_HASH_LEN) == 0 &&
				    xf->offset == f->offset && l->inner == inner &&
				    l->raw_length == len)
					sn->found[l - sn->ix->slots] = true;
			}
			inner += len;
		}
	}
	dp_pack_header_free(&h);
}

static int read_pack(struct ctx *c, dp_sealer *s, struct seen *sn, struct pack_obj *o, dp_buf *buf,
                     uint8_t *raw)
{
	char key[100], hex[DP_ID_HEX];
	uint8_t h[DP_HASH_LEN];
	dp_pack_key(key, sizeof(key), o->id);
	dp_buf_reset(buf);
	int rc = dp_backend_get_all(c->r->b, key, buf);
	if (rc) {
		if (rc == DP_ERROR || rc == DP_ETRANSIENT)
			return rc;
		problem(c, "pack \"%s\": %s", key, dp_error_last());
		return 0;
	}
	o->read = true;
	c->rep->bytes_read += buf->len;
	if (c->r->progress)
		atomic_fetch_add(&c->r->progress->done, buf->len);
	dp_pack_id(h, buf->data, buf->len);
	if (memcmp(h, o->id, DP_HASH_LEN) != 0) {
		dp_hex(hex, h, sizeof(h));
		problem(c, "pack \"%s\" is corrupted: its header hashes to %.16s...", key, hex);
		return 0;
	}
	check_frames(c, s, sn, key, o->id, buf, raw);
	return 0;
}

int dp_repo_check(dp_repo *r, bool read_data, dp_check_report *rep, dp_problem_fn problem_fn,
                  void *arg)
{
	dp_check_report local = {0};
	struct ctx c = {.r = r, .rep = rep ? rep : &local, .fn = problem_fn, .arg = arg};
	dp_index ix = {0};
	dp_buf plain = {0}, buf = {0};
	dp_lock *lock = NULL;
	dp_sealer *s = NULL;
	uint8_t *raw = NULL;
	struct seen sn = {0};
	dp_keylist snap_keys = {0}, index_keys = {0};
	memset(c.rep, 0, sizeof(*c.rep));
	int rc = dp_lock_acquire(&lock, r, false, "check");
	if (rc)
		return rc;

	/* List in the reverse of the order a push writes (packs, index,
	 * snapshot): a push that commits while check runs then never looks
	 * like damage. */
	if ((rc = r->b->list(r->b, "snapshots/", dp_keylist_add, &snap_keys)) ||
	    (rc = r->b->list(r->b, "index/", dp_keylist_add, &index_keys)) ||
	    (rc = r->b->list(r->b, "data/", add_pack, &c)))
		goto out;
	if (c.npacks)
		qsort(c.packs, c.npacks, sizeof(*c.packs), cmp_pack);

	/* Indexes, one by one, so that each bad one is reported. */
	for (size_t i = 0; i < index_keys.n; i++) {
		c.rep->indexes++;
		dp_buf_reset(&plain);
		rc = dp_object_read(r, "index", index_keys.v[i], &plain);
		if (rc == 0 && dp_index_decode(&ix, plain.data, plain.len) != 0)
			rc =
			    dp_error_set(DP_ECORRUPT, "index \"%s\" is malformed", index_keys.v[i]);
		if (rc == DP_ERROR || rc == DP_ETRANSIENT)
			goto out;
		if (rc)
			problem(&c, "%s", dp_error_last());
	}
	rc = 0;

	for (size_t i = 0; i < ix.nframes; i++) {
		const dp_frame *f = &ix.frames[i];
		struct pack_obj *o = find_pack(&c, ix.packs[f->pack]);
		uint64_t end = (uint64_t)f->offset + f->length + 4 + DP_SEAL_OVERHEAD;
		if (o && end > o->need)
			o->need = end;
	}
	for (size_t i = 0; i < ix.npacks; i++) {
		char key[100];
		struct pack_obj *o = find_pack(&c, ix.packs[i]);
		dp_pack_key(key, sizeof(key), ix.packs[i]);
		if (!o) {
			problem(&c, "pack \"%s\" is missing (an index names it)", key);
			continue;
		}
		if (!o->indexed) {
			o->indexed = true;
			c.rep->packs++;
		}
		if (o->size < o->need)
			problem(&c, "pack \"%s\" is truncated (%llu bytes, at least %llu expected)",
			        key, (unsigned long long)o->size, (unsigned long long)o->need);
	}
	for (size_t i = 0; i < c.npacks; i++) {
		c.rep->unreferenced_packs += !c.packs[i].indexed;
		if (c.packs[i].indexed && !read_data && (rc = check_trailer(&c, &c.packs[i])))
			goto out;
	}
	c.rep->blobs = ix.count;
	if ((rc = dp_index_map_frames(&ix)))
		goto out;

	/* Snapshots: every blob indexed. */
	for (size_t i = 0; i < snap_keys.n; i++) {
		dp_snapshot snap;
		const char *id = snap_keys.v[i] + strlen("snapshots/");
		c.rep->snapshots++;
		rc = dp_snapshot_load(r, id, &snap);
		if (rc == DP_ERROR || rc == DP_ETRANSIENT)
			goto out;
		if (rc) {
			problem(&c, "%s", dp_error_last());
			continue;
		}
		size_t missing = 0, misfit = 0;
		for (size_t k = 0; k < snap.n; k++) {
			bool fits;
			if (dp_slice_frame(&ix, &snap, k, &fits) == DP_INDEX_EMPTY)
				missing++;
			else if (!fits)
				misfit++;
		}
		if (missing)
			problem(&c,
			        "snapshot \"%s\" (\"%s\"): %zu of its %zu slices name frames in "
			        "no index",
			        id, snap.info.name, missing, snap.n);
		if (misfit)
			problem(&c,
			        "snapshot \"%s\" (\"%s\"): %zu of its %zu slices do not fit in "
			        "their frames",
			        id, snap.info.name, misfit, snap.n);
		dp_snapshot_free(&snap);
	}
	rc = 0;

	if (read_data) {
		if ((rc = dp_sealer_new(&s, r)))
			goto out;
		sn.ix = &ix;
		sn.found = calloc(ix.cap + 1, sizeof(bool));
		sn.frame_found = calloc(ix.nframes + 1, sizeof(bool));
		if (!(raw = malloc(dp_frame_max(r))) || !sn.found || !sn.frame_found) {
			rc = dp_error_set(DP_ERROR, "out of memory");
			goto out;
		}
		if (r->progress) {
			uint64_t total = 0;
			for (size_t i = 0; i < c.npacks; i++)
				total += c.packs[i].indexed ? c.packs[i].size : 0;
			atomic_store(&r->progress->total, total);
		}
		for (size_t i = 0; i < c.npacks && !rc; i++)
			if (c.packs[i].indexed)
				rc = read_pack(&c, s, &sn, &c.packs[i], &buf, raw);
		if (rc)
			goto out;
		/* Every frame the index places in a pack that was read must have
		 * been found there (snapshots read frames by id), and so must every
		 * chunk. */
		for (size_t i = 0; i < ix.nframes; i++) {
			const dp_frame *f = &ix.frames[i];
			struct pack_obj *o = find_pack(&c, ix.packs[f->pack]);
			if (sn.frame_found[i] || dp_index_find_frame(&ix, f->id) != i || !o ||
			    !o->read)
				continue; /* a copy of another, or reported already */
			char key[100];
			dp_pack_key(key, sizeof(key), o->id);
			problem(&c,
			        "pack \"%s\": no frame at offset %u, where the index places one",
			        key, f->offset);
		}
		for (size_t i = 0; i < ix.cap; i++) {
			const dp_blob_loc *l = &ix.slots[i];
			if (l->frame == DP_INDEX_EMPTY || sn.found[i])
				continue;
			const dp_frame *f = &ix.frames[l->frame];
			struct pack_obj *o = find_pack(&c, ix.packs[f->pack]);
			if (!o || !o->read)
				continue; /* missing or unreadable: reported already */
			char key[100], hex[DP_ID_HEX];
			dp_pack_key(key, sizeof(key), o->id);
			dp_hex(hex, l->id, DP_HASH_LEN);
			problem(&c,
			        "pack \"%s\": blob %.16s... is not in the frame at offset %u where "
			        "the index places it",
			        key, hex, f->offset);
		}
	}
	if (c.rep->errors)
		rc = dp_error_set(DP_ECORRUPT, "the repository has %llu problem%s",
		                  (unsigned long long)c.rep->errors, c.rep->errors == 1 ? "" : "s");
out:
	dp_keylist_free(&snap_keys);
	dp_keylist_free(&index_keys);
	free(c.packs);
	free(raw);
	free(sn.found);
	free(sn.frame_found);
	dp_sealer_free(s);
	dp_index_free(&ix);
	dp_buf_free(&plain);
	dp_buf_free(&buf);
	dp_lock_release(lock);
	return rc;
}
