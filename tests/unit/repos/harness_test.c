/*
 * Tests of the test backends themselves (tests/harness/backends.h): the
 * in-memory backend keeps the contract and counts calls, and every fault the
 * faulty wrapper offers really fires, only where it was asked to.
 */
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#include "../../harness/backend_conformance.h"
#include "../../harness/backends.h"
#include "dp/backend.h"
#include "dp/error.h"
#include "../../harness/dp_test.h"

static int make_mem(dp_backend **out, const char *tmpdir)
{
	(void)tmpdir;
	return dp_mem_backend_new(out);
}

static int make_faulty_mem(dp_backend **out, const char *tmpdir)
{
	dp_backend *inner;
	int rc = make_mem(&inner, tmpdir);
	return rc ? rc : dp_faulty_backend_new(out, inner);
}

static int make_faulty_posix(dp_backend **out, const char *tmpdir)
{
	char path[PATH_MAX];
	dp_backend *inner;
	snprintf(path, sizeof(path), "%s/repo", tmpdir);
	int rc = dp_backend_open(&inner, path, NULL);
	if (rc)
		return rc;
	if ((rc = inner->create(inner))) {
		dp_backend_free(inner);
		return rc;
	}
	return dp_faulty_backend_new(out, inner);
}

static void put_str(dp_backend *b, const char *key, const char *s)
{
	int rc = b->put(b, key, s, strlen(s));
	ck_assert_msg(rc == 0, "put %s: %s", key, dp_error_last());
}

static int count_cb(const char *key, uint64_t size, void *arg)
{
	(void)key;
	(void)size;
	(*(int *)arg)++;
	return 0;
}

START_TEST(t_mem_counts)
{
	dp_backend *b;
	ck_assert_int_eq(dp_mem_backend_new(&b), 0);
	put_str(b, "a/1", "12345");
	put_str(b, "a/2", "123");
	put_str(b, "b/1", "1");
	dp_buf out = {0};
	ck_assert_int_eq(b->get(b, "a/1", 0, UINT64_MAX, &out), 0);
	ck_assert_int_eq(b->get(b, "a/2", 1, 2, &out), 0);
	ck_assert_int_eq(b->get(b, "a/3", 0, UINT64_MAX, &out), DP_ENOTFOUND);
	uint64_t size;
	ck_assert_int_eq(b->stat(b, "b/1", &size), 0);
	int n = 0;
	ck_assert_int_eq(b->list(b, "a/", count_cb, &n), 0);
	ck_assert_int_eq(n, 2);
	const char *keys[] = {"a/1", "a/2"};
	ck_assert_int_eq(dp_backend_remove_many(b, keys, 2), 0);
	ck_assert_uint_eq(dp_mem_backend_calls(b, DP_OP_PUT), 3);
	ck_assert_uint_eq(dp_mem_backend_calls(b, DP_OP_GET), 3);
	ck_assert_uint_eq(dp_mem_backend_calls(b, DP_OP_STAT), 1);
	ck_assert_uint_eq(dp_mem_backend_calls(b, DP_OP_LIST), 1);
	ck_assert_uint_eq(dp_mem_backend_calls(b, DP_OP_REMOVE), 2);
	ck_assert_uint_eq(dp_mem_backend_bytes_put(b), 9);
	ck_assert_uint_eq(dp_mem_backend_bytes_got(b), 7);
	ck_assert_uint_eq(dp_mem_backend_objects(b, &size), 1);
	ck_assert_uint_eq(size, 1);
	dp_mem_backend_reset_counts(b);
	ck_assert_uint_eq(dp_mem_backend_calls(b, DP_OP_PUT), 0);
	ck_assert_uint_eq(dp_mem_backend_bytes_put(b), 0);
	dp_buf_free(&out);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_mem_damage)
{
	dp_backend *b;
	ck_assert_int_eq(dp_mem_backend_new(&b), 0);
	put_str(b, "data/p", "abcdef");
	ck_assert_int_eq(dp_mem_backend_flip(b, "data/p", 2), 0);
	dp_buf out = {0};
	ck_assert_int_eq(b->get(b, "data/p", 0, UINT64_MAX, &out), 0);
	ck_assert_uint_eq(out.len, 6);
	ck_assert_int_eq(out.data[2], 'c' ^ 0xff);
	ck_assert_int_eq(memcmp(out.data, "ab", 2), 0);
	ck_assert_int_eq(memcmp(out.data + 3, "def", 3), 0);
	ck_assert_int_eq(dp_mem_backend_truncate(b, "data/p", 4), 0);
	uint64_t size;
	ck_assert_int_eq(b->stat(b, "data/p", &size), 0);
	ck_assert_uint_eq(size, 4);
	ck_assert_int_eq(b->get(b, "data/p", 0, 6, &out), DP_ECORRUPT);
	ck_assert_int_eq(dp_mem_backend_flip(b, "data/p", 4), DP_EUSAGE);
	ck_assert_int_eq(dp_mem_backend_flip(b, "data/none", 0), DP_ENOTFOUND);
	ck_assert_int_eq(dp_mem_backend_truncate(b, "data/p", 5), DP_EUSAGE);
	dp_buf_free(&out);
	dp_backend_free(b);
}
END_TEST

static dp_backend *faulty_mem(dp_backend **inner)
{
	dp_backend *b;
	ck_assert_int_eq(dp_mem_backend_new(inner), 0);
	ck_assert_int_eq(dp_faulty_backend_new(&b, *inner), 0);
	return b;
}

START_TEST(t_fail_nth)
{
	dp_backend *inner, *b = faulty_mem(&inner);
	ck_assert_uint_eq(b->features, inner->features);
	dp_faulty_fail(b, DP_OP_PUT, 3, 1, DP_ETRANSIENT);
	put_str(b, "k/1", "1");
	put_str(b, "k/2", "2");
	ck_assert_int_eq(b->put(b, "k/3", "3", 1), DP_ETRANSIENT);
	ck_assert_str_eq(dp_error_last(), "injected fault: put call 3 of \"k/3\"");
	put_str(b, "k/4", "4");
	ck_assert_uint_eq(dp_faulty_calls(b, DP_OP_PUT), 4);
	/* The failed call never reached the inner backend. */
	ck_assert_uint_eq(dp_mem_backend_calls(inner, DP_OP_PUT), 3);
	uint64_t size;
	ck_assert_int_eq(b->stat(b, "k/3", &size), DP_ENOTFOUND);
	ck_assert_uint_eq(dp_mem_backend_objects(inner, NULL), 3);
	/* Other operations are untouched. */
	dp_buf out = {0};
	ck_assert_int_eq(b->get(b, "k/1", 0, UINT64_MAX, &out), 0);
	dp_buf_free(&out);
	dp_backend_free(b); /* frees inner too */
}
END_TEST

START_TEST(t_fail_from_nth_on)
{
	dp_backend *inner, *b = faulty_mem(&inner);
	put_str(b, "k/1", "1");
	dp_faulty_fail(b, DP_OP_GET, 2, 0, DP_ERROR);
	dp_buf out = {0};
	ck_assert_int_eq(b->get(b, "k/1", 0, UINT64_MAX, &out), 0);
	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(b->get(b, "k/1", 0, UINT64_MAX, &out), DP_ERROR);
	ck_assert_uint_eq(dp_mem_backend_calls(inner, DP_OP_GET), 1);
	/* Two calls from the 8th: 8 and 9 fail, 10 passes. */
	dp_faulty_fail(b, DP_OP_GET, 8, 2, DP_ECORRUPT);
	ck_assert_int_eq(b->get(b, "k/1", 0, UINT64_MAX, &out), 0);
	ck_assert_int_eq(b->get(b, "k/1", 0, UINT64_MAX, &out), DP_ECORRUPT);
	ck_assert_int_eq(b->get(b, "k/1", 0, UINT64_MAX, &out), DP_ECORRUPT);
	ck_assert_int_eq(b->get(b, "k/1", 0, UINT64_MAX, &out), 0);
	dp_faulty_fail(b, DP_OP_GET, 0, 0, 0);
	ck_assert_int_eq(b->get(b, "k/1", 0, UINT64_MAX, &out), 0);
	dp_buf_free(&out);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_fail_other_ops)
{
	dp_backend *inner, *b = faulty_mem(&inner);
	put_str(b, "k/1", "1");
	put_str(b, "k/2", "2");
	uint64_t size;
	int n = 0;
	dp_faulty_fail(b, DP_OP_STAT, 1, 1, DP_ETRANSIENT);
	ck_assert_int_eq(b->stat(b, "k/1", &size), DP_ETRANSIENT);
	ck_assert_int_eq(b->stat(b, "k/1", &size), 0);
	dp_faulty_fail(b, DP_OP_LIST, 1, 1, DP_ETRANSIENT);
	ck_assert_int_eq(b->list(b, "k/", count_cb, &n), DP_ETRANSIENT);
	ck_assert_int_eq(n, 0);
	ck_assert_int_eq(b->list(b, "k/", count_cb, &n), 0);
	ck_assert_int_eq(n, 2);
	dp_faulty_fail(b, DP_OP_CREATE, 1, 1, DP_ERROR);
	ck_assert_int_eq(b->create(b), DP_ERROR);
	ck_assert_int_eq(b->create(b), 0);
	/* A remove rule hits the keys of a remove_many. */
	dp_faulty_fail(b, DP_OP_REMOVE, 2, 1, DP_ERROR);
	const char *keys[] = {"k/1", "k/2"};
	ck_assert_int_eq(dp_backend_remove_many(b, keys, 2), DP_ERROR);
	ck_assert_int_eq(b->stat(b, "k/1", &size), DP_ENOTFOUND);
	ck_assert_int_eq(b->stat(b, "k/2", &size), 0);
	ck_assert_uint_eq(dp_faulty_calls(b, DP_OP_REMOVE_MANY), 1);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_flip)
{
	dp_backend *inner, *b = faulty_mem(&inner);
	char data[100];
	for (int i = 0; i < 100; i++)
		data[i] = (char)('a' + i % 26);
	ck_assert_int_eq(b->put(b, "data/00/p", data, 100), 0);
	ck_assert_int_eq(b->put(b, "index/i", data, 100), 0);
	dp_faulty_flip(b, "data/", 10);
	dp_buf out = {0};
	ck_assert_int_eq(b->get(b, "data/00/p", 0, UINT64_MAX, &out), 0);
	ck_assert_uint_eq(out.len, 100);
	for (int i = 0; i < 100; i++)
		ck_assert_int_eq(out.data[i], (uint8_t)(i == 10 ? data[i] ^ 0xff : data[i]));
	/* A range that covers offset 10 gets it flipped at its own index. */
	dp_buf_reset(&out);
	ck_assert_int_eq(b->get(b, "data/00/p", 5, 10, &out), 0);
	ck_assert_int_eq(out.data[5], (uint8_t)(data[10] ^ 0xff));
	ck_assert_int_eq(memcmp(out.data, data + 5, 5), 0);
	/* A range that does not cover it, or another key, is untouched. */
	dp_buf_reset(&out);
	ck_assert_int_eq(b->get(b, "data/00/p", 11, 50, &out), 0);
	ck_assert_int_eq(memcmp(out.data, data + 11, 50), 0);
	dp_buf_reset(&out);
	ck_assert_int_eq(b->get(b, "index/i", 0, UINT64_MAX, &out), 0);
	ck_assert_int_eq(memcmp(out.data, data, 100), 0);
	/* The stored object is intact. */
	dp_buf_reset(&out);
	ck_assert_int_eq(inner->get(inner, "data/00/p", 0, UINT64_MAX, &out), 0);
	ck_assert_int_eq(memcmp(out.data, data, 100), 0);
	dp_faulty_clear_data_rules(b);
	dp_buf_reset(&out);
	ck_assert_int_eq(b->get(b, "data/00/p", 0, UINT64_MAX, &out), 0);
	ck_assert_int_eq(memcmp(out.data, data, 100), 0);
	dp_buf_free(&out);
	dp_backend_free(b);
}
END_TEST

static int size_cb(const char *key, uint64_t size, void *arg)
{
	(void)key;
	*(uint64_t *)arg = size;
	return 0;
}

START_TEST(t_truncate)
{
	dp_backend *inner, *b = faulty_mem(&inner);
	char data[1000];
	memset(data, 'x', sizeof(data));
	ck_assert_int_eq(b->put(b, "data/00/p", data, 1000), 0);
	ck_assert_int_eq(b->put(b, "index/i", data, 1000), 0);
	dp_faulty_truncate(b, "data/", 100);
	uint64_t size = 0;
	ck_assert_int_eq(b->stat(b, "data/00/p", &size), 0);
	ck_assert_uint_eq(size, 100);
	ck_assert_int_eq(b->list(b, "data/", size_cb, &size), 0);
	ck_assert_uint_eq(size, 100);
	dp_buf out = {0};
	ck_assert_int_eq(b->get(b, "data/00/p", 0, UINT64_MAX, &out), 0);
	ck_assert_uint_eq(out.len, 100);
	ck_assert_int_eq(b->get(b, "data/00/p", 50, 100, &out), DP_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(dp_error_last(), "truncated"));
	ck_assert_ptr_nonnull(strstr(dp_error_last(), "data/00/p"));
	ck_assert_int_eq(b->get(b, "data/00/p", 50, 50, &out), 0);
	ck_assert_uint_eq(out.len, 150);
	ck_assert_int_eq(b->stat(b, "index/i", &size), 0);
	ck_assert_uint_eq(size, 1000);
	dp_buf_free(&out);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_delay)
{
	dp_backend *inner, *b = faulty_mem(&inner);
	put_str(b, "k", "v");
	dp_faulty_delay(b, DP_OP_GET, 50000);
	struct timeval t0, t1;
	dp_buf out = {0};
	gettimeofday(&t0, NULL);
	ck_assert_int_eq(b->get(b, "k", 0, UINT64_MAX, &out), 0);
	gettimeofday(&t1, NULL);
	long us = (t1.tv_sec - t0.tv_sec) * 1000000L + (t1.tv_usec - t0.tv_usec);
	ck_assert_int_ge(us, 50000);
	dp_buf_free(&out);
	dp_backend_free(b);
}
END_TEST

static Suite *harness_suite(void)
{
	Suite *s = suite_create("harness backends");
	TCase *tc = tcase_create("faults");
	tcase_add_checked_fixture(tc, dp_test_setup, dp_test_teardown);
	tcase_add_test(tc, t_mem_counts);
	tcase_add_test(tc, t_mem_damage);
	tcase_add_test(tc, t_fail_nth);
	tcase_add_test(tc, t_fail_from_nth_on);
	tcase_add_test(tc, t_fail_other_ops);
	tcase_add_test(tc, t_flip);
	tcase_add_test(tc, t_truncate);
	tcase_add_test(tc, t_delay);
	suite_add_tcase(s, tc);
	dp_backend_conformance_add(s, "mem", make_mem);
	dp_backend_conformance_add(s, "faulty(mem)", make_faulty_mem);
	dp_backend_conformance_add(s, "faulty(posix)", make_faulty_posix);
	return s;
}

DP_TEST_MAIN(harness_suite)
