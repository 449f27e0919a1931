/*
 * The in-memory test backend (see backends.h): a chained hash table of
 * key -> bytes behind one mutex, with a call counter per operation.
 *
 * Invariants: an object's bytes are immutable once stored; put builds the
 * new copy outside the lock and swaps the pointer in under it, so readers
 * see the old or the new object whole. list copies the matching keys under
 * the lock and calls back without it, so a callback may use the backend.
 *
 * Thread safety: every member takes the mutex; counters are atomics.
 */
#include "backends.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp/error.h"

#define NBUCKETS 4096

typedef struct mem_obj {
	struct mem_obj *next;
	char *key;
	uint8_t *data;
	size_t len;
} mem_obj;

typedef struct mem_backend {
	dp_backend base;
	pthread_mutex_t mu;
	mem_obj *buckets[NBUCKETS];
	atomic_ulong calls[DP_OP_COUNT];
	atomic_ullong bytes_put, bytes_got;
} mem_backend;

static const char *op_names[DP_OP_COUNT] = {"put",    "get",         "stat",  "list",
                                            "remove", "remove_many", "create"};

const char *dp_test_op_name(dp_test_op op)
{
	return op < DP_OP_COUNT ? op_names[op] : "?";
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		abort();
	return p;
}

static mem_backend *mem(dp_backend *b)
{
	assert(b && strcmp(b->name, "mem") == 0);
	return (mem_backend *)b;
}

static uint32_t hash(const char *s)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h % NBUCKETS;
}

/* The contract's key rules: not empty, no leading '/', no "//", no "..". */
static int check_key(const char *key)
{
	if (!key || !key[0] || key[0] == '/' || strstr(key, "//") || strstr(key, ".."))
		return dp_error_set(DP_EUSAGE, "invalid object key \"%s\"", key ? key : "(null)");
	return 0;
}

static mem_obj **find(mem_backend *m, const char *key)
{
	mem_obj **pp = &m->buckets[hash(key)];
	while (*pp && strcmp((*pp)->key, key) != 0)
		pp = &(*pp)->next;
	return pp;
}

static void obj_free(mem_obj *o)
{
	if (o) {
		free(o->key);
		free(o->data);
		free(o);
	}
}

static int mem_put(dp_backend *b, const char *key, const void *data, size_t len)
{
	mem_backend *m = mem(b);
	atomic_fetch_add(&m->calls[DP_OP_PUT], 1);
	int rc = check_key(key);
	if (rc)
		return rc;
	mem_obj *o = xmalloc(sizeof(*o));
	o->key = strdup(key);
	o->data = xmalloc(len);
	if (!o->key)
		abort();
	if (len)
		memcpy(o->data, data, len);
	o->len = len;
	pthread_mutex_lock(&m->mu);
	mem_obj **pp = find(m, key), *old = *pp;
	o->next = old ? old->next : NULL;
	*pp = o;
	pthread_mutex_unlock(&m->mu);
	obj_free(old);
	atomic_fetch_add(&m->bytes_put, len);
	return 0;
}

static int mem_get(dp_backend *b, const char *key, uint64_t off, uint64_t len, dp_buf *out)
{
	mem_backend *m = mem(b);
	atomic_fetch_add(&m->calls[DP_OP_GET], 1);
	int rc = check_key(key);
	if (rc)
		return rc;
	pthread_mutex_lock(&m->mu);
	mem_obj *o = *find(m, key);
	if (!o) {
		rc = dp_error_set(DP_ENOTFOUND, "object \"%s\" not found", key);
	} else if (off > o->len || (len != UINT64_MAX && len > o->len - off)) {
		rc = dp_error_set(DP_ECORRUPT,
		                  "object \"%s\" is truncated: it has %zu bytes, bytes %llu..%llu "
		                  "were asked for",
		                  key, o->len, (unsigned long long)off,
		                  (unsigned long long)(len == UINT64_MAX ? o->len : off + len));
	} else {
		size_t n = len == UINT64_MAX ? o->len - (size_t)off : (size_t)len;
		rc = dp_buf_append(out, o->data + off, n);
		if (rc == 0)
			atomic_fetch_add(&m->bytes_got, n);
	}
	pthread_mutex_unlock(&m->mu);
	return rc;
}

static int mem_stat(dp_backend *b, const char *key, uint64_t *size_out)
{
	mem_backend *m = mem(b);
	atomic_fetch_add(&m->calls[DP_OP_STAT], 1);
	int rc = check_key(key);
	if (rc)
		return rc;
	pthread_mutex_lock(&m->mu);
	mem_obj *o = *find(m, key);
	if (!o)
		rc = dp_error_set(DP_ENOTFOUND, "object \"%s\" not found", key);
	else if (size_out)
		*size_out = o->len;
	pthread_mutex_unlock(&m->mu);
	return rc;
}

static int mem_list(dp_backend *b, const char *prefix, dp_backend_list_cb cb, void *arg)
{
	mem_backend *m = mem(b);
	atomic_fetch_add(&m->calls[DP_OP_LIST], 1);
	if (!prefix)
		prefix = "";
	size_t plen = strlen(prefix), n = 0, cap = 64;
	char **keys = xmalloc(cap * sizeof(*keys));
	uint64_t *sizes = xmalloc(cap * sizeof(*sizes));
	pthread_mutex_lock(&m->mu);
	for (size_t i = 0; i < NBUCKETS; i++) {
		for (mem_obj *o = m->buckets[i]; o; o = o->next) {
			if (strncmp(o->key, prefix, plen) != 0)
				continue;
			if (n == cap) {
				cap *= 2;
				keys = realloc(keys, cap * sizeof(*keys));
				sizes = realloc(sizes, cap * sizeof(*sizes));
				if (!keys || !sizes)
					abort();
			}
			if (!(keys[n] = strdup(o->key)))
				abort();
			sizes[n++] = o->len;
		}
	}
	pthread_mutex_unlock(&m->mu);
	int rc = 0;
	for (size_t i = 0; i < n; i++) {
		if (rc == 0)
			rc = cb(keys[i], sizes[i], arg);
		free(keys[i]);
	}
	free(keys);
	free(sizes);
	return rc;
}

static int mem_remove(dp_backend *b, const char *key)
{
	mem_backend *m = mem(b);
	atomic_fetch_add(&m->calls[DP_OP_REMOVE], 1);
	int rc = check_key(key);
	if (rc)
		return rc;
	pthread_mutex_lock(&m->mu);
	mem_obj **pp = find(m, key), *o = *pp;
	if (o)
		*pp = o->next;
	pthread_mutex_unlock(&m->mu);
	obj_free(o);
	return 0;
}

static int mem_create(dp_backend *b)
{
	atomic_fetch_add(&mem(b)->calls[DP_OP_CREATE], 1);
	return 0;
}

static void mem_free(dp_backend *b)
{
	if (!b)
		return;
	mem_backend *m = mem(b);
	for (size_t i = 0; i < NBUCKETS; i++) {
		while (m->buckets[i]) {
			mem_obj *o = m->buckets[i];
			m->buckets[i] = o->next;
			obj_free(o);
		}
	}
	pthread_mutex_destroy(&m->mu);
	free(m);
}

int dp_mem_backend_new(dp_backend **out)
{
	mem_backend *m = calloc(1, sizeof(*m));
	if (!m)
		abort();
	pthread_mutex_init(&m->mu, NULL);
	m->base.version = DP_BACKEND_VERSION;
	m->base.features = DP_BACKEND_F_RANGE;
	m->base.name = "mem";
	m->base.put = mem_put;
	m->base.get = mem_get;
	m->base.stat = mem_stat;
	m->base.list = mem_list;
	m->base.remove = mem_remove;
	m->base.free = mem_free;
	m->base.create = mem_create;
	*out = &m->base;
	return 0;
}

unsigned long dp_mem_backend_calls(dp_backend *b, dp_test_op op)
{
	assert(op < DP_OP_COUNT);
	return atomic_load(&mem(b)->calls[op]);
}

uint64_t dp_mem_backend_bytes_put(dp_backend *b)
{
	return atomic_load(&mem(b)->bytes_put);
}

uint64_t dp_mem_backend_bytes_got(dp_backend *b)
{
	return atomic_load(&mem(b)->bytes_got);
}

void dp_mem_backend_reset_counts(dp_backend *b)
{
	mem_backend *m = mem(b);
	for (int i = 0; i < DP_OP_COUNT; i++)
		atomic_store(&m->calls[i], 0);
	atomic_store(&m->bytes_put, 0);
	atomic_store(&m->bytes_got, 0);
}

size_t dp_mem_backend_objects(dp_backend *b, uint64_t *total_bytes)
{
	mem_backend *m = mem(b);
	size_t n = 0;
	uint64_t total = 0;
	pthread_mutex_lock(&m->mu);
	for (size_t i = 0; i < NBUCKETS; i++) {
		for (mem_obj *o = m->buckets[i]; o; o = o->next) {
			n++;
			total += o->len;
		}
	}
	pthread_mutex_unlock(&m->mu);
	if (total_bytes)
		*total_bytes = total;
	return n;
}

/* Replaces the object with a damaged copy (objects are immutable in place,
 * so a concurrent reader keeps a consistent view). */
static int damage(dp_backend *b, const char *key, bool flip, uint64_t arg)
{
	mem_backend *m = mem(b);
	int rc = 0;
	pthread_mutex_lock(&m->mu);
	mem_obj *o = *find(m, key);
	if (!o) {
		rc = dp_error_set(DP_ENOTFOUND, "object \"%s\" not found", key);
	} else if (flip ? arg >= o->len : arg > o->len) {
		rc = dp_error_set(DP_EUSAGE, "object \"%s\" has only %zu bytes", key, o->len);
	} else {
		size_t n = flip ? o->len : (size_t)arg;
		uint8_t *copy = xmalloc(n);
		memcpy(copy, o->data, n);
		if (flip)
			copy[arg] ^= 0xff;
		free(o->data);
		o->data = copy;
		o->len = n;
	}
	pthread_mutex_unlock(&m->mu);
	return rc;
}

int dp_mem_backend_flip(dp_backend *b, const char *key, uint64_t off)
{
	return damage(b, key, true, off);
}

int dp_mem_backend_truncate(dp_backend *b, const char *key, uint64_t len)
{
	return damage(b, key, false, len);
}
