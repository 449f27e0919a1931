/*
 * The S3 transport against a real S3-protocol server (s3rver, started by
 * this program on a loopback port): the backend conformance suite; what
 * only S3 shows — listings longer than one 1000-key page, ranged reads of a
 * large object, DeleteObjects batches, virtual-host addressing, the
 * create probe, a missing bucket and unknown credentials; interoperability
 * with the aws CLI in both directions; and s3rver killed with SIGKILL in the
 * middle of parallel puts.
 *
 * One s3rver serves the whole program (started in the suite function, in
 * the parent process; each forked test uses its own key prefix). Tests that
 * kill the server start their own.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../harness/backend_conformance.h"
#include "../harness/dp_test.h"
#include "../harness/s3rver.h"
#include "dp/backend.h"
#include "dp/error.h"

#define BUCKET "dp-test"

static dp_s3rver srv;
static char srv_dir[PATH_MAX];
static pid_t srv_owner;

static void cleanup_dir(void)
{
	if (getpid() != srv_owner || !srv_dir[0])
		return;
	dp_s3rver_stop(&srv, true);
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s.log'", srv_dir, srv_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", srv_dir);
}

/* A prefix unique to this test: the basename of its temp dir. */
static const char *test_prefix(const char *tmpdir)
{
	const char *slash = strrchr(tmpdir, '/');
	return slash ? slash + 1 : tmpdir;
}

static int open_s3(dp_backend **out, const char *endpoint, const char *url)
{
	dp_s3rver_env();
	setenv("DP_S3_BACKOFF_MS", "20", 1);
	dp_backend_opts o = {.s3_endpoint = endpoint, .retries = -1, .timeout_ms = 10000};
	return dp_backend_open(out, url, &o);
}

/*
 * s3rver writes an object in place (truncate, then write), so a GET racing
 * a PUT of the same key can read a mix of two versions; real S3 replaces an
 * object atomically. dp overwrites only lock objects ("locks/"), so for the
 * conformance suite this wrapper orders reads and overwrites of "locks/"
 * keys with a mutex: what is tested is then our transport, not s3rver's
 * store. Everything else goes straight to the S3 backend.
 */
typedef struct ordered {
	dp_backend base;
	dp_backend *inner;
	pthread_mutex_t lock;
} ordered;

static bool is_lock(const char *key)
{
	return strncmp(key, "locks/", 6) == 0;
}

static int o_put(dp_backend *b, const char *key, const void *data, size_t len)
{
	ordered *o = (ordered *)b;
	bool l = is_lock(key);
	if (l)
		pthread_mutex_lock(&o->lock);
	int rc = o->inner->put(o->inner, key, data, len);
	if (l)
		pthread_mutex_unlock(&o->lock);
	return rc;
}

static int o_get(dp_backend *b, const char *key, uint64_t off, uint64_t len, dp_buf *out)
{
	ordered *o = (ordered *)b;
	bool l = is_lock(key);
	if (l)
		pthread_mutex_lock(&o->lock);
	int rc = o->inner->get(o->inner, key, off, len, out);
	if (l)
		pthread_mutex_unlock(&o->lock);
	return rc;
}

static int o_stat(dp_backend *b, const char *key, uint64_t *size)
{
	ordered *o = (ordered *)b;
	return o->inner->stat(o->inner, key, size);
}

static int o_list(dp_backend *b, const char *prefix, dp_backend_list_cb cb, void *arg)
{
	ordered *o = (ordered *)b;
	return o->inner->list(o->inner, prefix, cb, arg);
}

static int o_remove(dp_backend *b, const char *key)
{
	ordered *o = (ordered *)b;
	return o->inner->remove(o->inner, key);
}

static int o_remove_many(dp_backend *b, const char *const *keys, size_t n)
{
	ordered *o = (ordered *)b;
	return o->inner->remove_many(o->inner, keys, n);
}

static int o_create(dp_backend *b)
{
	ordered *o = (ordered *)b;
	return o->inner->create(o->inner);
}

static void o_free(dp_backend *b)
{
	ordered *o = (ordered *)b;
	o->inner->free(o->inner);
	pthread_mutex_destroy(&o->lock);
	free(o);
}

static int make_s3(dp_backend **out, const char *tmpdir);

static int make_s3_ordered(dp_backend **out, const char *tmpdir)
{
	dp_backend *inner = NULL;
	int rc = make_s3(&inner, tmpdir);
	if (rc)
		return rc;
	ordered *o = calloc(1, sizeof(*o));
	o->base = *inner; /* version, features, name */
	o->inner = inner;
	pthread_mutex_init(&o->lock, NULL);
	o->base.put = o_put;
	o->base.get = o_get;
	o->base.stat = o_stat;
	o->base.list = o_list;
	o->base.remove = o_remove;
	o->base.remove_many = o_remove_many;
	o->base.create = o_create;
	o->base.free = o_free;
	*out = &o->base;
	return 0;
}

static int make_s3(dp_backend **out, const char *tmpdir)
{
	char url[PATH_MAX + 32];
	snprintf(url, sizeof(url), "s3://%s/%s/repo", BUCKET, test_prefix(tmpdir));
	if (srv.pid <= 0)
		return dp_error_set(DP_ERROR, "s3rver is not running (see the log above)");
	int rc = open_s3(out, srv.endpoint, url);
	if (rc)
		return rc;
	if ((rc = (*out)->create(*out))) {
		dp_backend_free(*out);
		*out = NULL;
	}
	return rc;
}

static dp_backend *must_open(void)
{
	dp_backend *b = NULL;
	ck_assert_msg(make_s3(&b, dp_test_dir) == 0, "%s", dp_error_last());
	ck_assert_str_eq(b->name, "s3");
	return b;
}

static void fill(uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
	for (size_t i = 0; i < n; i++) {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		p[i] = (uint8_t)(s >> 24);
	}
}

typedef struct keyset {
	size_t n;
	uint64_t total;
	char **keys;
} keyset;

static int collect(const char *key, uint64_t size, void *arg)
{
	keyset *k = arg;
	k->keys = realloc(k->keys, (k->n + 1) * sizeof(*k->keys));
	k->keys[k->n++] = strdup(key);
	k->total += size;
	return 0;
}

static void keyset_free(keyset *k)
{
	for (size_t i = 0; i < k->n; i++)
		free(k->keys[i]);
	free(k->keys);
	memset(k, 0, sizeof(*k));
}

static bool has_key(const keyset *k, const char *key)
{
	for (size_t i = 0; i < k->n; i++)
		if (strcmp(k->keys[i], key) == 0)
			return true;
	return false;
}

/* ---- many small puts from threads ---- */

typedef struct putter {
	dp_backend *b;
	int id, nthreads, count;
	size_t size;
	int ok, failed;
	int first_rc;
	char err[1024];
	double secs_after_fail; /* how long the failing put took */
	volatile char *acked; /* acked[i] = 1 once put i returned 0 (or NULL) */
} putter;

static void *put_many(void *arg)
{
	putter *p = arg;
	uint8_t *buf = malloc(p->size ? p->size : 1);
	char key[64];
	for (int i = p->id; i < p->count; i += p->nthreads) {
		snprintf(key, sizeof(key), "index/%03d/obj-%05d", i % 7, i);
		fill(buf, p->size, (uint64_t)i);
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		int rc = p->b->put(p->b, key, buf, p->size);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if (rc == 0) {
			p->ok++;
			if (p->acked)
				p->acked[i] = 1;
			continue;
		}
		if (p->failed++ == 0) {
			p->first_rc = rc;
			snprintf(p->err, sizeof(p->err), "%s", dp_error_last());
			p->secs_after_fail = (double)(t1.tv_sec - t0.tv_sec) +
			                     (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
		}
		break;
	}
	free(buf);
	return NULL;
}

static void put_objects(dp_backend *b, int count, size_t size, int threads)
{
	pthread_t th[16];
	putter p[16];
	for (int t = 0; t < threads; t++) {
		p[t] = (putter){.b = b, .id = t, .nthreads = threads, .count = count, .size = size};
		ck_assert_int_eq(pthread_create(&th[t], NULL, put_many, &p[t]), 0);
	}
	for (int t = 0; t < threads; t++) {
		pthread_join(th[t], NULL);
		ck_assert_msg(p[t].failed == 0, "%s", p[t].err);
	}
}

START_TEST(t_list_more_than_one_page)
{
	dp_backend *b = must_open();
	enum { N = 2150 };
	put_objects(b, N, 16, 8);
	/* Another prefix that must not show up. */
	ck_assert_int_eq(b->put(b, "indexes-not", "x", 1), 0);
	keyset k = {0};
	int rc = b->list(b, "index/", collect, &k);
	ck_assert_msg(rc == 0, "%s", dp_error_last());
	ck_assert_uint_eq(k.n, N);
	ck_assert_uint_eq(k.total, (uint64_t)N * 16);
	char key[64];
	for (int i = 0; i < N; i += 97) {
		snprintf(key, sizeof(key), "index/%03d/obj-%05d", i % 7, i);
		ck_assert_msg(has_key(&k, key), "missing %s", key);
	}
	/* No duplicates across pages. */
	for (size_t i = 1; i < k.n; i++)
		for (size_t j = i < 40 ? 0 : i - 40; j < i; j++)
			ck_assert_str_ne(k.keys[i], k.keys[j]);
	keyset_free(&k);
	/* A narrower prefix. */
	ck_assert_int_eq(b->list(b, "index/003/", collect, &k), 0);
	ck_assert_uint_eq(k.n, (N + 3) / 7);
	keyset_free(&k);
	/* The whole repository. */
	ck_assert_int_eq(b->list(b, "", collect, &k), 0);
	ck_assert_uint_eq(k.n, N + 1);
	keyset_free(&k);
	/* Batch delete the lot (several DeleteObjects requests). */
	ck_assert_int_eq(b->list(b, "index/", collect, &k), 0);
	rc = b->remove_many(b, (const char *const *)k.keys, k.n);
	ck_assert_msg(rc == 0, "%s", dp_error_last());
	keyset_free(&k);
	ck_assert_int_eq(b->list(b, "index/", collect, &k), 0);
	ck_assert_uint_eq(k.n, 0);
	ck_assert_int_eq(b->stat(b, "indexes-not", NULL), 0);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_ranged_reads)
{
	dp_backend *b = must_open();
	size_t n = (5u << 20) + 77;
	uint8_t *data = malloc(n);
	fill(data, n, 42);
	ck_assert_int_eq(b->put(b, "data/5a/pack", data, n), 0);
	uint64_t size = 0;
	ck_assert_int_eq(b->stat(b, "data/5a/pack", &size), 0);
	ck_assert_uint_eq(size, n);
	const uint64_t offs[][2] = {
	    {0, 1},       {1, 4095},          {4096, 65536},      {n - 1, 1},
	    {n - 77, 77}, {3 << 20, 1 << 20}, {12345, UINT64_MAX}};
	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		dp_buf out = {0};
		uint64_t off = offs[i][0], len = offs[i][1];
		int rc = b->get(b, "data/5a/pack", off, len, &out);
		ck_assert_msg(rc == 0, "range %zu: %s", i, dp_error_last());
		uint64_t want = len == UINT64_MAX ? n - off : len;
		ck_assert_uint_eq(out.len, want);
		ck_assert_msg(memcmp(out.data, data + off, want) == 0, "range %zu differs", i);
		dp_buf_free(&out);
	}
	dp_buf out = {0};
	ck_assert_int_eq(b->get(b, "data/5a/pack", n - 10, 11, &out), DP_ECORRUPT);
	ck_assert_int_eq(b->get(b, "data/5a/pack", n + 1, 1, &out), DP_ECORRUPT);
	ck_assert_int_eq(b->get(b, "data/5a/pack", n, UINT64_MAX, &out), 0);
	ck_assert_uint_eq(out.len, 0);
	dp_buf_free(&out);
	free(data);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_virtual_host_style)
{
	/* s3rver reads the bucket from "<bucket>.s3.localhost"; libcurl
	 * resolves *.localhost to the loopback address itself. */
	char ep[96], url[PATH_MAX + 32];
	snprintf(ep, sizeof(ep), "http://s3.localhost:%d", srv.port);
	snprintf(url, sizeof(url), "s3://%s/%s/v", BUCKET, test_prefix(dp_test_dir));
	dp_s3rver_env();
	dp_backend_opts o = {.s3_endpoint = ep, .s3_uri_style = "virtual", .retries = 1};
	dp_backend *v = NULL;
	ck_assert_msg(dp_backend_open(&v, url, &o) == 0, "%s", dp_error_last());
	int rc = v->create(v);
	ck_assert_msg(rc == 0, "%s", dp_error_last());
	ck_assert_int_eq(v->put(v, "config", "virtual", 7), 0);
	/* Read it back path-style: the same object. */
	dp_backend *p = NULL;
	ck_assert_int_eq(open_s3(&p, srv.endpoint, url), 0);
	dp_buf out = {0};
	ck_assert_int_eq(p->get(p, "config", 0, UINT64_MAX, &out), 0);
	ck_assert_uint_eq(out.len, 7);
	ck_assert_mem_eq(out.data, "virtual", 7);
	keyset k = {0};
	ck_assert_int_eq(v->list(v, "", collect, &k), 0);
	ck_assert_uint_eq(k.n, 1);
	ck_assert_str_eq(k.keys[0], "config");
	keyset_free(&k);
	dp_buf_free(&out);
	dp_backend_free(v);
	dp_backend_free(p);
}
END_TEST

START_TEST(t_create_and_clear_errors)
{
	/* create leaves nothing behind. */
	dp_backend *b = must_open();
	keyset k = {0};
	ck_assert_int_eq(b->list(b, "", collect, &k), 0);
	ck_assert_uint_eq(k.n, 0);
	dp_backend_free(b);

	/* A bucket that does not exist: step 1 fails at once, saying so. */
	dp_backend *nb = NULL;
	ck_assert_int_eq(open_s3(&nb, srv.endpoint, "s3://no-such-bucket/x"), 0);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int rc = nb->create(nb);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ck_assert_int_ne(rc, 0);
	const char *m = dp_error_last();
	ck_assert_msg(strstr(m, "step 1 of 3"), "%s", m);
	ck_assert_msg(strstr(m, "bucket \"no-such-bucket\" does not exist"), "%s", m);
	ck_assert_msg(t1.tv_sec - t0.tv_sec < 2, "not at once");
	dp_buf out = {0};
	ck_assert_int_eq(nb->get(nb, "config", 0, UINT64_MAX, &out), DP_ENOTFOUND);
	dp_backend_free(nb);

	/* Unknown credentials: 403 at once, exit code 3. */
	dp_backend *bad = NULL;
	char url[PATH_MAX + 32];
	snprintf(url, sizeof(url), "s3://%s/%s", BUCKET, test_prefix(dp_test_dir));
	ck_assert_int_eq(open_s3(&bad, srv.endpoint, url), 0);
	dp_backend_free(bad);
	setenv("AWS_ACCESS_KEY_ID", "NOTAKEY", 1);
	dp_backend_opts o = {.s3_endpoint = srv.endpoint, .retries = 5};
	ck_assert_int_eq(dp_backend_open(&bad, url, &o), 0);
	rc = bad->put(bad, "config", "x", 1);
	ck_assert_int_eq(rc, DP_EAUTH);
	ck_assert_int_eq(dp_error_exit_code(rc), 3);
	ck_assert_msg(strstr(dp_error_last(), "InvalidAccessKeyId"), "%s", dp_error_last());
	ck_assert_msg(strstr(dp_error_last(), "check AWS_ACCESS_KEY_ID"), "%s", dp_error_last());
	ck_assert_ptr_null(strstr(dp_error_last(), "S3RVER")); /* the secret */
	dp_backend_free(bad);
}
END_TEST

START_TEST(t_aws_cli_interop)
{
	dp_backend *b = must_open();
	const char *pre = test_prefix(dp_test_dir);
	size_t n = (3u << 20) + 5;
	uint8_t *data = malloc(n);
	fill(data, n, 7);
	ck_assert_int_eq(b->put(b, "data/c0/c0ffee", data, n), 0);
	ck_assert_int_eq(b->put(b, "index/0001", "idx", 3), 0);
	ck_assert_int_eq(b->put(b, "snapshots/s p&ce+", "snap", 4), 0);

	setenv("AWS_DEFAULT_REGION", "us-east-1", 1);
	setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
	dp_test_result r;
	dp_test_run(&r, "aws --endpoint-url %s s3 ls --recursive s3://%s/%s/repo/", srv.endpoint,
	            BUCKET, pre);
	ck_assert_msg(r.status == 0, "aws s3 ls: %s", r.err);
	ck_assert_msg(strstr(r.out, "repo/data/c0/c0ffee"), "%s", r.out);
	ck_assert_msg(strstr(r.out, "repo/index/0001"), "%s", r.out);
	ck_assert_msg(strstr(r.out, "repo/snapshots/s p&ce+"), "%s", r.out);
	char size[32];
	snprintf(size, sizeof(size), " %zu %s/repo/data/c0/c0ffee", n, pre);
	ck_assert_msg(strstr(r.out, size), "%s", r.out);
	dp_test_result_free(&r);

	/* aws downloads the pack; its bytes equal what dp reads. */
	char file[PATH_MAX + 16];
	snprintf(file, sizeof(file), "%s/pack", dp_test_dir);
	dp_test_run(
	    &r,
	    "aws --endpoint-url %s s3 cp --only-show-errors s3://%s/%s/repo/data/c0/c0ffee '%s'",
	    srv.endpoint, BUCKET, pre, file);
	ck_assert_msg(r.status == 0, "aws s3 cp: %s", r.err);
	dp_test_result_free(&r);
	dp_buf got = {0};
	ck_assert_int_eq(b->get(b, "data/c0/c0ffee", 0, UINT64_MAX, &got), 0);
	FILE *f = fopen(file, "rb");
	ck_assert_ptr_nonnull(f);
	uint8_t *disk = malloc(n + 1);
	size_t rd = fread(disk, 1, n + 1, f);
	fclose(f);
	ck_assert_uint_eq(rd, n);
	ck_assert_uint_eq(got.len, n);
	ck_assert(memcmp(disk, got.data, n) == 0);
	ck_assert(memcmp(disk, data, n) == 0);

	/* And the other way: what aws uploads, dp lists and reads. */
	snprintf(file, sizeof(file), "%s/up", dp_test_dir);
	f = fopen(file, "wb");
	ck_assert_ptr_nonnull(f);
	fwrite(data, 1, 100000, f);
	fclose(f);
	dp_test_run(
	    &r, "aws --endpoint-url %s s3 cp --only-show-errors '%s' s3://%s/%s/repo/keys/from-aws",
	    srv.endpoint, file, BUCKET, pre);
	ck_assert_msg(r.status == 0, "aws s3 cp up: %s", r.err);
	dp_test_result_free(&r);
	dp_buf up = {0};
	ck_assert_int_eq(b->get(b, "keys/from-aws", 0, UINT64_MAX, &up), 0);
	ck_assert_uint_eq(up.len, 100000);
	ck_assert(memcmp(up.data, data, 100000) == 0);
	keyset k = {0};
	ck_assert_int_eq(b->list(b, "keys/", collect, &k), 0);
	ck_assert_uint_eq(k.n, 1);
	keyset_free(&k);

	/* dp's batch delete is seen by aws. */
	const char *keys[] = {"data/c0/c0ffee", "index/0001", "snapshots/s p&ce+", "keys/from-aws"};
	ck_assert_int_eq(b->remove_many(b, keys, 4), 0);
	dp_test_run(&r,
	            "aws --endpoint-url %s s3api list-objects-v2 --bucket %s --prefix %s/ "
	            "--query 'length(Contents || `[]`)'",
	            srv.endpoint, BUCKET, pre);
	ck_assert_msg(r.status == 0, "aws s3api: %s", r.err);
	ck_assert_msg(strncmp(r.out, "0", 1) == 0, "left: %s", r.out);
	dp_test_result_free(&r);
	free(disk);
	free(data);
	dp_buf_free(&got);
	dp_buf_free(&up);
	dp_backend_free(b);
}
END_TEST

/* Reads every listed object: those whose put was acknowledged must be
 * whole; returns how many listed objects are not (puts cut off by the
 * kill, which s3rver may list: it is not crash-atomic, real S3 is). */
static int check_after_restart(dp_backend *b, size_t size, const volatile char *acked, int n,
                               int *listed)
{
	keyset k = {0};
	int rc = b->list(b, "index/", collect, &k);
	ck_assert_msg(rc == 0, "%s", dp_error_last());
	uint8_t *want = malloc(size);
	int torn = 0;
	for (size_t i = 0; i < k.n; i++) {
		const char *p = strstr(k.keys[i], "obj-");
		ck_assert_ptr_nonnull(p);
		int idx = (int)strtol(p + 4, NULL, 10);
		ck_assert_int_lt(idx, n);
		dp_buf got = {0};
		rc = b->get(b, k.keys[i], 0, UINT64_MAX, &got);
		ck_assert_msg(rc == 0, "%s: %s", k.keys[i], dp_error_last());
		fill(want, size, (uint64_t)idx);
		bool whole = got.len == size && memcmp(got.data, want, size) == 0;
		ck_assert_msg(whole || !acked[idx], "acknowledged %s is incomplete (%zu of %zu)",
		              k.keys[i], got.len, size);
		torn += !whole;
		dp_buf_free(&got);
	}
	/* Every acknowledged object is listed. */
	char key[64];
	for (int i = 0; i < n; i++) {
		if (!acked[i])
			continue;
		snprintf(key, sizeof(key), "index/%03d/obj-%05d", i % 7, i);
		ck_assert_msg(has_key(&k, key), "acknowledged %s is not listed", key);
	}
	*listed = (int)k.n;
	free(want);
	keyset_free(&k);
	return torn;
}

typedef struct killer {
	dp_s3rver *s;
	int after_ms;
} killer;

static void *kill_later(void *arg)
{
	killer *k = arg;
	struct timespec ts = {k->after_ms / 1000, (k->after_ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
	dp_s3rver_stop(k->s, true);
	return NULL;
}

START_TEST(t_kill9_mid_put)
{
	dp_s3rver own;
	char dir[PATH_MAX + 8];
	snprintf(dir, sizeof(dir), "%s/s3", dp_test_dir);
	ck_assert_int_eq(dp_s3rver_start(&own, dir, 0, BUCKET), 0);
	dp_s3rver_env();
	setenv("DP_S3_BACKOFF_MS", "50", 1);
	dp_backend_opts o = {.s3_endpoint = own.endpoint, .retries = 3, .timeout_ms = 3000};
	dp_backend *b = NULL;
	ck_assert_int_eq(dp_backend_open(&b, "s3://" BUCKET "/k9", &o), 0);
	enum { T = 6, N = 100000 };
	size_t size = 256 << 10;
	pthread_t th[T], kt;
	putter p[T];
	killer k = {&own, 700};
	ck_assert_int_eq(pthread_create(&kt, NULL, kill_later, &k), 0);
	static volatile char acked[N];
	for (int t = 0; t < T; t++) {
		p[t] = (putter){
		    .b = b, .id = t, .nthreads = T, .count = N, .size = size, .acked = acked};
		ck_assert_int_eq(pthread_create(&th[t], NULL, put_many, &p[t]), 0);
	}
	pthread_join(kt, NULL);
	int ok = 0;
	for (int t = 0; t < T; t++) {
		pthread_join(th[t], NULL);
		ck_assert_msg(p[t].failed == 1, "thread %d did not fail", t);
		ck_assert_int_eq(p[t].first_rc, DP_ETRANSIENT);
		ck_assert_msg(strstr(p[t].err, "failed after 4 attempts"), "%s", p[t].err);
		ck_assert_msg(strstr(p[t].err, "connection refused") ||
		                  strstr(p[t].err, "Connection reset") ||
		                  strstr(p[t].err, "Server returned nothing") ||
		                  strstr(p[t].err, "Send failure") ||
		                  strstr(p[t].err, "Recv failure"),
		              "%s", p[t].err);
		/* Backoff is bounded: 3 retries, 50 ms base. */
		ck_assert_msg(p[t].secs_after_fail < 5, "a failing put took %.1f s",
		              p[t].secs_after_fail);
		ok += p[t].ok;
	}
	ck_assert_msg(ok > 0, "nothing was written before the kill");
	/* Restart on the same directory and port: every acknowledged object is
	 * listed and whole; at most the puts in flight at the kill are not. */
	int port = own.port;
	int removed = dp_s3rver_repair(dir);
	ck_assert_int_ge(removed, 0);
	ck_assert_msg(removed <= T, "s3rver lost %d objects, more than the %d puts in flight",
	              removed, T);
	ck_assert_int_eq(dp_s3rver_start(&own, dir, port, NULL), 0);
	int listed = 0;
	int torn = check_after_restart(b, size, acked, N, &listed);
	ck_assert_msg(torn == 0, "%d listed objects are incomplete after the repair", torn);
	ck_assert_msg(listed <= ok + T, "listed %d, more than %d acknowledged + %d in flight",
	              listed, ok, T);
	fprintf(stderr,
	        "kill -9: %d puts acknowledged, %d cut off in s3rver's store, %d listed after "
	        "restart, all whole\n",
	        ok, removed, listed);
	/* And the same backend (its pooled connections died) works again. */
	ck_assert_int_eq(b->put(b, "index/999/obj-99999", "x", 1), 0);
	dp_backend_free(b);
	dp_s3rver_stop(&own, false);
}
END_TEST

START_TEST(t_https_verification)
{
	char key[PATH_MAX + 16], cert[PATH_MAX + 16], other_key[PATH_MAX + 16],
	    other_cert[PATH_MAX + 16], dir[PATH_MAX + 16];
	snprintf(key, sizeof(key), "%s/key.pem", dp_test_dir);
	snprintf(cert, sizeof(cert), "%s/cert.pem", dp_test_dir);
	snprintf(other_key, sizeof(other_key), "%s/other-key.pem", dp_test_dir);
	snprintf(other_cert, sizeof(other_cert), "%s/other-cert.pem", dp_test_dir);
	snprintf(dir, sizeof(dir), "%s/tls", dp_test_dir);
	ck_assert_int_eq(dp_s3rver_make_cert(key, cert), 0);
	ck_assert_int_eq(dp_s3rver_make_cert(other_key, other_cert), 0);
	dp_s3rver tls;
	ck_assert_int_eq(dp_s3rver_start_tls(&tls, dir, 0, BUCKET, key, cert), 0);
	ck_assert_msg(strncmp(tls.endpoint, "https://", 8) == 0, "%s", tls.endpoint);
	dp_s3rver_env();

	/* The server's own certificate as the CA bundle: works. */
	dp_backend_opts o = {.s3_endpoint = tls.endpoint, .s3_ca_file = cert, .retries = 3};
	dp_backend *b = NULL;
	ck_assert_int_eq(dp_backend_open(&b, "s3://" BUCKET "/tls", &o), 0);
	int rc = b->create(b);
	ck_assert_msg(rc == 0, "%s", dp_error_last());
	ck_assert_int_eq(b->put(b, "config", "over tls", 8), 0);
	dp_buf out = {0};
	ck_assert_int_eq(b->get(b, "config", 0, UINT64_MAX, &out), 0);
	ck_assert_uint_eq(out.len, 8);
	dp_buf_free(&out);
	dp_backend_free(b);

	/* Another CA, or the system's: refused at once, saying what to pass. */
	const char *bundles[] = {other_cert, NULL};
	for (int i = 0; i < 2; i++) {
		o.s3_ca_file = bundles[i];
		ck_assert_int_eq(dp_backend_open(&b, "s3://" BUCKET "/tls", &o), 0);
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		rc = b->put(b, "config", "x", 1);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		ck_assert_int_eq(rc, DP_ERROR);
		ck_assert_msg(strstr(dp_error_last(), "tls certificate check failed"), "%s",
		              dp_error_last());
		ck_assert_msg(strstr(dp_error_last(), "--s3-ca-file"), "%s", dp_error_last());
		ck_assert_msg(t1.tv_sec - t0.tv_sec < 2, "not at once");
		dp_backend_free(b);
	}

	/* The server dies in the middle of TLS uploads: the puts fail with a
	 * message, the process is not killed by SIGPIPE. */
	o.s3_ca_file = cert;
	o.retries = 2;
	ck_assert_int_eq(dp_backend_open(&b, "s3://" BUCKET "/tls", &o), 0);
	enum { T = 4 };
	pthread_t th[T], kt;
	putter p[T];
	killer k = {&tls, 400};
	for (int t = 0; t < T; t++) {
		p[t] = (putter){.b = b, .id = t, .nthreads = T, .count = 100000, .size = 1 << 20};
		ck_assert_int_eq(pthread_create(&th[t], NULL, put_many, &p[t]), 0);
	}
	ck_assert_int_eq(pthread_create(&kt, NULL, kill_later, &k), 0);
	pthread_join(kt, NULL);
	for (int t = 0; t < T; t++) {
		pthread_join(th[t], NULL);
		ck_assert_int_eq(p[t].failed, 1);
		ck_assert_int_eq(p[t].first_rc, DP_ETRANSIENT);
	}
	dp_backend_free(b);
	ck_assert_int_eq(dp_s3rver_start_tls(&tls, dir, tls.port, NULL, key, cert), 0);

	/* Plain http to the https port is not silently accepted. */
	char plain[96];
	snprintf(plain, sizeof(plain), "http://127.0.0.1:%d", tls.port);
	o.s3_endpoint = plain;
	o.retries = 0;
	ck_assert_int_eq(dp_backend_open(&b, "s3://" BUCKET "/tls", &o), 0);
	ck_assert_int_ne(b->put(b, "config", "x", 1), 0);
	dp_backend_free(b);
	dp_s3rver_stop(&tls, false);
}
END_TEST

static Suite *s3_backend_suite(void)
{
	Suite *s = suite_create("s3 backend (s3rver)");
	srv_owner = getpid();
	const char *tmp = getenv("TMPDIR");
	snprintf(srv_dir, sizeof(srv_dir), "%s/dp-s3rver-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(srv_dir)) {
		srv_dir[0] = 0;
		fprintf(stderr, "cannot make a temp dir for s3rver\n");
	} else {
		atexit(cleanup_dir);
		char data[PATH_MAX + 8];
		snprintf(data, sizeof(data), "%s/data", srv_dir);
		if (dp_s3rver_start(&srv, data, 0, BUCKET) != 0)
			fprintf(stderr, "s3rver did not start: every test below fails\n");
	}
	dp_backend_conformance_add(s, "s3", make_s3_ordered);
	TCase *tc = tcase_create("s3rver");
	tcase_add_checked_fixture(tc, dp_test_setup, dp_test_teardown);
	tcase_set_timeout(tc, 180);
	tcase_add_test(tc, t_list_more_than_one_page);
	tcase_add_test(tc, t_ranged_reads);
	tcase_add_test(tc, t_virtual_host_style);
	tcase_add_test(tc, t_create_and_clear_errors);
	tcase_add_test(tc, t_aws_cli_interop);
	tcase_add_test(tc, t_kill9_mid_put);
	tcase_add_test(tc, t_https_verification);
	suite_add_tcase(s, tc);
	return s;
}

DP_TEST_MAIN(s3_backend_suite)
