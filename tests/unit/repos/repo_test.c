/*
 * The repository core through its API (dp/repo.h) on a posix repository in
 * a temp dir: round trips, dedup, authentication, passphrases, locks,
 * check and prune.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../harness/backends.h"
#include "../../harness/dp_test.h"
#include "../../../repos/format.h"
#include "dp/backend.h"
#include "dp/error.h"
#include "dp/repo.h"

static const char *PASS = "correct horse battery staple";
static char repo_path[PATH_MAX];

static void setup(void)
{
	dp_test_setup();
	snprintf(repo_path, sizeof(repo_path), "%s/repo", dp_test_dir);
}

static dp_repo *make_repo(uint32_t avg, uint32_t pack)
{
	dp_repo_init_opts o = {.chunk_avg = avg, .pack_size = pack};
	char id[DP_ID_HEX];
	ck_assert_msg(dp_repo_init(repo_path, NULL, &o, PASS, id) == 0, "%s", dp_error_last());
	dp_repo *r = NULL;
	ck_assert_msg(dp_repo_open(&r, repo_path, NULL, PASS) == 0, "%s", dp_error_last());
	ck_assert_str_eq(dp_repo_id(r), id);
	return r;
}

static uint8_t *make_data(size_t n, uint32_t seed)
{
	uint8_t *d = malloc(n + 1);
	uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
	for (size_t i = 0; i < n; i++) {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		/* half random, half runs: compressible but not trivially */
		d[i] = (i / 4096) % 2 ? (uint8_t)s : (uint8_t)('a' + (i / 512) % 7);
	}
	return d;
}

/* Pushes d in writes of step bytes; window: as dp_push_set_window, SIZE_MAX
 * for the default. */
static int push_stream(dp_repo *r, const char *name, const uint8_t *d, size_t n, size_t step,
                       size_t window, dp_push_result *res)
{
	dp_push *p = NULL;
	int rc = dp_push_begin(&p, r, name, "stream");
	if (rc)
		return rc;
	if (window != SIZE_MAX)
		dp_push_set_window(p, window);
	for (size_t off = 0; off < n; off += step) {
		size_t k = n - off < step ? n - off : step;
		if ((rc = dp_push_write(p, d + off, k))) {
			dp_push_abort(p);
			return rc;
		}
	}
	return dp_push_commit(p, res);
}

static int push_buf(dp_repo *r, const char *name, const uint8_t *d, size_t n, size_t step,
                    dp_push_result *res)
{
	return push_stream(r, name, d, n, step, SIZE_MAX, res);
}

static int pull_buf(dp_repo *r, const char *name, uint8_t **out, size_t *n)
{
	dp_pull *p = NULL;
	dp_buf b = {0};
	uint8_t tmp[100000];
	int rc = dp_pull_open(&p, r, name);
	if (rc)
		return rc;
	for (;;) {
		size_t got = 0;
		if ((rc = dp_pull_read(p, tmp, sizeof(tmp), &got)))
			break;
		if (!got)
			break;
		dp_buf_append(&b, tmp, got);
	}
	dp_pull_close(p);
	*out = b.data;
	*n = b.len;
	return rc;
}

START_TEST(round_trip_sizes)
{
	dp_repo *r = make_repo(4096, 64 * 1024);
	size_t sizes[] = {0,     1,     1023,  1024,   4095,
	                  4096,  4097,  16383, 16384,  16385,
	                  65535, 65536, 65537, 300000, 3 * 1024 * 1024 + 17};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		char name[32];
		snprintf(name, sizeof(name), "s%zu", sizes[i]);
		uint8_t *d = make_data(sizes[i], (uint32_t)i);
		dp_push_result res;
		/* odd write sizes so chunks straddle writes */
		ck_assert_msg(push_buf(r, name, d, sizes[i], 777, &res) == 0, "%s",
		              dp_error_last());
		ck_assert_uint_eq(res.size, sizes[i]);
		uint8_t *back = NULL;
		size_t n = 0;
		ck_assert_msg(pull_buf(r, name, &back, &n) == 0, "%s", dp_error_last());
		ck_assert_uint_eq(n, sizes[i]);
		ck_assert(n == 0 || memcmp(back, d, n) == 0);
		free(back);
		free(d);
	}
	dp_check_report rep;
	ck_assert_msg(dp_repo_check(r, true, &rep, NULL, NULL) == 0, "%s", dp_error_last());
	ck_assert_uint_eq(rep.errors, 0);
	ck_assert_uint_eq(rep.snapshots, sizeof(sizes) / sizeof(sizes[0]));
	dp_repo_free(r);
}
END_TEST

START_TEST(chunk_sizes_bounded)
{
	uint64_t gear[256];
	uint8_t seed[DP_KEY_LEN] = {1, 2, 3};
	dp_chunker_gear(gear, seed);
	dp_chunker c;
	dp_chunker_init(&c, gear, 16384, 65536, 262144);
	size_t n = 32 * 1024 * 1024, count = 0, cur = 0, min = SIZE_MAX, max = 0;
	uint8_t *d = make_data(n, 7);
	for (size_t i = 0; i < n; i++)
		d[i] ^= (uint8_t)(i * 131); /* make it less regular */
	size_t off = 0;
	while (off < n) {
		bool cut;
		size_t k = dp_chunker_next(&c, d + off, n - off < 5000 ? n - off : 5000, &cut);
		off += k;
		cur += k;
		if (cut) {
			count++;
			min = cur < min ? cur : min;
			max = cur > max ? cur : max;
			cur = 0;
		}
	}
	ck_assert_uint_ge(min, 16384);
	ck_assert_uint_le(max, 262144);
	double avg = (double)n / (double)count;
	ck_assert_msg(avg > 40000 && avg < 100000, "average chunk %.0f", avg);
	free(d);
}
END_TEST

/* The chunker parameters the config records: 16K/32K/128K when init is
 * given none, avg/4 and avg*4 around a given average; a push cuts within
 * them. */
static bool config_has(const char *want)
{
	char path[PATH_MAX + 16], buf[1024];
	snprintf(path, sizeof(path), "%s/config", repo_path);
	FILE *f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	return strstr(buf, want) != NULL;
}

START_TEST(default_chunking)
{
	dp_repo *r = make_repo(0, 0);
	ck_assert(config_has("\"chunker\":{\"min\":16384,\"avg\":32768,\"max\":131072}"));
	size_t n = 16 * 1024 * 1024;
	uint8_t *d = make_data(n, 61);
	for (size_t i = 0; i < n; i++)
		d[i] ^= (uint8_t)(i * 131);
	dp_push_result res;
	ck_assert_msg(push_buf(r, "a", d, n, 1 << 20, &res) == 0, "%s", dp_error_last());
	double avg = (double)n / (double)res.blobs;
	ck_assert_msg(avg > 24000 && avg < 80000, "average chunk %.0f", avg);
	dp_repo_free(r);
	dp_test_rmrf(repo_path);
	r = make_repo(8192, 0);
	ck_assert(config_has("\"chunker\":{\"min\":2048,\"avg\":8192,\"max\":32768}"));
	dp_repo_free(r);
	free(d);
}
END_TEST

static void problems(const char *msg, void *arg);

static int count_key(const char *key, uint64_t size, void *arg)
{
	(void)key;
	(void)size;
	(*(size_t *)arg)++;
	return 0;
}

/* A push longer than its window writes its chunks out as it goes (slices
 * so far, an index object per window) and still reads back exactly; a
 * chunk repeated within a window is stored once, one repeated a window
 * later again; the next push finds them all in the repository. */
START_TEST(long_push_spills)
{
	dp_repo *r = make_repo(0, 512 * 1024);
	size_t part = 6 * 1024 * 1024, n = 3 * part;
	uint8_t *d = malloc(n), *u = make_data(2 * part, 71);
	for (size_t i = 0; i < 2 * part; i++)
		u[i] ^= (uint8_t)(i * 131);
	memcpy(d, u, 2 * part);
	memcpy(d + 2 * part, u, part); /* the first third again, windows later */
	dp_push_result one, many, again;
	/* the same bytes without spilling, for comparison */
	ck_assert_msg(push_stream(r, "one", d, 2 * part, 300000, 0, &one) == 0, "%s",
	              dp_error_last());
	dp_repo_free(r);
	dp_test_rmrf(repo_path);
	r = make_repo(0, 512 * 1024);
	ck_assert_msg(push_stream(r, "many", d, n, 300000, 40, &many) == 0, "%s", dp_error_last());
	size_t indexes = 0;
	dp_backend *b = dp_repo_backend(r);
	b->list(b, "index/", count_key, &indexes);
	/* ~18 MiB in ~45 KiB chunks, 40 per window of jobs of ~23: ~9 spills */
	ck_assert_msg(indexes >= 6, "%zu index objects", indexes);
	ck_assert_uint_eq(many.size, n);
	/* the repeated third is stored again: it came back windows later */
	ck_assert_uint_eq(many.blobs_new, many.blobs);
	ck_assert_uint_gt(many.stored, one.stored + one.stored / 3);
	uint8_t *back;
	size_t bn;
	ck_assert(pull_buf(r, "many", &back, &bn) == 0);
	ck_assert(bn == n && memcmp(back, d, n) == 0);
	free(back);
	dp_buf msgs = {0};
	ck_assert_msg(dp_repo_check(r, true, NULL, problems, &msgs) == 0, "%.*s", (int)msgs.len,
	              (char *)msgs.data);
	dp_buf_free(&msgs);
	/* everything is in the repository now, windows or not */
	ck_assert_msg(push_stream(r, "again", d, n, 300000, 40, &again) == 0, "%s",
	              dp_error_last());
	ck_assert_uint_eq(again.blobs_new, 0);
	ck_assert(pull_buf(r, "again", &back, &bn) == 0);
	ck_assert(bn == n && memcmp(back, d, n) == 0);
	free(back);
	/* prune keeps what the two snapshots need, and they still read back */
	size_t removed = 0;
	ck_assert_int_eq(dp_snapshot_remove(r, "many", &removed), 0);
	dp_prune_report rep;
	ck_assert_msg(dp_repo_prune(r, 0.5, &rep) == 0, "%s", dp_error_last());
	ck_assert(pull_buf(r, "again", &back, &bn) == 0);
	ck_assert(bn == n && memcmp(back, d, n) == 0);
	free(back);
	ck_assert_int_eq(dp_repo_check(r, true, NULL, NULL, NULL), 0);
	free(u);
	free(d);
	dp_repo_free(r);
}
END_TEST

START_TEST(dedup_and_insertion)
{
	dp_repo *r = make_repo(16384, 1024 * 1024);
	size_t n = 8 * 1024 * 1024;
	uint8_t *d = make_data(n, 3);
	dp_push_result a, b, c;
	ck_assert(push_buf(r, "a", d, n, 65536, &a) == 0);
	ck_assert(push_buf(r, "a", d, n, 100000, &b) == 0);
	ck_assert_uint_eq(b.blobs_new, 0);
	ck_assert_uint_lt(b.stored, n / 100);
	/* insert bytes in the middle: only chunks around the edit are new */
	uint8_t *e = malloc(n + 10);
	memcpy(e, d, n / 2);
	memcpy(e + n / 2, "0123456789", 10);
	memcpy(e + n / 2 + 10, d + n / 2, n / 2);
	ck_assert(push_buf(r, "b", e, n + 10, 65536, &c) == 0);
	ck_assert_uint_le(c.blobs_new, 3);
	/* pull by name takes the newest */
	uint8_t *back;
	size_t bn;
	ck_assert(pull_buf(r, "b", &back, &bn) == 0);
	ck_assert_uint_eq(bn, n + 10);
	ck_assert(memcmp(back, e, bn) == 0);
	free(back);
	free(d);
	free(e);
	dp_repo_free(r);
}
END_TEST

START_TEST(wrong_passphrase_and_init_twice)
{
	dp_repo *r = make_repo(0, 0);
	dp_repo_free(r);
	ck_assert_int_eq(dp_repo_open(&r, repo_path, NULL, "wrong"), DP_EAUTH);
	ck_assert_ptr_nonnull(strstr(dp_error_last(), "wrong passphrase"));
	ck_assert_int_eq(dp_repo_init(repo_path, NULL, NULL, "other", NULL), DP_EEXIST);
	ck_assert_msg(dp_repo_open(&r, repo_path, NULL, PASS) == 0, "init twice changed the repo");
	dp_repo_free(r);
	char missing[PATH_MAX];
	snprintf(missing, sizeof(missing), "%s/nothing", dp_test_dir);
	ck_assert_int_eq(dp_repo_open(&r, missing, NULL, PASS), DP_ENOTFOUND);
}
END_TEST

static int find_pack(const char *key, uint64_t size, void *arg)
{
	(void)size;
	snprintf(arg, PATH_MAX, "%s", key);
	return 1;
}

static void problems(const char *msg, void *arg)
{
	dp_buf *b = arg;
	dp_buf_appendf(b, "%s\n", msg);
}

START_TEST(flipped_byte_fails_authentication)
{
	dp_repo *r = make_repo(16384, 4 * 1024 * 1024);
	size_t n = 2 * 1024 * 1024;
	uint8_t *d = make_data(n, 5);
	ck_assert(push_buf(r, "x", d, n, 65536, NULL) == 0);
	char key[PATH_MAX], path[PATH_MAX + 64];
	dp_backend *b = dp_repo_backend(r);
	b->list(b, "data/", find_pack, key);
	snprintf(path, sizeof(path), "%s/%s", repo_path, key);
	int fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	uint8_t byte;
	ck_assert_int_eq(pread(fd, &byte, 1, 1000), 1);
	byte ^= 0x01;
	ck_assert_int_eq(pwrite(fd, &byte, 1, 1000), 1);
	close(fd);

	uint8_t *back;
	size_t bn;
	ck_assert_int_eq(pull_buf(r, "x", &back, &bn), DP_ECORRUPT);
	ck_assert_msg(strstr(dp_error_last(), key) != NULL, "message does not name the pack: %s",
	              dp_error_last());
	free(back);
	dp_buf msgs = {0};
	ck_assert_int_eq(dp_repo_check(r, false, NULL, problems, &msgs), 0);
	ck_assert_int_eq(dp_repo_check(r, true, NULL, problems, &msgs), DP_ECORRUPT);
	ck_assert_msg(strstr((char *)msgs.data, key) != NULL, "%s", (char *)msgs.data);
	dp_buf_free(&msgs);
	free(d);
	dp_repo_free(r);
}
END_TEST

START_TEST(missing_index_is_reported)
{
	dp_repo *r = make_repo(16384, 1024 * 1024);
	uint8_t *d = make_data(1000000, 9);
	ck_assert(push_buf(r, "x", d, 1000000, 65536, NULL) == 0);
	char key[PATH_MAX], path[PATH_MAX + 64];
	dp_backend *b = dp_repo_backend(r);
	b->list(b, "index/", find_pack, key);
	snprintf(path, sizeof(path), "%s/%s", repo_path, key);
	ck_assert_int_eq(unlink(path), 0);
	dp_buf msgs = {0};
	ck_assert_int_eq(dp_repo_check(r, false, NULL, problems, &msgs), DP_ECORRUPT);
	ck_assert_ptr_nonnull(strstr((char *)msgs.data, "in no index"));
	uint8_t *back;
	size_t bn;
	ck_assert_int_eq(pull_buf(r, "x", &back, &bn), DP_ECORRUPT);
	free(back);
	/* prune must refuse rather than delete live data */
	ck_assert_int_eq(dp_repo_prune(r, 0.5, NULL), DP_ECORRUPT);
	dp_buf_free(&msgs);
	free(d);
	dp_repo_free(r);
}
END_TEST

START_TEST(prune_removes_and_repacks)
{
	dp_repo *r = make_repo(16384, 512 * 1024);
	size_t n = 4 * 1024 * 1024;
	uint8_t *a = make_data(n, 11), *b = make_data(n, 12);
	ck_assert(push_buf(r, "a", a, n, 65536, NULL) == 0);
	ck_assert(push_buf(r, "b", b, n, 65536, NULL) == 0);
	uint64_t before = dp_test_du(repo_path);
	size_t removed = 0;
	ck_assert_int_eq(dp_snapshot_remove(r, "a", &removed), 0);
	ck_assert_uint_eq(removed, 1);
	dp_prune_report rep;
	ck_assert_msg(dp_repo_prune(r, 0.5, &rep) == 0, "%s", dp_error_last());
	ck_assert_uint_gt(rep.packs_removed, 0);
	uint64_t after = dp_test_du(repo_path);
	ck_assert_uint_lt(after, before * 3 / 4);
	uint8_t *back;
	size_t bn;
	ck_assert(pull_buf(r, "b", &back, &bn) == 0);
	ck_assert(bn == n && memcmp(back, b, n) == 0);
	free(back);
	ck_assert_int_eq(dp_repo_check(r, true, NULL, NULL, NULL), 0);
	/* a second prune has nothing to do */
	ck_assert_int_eq(dp_repo_prune(r, 0.5, &rep), 0);
	ck_assert_uint_eq(rep.packs_removed + rep.packs_repacked, 0);
	free(a);
	free(b);
	dp_repo_free(r);
}
END_TEST

START_TEST(locks_conflict)
{
	dp_repo *r = make_repo(0, 0);
	dp_push *p = NULL;
	ck_assert(dp_push_begin(&p, r, "held", "stream") == 0);
	ck_assert_int_eq(dp_repo_prune(r, 0.5, NULL), DP_ELOCKED);
	ck_assert_ptr_nonnull(strstr(dp_error_last(), "locked"));
	dp_push_abort(p);
	ck_assert_int_eq(dp_repo_prune(r, 0.5, NULL), 0);
	dp_repo_free(r);
}
END_TEST

START_TEST(bad_names)
{
	dp_repo *r = make_repo(0, 0);
	dp_push *p = NULL;
	const char *bad[] = {"", "/abs", "a/../b", "..", "../x", "a\nb"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_int_eq(dp_push_begin(&p, r, bad[i], "stream"), DP_EUSAGE);
	ck_assert_int_eq(dp_push_begin(&p, r, "ok", "weird"), DP_EUSAGE);
	dp_repo_free(r);
}
END_TEST

START_TEST(small_files)
{
	dp_repo *r = make_repo(0, 0);
	const char *json = "{\"kind\":\"Backup\"}";
	ck_assert_int_eq(dp_repo_put_file(r, "catalog/b1.json", json, strlen(json)), 0);
	dp_buf out = {0};
	ck_assert_int_eq(dp_repo_get_file(r, "catalog/b1.json", &out), 0);
	ck_assert_str_eq((char *)out.data, json);
	ck_assert_int_eq(dp_repo_put_file(r, "index/x", "a", 1), DP_EUSAGE);
	/* the file is bound to its name: a copy under another name fails */
	char src[PATH_MAX + 64], dst[PATH_MAX + 64], cmd[3 * PATH_MAX];
	snprintf(src, sizeof(src), "%s/catalog/b1.json", repo_path);
	snprintf(dst, sizeof(dst), "%s/catalog/b2.json", repo_path);
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", src, dst);
	ck_assert_int_eq(system(cmd), 0);
	dp_buf_reset(&out);
	ck_assert_int_eq(dp_repo_get_file(r, "catalog/b2.json", &out), DP_ECORRUPT);
	dp_buf_free(&out);
	dp_repo_free(r);
}
END_TEST

START_TEST(pack_cut_in_header_is_reported)
{
	dp_repo *r = make_repo(16384, 4 * 1024 * 1024);
	uint8_t *d = make_data(1000000, 21);
	ck_assert(push_buf(r, "x", d, 1000000, 65536, NULL) == 0);
	char key[PATH_MAX], path[PATH_MAX + 64];
	dp_backend *b = dp_repo_backend(r);
	b->list(b, "data/", find_pack, key);
	snprintf(path, sizeof(path), "%s/%s", repo_path, key);
	struct stat st;
	ck_assert_int_eq(stat(path, &st), 0);
	/* cut 20 bytes: inside the sealed header, after every blob */
	ck_assert_int_eq(truncate(path, st.st_size - 20), 0);
	dp_buf msgs = {0};
	dp_check_report rep;
	ck_assert_int_eq(dp_repo_check(r, false, &rep, problems, &msgs), DP_ECORRUPT);
	ck_assert_msg(strstr((char *)msgs.data, key) != NULL, "%s", (char *)msgs.data);
	dp_buf_free(&msgs);
	free(d);
	dp_repo_free(r);
}
END_TEST

START_TEST(newest_within_one_second)
{
	dp_repo *r = make_repo(0, 0);
	for (int i = 0; i < 5; i++) {
		char body[16];
		snprintf(body, sizeof(body), "version %d", i);
		ck_assert(push_buf(r, "same", (const uint8_t *)body, strlen(body), 100, NULL) == 0);
		uint8_t *back;
		size_t n;
		ck_assert(pull_buf(r, "same", &back, &n) == 0);
		ck_assert_msg(n == strlen(body) && memcmp(back, body, n) == 0,
		              "pulled an older one");
		free(back);
	}
	dp_check_report rep;
	ck_assert_int_eq(dp_repo_check(r, false, &rep, NULL, NULL), 0);
	ck_assert_uint_eq(rep.snapshots, 5);
	ck_assert_uint_gt(rep.blobs, 0);
	dp_repo_free(r);
}
END_TEST

/* Chunks of one frame shared by snapshots, a prune that leaves frames
 * partly used (kept whole, every chunk still indexed) and removes a frame no
 * snapshot names, and an index rebuilt from such packs. */
START_TEST(frames_shared_then_pruned_and_rebuilt)
{
	dp_repo *r = make_repo(4096, 256 * 1024);
	size_t n = 6 * 1024 * 1024, cn = 2 * 1024 * 1024;
	uint8_t *a = make_data(n, 41), *b = malloc(n), *c = make_data(cn, 43);
	memcpy(b, a, n);
	for (size_t off = 8192; off + 8192 <= n; off += 97 * 1024)
		memset(b + off, (int)(off >> 10), 8192); /* scattered pages */
	dp_push_result ra, rb, rc2, ra2;
	ck_assert(push_buf(r, "a", a, n, 65536, &ra) == 0);
	ck_assert(push_buf(r, "b", b, n, 65536, &rb) == 0);
	ck_assert(push_buf(r, "c", c, cn, 65536, &rc2) == 0);
	/* b stores only what changed: far less than a */
	ck_assert_uint_lt(rb.stored * 5, ra.stored);
	ck_assert_uint_gt(rb.blobs_new, 0);
	size_t removed = 0;
	ck_assert_int_eq(dp_snapshot_remove(r, "a", &removed), 0);
	ck_assert_int_eq(dp_snapshot_remove(r, "c", &removed), 0);
	dp_prune_report rep;
	ck_assert_msg(dp_repo_prune(r, 0.9, &rep) == 0, "%s", dp_error_last());
	/* c's frames went, a's stayed (b uses a part of each) */
	ck_assert_uint_eq(rep.blobs_removed, rc2.blobs_new);
	ck_assert(push_buf(r, "a", a, n, 65536, &ra2) == 0);
	ck_assert_uint_eq(ra2.blobs_new, 0);
	uint8_t *back;
	size_t bn;
	ck_assert_msg(pull_buf(r, "b", &back, &bn) == 0, "%s", dp_error_last());
	ck_assert(bn == n && memcmp(back, b, n) == 0);
	free(back);
	ck_assert_msg(dp_repo_check(r, true, NULL, NULL, NULL) == 0, "%s", dp_error_last());
	char cmd[PATH_MAX + 64];
	snprintf(cmd, sizeof(cmd), "rm -f %s/index/*", repo_path);
	ck_assert_int_eq(system(cmd), 0);
	dp_rebuild_report rr;
	ck_assert_msg(dp_repo_rebuild_index(r, &rr, NULL, NULL) == 0, "%s", dp_error_last());
	ck_assert_uint_eq(rr.packs_skipped, 0);
	/* the rebuilt index also names the dead chunks still inside live
	 * frames; b reads back the same */
	ck_assert_msg(pull_buf(r, "b", &back, &bn) == 0, "%s", dp_error_last());
	ck_assert(bn == n && memcmp(back, b, n) == 0);
	free(back);
	ck_assert_msg(dp_repo_check(r, true, NULL, NULL, NULL) == 0, "%s", dp_error_last());
	free(a);
	free(b);
	free(c);
	dp_repo_free(r);
}
END_TEST

/* A snapshot is a list of slices: a first push is about one slice per
 * frame; a push of the same bytes with a few pages changed names the old
 * frames in a slice per unchanged stretch. */
START_TEST(snapshot_slices)
{
	dp_repo *r = make_repo(0, 0); /* 32 KiB chunks, ~1 MiB frames */
	size_t n = 8 * 1024 * 1024;
	uint8_t *a = make_data(n, 51), *b = malloc(n);
	memcpy(b, a, n);
	for (size_t off = 1000000; off + 100 <= n; off += 2000000)
		memset(b + off, 'x', 100); /* 4 changes */
	dp_push_result ra, rb;
	ck_assert(push_buf(r, "a", a, n, 300000, &ra) == 0);
	ck_assert(push_buf(r, "b", b, n, 300000, &rb) == 0);
	dp_snapshot sa, sb;
	ck_assert_msg(dp_snapshot_load(r, ra.id, &sa) == 0, "%s", dp_error_last());
	ck_assert_msg(dp_snapshot_load(r, rb.id, &sb) == 0, "%s", dp_error_last());
	ck_assert_uint_eq(sa.info.blobs, ra.blobs);
	ck_assert_uint_eq(sa.info.size, n);
	/* 8 MiB in ~1 MiB frames, each one slice */
	ck_assert_msg(sa.n >= 7 && sa.n <= 9, "%zu slices", sa.n);
	ck_assert_uint_lt(sa.n * 10, ra.blobs);
	/* each change: a new frame's slice, the old frame cut around it */
	ck_assert_msg(sb.n > sa.n && sb.n <= sa.n + 4 * 3, "%zu slices", sb.n);
	uint64_t total = 0;
	for (size_t i = 0; i < sb.n; i++)
		total += sb.length[i];
	ck_assert_uint_eq(total, n);
	dp_snapshot_free(&sa);
	dp_snapshot_free(&sb);
	uint8_t *back;
	size_t bn;
	ck_assert_msg(pull_buf(r, "b", &back, &bn) == 0, "%s", dp_error_last());
	ck_assert(bn == n && memcmp(back, b, n) == 0);
	free(back);
	free(a);
	free(b);
	dp_repo_free(r);
}
END_TEST

/* Two pushes at once store the same chunks in frames of their own; the
 * index places each chunk in one of them. Whichever snapshot is removed,
 * prune keeps the other's frames (with no chunk entries if the index places
 * all their chunks in the removed one's) and it reads back. */
START_TEST(concurrent_pushes_share_chunks_then_prune)
{
	for (int drop = 0; drop < 2; drop++) {
		char cmd[PATH_MAX + 64];
		snprintf(cmd, sizeof(cmd), "rm -rf %s", repo_path);
		ck_assert_int_eq(system(cmd), 0);
		dp_repo *r = make_repo(4096, 256 * 1024);
		size_t n = 3 * 1024 * 1024, pre = 300 * 1024;
		uint8_t *d = make_data(n, 61), *pd = make_data(pre, 62);
		dp_push *px = NULL, *py = NULL;
		ck_assert(dp_push_begin(&px, r, "x", "stream") == 0);
		ck_assert(dp_push_begin(&py, r, "y", "stream") == 0);
		/* y: another prefix, so its frames hold other runs of chunks */
		ck_assert(dp_push_write(py, pd, pre) == 0);
		ck_assert(dp_push_write(px, d, n) == 0);
		ck_assert(dp_push_write(py, d, n) == 0);
		dp_push_result rx, ry;
		ck_assert_msg(dp_push_commit(px, &rx) == 0, "%s", dp_error_last());
		ck_assert_msg(dp_push_commit(py, &ry) == 0, "%s", dp_error_last());
		const char *gone = drop ? "x" : "y", *kept = drop ? "y" : "x";
		size_t removed = 0;
		ck_assert_int_eq(dp_snapshot_remove(r, gone, &removed), 0);
		dp_prune_report rep;
		ck_assert_msg(dp_repo_prune(r, 0.99, &rep) == 0, "%s", dp_error_last());
		ck_assert_msg(dp_repo_check(r, true, NULL, NULL, NULL) == 0, "%s", dp_error_last());
		uint8_t *back;
		size_t bn;
		ck_assert_msg(pull_buf(r, kept, &back, &bn) == 0, "%s", dp_error_last());
		if (drop) {
			ck_assert(bn == pre + n && memcmp(back, pd, pre) == 0 &&
			          memcmp(back + pre, d, n) == 0);
		} else {
			ck_assert(bn == n && memcmp(back, d, n) == 0);
		}
		free(back);
		/* and once more after a second prune (the index written by the
		 * first one is read back) */
		ck_assert_msg(dp_repo_prune(r, 0.99, &rep) == 0, "%s", dp_error_last());
		ck_assert_msg(pull_buf(r, kept, &back, &bn) == 0, "%s", dp_error_last());
		ck_assert(bn == (drop ? pre + n : n));
		free(back);
		free(d);
		free(pd);
		dp_repo_free(r);
	}
}
END_TEST

/* A push may cut smaller chunks than the config's (within its maximum). */
START_TEST(chunk_average_per_push)
{
	dp_repo *r = make_repo(16384, 1024 * 1024);
	size_t n = 3 * 1024 * 1024;
	uint8_t *a = make_data(n, 51);
	ck_assert_int_eq(dp_repo_set_chunk_avg(r, 3000), DP_EUSAGE);
	ck_assert_int_eq(dp_repo_set_chunk_avg(r, 32768), DP_EUSAGE); /* max 128K > 64K */
	ck_assert_ptr_nonnull(strstr(dp_error_last(), "at most 16384"));
	dp_push_result r16, r4;
	ck_assert(push_buf(r, "x16", a, n, 65536, &r16) == 0);
	ck_assert_int_eq(dp_repo_set_chunk_avg(r, 4096), 0);
	ck_assert(push_buf(r, "x4", a, n, 65536, &r4) == 0);
	ck_assert_uint_gt(r4.blobs, r16.blobs * 2);
	uint8_t *back;
	size_t bn;
	ck_assert(pull_buf(r, "x4", &back, &bn) == 0);
	ck_assert(bn == n && memcmp(back, a, n) == 0);
	free(back);
	ck_assert_int_eq(dp_repo_set_chunk_avg(r, 0), 0);
	ck_assert_int_eq(dp_repo_check(r, true, NULL, NULL, NULL), 0);
	free(a);
	dp_repo_free(r);
}
END_TEST

static int push_blocks(dp_repo *r, const char *name, const uint8_t *d, size_t n, size_t head,
                       size_t body, dp_push_result *res)
{
	dp_push *p = NULL;
	int rc = dp_push_begin(&p, r, name, "stream");
	if (rc)
		return rc;
	if ((rc = dp_push_write(p, d, head)) || (rc = dp_push_cut(p, 8192)) ||
	    (rc = dp_push_write(p, d + head, body)) || (rc = dp_push_cut(p, 0)) ||
	    (rc = dp_push_write(p, d + head + body, n - head - body))) {
		dp_push_abort(p);
		return rc;
	}
	return dp_push_commit(p, res);
}

/* Fixed-size blocks aligned where the caller says: one changed page is one
 * new chunk. */
START_TEST(fixed_blocks_after_a_cut)
{
	dp_repo *r = make_repo(16384, 1024 * 1024);
	size_t n = 4 * 1024 * 1024 + 777, head = 1000, body = 3 * 1024 * 1024;
	uint8_t *a = make_data(n, 61);
	dp_push_result r1, r2;
	ck_assert_msg(push_blocks(r, "f", a, n, head, body, &r1) == 0, "%s", dp_error_last());
	ck_assert_uint_ge(r1.blobs, body / 8192);
	a[head + 5 * 8192 + 100] ^= 1;
	ck_assert_msg(push_blocks(r, "f", a, n, head, body, &r2) == 0, "%s", dp_error_last());
	ck_assert_uint_eq(r2.blobs_new, 1);
	uint8_t *back;
	size_t bn;
	ck_assert(pull_buf(r, "f", &back, &bn) == 0);
	ck_assert(bn == n && memcmp(back, a, n) == 0);
	free(back);
	dp_push *p = NULL;
	ck_assert_int_eq(dp_push_begin(&p, r, "g", "stream"), 0);
	ck_assert_int_eq(dp_push_cut(p, 1u << 20), DP_EUSAGE); /* beyond the chunk max */
	dp_push_abort(p);
	free(a);
	dp_repo_free(r);
}
END_TEST

/* Pushes d as a reader would get it: pieces of pseudo-random odd sizes in
 * [lo, hi], through dp_push_write or (zero_copy) read into the push's own
 * buffer with dp_push_buffer/dp_push_filled, a piece then ending where the
 * buffer does. With block, [a, b) of the stream is cut in fixed blocks. */
static int push_reads(dp_repo *r, const char *name, const uint8_t *d, size_t n, bool zero_copy,
                      size_t lo, size_t hi, uint32_t block, size_t a, size_t b, dp_push_result *res)
{
	dp_push *p = NULL;
	uint64_t s = 88172645463325252ull;
	int rc = dp_push_begin(&p, r, name, "stream");
	for (size_t off = 0; !rc && off < n;) {
		if (block && off == a)
			rc = dp_push_cut(p, block);
		else if (block && off == b)
			rc = dp_push_cut(p, 0);
		if (rc)
			break;
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		size_t k = (lo + s % (hi - lo + 1)) | 1;
		size_t stop = block && off < a ? a : block && off < b ? b : n;
		if (k > stop - off)
			k = stop - off;
		if (zero_copy) {
			uint8_t *buf;
			size_t room;
			if ((rc = dp_push_buffer(p, &buf, &room)))
				break;
			ck_assert_uint_gt(room, 0);
			k = k < room ? k : room;
			memcpy(buf, d + off, k);
			rc = dp_push_filled(p, k);
		} else {
			rc = dp_push_write(p, d + off, k);
		}
		off += k;
	}
	if (rc) {
		dp_push_abort(p);
		return rc;
	}
	return dp_push_commit(p, res);
}

static int by_inner(const void *x, const void *y)
{
	const dp_blob_loc *a = x, *b = y;
	return a->inner < b->inner ? -1 : a->inner > b->inner;
}

/* The snapshot's chunk ids, in order (its slices expanded through the
 * index); also checks that its chunks add up to size. */
static void chunk_list(dp_repo *r, const char *id, dp_buf *out, uint64_t size)
{
	dp_index ix = {0};
	dp_snapshot sn;
	ck_assert_msg(dp_index_load(r, &ix, NULL) == 0, "%s", dp_error_last());
	ck_assert_int_eq(dp_index_map_frames(&ix), 0);
	ck_assert_msg(dp_snapshot_load(r, id, &sn) == 0, "%s", dp_error_last());
	dp_blob_loc *v = malloc((ix.count + 1) * sizeof(*v));
	uint64_t total = 0;
	for (size_t i = 0; i < sn.n; i++) {
		uint32_t f = dp_index_find_frame(&ix, sn.frame_ids[i]);
		ck_assert_uint_ne(f, DP_INDEX_EMPTY);
		size_t m = 0;
		for (size_t k = 0; k < ix.cap; k++) {
			const dp_blob_loc *l = &ix.slots[k];
			if (l->frame == f && l->inner >= sn.start[i] &&
			    l->inner < sn.start[i] + sn.length[i])
				v[m++] = *l;
		}
		qsort(v, m, sizeof(*v), by_inner);
		uint32_t at = sn.start[i];
		for (size_t k = 0; k < m; k++) {
			ck_assert_uint_eq(v[k].inner, at);
			at += v[k].raw_length;
			dp_buf_append(out, v[k].id, DP_HASH_LEN);
		}
		ck_assert_uint_eq(at, sn.start[i] + sn.length[i]);
		total += sn.length[i];
	}
	ck_assert_uint_eq(total, size);
	free(v);
	dp_snapshot_free(&sn);
	dp_index_free(&ix);
}

/* Reading into the push's buffer cuts the same chunks and fills the same
 * frames as dp_push_write: two copies of one repository (same keys) get
 * the same stream each way, with and without fixed blocks, in big and in
 * small reads. */
START_TEST(zero_copy_matches_write)
{
	size_t n = 11 * 1024 * 1024 + 333;
	uint8_t *d = make_data(n, 71);
	/* runs of zeros, some longer than the chunk maximum */
	for (size_t off = 700000; off + 300000 < n; off += 2300000)
		memset(d + off, 0, (off / 700000) % 2 ? 300000 : 5000);
	dp_repo *ra = make_repo(0, 0), *rb;
	char cmd[2 * PATH_MAX + 64], copy[PATH_MAX + 8];
	snprintf(copy, sizeof(copy), "%s2", repo_path);
	snprintf(cmd, sizeof(cmd), "cp -a %s %s", repo_path, copy);
	ck_assert_int_eq(system(cmd), 0);
	ck_assert_msg(dp_repo_open(&rb, copy, NULL, PASS) == 0, "%s", dp_error_last());
	/* One worker: which frame gets a chunk that two jobs both hold (the
	 * zeros) is then decided by stream order, not by a race. */
	dp_repo_set_threads(ra, 1);
	dp_repo_set_threads(rb, 1);
	const struct {
		size_t lo, hi;
		uint32_t block;
	} cases[] = {
	    {1u << 20, 3u << 20, 0},
	    {1u << 20, 3u << 20, 8192},
	    {1, 100000, 0},
	    {1, 100000, 8192},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t a = 3 * 1024 * 1024 + 123, b = 8 * 1024 * 1024 + 4567;
		char name[16];
		snprintf(name, sizeof(name), "z%zu", i);
		dp_push_result w, z;
		ck_assert_msg(push_reads(ra, name, d, n, false, cases[i].lo, cases[i].hi,
		                         cases[i].block, a, b, &w) == 0,
		              "%s", dp_error_last());
		ck_assert_msg(push_reads(rb, name, d, n, true, cases[i].lo, cases[i].hi,
		                         cases[i].block, a, b, &z) == 0,
		              "%s", dp_error_last());
		ck_assert_uint_eq(w.size, n);
		ck_assert_uint_eq(z.size, n);
		ck_assert_uint_eq(w.blobs, z.blobs);
		ck_assert_uint_eq(w.blobs_new, z.blobs_new);
		ck_assert_uint_lt(w.blobs_new, w.blobs); /* the zeros deduplicate */
		dp_buf cw = {0}, cz = {0};
		chunk_list(ra, w.id, &cw, n);
		chunk_list(rb, z.id, &cz, n);
		ck_assert_uint_eq(cw.len, w.blobs * DP_HASH_LEN);
		ck_assert(cw.len == cz.len && memcmp(cw.data, cz.data, cw.len) == 0);
		dp_buf_free(&cw);
		dp_buf_free(&cz);
		/* the same frames too: jobs ended at the same chunks */
		dp_snapshot sw, sz;
		ck_assert(dp_snapshot_load(ra, w.id, &sw) == 0);
		ck_assert(dp_snapshot_load(rb, z.id, &sz) == 0);
		ck_assert_uint_eq(sw.n, sz.n);
		for (size_t k = 0; k < sw.n; k++)
			ck_assert(memcmp(sw.frame_ids[k], sz.frame_ids[k], DP_HASH_LEN) == 0 &&
			          sw.start[k] == sz.start[k] && sw.length[k] == sz.length[k]);
		dp_snapshot_free(&sw);
		dp_snapshot_free(&sz);
		uint8_t *back;
		size_t bn;
		ck_assert_msg(pull_buf(rb, name, &back, &bn) == 0, "%s", dp_error_last());
		ck_assert(bn == n && memcmp(back, d, n) == 0);
		free(back);
		ck_assert_msg(pull_buf(ra, name, &back, &bn) == 0, "%s", dp_error_last());
		ck_assert(bn == n && memcmp(back, d, n) == 0);
		free(back);
	}
	free(d);
	dp_repo_free(ra);
	dp_repo_free(rb);
}
END_TEST

/* The chunker's cut points are those of its definition, one byte at a
 * time, however the stream is fed. */
START_TEST(chunker_matches_definition)
{
	uint64_t gear[256];
	uint8_t seed[DP_KEY_LEN] = {7, 1, 2};
	dp_chunker_gear(gear, seed);
	size_t n = 8 * 1024 * 1024;
	uint8_t *d = make_data(n, 71);
	memset(d + n / 2, 0, 300000); /* a long run: cuts at the maximum */
	size_t feeds[] = {1, 3, 4097, 65536, 1000003};
	for (uint32_t avg = 4096; avg <= 65536; avg *= 4) {
		dp_chunker ref;
		dp_chunker_init(&ref, gear, avg / 4, avg, avg * 4);
		/* the definition: cut where the fingerprint's top bits are zero
		 * (harder before the average), never before min, always at max */
		size_t *want = malloc(n / (avg / 4) * sizeof(size_t) + 16), nw = 0;
		uint64_t fp = 0;
		size_t len = 0;
		for (size_t i = 0; i < n; i++) {
			len++;
			if (len <= ref.min) {
				fp = 0;
				continue;
			}
			fp = (fp << 1) + gear[d[i]];
			uint64_t mask = len <= ref.avg ? ref.mask_s : ref.mask_l;
			if (!(fp & mask) || len >= ref.max) {
				want[nw++] = i + 1;
				fp = 0;
				len = 0;
			}
		}
		for (size_t f = 0; f < sizeof(feeds) / sizeof(feeds[0]); f++) {
			dp_chunker c;
			dp_chunker_init(&c, gear, avg / 4, avg, avg * 4);
			size_t at = 0, got = 0;
			for (size_t off = 0; off < n; off += feeds[f]) {
				size_t end = off + feeds[f] < n ? off + feeds[f] : n;
				while (at < end) {
					bool cut;
					at += dp_chunker_next(&c, d + at, end - at, &cut);
					if (cut) {
						ck_assert_msg(got < nw && want[got] == at,
						              "avg %u feed %zu: cut %zu at %zu",
						              avg, feeds[f], got, at);
						got++;
					}
				}
			}
			ck_assert_uint_eq(got, nw);
		}
		free(want);
	}
	free(d);
}
END_TEST

START_TEST(rebuild_index_recovers_lost_indexes)
{
	dp_repo *r = make_repo(16384, 256 * 1024);
	size_t n = 3 * 1024 * 1024;
	uint8_t *a = make_data(n, 31), *b = make_data(n, 32);
	ck_assert(push_buf(r, "a", a, n, 65536, NULL) == 0);
	ck_assert(push_buf(r, "b", b, n, 65536, NULL) == 0);
	char cmd[PATH_MAX + 64];
	snprintf(cmd, sizeof(cmd), "rm -f %s/index/*", repo_path);
	ck_assert_int_eq(system(cmd), 0);
	ck_assert_int_eq(dp_repo_check(r, false, NULL, NULL, NULL), DP_ECORRUPT);
	dp_rebuild_report rep;
	ck_assert_msg(dp_repo_rebuild_index(r, &rep, NULL, NULL) == 0, "%s", dp_error_last());
	ck_assert_uint_gt(rep.packs, 2);
	ck_assert_uint_eq(rep.packs_skipped, 0);
	ck_assert_int_eq(dp_repo_check(r, true, NULL, NULL, NULL), 0);
	uint8_t *back;
	size_t bn;
	ck_assert(pull_buf(r, "a", &back, &bn) == 0);
	ck_assert(bn == n && memcmp(back, a, n) == 0);
	free(back);
	/* a damaged pack header is reported and skipped, the rest indexed */
	char key[PATH_MAX], path[PATH_MAX + 64];
	dp_backend *be = dp_repo_backend(r);
	be->list(be, "data/", find_pack, key);
	snprintf(path, sizeof(path), "%s/%s", repo_path, key);
	struct stat st;
	ck_assert_int_eq(stat(path, &st), 0);
	int fd = open(path, O_RDWR);
	uint8_t byte;
	ck_assert_int_eq(pread(fd, &byte, 1, st.st_size - 10), 1);
	byte ^= 0x80;
	ck_assert_int_eq(pwrite(fd, &byte, 1, st.st_size - 10), 1);
	close(fd);
	dp_buf msgs = {0};
	ck_assert_int_eq(dp_repo_rebuild_index(r, &rep, problems, &msgs), 0);
	ck_assert_uint_eq(rep.packs_skipped, 1);
	ck_assert_msg(strstr((char *)msgs.data, key) != NULL, "%s", (char *)msgs.data);
	dp_buf_free(&msgs);
	free(a);
	free(b);
	dp_repo_free(r);
}
END_TEST

START_TEST(lost_lock_commits_nothing)
{
	dp_repo *r = make_repo(0, 0);
	uint8_t *d = make_data(500000, 41);
	dp_push *p = NULL;
	ck_assert(dp_push_begin(&p, r, "x", "stream") == 0);
	ck_assert(dp_push_write(p, d, 500000) == 0);
	/* another process judged us dead and removed our lock */
	char cmd[PATH_MAX + 64];
	snprintf(cmd, sizeof(cmd), "rm -f %s/locks/*", repo_path);
	ck_assert_int_eq(system(cmd), 0);
	ck_assert_int_eq(dp_push_commit(p, NULL), DP_ELOCKED);
	ck_assert_ptr_nonnull(strstr(dp_error_last(), "lost its lock"));
	dp_snapshot_info *v;
	size_t n;
	ck_assert_int_eq(dp_snapshot_list(r, &v, &n), 0);
	ck_assert_uint_eq(n, 0);
	dp_snapshot_info_free(v, n);
	free(d);
	dp_repo_free(r);
}
END_TEST

START_TEST(damaged_snapshot_blocks_nothing_else)
{
	dp_repo *r = make_repo(0, 0);
	uint8_t *d = make_data(300000, 43);
	dp_push_result a, b;
	ck_assert(push_buf(r, "a", d, 300000, 65536, &a) == 0);
	ck_assert(push_buf(r, "b", d, 1000, 65536, &b) == 0);
	char path[PATH_MAX + 128];
	snprintf(path, sizeof(path), "%s/snapshots/%s", repo_path, b.id);
	int fd = open(path, O_RDWR);
	uint8_t byte = 0;
	ck_assert_int_eq(pwrite(fd, &byte, 1, 30), 1);
	close(fd);
	uint8_t *back;
	size_t n;
	ck_assert_msg(pull_buf(r, "a", &back, &n) == 0, "%s", dp_error_last());
	ck_assert(n == 300000 && memcmp(back, d, n) == 0);
	free(back);
	ck_assert_msg(pull_buf(r, a.id, &back, &n) == 0, "%s", dp_error_last());
	free(back);
	/* prune must not guess what the damaged one used */
	ck_assert_int_eq(dp_repo_prune(r, 0.5, NULL), DP_ECORRUPT);
	size_t removed = 0;
	ck_assert_int_eq(dp_snapshot_remove(r, b.id, &removed), 0);
	ck_assert_uint_eq(removed, 1);
	ck_assert_int_eq(dp_repo_prune(r, 0.5, NULL), 0);
	ck_assert_int_eq(dp_repo_check(r, true, NULL, NULL, NULL), 0);
	free(d);
	dp_repo_free(r);
}
END_TEST

START_TEST(unfinished_init_is_refused)
{
	dp_repo *r = make_repo(0, 0);
	dp_repo_free(r);
	char path[PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/config", repo_path);
	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(dp_repo_init(repo_path, NULL, NULL, PASS, NULL), DP_EEXIST);
	ck_assert_ptr_nonnull(strstr(dp_error_last(), "unfinished"));
}
END_TEST

START_TEST(negative_zstd_level)
{
	dp_repo_init_opts o = {.zstd_level = -3};
	ck_assert_int_eq(dp_repo_init(repo_path, NULL, &o, PASS, NULL), 0);
	dp_repo *r = NULL;
	ck_assert_msg(dp_repo_open(&r, repo_path, NULL, PASS) == 0, "%s", dp_error_last());
	uint8_t *d = make_data(200000, 45);
	ck_assert(push_buf(r, "x", d, 200000, 4096, NULL) == 0);
	uint8_t *back;
	size_t n;
	ck_assert(pull_buf(r, "x", &back, &n) == 0);
	ck_assert(n == 200000 && memcmp(back, d, n) == 0);
	free(back);
	free(d);
	dp_repo_free(r);
	o.zstd_level = 25;
	ck_assert_int_eq(dp_repo_init(dp_test_dir, NULL, &o, PASS, NULL), DP_EUSAGE);
}
END_TEST

START_TEST(prune_removes_temp_files_of_killed_puts)
{
	dp_repo *r = make_repo(0, 0);
	uint8_t *d = make_data(100000, 47);
	ck_assert(push_buf(r, "x", d, 100000, 65536, NULL) == 0);
	/* what a put killed between write and rename leaves */
	char dir[PATH_MAX + 32], tmp[PATH_MAX + 64];
	snprintf(dir, sizeof(dir), "%s/data/ab", repo_path);
	mkdir(dir, 0700);
	snprintf(tmp, sizeof(tmp), "%s/.tmp-0123456789abcdef-999-1", dir);
	dp_test_write_data(tmp, 5000, 1, false);
	ck_assert_int_eq(dp_repo_prune(r, 0.5, NULL), 0);
	ck_assert_int_ne(access(tmp, F_OK), 0);
	uint8_t *back;
	size_t n;
	ck_assert(pull_buf(r, "x", &back, &n) == 0);
	ck_assert(n == 100000 && memcmp(back, d, n) == 0);
	free(back);
	free(d);
	dp_repo_free(r);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("repos/repo");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, dp_test_teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, round_trip_sizes);
	tcase_add_test(tc, chunk_sizes_bounded);
	tcase_add_test(tc, default_chunking);
	tcase_add_test(tc, long_push_spills);
	tcase_add_test(tc, dedup_and_insertion);
	tcase_add_test(tc, wrong_passphrase_and_init_twice);
	tcase_add_test(tc, flipped_byte_fails_authentication);
	tcase_add_test(tc, missing_index_is_reported);
	tcase_add_test(tc, prune_removes_and_repacks);
	tcase_add_test(tc, locks_conflict);
	tcase_add_test(tc, bad_names);
	tcase_add_test(tc, small_files);
	tcase_add_test(tc, pack_cut_in_header_is_reported);
	tcase_add_test(tc, newest_within_one_second);
	tcase_add_test(tc, rebuild_index_recovers_lost_indexes);
	tcase_add_test(tc, frames_shared_then_pruned_and_rebuilt);
	tcase_add_test(tc, chunk_average_per_push);
	tcase_add_test(tc, fixed_blocks_after_a_cut);
	tcase_add_test(tc, chunker_matches_definition);
	tcase_add_test(tc, lost_lock_commits_nothing);
	tcase_add_test(tc, damaged_snapshot_blocks_nothing_else);
	tcase_add_test(tc, unfinished_init_is_refused);
	tcase_add_test(tc, negative_zstd_level);
	tcase_add_test(tc, prune_removes_temp_files_of_killed_puts);
	tcase_add_test(tc, snapshot_slices);
	tcase_add_test(tc, concurrent_pushes_share_chunks_then_prune);
	tcase_add_test(tc, zero_copy_matches_write);
	suite_add_tcase(s, tc);
	return s;
}

DP_TEST_MAIN(suite)
