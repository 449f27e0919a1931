/*
 * The backend conformance suite (see backend_conformance.h): every promise of
 * dp/sys/backend.h that can be observed from outside — round trips, ranges,
 * truncation, missing objects, listing by prefix, removal, atomic overwrite,
 * threads, large objects, nested keys.
 *
 * The factories live in a static table; each test is a loop test whose
 * index _i picks its factory, so one program can check several backends.
 * Worker threads never call ck_assert: they record the first failure and the
 * test thread asserts on it.
 */
#include "backend_conformance.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp/backend.h"
#include "dp/error.h"
#include "dp_test.h"

#define MAX_FACTORIES 8

static dp_backend_factory factories[MAX_FACTORIES];
static int nfactories;

static dp_backend *mk(int i)
{
	dp_backend *b = NULL;
	ck_assert_int_lt(i, nfactories);
	int rc = factories[i](&b, dp_test_dir);
	ck_assert_msg(rc == 0 && b, "cannot make the backend: %s", dp_error_last());
	ck_assert_uint_eq(b->version, DP_BACKEND_VERSION);
	ck_assert_ptr_nonnull(b->name);
	return b;
}

/* ---- helpers ---- */

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t s = seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
	for (size_t i = 0; i < n; i++) {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		p[i] = (uint8_t)(s >> 24);
	}
}

static uint8_t *random_bytes(size_t n, uint64_t seed)
{
	uint8_t *p = malloc(n ? n : 1);
	ck_assert_ptr_nonnull(p);
	fill_random(p, n, seed);
	return p;
}

static void put_ok(dp_backend *b, const char *key, const void *data, size_t len)
{
	int rc = b->put(b, key, data, len);
	ck_assert_msg(rc == 0, "put \"%s\": %d %s", key, rc, dp_error_last());
}

static void put_str(dp_backend *b, const char *key, const char *s)
{
	put_ok(b, key, s, strlen(s));
}

/* get [off, off+len) and compare with want/wlen. */
static void get_eq(dp_backend *b, const char *key, uint64_t off, uint64_t len, const void *want,
                   size_t wlen)
{
	dp_buf out = {0};
	int rc = b->get(b, key, off, len, &out);
	ck_assert_msg(rc == 0, "get \"%s\" [%llu,+%llu): %d %s", key, (unsigned long long)off,
	              (unsigned long long)len, rc, dp_error_last());
	ck_assert_msg(out.len == wlen, "get \"%s\": %zu bytes, wanted %zu", key, out.len, wlen);
	ck_assert_msg(wlen == 0 || memcmp(out.data, want, wlen) == 0, "get \"%s\": wrong bytes",
	              key);
	dp_buf_free(&out);
}

static uint64_t stat_ok(dp_backend *b, const char *key)
{
	uint64_t size = 12345;
	int rc = b->stat(b, key, &size);
	ck_assert_msg(rc == 0, "stat \"%s\": %d %s", key, rc, dp_error_last());
	return size;
}

typedef struct listing {
	size_t n;
	char *keys[512];
	uint64_t sizes[512];
	int stop_after; /* >0: return 7 from the callback after this many */
} listing;

static int list_cb(const char *key, uint64_t size, void *arg)
{
	listing *l = arg;
	ck_assert_uint_lt(l->n, 512);
	l->keys[l->n] = strdup(key);
	l->sizes[l->n++] = size;
	return l->stop_after > 0 && (int)l->n >= l->stop_after ? 7 : 0;
}

static void list_ok(dp_backend *b, const char *prefix, listing *l)
{
	memset(l, 0, sizeof(*l));
	int rc = b->list(b, prefix, list_cb, l);
	ck_assert_msg(rc == 0, "list \"%s\": %d %s", prefix, rc, dp_error_last());
}

/* The size listed for key, or -1 if it was not listed (at most once). */
static long long listed(const listing *l, const char *key)
{
	long long size = -1;
	for (size_t i = 0; i < l->n; i++) {
		if (strcmp(l->keys[i], key) == 0) {
			ck_assert_msg(size < 0, "\"%s\" listed twice", key);
			size = (long long)l->sizes[i];
		}
	}
	return size;
}

static void listing_free(listing *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->keys[i]);
	l->n = 0;
}

/* ---- tests ---- */

START_TEST(t_put_get)
{
	dp_backend *b = mk(_i);
	put_str(b, "config", "hello, repository\n");
	get_eq(b, "config", 0, UINT64_MAX, "hello, repository\n", 18);
	dp_buf out = {0};
	ck_assert_int_eq(dp_backend_get_all(b, "config", &out), 0);
	ck_assert_uint_eq(out.len, 18);
	dp_buf_free(&out);
	ck_assert_uint_eq(stat_ok(b, "config"), 18);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_empty_object)
{
	dp_backend *b = mk(_i);
	put_ok(b, "locks/empty", "", 0);
	ck_assert_uint_eq(stat_ok(b, "locks/empty"), 0);
	get_eq(b, "locks/empty", 0, UINT64_MAX, "", 0);
	get_eq(b, "locks/empty", 0, 0, "", 0);
	listing l;
	list_ok(b, "locks/", &l);
	ck_assert_uint_eq(l.n, 1);
	ck_assert_int_eq(listed(&l, "locks/empty"), 0);
	listing_free(&l);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_binary_bytes)
{
	dp_backend *b = mk(_i);
	uint8_t all[512];
	for (int i = 0; i < 512; i++)
		all[i] = (uint8_t)(i % 256);
	put_ok(b, "data/00/binary", all, sizeof(all));
	get_eq(b, "data/00/binary", 0, UINT64_MAX, all, sizeof(all));
	dp_backend_free(b);
}
END_TEST

START_TEST(t_get_appends)
{
	dp_backend *b = mk(_i);
	put_str(b, "index/one", "world");
	dp_buf out = {0};
	ck_assert_int_eq(dp_buf_append(&out, "hello ", 6), 0);
	ck_assert_int_eq(b->get(b, "index/one", 0, UINT64_MAX, &out), 0);
	ck_assert_uint_eq(out.len, 11);
	ck_assert_int_eq(memcmp(out.data, "hello world", 11), 0);
	/* A failed get leaves what was there. */
	ck_assert_int_eq(b->get(b, "index/missing", 0, UINT64_MAX, &out), DP_ENOTFOUND);
	ck_assert_int_eq(b->get(b, "index/one", 3, 10, &out), DP_ECORRUPT);
	ck_assert_uint_eq(out.len, 11);
	ck_assert_int_eq(memcmp(out.data, "hello world", 11), 0);
	dp_buf_free(&out);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_range)
{
	dp_backend *b = mk(_i);
	uint8_t *data = random_bytes(100000, 1);
	put_ok(b, "data/ab/pack", data, 100000);
	get_eq(b, "data/ab/pack", 0, 100000, data, 100000);
	get_eq(b, "data/ab/pack", 10, 20, data + 10, 20);
	get_eq(b, "data/ab/pack", 65536, 4096, data + 65536, 4096);
	get_eq(b, "data/ab/pack", 99990, UINT64_MAX, data + 99990, 10);
	get_eq(b, "data/ab/pack", 99990, 10, data + 99990, 10);
	get_eq(b, "data/ab/pack", 100000, UINT64_MAX, data, 0); /* at the end: nothing */
	get_eq(b, "data/ab/pack", 500, 0, data, 0);
	free(data);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_range_past_end)
{
	dp_backend *b = mk(_i);
	uint8_t *data = random_bytes(1000, 2);
	put_ok(b, "data/cd/short", data, 1000);
	dp_buf out = {0};
	ck_assert_int_eq(b->get(b, "data/cd/short", 995, 10, &out), DP_ECORRUPT);
	ck_assert_msg(strstr(dp_error_last(), "data/cd/short") != NULL,
	              "the message names the object: %s", dp_error_last());
	ck_assert_int_eq(b->get(b, "data/cd/short", 0, 1001, &out), DP_ECORRUPT);
	ck_assert_int_eq(b->get(b, "data/cd/short", 2000, 1, &out), DP_ECORRUPT);
	ck_assert_int_eq(b->get(b, "data/cd/short", 1001, UINT64_MAX, &out), DP_ECORRUPT);
	ck_assert_uint_eq(out.len, 0);
	dp_buf_free(&out);
	free(data);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_missing)
{
	dp_backend *b = mk(_i);
	dp_buf out = {0};
	uint64_t size = 99;
	put_str(b, "snapshots/present", "x");
	ck_assert_int_eq(b->get(b, "snapshots/absent", 0, UINT64_MAX, &out), DP_ENOTFOUND);
	ck_assert_msg(strstr(dp_error_last(), "snapshots/absent") != NULL,
	              "the message names the object: %s", dp_error_last());
	ck_assert_int_eq(b->get(b, "nodir/absent", 0, 10, &out), DP_ENOTFOUND);
	ck_assert_int_eq(b->stat(b, "snapshots/absent", &size), DP_ENOTFOUND);
	ck_assert_msg(strstr(dp_error_last(), "snapshots/absent") != NULL,
	              "the message names the object: %s", dp_error_last());
	ck_assert_uint_eq(size, 99);
	ck_assert_int_eq(b->stat(b, "nodir/deeper/absent", &size), DP_ENOTFOUND);
	ck_assert_int_eq(b->remove(b, "snapshots/absent"), 0);
	ck_assert_int_eq(b->remove(b, "nodir/absent"), 0);
	ck_assert_uint_eq(out.len, 0);
	dp_buf_free(&out);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_list_prefix)
{
	dp_backend *b = mk(_i);
	put_str(b, "config", "c");
	put_str(b, "keys/k1", "kk");
	put_str(b, "index/a", "aaa");
	put_str(b, "index/b", "bbbb");
	put_str(b, "data/00/p0", "55555");
	put_str(b, "data/01/p1", "666666");
	put_str(b, "data/01/p2", "7777777");
	put_str(b, "snapshots/s1", "88888888");
	listing l;

	list_ok(b, "index/", &l);
	ck_assert_uint_eq(l.n, 2);
	ck_assert_int_eq(listed(&l, "index/a"), 3);
	ck_assert_int_eq(listed(&l, "index/b"), 4);
	listing_free(&l);

	list_ok(b, "data/", &l);
	ck_assert_uint_eq(l.n, 3);
	ck_assert_int_eq(listed(&l, "data/00/p0"), 5);
	ck_assert_int_eq(listed(&l, "data/01/p1"), 6);
	ck_assert_int_eq(listed(&l, "data/01/p2"), 7);
	listing_free(&l);

	list_ok(b, "data/01/", &l);
	ck_assert_uint_eq(l.n, 2);
	listing_free(&l);

	list_ok(b, "", &l);
	ck_assert_uint_eq(l.n, 8);
	ck_assert_int_eq(listed(&l, "config"), 1);
	ck_assert_int_eq(listed(&l, "keys/k1"), 2);
	ck_assert_int_eq(listed(&l, "snapshots/s1"), 8);
	listing_free(&l);

	list_ok(b, "locks/", &l); /* nothing there, never created */
	ck_assert_uint_eq(l.n, 0);
	listing_free(&l);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_list_partial_prefix)
{
	dp_backend *b = mk(_i);
	put_str(b, "data/0a/x", "1");
	put_str(b, "data/0b/y", "2");
	put_str(b, "data/1c/z", "3");
	put_str(b, "snapshots/abc1", "4");
	put_str(b, "snapshots/abd2", "5");
	listing l;
	list_ok(b, "data/0", &l);
	ck_assert_uint_eq(l.n, 2);
	ck_assert_int_eq(listed(&l, "data/0a/x"), 1);
	ck_assert_int_eq(listed(&l, "data/0b/y"), 1);
	listing_free(&l);
	list_ok(b, "snapshots/abc", &l);
	ck_assert_uint_eq(l.n, 1);
	ck_assert_int_eq(listed(&l, "snapshots/abc1"), 1);
	listing_free(&l);
	list_ok(b, "snap", &l);
	ck_assert_uint_eq(l.n, 2);
	listing_free(&l);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_list_stop)
{
	dp_backend *b = mk(_i);
	char key[64];
	for (int i = 0; i < 10; i++) {
		snprintf(key, sizeof(key), "index/%02d", i);
		put_str(b, key, "i");
	}
	listing l;
	memset(&l, 0, sizeof(l));
	l.stop_after = 3;
	ck_assert_int_eq(b->list(b, "index/", list_cb, &l), 7);
	ck_assert_uint_eq(l.n, 3);
	listing_free(&l);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_remove)
{
	dp_backend *b = mk(_i);
	put_str(b, "locks/l1", "1");
	put_str(b, "locks/l2", "2");
	ck_assert_int_eq(b->remove(b, "locks/l1"), 0);
	uint64_t size;
	ck_assert_int_eq(b->stat(b, "locks/l1", &size), DP_ENOTFOUND);
	dp_buf out = {0};
	ck_assert_int_eq(b->get(b, "locks/l1", 0, UINT64_MAX, &out), DP_ENOTFOUND);
	dp_buf_free(&out);
	listing l;
	list_ok(b, "locks/", &l);
	ck_assert_uint_eq(l.n, 1);
	ck_assert_int_eq(listed(&l, "locks/l2"), 1);
	listing_free(&l);
	ck_assert_int_eq(b->remove(b, "locks/l1"), 0); /* again: fine */
	/* The key can be written again. */
	put_str(b, "locks/l1", "again");
	get_eq(b, "locks/l1", 0, UINT64_MAX, "again", 5);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_remove_many)
{
	dp_backend *b = mk(_i);
	char key[64];
	const char *keys[41];
	char names[41][64];
	for (int i = 0; i < 40; i++) {
		snprintf(key, sizeof(key), "data/%02x/pack%d", i % 5, i);
		put_str(b, key, "p");
		snprintf(names[i], sizeof(names[i]), "%s", key);
		keys[i] = names[i];
	}
	keys[40] = "data/ff/never-written";
	put_str(b, "data/00/kept", "k");
	ck_assert_int_eq(dp_backend_remove_many(b, keys, 41), 0);
	ck_assert_int_eq(dp_backend_remove_many(b, keys, 0), 0);
	listing l;
	list_ok(b, "data/", &l);
	ck_assert_uint_eq(l.n, 1);
	ck_assert_int_eq(listed(&l, "data/00/kept"), 1);
	listing_free(&l);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_overwrite)
{
	dp_backend *b = mk(_i);
	put_str(b, "locks/mine", "a longer first version");
	put_str(b, "locks/mine", "short");
	get_eq(b, "locks/mine", 0, UINT64_MAX, "short", 5);
	ck_assert_uint_eq(stat_ok(b, "locks/mine"), 5);
	put_str(b, "locks/mine", "and now a longer one again");
	get_eq(b, "locks/mine", 0, UINT64_MAX, "and now a longer one again", 26);
	listing l;
	list_ok(b, "locks/", &l);
	ck_assert_uint_eq(l.n, 1);
	ck_assert_int_eq(listed(&l, "locks/mine"), 26);
	listing_free(&l);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_nested_keys)
{
	dp_backend *b = mk(_i);
	const char *deep = "catalog/a/b/c/d/e/f/g/object.json";
	put_str(b, deep, "{}");
	put_str(b, "catalog/a/b/sibling", "s");
	get_eq(b, deep, 0, UINT64_MAX, "{}", 2);
	ck_assert_uint_eq(stat_ok(b, deep), 2);
	listing l;
	list_ok(b, "catalog/a/b/c/", &l);
	ck_assert_uint_eq(l.n, 1);
	ck_assert_int_eq(listed(&l, deep), 2);
	listing_free(&l);
	list_ok(b, "catalog/", &l);
	ck_assert_uint_eq(l.n, 2);
	listing_free(&l);
	/* A key that is the directory of another key is not an object. */
	uint64_t size;
	ck_assert_int_eq(b->stat(b, "catalog/a/b/c", &size), DP_ENOTFOUND);
	ck_assert_int_eq(b->remove(b, deep), 0);
	ck_assert_int_eq(b->stat(b, deep, &size), DP_ENOTFOUND);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_large)
{
	dp_backend *b = mk(_i);
	size_t n = 20u << 20;
	uint8_t *data = random_bytes(n, 3);
	put_ok(b, "data/ee/large", data, n);
	ck_assert_uint_eq(stat_ok(b, "data/ee/large"), n);
	get_eq(b, "data/ee/large", 0, UINT64_MAX, data, n);
	get_eq(b, "data/ee/large", (7u << 20) + 3, 1u << 20, data + (7u << 20) + 3, 1u << 20);
	get_eq(b, "data/ee/large", n - 5, 5, data + n - 5, 5);
	listing l;
	list_ok(b, "data/", &l);
	ck_assert_int_eq(listed(&l, "data/ee/large"), (long long)n);
	listing_free(&l);
	free(data);
	dp_backend_free(b);
}
END_TEST

/* ---- threads ---- */

#define NTHREADS 8
#define PER_THREAD 16

typedef struct worker {
	dp_backend *b;
	int id;
	volatile int *stop;
	int rc;
	char err[512];
	unsigned long reads;
} worker;

static void worker_fail(worker *w, int rc, const char *what)
{
	if (w->rc == 0) {
		w->rc = rc ? rc : DP_ERROR;
		snprintf(w->err, sizeof(w->err), "thread %d: %s: %s", w->id, what, dp_error_last());
	}
}

static size_t obj_size(int t, int j)
{
	return (size_t)(((t * 7919 + j * 104729) % 300000) + j);
}

static void *put_worker(void *arg)
{
	worker *w = arg;
	char key[64];
	for (int j = 0; j < PER_THREAD && w->rc == 0; j++) {
		/* Few directories, so that threads race to create them. */
		snprintf(key, sizeof(key), "data/%02x/t%d-%d", j % 4, w->id, j);
		size_t n = obj_size(w->id, j);
		uint8_t *data = random_bytes(n, (uint64_t)(w->id * 1000 + j));
		int rc = w->b->put(w->b, key, data, n);
		if (rc)
			worker_fail(w, rc, key);
		free(data);
	}
	return NULL;
}

START_TEST(t_concurrent_puts)
{
	dp_backend *b = mk(_i);
	pthread_t th[NTHREADS];
	worker w[NTHREADS];
	memset(w, 0, sizeof(w));
	for (int t = 0; t < NTHREADS; t++) {
		w[t].b = b;
		w[t].id = t;
		ck_assert_int_eq(pthread_create(&th[t], NULL, put_worker, &w[t]), 0);
	}
	for (int t = 0; t < NTHREADS; t++)
		pthread_join(th[t], NULL);
	for (int t = 0; t < NTHREADS; t++)
		ck_assert_msg(w[t].rc == 0, "%s", w[t].err);
	char key[64];
	for (int t = 0; t < NTHREADS; t++) {
		for (int j = 0; j < PER_THREAD; j++) {
			snprintf(key, sizeof(key), "data/%02x/t%d-%d", j % 4, t, j);
			size_t n = obj_size(t, j);
			uint8_t *data = random_bytes(n, (uint64_t)(t * 1000 + j));
			get_eq(b, key, 0, UINT64_MAX, data, n);
			free(data);
		}
	}
	listing l;
	list_ok(b, "data/", &l);
	ck_assert_uint_eq(l.n, NTHREADS * PER_THREAD);
	listing_free(&l);
	dp_backend_free(b);
}
END_TEST

/* Version v of the shared object: (v+1) * 4 KiB of byte v, so a reader can
 * tell a whole version from a torn one. */
static uint8_t *version(int v, size_t *len)
{
	*len = (size_t)(v + 1) * 4096;
	uint8_t *p = malloc(*len);
	if (p)
		memset(p, v, *len);
	return p;
}

static void *overwrite_worker(void *arg)
{
	worker *w = arg;
	for (int j = 0; j < 16 && w->rc == 0; j++) {
		size_t len;
		uint8_t *p = version(w->id * 16 + j + 1, &len);
		int rc = p ? w->b->put(w->b, "locks/shared", p, len) : DP_ERROR;
		if (rc)
			worker_fail(w, rc, "put locks/shared");
		free(p);
	}
	return NULL;
}

static void *read_worker(void *arg)
{
	worker *w = arg;
	dp_buf out = {0};
	while (!*w->stop && w->rc == 0) {
		dp_buf_reset(&out);
		int rc = w->b->get(w->b, "locks/shared", 0, UINT64_MAX, &out);
		if (rc) {
			worker_fail(w, rc, "get locks/shared");
			break;
		}
		w->reads++;
		int v = out.len ? out.data[0] : -1;
		bool whole = v >= 0 && out.len == (size_t)(v + 1) * 4096;
		for (size_t i = 0; whole && i < out.len; i++)
			whole = out.data[i] == (uint8_t)v;
		if (!whole) {
			snprintf(w->err, sizeof(w->err), "reader saw a torn object: %zu bytes",
			         out.len);
			w->rc = DP_ECORRUPT;
		}
	}
	dp_buf_free(&out);
	return NULL;
}

START_TEST(t_concurrent_overwrite)
{
	dp_backend *b = mk(_i);
	size_t len;
	uint8_t *v0 = version(0, &len);
	put_ok(b, "locks/shared", v0, len);
	free(v0);
	volatile int stop = 0;
	pthread_t wt[4], rt[2];
	worker ww[4], rw[2];
	memset(ww, 0, sizeof(ww));
	memset(rw, 0, sizeof(rw));
	for (int t = 0; t < 2; t++) {
		rw[t] = (worker){.b = b, .id = 100 + t, .stop = &stop};
		ck_assert_int_eq(pthread_create(&rt[t], NULL, read_worker, &rw[t]), 0);
	}
	for (int t = 0; t < 4; t++) {
		ww[t] = (worker){.b = b, .id = t, .stop = &stop};
		ck_assert_int_eq(pthread_create(&wt[t], NULL, overwrite_worker, &ww[t]), 0);
	}
	for (int t = 0; t < 4; t++)
		pthread_join(wt[t], NULL);
	stop = 1;
	for (int t = 0; t < 2; t++)
		pthread_join(rt[t], NULL);
	for (int t = 0; t < 4; t++)
		ck_assert_msg(ww[t].rc == 0, "%s", ww[t].err);
	for (int t = 0; t < 2; t++) {
		ck_assert_msg(rw[t].rc == 0, "%s", rw[t].err);
		ck_assert_uint_gt(rw[t].reads, 0);
	}
	/* The last put of some writer won, whole. */
	dp_buf out = {0};
	ck_assert_int_eq(b->get(b, "locks/shared", 0, UINT64_MAX, &out), 0);
	int v = out.data[0];
	ck_assert_msg(v % 16 == 0 && v >= 16, "final version %d is not a writer's last", v);
	ck_assert_uint_eq(out.len, (size_t)(v + 1) * 4096);
	dp_buf_free(&out);
	listing l;
	list_ok(b, "locks/", &l);
	ck_assert_uint_eq(l.n, 1);
	listing_free(&l);
	dp_backend_free(b);
}
END_TEST

void dp_backend_conformance_add(Suite *s, const char *name, dp_backend_factory make)
{
	/* Not in a test yet: no ck_assert here. */
	if (nfactories >= MAX_FACTORIES) {
		fprintf(stderr, "backend conformance: too many backends in one program\n");
		abort();
	}
	int i = nfactories++;
	factories[i] = make;
	/* check keeps the pointer: the name must outlive the suite. */
	static char tnames[MAX_FACTORIES][128];
	snprintf(tnames[i], sizeof(tnames[i]), "%s conformance", name);
	TCase *tc = tcase_create(tnames[i]);
	tcase_add_checked_fixture(tc, dp_test_setup, dp_test_teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, t_put_get, i, i + 1);
	tcase_add_loop_test(tc, t_empty_object, i, i + 1);
	tcase_add_loop_test(tc, t_binary_bytes, i, i + 1);
	tcase_add_loop_test(tc, t_get_appends, i, i + 1);
	tcase_add_loop_test(tc, t_range, i, i + 1);
	tcase_add_loop_test(tc, t_range_past_end, i, i + 1);
	tcase_add_loop_test(tc, t_missing, i, i + 1);
	tcase_add_loop_test(tc, t_list_prefix, i, i + 1);
	tcase_add_loop_test(tc, t_list_partial_prefix, i, i + 1);
	tcase_add_loop_test(tc, t_list_stop, i, i + 1);
	tcase_add_loop_test(tc, t_remove, i, i + 1);
	tcase_add_loop_test(tc, t_remove_many, i, i + 1);
	tcase_add_loop_test(tc, t_overwrite, i, i + 1);
	tcase_add_loop_test(tc, t_nested_keys, i, i + 1);
	tcase_add_loop_test(tc, t_large, i, i + 1);
	tcase_add_loop_test(tc, t_concurrent_puts, i, i + 1);
	tcase_add_loop_test(tc, t_concurrent_overwrite, i, i + 1);
	suite_add_tcase(s, tc);
}
