/*
 * The faulty test backend (see backends.h): wraps any backend and, by
 * rules set by the test, fails chosen calls or damages what get returns,
 * the way a flaky network or a rotting disk would.
 *
 * Invariants: with no rule set every call is forwarded unchanged. A failed
 * call never reaches the inner backend. Data rules only change what this
 * wrapper returns, never the stored object.
 *
 * Ownership: the wrapper owns the inner backend and frees it.
 * Thread safety: rules are read and set under a mutex, counters are atomics,
 * so members may run on several threads while a test changes rules.
 */
#include "backends.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dp/error.h"

typedef struct fail_rule {
	unsigned long nth, count;
	int rc;
} fail_rule;

typedef struct faulty_backend {
	dp_backend base;
	dp_backend *inner;
	pthread_mutex_t mu;
	atomic_ulong calls[DP_OP_COUNT];
	fail_rule fail[DP_OP_COUNT];
	unsigned delay_us[DP_OP_COUNT];
	char *flip_prefix; /* NULL: no flip rule */
	uint64_t flip_off;
	char *trunc_prefix; /* NULL: no truncate rule */
	uint64_t trunc_len;
} faulty_backend;

static faulty_backend *faulty(dp_backend *b)
{
	assert(b && strcmp(b->name, "faulty") == 0);
	return (faulty_backend *)b;
}

static bool has_prefix(const char *rule, const char *key)
{
	return rule && strncmp(key, rule, strlen(rule)) == 0;
}

/* Counts the call, sleeps if asked, and returns the injected error (with
 * its message set) or 0. */
static int enter(faulty_backend *f, dp_test_op op, const char *key)
{
	unsigned long n = atomic_fetch_add(&f->calls[op], 1) + 1;
	pthread_mutex_lock(&f->mu);
	fail_rule r = f->fail[op];
	unsigned delay = f->delay_us[op];
	pthread_mutex_unlock(&f->mu);
	if (delay)
		usleep(delay);
	if (r.rc && n >= r.nth && (r.count == 0 || n - r.nth < r.count))
		return dp_error_set(r.rc, "injected fault: %s call %lu of \"%s\"",
		                    dp_test_op_name(op), n, key ? key : "");
	return 0;
}

/* The length a truncate rule gives key, or UINT64_MAX if none applies. */
static uint64_t trunc_for(faulty_backend *f, const char *key)
{
	uint64_t len = UINT64_MAX;
	pthread_mutex_lock(&f->mu);
	if (has_prefix(f->trunc_prefix, key))
		len = f->trunc_len;
	pthread_mutex_unlock(&f->mu);
	return len;
}

static int faulty_put(dp_backend *b, const char *key, const void *data, size_t len)
{
	faulty_backend *f = faulty(b);
	int rc = enter(f, DP_OP_PUT, key);
	return rc ? rc : f->inner->put(f->inner, key, data, len);
}

static int faulty_get(dp_backend *b, const char *key, uint64_t off, uint64_t len, dp_buf *out)
{
	faulty_backend *f = faulty(b);
	int rc = enter(f, DP_OP_GET, key);
	if (rc)
		return rc;
	uint64_t cut = trunc_for(f, key);
	if (cut != UINT64_MAX) {
		uint64_t size;
		if ((rc = f->inner->stat(f->inner, key, &size)))
			return rc;
		if (size > cut)
			size = cut;
		if (off > size || (len != UINT64_MAX && len > size - off))
			return dp_error_set(
			    DP_ECORRUPT,
			    "object \"%s\" is truncated: it has %llu bytes, bytes "
			    "%llu..%llu were asked for (injected)",
			    key, (unsigned long long)size, (unsigned long long)off,
			    (unsigned long long)(len == UINT64_MAX ? size : off + len));
		if (len == UINT64_MAX)
			len = size - off;
	}
	size_t start = out->len;
	if ((rc = f->inner->get(f->inner, key, off, len, out)))
		return rc;
	pthread_mutex_lock(&f->mu);
	if (has_prefix(f->flip_prefix, key) && f->flip_off >= off &&
	    f->flip_off - off < out->len - start)
		out->data[start + (f->flip_off - off)] ^= 0xff;
	pthread_mutex_unlock(&f->mu);
	return 0;
}

static int faulty_stat(dp_backend *b, const char *key, uint64_t *size_out)
{
	faulty_backend *f = faulty(b);
	uint64_t size;
	int rc = enter(f, DP_OP_STAT, key);
	if (rc || (rc = f->inner->stat(f->inner, key, &size)))
		return rc;
	uint64_t cut = trunc_for(f, key);
	if (size_out)
		*size_out = size < cut ? size : cut;
	return 0;
}

typedef struct list_wrap {
	faulty_backend *f;
	dp_backend_list_cb cb;
	void *arg;
} list_wrap;

static int list_cb(const char *key, uint64_t size, void *arg)
{
	list_wrap *w = arg;
	uint64_t cut = trunc_for(w->f, key);
	return w->cb(key, size < cut ? size : cut, w->arg);
}

static int faulty_list(dp_backend *b, const char *prefix, dp_backend_list_cb cb, void *arg)
{
	faulty_backend *f = faulty(b);
	int rc = enter(f, DP_OP_LIST, prefix);
	if (rc)
		return rc;
	list_wrap w = {f, cb, arg};
	return f->inner->list(f->inner, prefix, list_cb, &w);
}

static int faulty_remove(dp_backend *b, const char *key)
{
	faulty_backend *f = faulty(b);
	int rc = enter(f, DP_OP_REMOVE, key);
	return rc ? rc : f->inner->remove(f->inner, key);
}

/* One remove per key, so that DP_OP_REMOVE rules and counts apply. */
static int faulty_remove_many(dp_backend *b, const char *const *keys, size_t n)
{
	faulty_backend *f = faulty(b);
	int rc = enter(f, DP_OP_REMOVE_MANY, n ? keys[0] : "");
	for (size_t i = 0; rc == 0 && i < n; i++)
		rc = faulty_remove(b, keys[i]);
	return rc;
}

static int faulty_create(dp_backend *b)
{
	faulty_backend *f = faulty(b);
	int rc = enter(f, DP_OP_CREATE, "");
	if (rc || !f->inner->create)
		return rc;
	return f->inner->create(f->inner);
}

static void faulty_free(dp_backend *b)
{
	if (!b)
		return;
	faulty_backend *f = faulty(b);
	f->inner->free(f->inner);
	free(f->flip_prefix);
	free(f->trunc_prefix);
	pthread_mutex_destroy(&f->mu);
	free(f);
}

int dp_faulty_backend_new(dp_backend **out, dp_backend *inner)
{
	assert(inner);
	faulty_backend *f = calloc(1, sizeof(*f));
	if (!f)
		abort();
	pthread_mutex_init(&f->mu, NULL);
	f->inner = inner;
	f->base.version = DP_BACKEND_VERSION;
	f->base.features = inner->features;
	f->base.name = "faulty";
	f->base.put = faulty_put;
	f->base.get = faulty_get;
	f->base.stat = faulty_stat;
	f->base.list = faulty_list;
	f->base.remove = faulty_remove;
	f->base.free = faulty_free;
	f->base.create = faulty_create;
	f->base.remove_many = faulty_remove_many;
	*out = &f->base;
	return 0;
}

unsigned long dp_faulty_calls(dp_backend *b, dp_test_op op)
{
	assert(op < DP_OP_COUNT);
	return atomic_load(&faulty(b)->calls[op]);
}

void dp_faulty_fail(dp_backend *b, dp_test_op op, unsigned long nth, unsigned long count, int rc)
{
	faulty_backend *f = faulty(b);
	assert(op < DP_OP_COUNT && (rc == 0 || nth >= 1));
	pthread_mutex_lock(&f->mu);
	f->fail[op] = (fail_rule){nth, count, rc};
	pthread_mutex_unlock(&f->mu);
}

static char *xstrdup(const char *s)
{
	char *d = strdup(s ? s : "");
	if (!d)
		abort();
	return d;
}

void dp_faulty_flip(dp_backend *b, const char *key_prefix, uint64_t off)
{
	faulty_backend *f = faulty(b);
	char *p = xstrdup(key_prefix);
	pthread_mutex_lock(&f->mu);
	free(f->flip_prefix);
	f->flip_prefix = p;
	f->flip_off = off;
	pthread_mutex_unlock(&f->mu);
}

void dp_faulty_truncate(dp_backend *b, const char *key_prefix, uint64_t len)
{
	faulty_backend *f = faulty(b);
	char *p = xstrdup(key_prefix);
	pthread_mutex_lock(&f->mu);
	free(f->trunc_prefix);
	f->trunc_prefix = p;
	f->trunc_len = len;
	pthread_mutex_unlock(&f->mu);
}

void dp_faulty_clear_data_rules(dp_backend *b)
{
	faulty_backend *f = faulty(b);
	pthread_mutex_lock(&f->mu);
	free(f->flip_prefix);
	free(f->trunc_prefix);
	f->flip_prefix = f->trunc_prefix = NULL;
	pthread_mutex_unlock(&f->mu);
}

void dp_faulty_delay(dp_backend *b, dp_test_op op, unsigned usec)
{
	faulty_backend *f = faulty(b);
	assert(op < DP_OP_COUNT);
	pthread_mutex_lock(&f->mu);
	f->delay_us[op] = usec;
	pthread_mutex_unlock(&f->mu);
}
