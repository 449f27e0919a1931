/*
 * dp-worker push/pull/ls/stat/rm and dp repo init/check/prune, end to end:
 * the built binaries ($BIN) run against a posix repository in each test's
 * temp dir. Round trips are compared byte for byte; trees by lstat of every
 * entry; "nothing written" by a listing (path, size, mtime) of the whole
 * repository before and after. Timing numbers are printed on stderr for
 * the report, never asserted.
 */
#include "../harness/dp_test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define PASS "correct horse battery staple"
#define MiB (1024ull * 1024)

static char repo[PATH_MAX];

static void setup(void)
{
	dp_test_setup();
	setenv("DP_REPO_PASSPHRASE", PASS, 1);
	unsetenv("DP_REPO");
	snprintf(repo, sizeof(repo), "%s/repo", dp_test_dir);
}

static const char *W(void)
{
	return dp_test_bin("dp-worker");
}

static const char *DP(void)
{
	return dp_test_bin("dp");
}

/* A path under the test dir. Each test runs in its own short-lived
 * process, so the strings are simply never freed. */
static const char *P(const char *name)
{
	char *b = malloc(PATH_MAX);
	ck_assert_ptr_nonnull(b);
	snprintf(b, PATH_MAX, "%s/%s", dp_test_dir, name);
	return b;
}

static int run(dp_test_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int run(dp_test_result *r, const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return dp_test_run(r, "%s", cmd);
}

/* Runs and checks the exit status, showing the output when it differs. */
#define RUN_EXPECT(want, ...)                                                                      \
	do {                                                                                       \
		dp_test_result r_;                                                                 \
		int st_ = run(&r_, __VA_ARGS__);                                                   \
		ck_assert_msg(st_ == (want), "exit %d (want %d)\nstdout: %s\nstderr: %s", st_,     \
		              (want), r_.out, r_.err);                                             \
		dp_test_result_free(&r_);                                                          \
	} while (0)

static void init_repo(const char *extra)
{
	RUN_EXPECT(0, "%s repo init --repo %s %s", DP(), repo, extra ? extra : "");
}

/* Pushes path (or stdin when path starts with '<') and returns the id. */
static void push_ok(const char *name, const char *path, char id[65])
{
	dp_test_result r;
	int st = run(&r, "%s push --repo %s %s %s", W(), repo, name, path);
	ck_assert_msg(st == 0, "push %s: exit %d: %s", name, st, r.err);
	ck_assert_msg(strlen(r.out) == 65 && r.out[64] == '\n', "push printed \"%s\"", r.out);
	if (id) {
		memcpy(id, r.out, 64);
		id[64] = 0;
	}
	dp_test_result_free(&r);
}

/* Value of "key":NUMBER in a one-line JSON object (test-only parsing). */
static double json_num(const char *json, const char *key)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	const char *p = strstr(json, pat);
	ck_assert_msg(p != NULL, "no %s in %s", key, json);
	return strtod(p + strlen(pat), NULL);
}

/* true if the JSON text has "key": "value" (compact or indented). */
static bool json_has(const char *json, const char *key, const char *value)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	for (const char *p = strstr(json, pat); p; p = strstr(p + 1, pat)) {
		const char *v = p + strlen(pat);
		v += strspn(v, " \t\n");
		if (*v == '"' && strncmp(v + 1, value, strlen(value)) == 0 &&
		    v[1 + strlen(value)] == '"')
			return true;
	}
	return false;
}

/* ---- a listing of every file under a dir, to prove nothing changed ---- */

static char listing[1 << 20];
static size_t listing_len;
static int list_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)flag;
	(void)ftw;
	int n = snprintf(listing + listing_len, sizeof(listing) - listing_len,
	                 "%s %lld %lld.%09ld\n", path, (long long)sb->st_size,
	                 (long long)sb->st_mtim.tv_sec, sb->st_mtim.tv_nsec);
	if (n > 0 && listing_len + (size_t)n < sizeof(listing))
		listing_len += (size_t)n;
	return 0;
}

static char *snapshot_dir(const char *dir)
{
	listing_len = 0;
	listing[0] = 0;
	nftw(dir, list_one, 32, FTW_PHYS);
	return strdup(listing);
}

static void assert_unchanged(const char *before, const char *dir)
{
	char *after = snapshot_dir(dir);
	ck_assert_msg(strcmp(before, after) == 0, "\"%s\" changed:\nbefore:\n%s\nafter:\n%s", dir,
	              before, after);
	free(after);
}

static int count_files(const char *dir)
{
	int n = 0;
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* The path of the first pack file under repo/data, and how many there are. */
static int find_packs(char first[PATH_MAX])
{
	char data[PATH_MAX];
	snprintf(data, sizeof(data), "%s/data", repo);
	int n = 0;
	DIR *d = opendir(data);
	if (!d)
		return 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char sub[PATH_MAX];
		snprintf(sub, sizeof(sub), "%s/%s", data, de->d_name);
		DIR *s = opendir(sub);
		if (!s)
			continue;
		struct dirent *pe;
		while ((pe = readdir(s))) {
			if (pe->d_name[0] == '.')
				continue;
			if (n++ == 0 && first)
				snprintf(first, PATH_MAX, "%s/%s", sub, pe->d_name);
		}
		closedir(s);
	}
	closedir(d);
	return n;
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* ---- help and usage ---- */

START_TEST(test_help_everywhere)
{
	const char *cmds[][2] = {
	    {"dp-worker", "push"}, {"dp-worker", "pull"}, {"dp-worker", "ls"},
	    {"dp-worker", "stat"}, {"dp-worker", "rm"},   {"dp", "repo init"},
	    {"dp", "repo check"},  {"dp", "repo prune"},
	};
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		dp_test_result r;
		int st = run(&r, "%s %s --help", dp_test_bin(cmds[i][0]), cmds[i][1]);
		ck_assert_msg(st == 0, "%s %s --help: exit %d", cmds[i][0], cmds[i][1], st);
		ck_assert_msg(strstr(r.out, "usage:") && strstr(r.out, "exit status") &&
		                  strstr(r.out, "example") && strstr(r.out, "--repo"),
		              "%s %s --help lacks usage/exit status/example:\n%s", cmds[i][0],
		              cmds[i][1], r.out);
		dp_test_result_free(&r);
	}
	RUN_EXPECT(0, "%s --help", W());
	RUN_EXPECT(0, "%s repo --help", DP());
	RUN_EXPECT(2, "%s", W());
	RUN_EXPECT(2, "%s frobnicate", W());
	RUN_EXPECT(2, "%s repo frobnicate", DP());
	RUN_EXPECT(2, "%s push --repo %s --no-such-flag x", W(), repo);
	RUN_EXPECT(2, "%s push --repo %s --threads zero x", W(), repo);
	RUN_EXPECT(2, "%s repo init --repo %s --pack-size 12Q", DP(), repo);
	ck_assert_int_eq(access(repo, F_OK), -1);
}
END_TEST

START_TEST(test_usage_errors_write_nothing)
{
	init_repo(NULL);
	dp_test_write_data(P("in"), 1000, 1, false);
	char *before = snapshot_dir(repo);
	const char *bad[] = {"''", "/abs", "a/../b", "..", "a/..", "../a", "'a\nb'"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		dp_test_result r;
		int st = run(&r, "%s push --repo %s %s %s", W(), repo, bad[i], P("in"));
		ck_assert_msg(st == 2, "name %s: exit %d: %s", bad[i], st, r.err);
		ck_assert_msg(strstr(r.err, "name"), "name %s: message \"%s\"", bad[i], r.err);
		dp_test_result_free(&r);
	}
	/* No repository, no passphrase, missing input, bad --meta. */
	RUN_EXPECT(2, "%s push ok %s", W(), P("in"));
	RUN_EXPECT(2, "env -u DP_REPO_PASSPHRASE %s push --repo %s ok %s", W(), repo, P("in"));
	RUN_EXPECT(2, "%s push --repo %s ok %s", W(), repo, P("missing"));
	RUN_EXPECT(2, "%s push --repo %s --meta '[1' ok %s", W(), repo, P("in"));
	RUN_EXPECT(2, "%s pull --repo %s ok %s", W(), repo, P("no/such/dir/out"));
	assert_unchanged(before, repo);
	free(before);
	/* DP_REPO stands in for --repo. */
	RUN_EXPECT(0, "DP_REPO=%s %s push ok %s", repo, W(), P("in"));
}
END_TEST

/* ---- round trips ---- */

static void roundtrip(const char *src, const char *name)
{
	char id[65];
	push_ok(name, src, id);
	const char *out = P("out");
	unlink(out);
	RUN_EXPECT(0, "%s pull --repo %s %s %s", W(), repo, id, out);
	ck_assert_msg(dp_test_files_equal(src, out), "%s differs after the round trip", name);
}

static void write_zeros(const char *path, uint64_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	static char z[65536];
	while (size > 0) {
		size_t n = size < sizeof(z) ? (size_t)size : sizeof(z);
		ck_assert_int_eq(write(fd, z, n), (ssize_t)n);
		size -= n;
	}
	close(fd);
}

START_TEST(test_roundtrip_boundaries)
{
	/* Small chunks (1K/4K/16K) and 64 KiB packs, so that a few hundred KiB
	 * cross every boundary there is. */
	init_repo("--chunk-avg 4K --chunk-min 1K --chunk-max 16K --pack-size 64K");
	const uint64_t sizes[] = {0,     1,     1023,  1024,          1025,       4095,
	                          4096,  4097,  16383, 16384,         16385,      65535,
	                          65536, 65537, 70000, 3 * 65536 + 7, 1 * MiB + 3};
	char name[64];
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		/* Random data: cuts fall anywhere past the minimum. */
		snprintf(name, sizeof(name), "rand/%llu", (unsigned long long)sizes[i]);
		dp_test_write_data(P("in"), sizes[i], (uint32_t)i + 1, false);
		roundtrip(P("in"), name);
		/* Zeros: the gear hash never cuts, so every chunk is exactly the
		 * maximum and these sizes sit on, before and after a cut. */
		snprintf(name, sizeof(name), "zero/%llu", (unsigned long long)sizes[i]);
		write_zeros(P("in"), sizes[i]);
		roundtrip(P("in"), name);
	}
	/* Stdin to stdout, including the empty stream. */
	const uint64_t pipe_sizes[] = {0, 1, 16385, 200000};
	for (size_t i = 0; i < sizeof(pipe_sizes) / sizeof(pipe_sizes[0]); i++) {
		dp_test_write_data(P("in"), pipe_sizes[i], 99 + (uint32_t)i, true);
		snprintf(name, sizeof(name), "pipe/%zu", i);
		RUN_EXPECT(0, "cat %s | %s push --repo %s %s", P("in"), W(), repo, name);
		RUN_EXPECT(0, "%s pull --repo %s %s > %s", W(), repo, name, P("out"));
		ck_assert_msg(dp_test_files_equal(P("in"), P("out")), "pipe %zu differs", i);
		RUN_EXPECT(0, "%s pull --repo %s %s - > %s", W(), repo, name, P("out"));
		ck_assert_msg(dp_test_files_equal(P("in"), P("out")), "pipe %zu differs (-)", i);
	}
	dp_test_result r;
	ck_assert_int_eq(run(&r, "%s stat --repo %s --json pipe/3", W(), repo), 0);
	ck_assert_msg(json_has(r.out, "kind", "stream"), "%s", r.out);
	ck_assert_double_eq(json_num(r.out, "size"), 200000);
	dp_test_result_free(&r);
	ck_assert_int_gt(find_packs(NULL), 10);
	RUN_EXPECT(0, "%s repo check --repo %s --read-data", DP(), repo);
}
END_TEST

START_TEST(test_sparse_file_pull)
{
	/* A file snapshot of a file with holes comes back with holes (and the
	 * same bytes): zero blocks are skipped when the target is a file. */
	init_repo(NULL);
	int fd = open(P("holes"), O_WRONLY | O_CREAT, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, "head", 4, 0), 4);
	ck_assert_int_eq(pwrite(fd, "middle", 6, 40 * MiB + 3), 6);
	ck_assert_int_eq(ftruncate(fd, 96 * MiB + 5), 0); /* ends in a hole */
	close(fd);
	push_ok("holes", P("holes"), NULL);
	RUN_EXPECT(0, "%s pull --repo %s holes %s", W(), repo, P("out"));
	ck_assert(dp_test_files_equal(P("holes"), P("out")));
	struct stat st;
	ck_assert_int_eq(stat(P("out"), &st), 0);
	ck_assert_int_eq(st.st_size, 96 * MiB + 5);
	ck_assert_msg((uint64_t)st.st_blocks * 512 < 1 * MiB, "%lld blocks allocated",
	              (long long)st.st_blocks);
	/* To stdout every byte is written. */
	RUN_EXPECT(0, "%s pull --repo %s holes | cmp - %s", W(), repo, P("holes"));
}
END_TEST

/* Rewrites 1% of the file in 8 KiB pages spread over it. */
static void change_pages(const char *path, uint64_t size, double fraction)
{
	int fd = open(path, O_WRONLY);
	ck_assert_int_ge(fd, 0);
	uint64_t pages = size / 8192, n = (uint64_t)((double)pages * fraction);
	uint8_t page[8192];
	uint64_t s = 12345;
	for (uint64_t i = 0; i < n; i++) {
		for (size_t j = 0; j < sizeof(page); j++) {
			s = s * 6364136223846793005ull + 1442695040888963407ull;
			page[j] = (uint8_t)(s >> 56);
		}
		uint64_t at = (i * pages / n + (s % 3)) % pages;
		ck_assert_int_eq(pwrite(fd, page, sizeof(page), (off_t)(at * 8192)),
		                 (ssize_t)sizeof(page));
	}
	close(fd);
}

START_TEST(test_200mib_roundtrip_and_dedup)
{
	const uint64_t size = 200 * MiB;
	init_repo(NULL);
	dp_test_write_data(P("big"), size, 7, true);

	dp_test_result r;
	ck_assert_int_eq(run(&r, "%s push --repo %s --json big %s", W(), repo, P("big")), 0);
	ck_assert_double_eq(json_num(r.out, "size"), (double)size);
	double push_s = json_num(r.out, "seconds");
	uint64_t du1 = dp_test_du(repo);
	fprintf(stderr, "worker_test: push 200 MiB: %.0f MB/s, stored %.1f MiB (%.2fx)\n",
	        (double)size / 1e6 / push_s, (double)du1 / MiB, json_num(r.out, "dedup_ratio"));
	dp_test_result_free(&r);

	double t0 = now();
	RUN_EXPECT(0, "%s pull --repo %s big %s", W(), repo, P("big.out"));
	double pull_s = now() - t0;
	ck_assert_msg(dp_test_files_equal(P("big"), P("big.out")), "200 MiB differ after pull");
	fprintf(stderr, "worker_test: pull 200 MiB to a file: %.0f MB/s (incl. open, fsync)\n",
	        (double)size / 1e6 / pull_s);
	unlink(P("big.out"));

	/* The same bytes again: < 1% more. */
	ck_assert_int_eq(run(&r, "%s push --repo %s --json big %s", W(), repo, P("big")), 0);
	uint64_t du2 = dp_test_du(repo);
	fprintf(stderr, "worker_test: same 200 MiB again: +%.3f%% (%.0f MB/s)\n",
	        100.0 * (double)(du2 - du1) / (double)du1,
	        (double)size / 1e6 / json_num(r.out, "seconds"));
	ck_assert_double_eq(json_num(r.out, "blobs_new"), 0);
	dp_test_result_free(&r);
	ck_assert_msg(du2 - du1 < du1 / 100, "same data added %llu bytes to %llu",
	              (unsigned long long)(du2 - du1), (unsigned long long)du1);

	/* 1% changed in scattered 8 KiB pages: well under 30% more. (A second
	 * apart, so that "newest" below does not depend on the tie rule.) */
	change_pages(P("big"), size, 0.01);
	sleep(1);
	push_ok("big", P("big"), NULL);
	uint64_t du3 = dp_test_du(repo);
	double growth = (double)(du3 - du2) / (double)du2;
	fprintf(stderr, "worker_test: 1%% of pages changed: +%.1f%%\n", 100 * growth);
	ck_assert_msg(growth < 0.20, "1%% changed pages added %.1f%%", 100 * growth);

	/* pull by name takes the newest. */
	RUN_EXPECT(0, "%s pull --repo %s big %s", W(), repo, P("big.out"));
	ck_assert_msg(dp_test_files_equal(P("big"), P("big.out")), "newest differs");
}
END_TEST

/* ---- trees ---- */

static void touch_at(const char *path, time_t sec, long nsec)
{
	struct timespec ts[2] = {{sec, nsec}, {sec, nsec}};
	ck_assert_int_eq(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW), 0);
}

static void make_tree(const char *t)
{
	char p[PATH_MAX];
	ck_assert_int_eq(mkdir(t, 0750), 0);
#define T(rel) (snprintf(p, sizeof(p), "%s/%s", t, rel), p)
	ck_assert_int_eq(mkdir(T("sub"), 0700), 0);
	ck_assert_int_eq(mkdir(T("sub/deep"), 0755), 0);
	ck_assert_int_eq(mkdir(T("emptydir"), 0705), 0);
	dp_test_write_data(T("data"), 3 * MiB + 17, 5, true);
	chmod(T("data"), 0640);
	dp_test_write_data(T("sub/deep/small"), 100, 6, false);
	chmod(T("sub/deep/small"), 0600);
	write_zeros(T("empty"), 0);
	chmod(T("empty"), 0444);
	dp_test_write_data(T("script"), 300, 8, true);
	chmod(T("script"), 0755);
	/* A hard link pair. */
	char a[PATH_MAX];
	snprintf(a, sizeof(a), "%s/data", t);
	ck_assert_int_eq(link(a, T("sub/data-hardlink")), 0);
	/* Symlinks: relative, absolute (dangling), to a directory. */
	ck_assert_int_eq(symlink("../data", T("sub/rel-link")), 0);
	ck_assert_int_eq(symlink("/nonexistent/target", T("dangling")), 0);
	ck_assert_int_eq(symlink("sub/deep", T("dir-link")), 0);
	/* A sparse file: 64 MiB with 3 small data regions. */
	int fd = open(T("sparse"), O_WRONLY | O_CREAT, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, "begin", 5, 0), 5);
	ck_assert_int_eq(pwrite(fd, "middle", 6, 32 * MiB), 6);
	ck_assert_int_eq(ftruncate(fd, 64 * MiB), 0);
	close(fd);
	/* An owner other than ours, set-id and sticky bits. */
	if (geteuid() == 0) {
		ck_assert_int_eq(lchown(T("script"), 65534, 65534), 0);
		ck_assert_int_eq(chmod(T("script"), 06755), 0);
	}
	ck_assert_int_eq(mkdir(T("sticky"), 0777), 0);
	ck_assert_int_eq(chmod(T("sticky"), 01777), 0);
	/* A FIFO, a UTF-8 name, a path longer than ustar's 100 bytes, and an
	 * extended attribute. */
	ck_assert_int_eq(mkfifo(T("fifo"), 0640), 0);
	dp_test_write_data(T("sub/d\xc3\xa9j\xc3\xa0 vu \xe2\x82\xac"), 10, 9, false);
	char longdir[PATH_MAX];
	snprintf(longdir, sizeof(longdir), "%s/%s", t,
	         "a-directory-with-a-rather-long-name-to-pass-one-hundred-bytes");
	ck_assert_int_eq(mkdir(longdir, 0755), 0);
	dp_test_write_data(T("a-directory-with-a-rather-long-name-to-pass-one-hundred-bytes/"
	                     "and-a-file-with-a-long-name-as-well.dat"),
	                   5000, 10, true);
	ck_assert_int_eq(setxattr(T("data"), "user.dp.test", "value-1", 7, 0), 0);
	/* Times with nanoseconds, deepest first (a child changes its parent). */
	touch_at(T("sub/deep/small"), 1500000000, 123456789);
	touch_at(T("sub/deep"), 1500000001, 0);
	touch_at(T("sub/rel-link"), 1500000002, 5);
	touch_at(T("sub"), 1500000003, 0);
	touch_at(T("data"), 1600000000, 999);
	touch_at(T("emptydir"), 1400000000, 0);
	touch_at(T("sparse"), 1450000000, 0);
	touch_at(longdir, 1300000000, 0);
	touch_at(t, 1550000000, 42);
#undef T
}

static const char *tree_orig;
static const char *tree_copy;
static int tree_entries;

static int compare_one(const char *path, const struct stat *a, int flag, struct FTW *ftw)
{
	(void)flag;
	(void)ftw;
	char other[PATH_MAX];
	snprintf(other, sizeof(other), "%s%s", tree_copy, path + strlen(tree_orig));
	struct stat b;
	ck_assert_msg(lstat(other, &b) == 0, "\"%s\" is missing after pull", other);
	ck_assert_msg((a->st_mode & S_IFMT) == (b.st_mode & S_IFMT), "%s: type %o, want %o (%s)",
	              other, b.st_mode, a->st_mode, path);
	tree_entries++;
	if (!S_ISLNK(a->st_mode))
		ck_assert_msg(a->st_mode == b.st_mode, "%s: mode %o, want %o", other, b.st_mode,
		              a->st_mode);
	ck_assert_msg(a->st_uid == b.st_uid && a->st_gid == b.st_gid, "%s: owner %d:%d want %d:%d",
	              other, b.st_uid, b.st_gid, a->st_uid, a->st_gid);
	ck_assert_msg(a->st_mtim.tv_sec == b.st_mtim.tv_sec &&
	                  a->st_mtim.tv_nsec == b.st_mtim.tv_nsec,
	              "%s: mtime %lld.%09ld, want %lld.%09ld", other, (long long)b.st_mtim.tv_sec,
	              b.st_mtim.tv_nsec, (long long)a->st_mtim.tv_sec, a->st_mtim.tv_nsec);
	if (S_ISREG(a->st_mode)) {
		ck_assert_msg(a->st_size == b.st_size, "%s: size", other);
		ck_assert_msg(dp_test_files_equal(path, other), "%s: content differs", other);
		ck_assert_msg(a->st_nlink == b.st_nlink, "%s: %lu links, want %lu", other,
		              (unsigned long)b.st_nlink, (unsigned long)a->st_nlink);
	}
	if (S_ISLNK(a->st_mode)) {
		char la[PATH_MAX] = {0}, lb[PATH_MAX] = {0};
		ck_assert_int_gt(readlink(path, la, sizeof(la) - 1), 0);
		ck_assert_int_gt(readlink(other, lb, sizeof(lb) - 1), 0);
		ck_assert_str_eq(la, lb);
	}
	return 0;
}

static void compare_trees(const char *orig, const char *copy)
{
	tree_orig = orig;
	tree_copy = copy;
	tree_entries = 0;
	ck_assert_int_eq(nftw(orig, compare_one, 32, FTW_PHYS), 0);
	ck_assert_int_ge(tree_entries, 18);
	/* The extended attribute came back. */
	char xv[64] = {0};
	char xp[PATH_MAX];
	snprintf(xp, sizeof(xp), "%s/data", copy);
	ck_assert_int_eq(getxattr(xp, "user.dp.test", xv, sizeof(xv) - 1), 7);
	ck_assert_str_eq(xv, "value-1");
	/* The hard link pair is one inode again. */
	char a[PATH_MAX], b[PATH_MAX];
	struct stat sa, sb;
	snprintf(a, sizeof(a), "%s/data", copy);
	snprintf(b, sizeof(b), "%s/sub/data-hardlink", copy);
	ck_assert_int_eq(stat(a, &sa), 0);
	ck_assert_int_eq(stat(b, &sb), 0);
	ck_assert_msg(sa.st_ino == sb.st_ino, "hard links came back as two files");
	/* The sparse file is still sparse. */
	snprintf(a, sizeof(a), "%s/sparse", copy);
	ck_assert_int_eq(stat(a, &sa), 0);
	ck_assert_int_eq(sa.st_size, 64 * MiB);
	ck_assert_msg((uint64_t)sa.st_blocks * 512 < 1 * MiB, "sparse file takes %lld blocks",
	              (long long)sa.st_blocks);
}

START_TEST(test_tree_roundtrip)
{
	init_repo(NULL);
	const char *tree = P("tree");
	make_tree(tree);
	char id[65];
	dp_test_result r;
	ck_assert_int_eq(run(&r, "%s push --repo %s --json etc/tree %s/", W(), repo, tree), 0);
	ck_assert_msg(json_has(r.out, "kind", "tree"), "%s", r.out);
	/* The sparse file's 64 MiB of holes are not in the stream. */
	ck_assert_double_lt(json_num(r.out, "size"), 8.0 * MiB);
	memcpy(id, strstr(r.out, "\"id\":\"") + 6, 64);
	id[64] = 0;
	dp_test_result_free(&r);

	/* Into a directory that does not exist yet. */
	RUN_EXPECT(0, "%s pull --repo %s etc/tree %s", W(), repo, P("new"));
	compare_trees(tree, P("new"));
	/* Into an existing empty one, by id. */
	ck_assert_int_eq(mkdir(P("empty-target"), 0700), 0);
	RUN_EXPECT(0, "%s pull --repo %s %.12s %s", W(), repo, id, P("empty-target"));
	compare_trees(tree, P("empty-target"));

	/* A tree needs a directory: stdout, a file, a non-empty dir refuse. */
	ck_assert_int_eq(run(&r, "%s pull --repo %s etc/tree > %s", W(), repo, P("x")), 2);
	ck_assert_msg(strstr(r.err, "DIR"), "%s", r.err);
	dp_test_result_free(&r);
	write_zeros(P("afile"), 10);
	RUN_EXPECT(2, "%s pull --repo %s etc/tree %s", W(), repo, P("afile"));
	RUN_EXPECT(2, "%s pull --repo %s etc/tree %s", W(), repo, P("new"));
	RUN_EXPECT(0, "%s pull --repo %s --force etc/tree %s", W(), repo, P("new"));
	compare_trees(tree, P("new"));
	/* --tar gives the pax stream itself. */
	RUN_EXPECT(0, "%s pull --repo %s --tar etc/tree %s", W(), repo, P("t.tar"));
	RUN_EXPECT(0, "tar -tf %s | grep -q '^sub/deep/small$'", P("t.tar"));
	/* A file snapshot refuses a directory target. */
	push_ok("a-file", P("afile"), NULL);
	RUN_EXPECT(2, "%s pull --repo %s a-file %s", W(), repo, P("new"));
}
END_TEST

START_TEST(test_tree_holding_the_repo)
{
	/* The repository inside the pushed tree is left out, not fed to itself. */
	ck_assert_int_eq(mkdir(P("t"), 0755), 0);
	snprintf(repo, sizeof(repo), "%s/t/repo", dp_test_dir);
	init_repo(NULL);
	dp_test_write_data(P("t/file"), 100000, 1, true);
	dp_test_result r;
	ck_assert_int_eq(run(&r, "%s push --repo file://%s t %s", W(), repo, P("t")), 0);
	ck_assert_msg(strstr(r.err, "repository"), "%s", r.err);
	dp_test_result_free(&r);
	ck_assert_int_eq(run(&r, "%s pull --repo %s --tar t - | tar -tf -", W(), repo), 0);
	ck_assert_msg(strstr(r.out, "file") && !strstr(r.out, "repo"), "%s", r.out);
	dp_test_result_free(&r);
}
END_TEST

START_TEST(test_tree_exclude)
{
	init_repo(NULL);
	RUN_EXPECT(0,
	           "cd %s && mkdir -p t/keep t/cache/deep t/pg_wal/archive_status && "
	           "echo a > t/keep/a && echo b > t/keep/b.tmp && echo c > t/cache/deep/c && "
	           "echo w > t/pg_wal/000000010000000000000001 && echo s > "
	           "t/pg_wal/archive_status/x.done && echo top > t/top.tmp",
	           dp_test_dir);
	RUN_EXPECT(0,
	           "%s push --repo %s --exclude '*.tmp' --exclude cache --exclude 'pg_wal/*' t %s",
	           W(), repo, P("t"));
	dp_test_result r;
	ck_assert_int_eq(run(&r, "%s pull --repo %s --tar t - | tar -tf - | sort", W(), repo), 0);
	ck_assert_msg(strstr(r.out, "keep/a\n") && strstr(r.out, "pg_wal/\n") &&
	                  !strstr(r.out, ".tmp") && !strstr(r.out, "cache") &&
	                  !strstr(r.out, "000000010000000000000001") &&
	                  !strstr(r.out, "archive_status"),
	              "%s", r.out);
	dp_test_result_free(&r);
	RUN_EXPECT(2, "%s push --repo %s --exclude '*.tmp' f %s", W(), repo, P("t/keep/a"));
	RUN_EXPECT(2, "%s push --repo %s --exclude '' t %s", W(), repo, P("t"));
}
END_TEST

/* --block-size: a tree's files of fixed-size pages change one chunk per
 * changed page; --chunk-avg outside what the repository allows is refused. */
START_TEST(test_tree_blocks)
{
	init_repo(NULL);
	RUN_EXPECT(0,
	           "cd %s && mkdir -p t && head -c 4194304 /dev/urandom > t/rel && "
	           "echo small > t/small",
	           dp_test_dir);
	dp_test_result r;
	ck_assert_int_eq(
	    run(&r, "%s push --repo %s --json --block-size 8K t %s", W(), repo, P("t")), 0);
	/* 512 blocks of the file (content-defined 16K chunks would be ~256) */
	ck_assert_msg(json_num(r.out, "blobs") >= 512, "%s", r.out);
	dp_test_result_free(&r);
	/* one byte of page 100 changes */
	RUN_EXPECT(0, "printf x | dd of=%s bs=1 seek=$((100 * 8192 + 17)) conv=notrunc status=none",
	           P("t/rel"));
	ck_assert_int_eq(
	    run(&r, "%s push --repo %s --json --block-size 8K t %s", W(), repo, P("t")), 0);
	/* the changed page, and the chunk(s) of tar headers whose mtime moved */
	ck_assert_msg(json_num(r.out, "blobs_new") >= 1 && json_num(r.out, "blobs_new") <= 3, "%s",
	              r.out);
	dp_test_result_free(&r);
	ck_assert_int_eq(run(&r, "%s pull --repo %s --tar t - | tar -xOf - rel | cmp - %s", W(),
	                     repo, P("t/rel")),
	                 0);
	dp_test_result_free(&r);
	RUN_EXPECT(2, "%s push --repo %s --block-size 8K f %s", W(), repo, P("t/rel"));
	RUN_EXPECT(2, "%s push --repo %s --chunk-avg 1M t %s", W(), repo, P("t"));
	RUN_EXPECT(2, "%s push --repo %s --chunk-avg 3K t %s", W(), repo, P("t"));
}
END_TEST

START_TEST(test_tree_unreadable_entry)
{
	if (geteuid() != 0)
		return; /* needs runuser to become someone who cannot read */
	init_repo(NULL);
	/* nobody may use the repository and the test dir, but not read one
	 * file of the tree. */
	ck_assert_int_eq(chmod(dp_test_dir, 0755), 0);
	RUN_EXPECT(0, "chmod -R a+rwX %s", repo);
	make_tree(P("tree"));
	RUN_EXPECT(0, "chmod -R a+rX %s && chmod 000 %s/sub/deep/small", P("tree"), P("tree"));
	dp_test_write_data(P("secret"), 10, 1, false);
	ck_assert_int_eq(chmod(P("secret"), 0), 0);
	char *before = snapshot_dir(repo);
	dp_test_result r;
	int st = run(&r, "runuser -u nobody -- env DP_REPO_PASSPHRASE='%s' %s push --repo %s s %s",
	             PASS, W(), repo, P("secret"));
	ck_assert_msg(st == 2 && strstr(r.err, "secret"), "exit %d: %s", st, r.err);
	dp_test_result_free(&r);
	assert_unchanged(before, repo);
	free(before);
	st = run(&r, "runuser -u nobody -- env DP_REPO_PASSPHRASE='%s' %s push --repo %s t %s",
	         PASS, W(), repo, P("tree"));
	ck_assert_msg(st == 1 && strstr(r.err, "small"), "exit %d: %s", st, r.err);
	dp_test_result_free(&r);
	ck_assert_int_eq(run(&r, "%s ls --repo %s --json", W(), repo), 0);
	ck_assert_msg(!json_has(r.out, "name", "t"), "a failed push left a snapshot: %s", r.out);
	dp_test_result_free(&r);
}
END_TEST

/* ---- ls, stat, rm, meta ---- */

START_TEST(test_ls_stat_rm)
{
	init_repo(NULL);
	char id1[65], id2[65], id3[65];
	dp_test_write_data(P("v1"), 5000, 1, false);
	dp_test_write_data(P("v2"), 6000, 2, false);
	push_ok("db/x", P("v1"), id1);
	sleep(1); /* distinct times, so "newest" is not decided by a tie */
	push_ok("db/x", P("v2"), id2);
	dp_test_result r;
	ck_assert_int_eq(run(&r,
	                     "cat %s | %s push --repo %s --meta '{\"lsn\":\"0/16B3748\"}' "
	                     "other -",
	                     P("v1"), W(), repo),
	                 0);
	memcpy(id3, r.out, 64);
	id3[64] = 0;
	dp_test_result_free(&r);

	ck_assert_int_eq(run(&r, "%s ls --repo %s", W(), repo), 0);
	ck_assert_msg(strncmp(r.out, "ID", 2) == 0 && strstr(r.out, "NAME") &&
	                  strstr(r.out, "KIND") && strstr(r.out, "SIZE") && strstr(r.out, "TIME") &&
	                  strstr(r.out, "HOST"),
	              "%s", r.out);
	char short1[16];
	snprintf(short1, sizeof(short1), "%.12s", id1);
	ck_assert_msg(strstr(r.out, short1) && strstr(r.out, "stream"), "%s", r.out);
	int lines = 0;
	for (const char *s = r.out; *s; s++)
		lines += *s == '\n';
	ck_assert_int_eq(lines, 4);
	dp_test_result_free(&r);
	ck_assert_int_eq(run(&r, "%s ls --repo %s db/", W(), repo), 0);
	ck_assert_msg(!strstr(r.out, "other"), "%s", r.out);
	dp_test_result_free(&r);

	/* stat by name: the newest; by prefix: that one. */
	ck_assert_int_eq(run(&r, "%s stat --repo %s db/x", W(), repo), 0);
	ck_assert_msg(strstr(r.out, id2) && strstr(r.out, "6000"), "%s", r.out);
	dp_test_result_free(&r);
	ck_assert_int_eq(run(&r, "%s stat --repo %s --json %.10s", W(), repo, id1), 0);
	ck_assert_msg(strstr(r.out, id1) && json_num(r.out, "size") == 5000, "%s", r.out);
	dp_test_result_free(&r);
	ck_assert_int_eq(run(&r, "%s stat --repo %s --json other", W(), repo), 0);
	ck_assert_msg(strstr(r.out, "0/16B3748") && strstr(r.out, "\"meta\""), "%s", r.out);
	dp_test_result_free(&r);

	RUN_EXPECT(0, "%s pull --repo %s db/x %s", W(), repo, P("out"));
	ck_assert(dp_test_files_equal(P("v2"), P("out")));
	RUN_EXPECT(0, "%s pull --repo %s %s %s", W(), repo, short1, P("out"));
	ck_assert(dp_test_files_equal(P("v1"), P("out")));

	RUN_EXPECT(5, "%s stat --repo %s nope", W(), repo);
	RUN_EXPECT(5, "%s pull --repo %s nope %s", W(), repo, P("out2"));
	ck_assert_int_eq(access(P("out2"), F_OK), -1);
	RUN_EXPECT(5, "%s rm --repo %s nope", W(), repo);
	ck_assert_int_eq(run(&r, "%s rm --repo %s db/x", W(), repo), 0);
	ck_assert_msg(strstr(r.out, "removed 2"), "%s", r.out);
	dp_test_result_free(&r);
	ck_assert_int_eq(run(&r, "%s ls --repo %s --json", W(), repo), 0);
	ck_assert_msg(!strstr(r.out, "db/x") && strstr(r.out, id3), "%s", r.out);
	dp_test_result_free(&r);
	/* prune frees the removed data; what is left still reads back. */
	ck_assert_int_eq(run(&r, "%s repo prune --repo %s", DP(), repo), 0);
	ck_assert_msg(strstr(r.out, "removed"), "%s", r.out);
	dp_test_result_free(&r);
	RUN_EXPECT(0, "%s pull --repo %s other %s", W(), repo, P("out"));
	ck_assert(dp_test_files_equal(P("v1"), P("out")));
	RUN_EXPECT(0, "%s repo check --repo %s --read-data", DP(), repo);
}
END_TEST

START_TEST(test_newest_within_one_second)
{
	/* Two pushes of one name in quick succession: pull by name must take
	 * the second, whatever the clock's resolution. */
	init_repo(NULL);
	dp_test_write_data(P("v1"), 1000, 1, false);
	dp_test_write_data(P("v2"), 2000, 2, false);
	for (int i = 0; i < 3; i++) {
		char name[32], id2[65];
		snprintf(name, sizeof(name), "quick/%d", i);
		push_ok(name, P("v1"), NULL);
		push_ok(name, P("v2"), id2);
		dp_test_result r;
		ck_assert_int_eq(run(&r, "%s stat --repo %s --json %s", W(), repo, name), 0);
		ck_assert_msg(json_has(r.out, "id", id2), "round %d: \"%s\" is not the newest: %s",
		              i, name, r.out);
		dp_test_result_free(&r);
	}
}
END_TEST

/* ---- passphrases, missing repositories, init ---- */

START_TEST(test_passphrase_and_missing_repo)
{
	const char *pf = P("pass");
	FILE *f = fopen(pf, "w");
	fprintf(f, "from a file\n");
	fclose(f);
	RUN_EXPECT(0,
	           "env -u DP_REPO_PASSPHRASE %s repo init --repo file://%s --passphrase-file %s",
	           DP(), repo, pf);
	dp_test_write_data(P("in"), 100000, 3, true);
	RUN_EXPECT(0, "env -u DP_REPO_PASSPHRASE %s push --repo %s --passphrase-file %s a %s", W(),
	           repo, pf, P("in"));
	char *before = snapshot_dir(repo);

	/* Wrong passphrase (env and file): exit 3, nothing written. */
	dp_test_result r;
	ck_assert_int_eq(run(&r, "%s push --repo %s b %s", W(), repo, P("in")), 3);
	ck_assert_msg(strstr(r.err, "passphrase"), "%s", r.err);
	dp_test_result_free(&r);
	f = fopen(P("wrong"), "w");
	fprintf(f, "from a file, but wrong\n");
	fclose(f);
	RUN_EXPECT(3, "%s pull --repo %s --passphrase-file %s a %s", W(), repo, P("wrong"), P("o"));
	ck_assert_int_eq(access(P("o"), F_OK), -1);
	RUN_EXPECT(3, "%s repo check --repo %s", DP(), repo);
	RUN_EXPECT(3, "%s repo prune --repo %s", DP(), repo);
	RUN_EXPECT(3, "%s rm --repo %s a", W(), repo);
	/* Missing and empty passphrase files are usage errors. */
	RUN_EXPECT(2, "%s ls --repo %s --passphrase-file %s", W(), repo, P("none"));
	write_zeros(P("emptyfile"), 0);
	RUN_EXPECT(2, "%s ls --repo %s --passphrase-file %s", W(), repo, P("emptyfile"));
	assert_unchanged(before, repo);
	free(before);

	/* init on an existing repository refuses and changes nothing. */
	before = snapshot_dir(repo);
	ck_assert_int_eq(run(&r, "%s repo init --repo %s --passphrase-file %s", DP(), repo, pf), 1);
	ck_assert_msg(strstr(r.err, repo), "%s", r.err);
	dp_test_result_free(&r);
	RUN_EXPECT(1, "%s repo init --repo %s", DP(), repo);
	assert_unchanged(before, repo);
	free(before);

	/* No repository there: exit 5, nothing created. */
	const char *none = P("no-repo");
	RUN_EXPECT(5, "%s ls --repo %s", W(), none);
	RUN_EXPECT(5, "%s push --repo %s x %s", W(), none, P("in"));
	RUN_EXPECT(5, "%s pull --repo %s x %s", W(), none, P("o"));
	RUN_EXPECT(5, "%s repo check --repo %s", DP(), none);
	ck_assert_int_eq(access(none, F_OK), -1);
	ck_assert_int_eq(access(P("o"), F_OK), -1);
}
END_TEST

/* ---- corruption ---- */

static void corrupt_setup(char pack[PATH_MAX])
{
	init_repo(NULL);
	dp_test_write_data(P("in"), 3 * MiB, 11, false);
	push_ok("victim", P("in"), NULL);
	ck_assert_int_eq(find_packs(pack), 1);
}

static void assert_names(const dp_test_result *r, const char *what)
{
	ck_assert_msg(strstr(r->out, what) || strstr(r->err, what),
	              "output does not name \"%s\":\nstdout: %s\nstderr: %s", what, r->out, r->err);
}

START_TEST(test_corrupt_flipped_byte)
{
	char pack[PATH_MAX];
	corrupt_setup(pack);
	RUN_EXPECT(0, "%s repo check --repo %s --read-data", DP(), repo);
	int fd = open(pack, O_RDWR);
	ck_assert_int_ge(fd, 0);
	uint8_t b;
	ck_assert_int_eq(pread(fd, &b, 1, 1 * MiB), 1);
	b ^= 0x20;
	ck_assert_int_eq(pwrite(fd, &b, 1, 1 * MiB), 1);
	close(fd);
	const char *packid = strrchr(pack, '/') + 1;

	dp_test_result r;
	ck_assert_int_eq(run(&r, "%s pull --repo %s victim %s", W(), repo, P("out")), 4);
	assert_names(&r, packid);
	dp_test_result_free(&r);
	ck_assert_msg(access(P("out"), F_OK) == -1, "a corrupt pull left its target");
	ck_assert_int_eq(run(&r, "%s pull --repo %s victim > %s", W(), repo, P("out")), 4);
	dp_test_result_free(&r);
	ck_assert_int_eq(run(&r, "%s repo check --repo %s --read-data", DP(), repo), 4);
	assert_names(&r, packid);
	ck_assert_msg(strstr(r.out, "problem:"), "%s", r.out);
	dp_test_result_free(&r);
}
END_TEST

START_TEST(test_corrupt_truncated_pack)
{
	char pack[PATH_MAX];
	corrupt_setup(pack);
	const char *packid = strrchr(pack, '/') + 1;
	struct stat st;
	ck_assert_int_eq(stat(pack, &st), 0);
	dp_test_result r;
	/* Cut into the pack's header: only reading the data finds it. */
	ck_assert_int_eq(truncate(pack, st.st_size - 1000), 0);
	ck_assert_int_eq(run(&r, "%s repo check --repo %s --read-data", DP(), repo), 4);
	assert_names(&r, packid);
	dp_test_result_free(&r);
	/* Cut into the blobs: the structure check finds it, pull fails. */
	ck_assert_int_eq(truncate(pack, st.st_size / 2), 0);
	ck_assert_int_eq(run(&r, "%s repo check --repo %s", DP(), repo), 4);
	assert_names(&r, packid);
	dp_test_result_free(&r);
	ck_assert_int_eq(run(&r, "%s repo check --repo %s --read-data", DP(), repo), 4);
	assert_names(&r, packid);
	dp_test_result_free(&r);
	ck_assert_int_eq(run(&r, "%s pull --repo %s victim %s", W(), repo, P("out")), 4);
	assert_names(&r, packid);
	dp_test_result_free(&r);
	ck_assert_int_eq(access(P("out"), F_OK), -1);
}
END_TEST

START_TEST(test_corrupt_missing_index)
{
	char pack[PATH_MAX];
	corrupt_setup(pack);
	char idx[PATH_MAX];
	snprintf(idx, sizeof(idx), "%s/index", repo);
	ck_assert_int_eq(count_files(idx), 1);
	RUN_EXPECT(0, "rm -f %s/index/*", repo);
	dp_test_result r;
	ck_assert_int_eq(run(&r, "%s repo check --repo %s", DP(), repo), 4);
	assert_names(&r, "index");
	/* The pack that holds the data is in no index now: no advice to prune. */
	ck_assert_msg(!strstr(r.out, "prune"), "%s", r.out);
	dp_test_result_free(&r);
	ck_assert_int_eq(run(&r, "%s pull --repo %s victim %s", W(), repo, P("out")), 4);
	dp_test_result_free(&r);
	ck_assert_int_eq(access(P("out"), F_OK), -1);
}
END_TEST

/* ---- crash safety and concurrency ---- */

/* Starts `dp-worker push --repo repo NAME -` reading from a pipe. */
static pid_t start_push(const char *name, int *wfd)
{
	int p[2];
	ck_assert_int_eq(pipe(p), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		dup2(p[0], 0);
		close(p[0]);
		close(p[1]);
		int nul = open("/dev/null", O_WRONLY);
		dup2(nul, 1);
		dup2(nul, 2);
		execl(W(), "dp-worker", "push", "--repo", repo, "--quiet", name, "-", (char *)NULL);
		_exit(127);
	}
	close(p[0]);
	*wfd = p[1];
	return pid;
}

static void feed(int fd, uint64_t bytes, uint64_t *seed)
{
	static uint8_t buf[1 << 20];
	while (bytes > 0) {
		size_t n = bytes < sizeof(buf) ? (size_t)bytes : sizeof(buf);
		for (size_t i = 0; i < n; i += 8) {
			*seed ^= *seed << 13;
			*seed ^= *seed >> 7;
			*seed ^= *seed << 17;
			memcpy(buf + i, seed, n - i < 8 ? n - i : 8);
		}
		ck_assert_int_eq(write(fd, buf, n), (ssize_t)n);
		bytes -= n;
	}
}

static int wait_status(pid_t pid)
{
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

START_TEST(test_crash_kill9_mid_push)
{
	init_repo("--pack-size 1M");
	signal(SIGPIPE, SIG_IGN);
	int wfd;
	pid_t pid = start_push("crashed", &wfd);
	uint64_t seed = 77, fed = 0;
	while (find_packs(NULL) < 2 && fed < 256 * MiB) {
		feed(wfd, 1 * MiB, &seed);
		fed += MiB;
		usleep(2000);
	}
	ck_assert_msg(find_packs(NULL) >= 2, "no pack written after %llu MiB",
	              (unsigned long long)(fed / MiB));
	kill(pid, SIGKILL);
	ck_assert_int_eq(wait_status(pid), 128 + SIGKILL);
	close(wfd);
	uint64_t orphaned = dp_test_du(P("repo/data"));
	char *orphan_list = snapshot_dir(P("repo/data"));

	dp_test_result r;
	ck_assert_int_eq(run(&r, "%s repo check --repo %s --read-data", DP(), repo), 0);
	dp_test_result_free(&r);
	ck_assert_int_eq(run(&r, "%s ls --repo %s --json", W(), repo), 0);
	ck_assert_msg(!json_has(r.out, "name", "crashed"), "%s", r.out);
	dp_test_result_free(&r);
	RUN_EXPECT(5, "%s pull --repo %s crashed %s", W(), repo, P("out"));

	dp_test_write_data(P("in"), 2 * MiB, 3, true);
	push_ok("crashed", P("in"), NULL);
	RUN_EXPECT(0, "%s pull --repo %s crashed %s", W(), repo, P("out"));
	ck_assert(dp_test_files_equal(P("in"), P("out")));

	/* prune takes the dead push's lock as stale and frees its packs. */
	ck_assert_int_eq(run(&r, "%s repo prune --repo %s", DP(), repo), 0);
	dp_test_result_free(&r);
	fprintf(stderr, "worker_test: kill -9 after %llu MiB: %.1f MiB orphaned\n",
	        (unsigned long long)(fed / MiB), (double)orphaned / MiB);
	/* Every pack the killed push wrote is gone (the new push shares no
	 * data with it). */
	for (char *line = orphan_list; *line;) {
		char *sp = strchr(line, ' '), *nl = strchr(line, '\n');
		*sp = 0;
		struct stat st;
		if (lstat(line, &st) == 0 && S_ISREG(st.st_mode))
			ck_abort_msg("prune left the orphaned pack \"%s\"", line);
		line = nl + 1;
	}
	RUN_EXPECT(0, "%s repo check --repo %s --read-data", DP(), repo);
	RUN_EXPECT(0, "%s pull --repo %s crashed %s", W(), repo, P("out"));
	ck_assert(dp_test_files_equal(P("in"), P("out")));
}
END_TEST

START_TEST(test_sigterm_aborts_push_cleanly)
{
	init_repo("--pack-size 1M");
	signal(SIGPIPE, SIG_IGN);
	int wfd;
	pid_t pid = start_push("stopped", &wfd);
	uint64_t seed = 9;
	feed(wfd, 4 * MiB, &seed);
	char locks[PATH_MAX];
	snprintf(locks, sizeof(locks), "%s/locks", repo);
	for (int i = 0; i < 200 && count_files(locks) == 0; i++)
		usleep(50000);
	ck_assert_int_gt(count_files(locks), 0);
	/* The push waits for more input; SIGTERM must end it cleanly without
	 * the writer closing the pipe. */
	double t0 = now();
	kill(pid, SIGTERM);
	ck_assert_int_eq(wait_status(pid), 1);
	ck_assert_msg(now() - t0 < 10, "the push took %.1f s to stop", now() - t0);
	close(wfd);
	ck_assert_int_eq(count_files(locks), 0);
	dp_test_result r;
	ck_assert_int_eq(run(&r, "%s ls --repo %s --json", W(), repo), 0);
	ck_assert_msg(!json_has(r.out, "name", "stopped"), "%s", r.out);
	dp_test_result_free(&r);
	/* No --wait needed: the lock is gone. */
	RUN_EXPECT(0, "%s repo prune --repo %s", DP(), repo);
	RUN_EXPECT(0, "%s repo check --repo %s --read-data", DP(), repo);
}
END_TEST

START_TEST(test_two_pushes_at_once)
{
	init_repo(NULL);
	dp_test_write_data(P("a"), 24 * MiB, 1, true);
	dp_test_write_data(P("b"), 24 * MiB, 2, true);
	RUN_EXPECT(0,
	           "%s push --repo %s a %s > %s 2>&1 & %s push --repo %s b %s > %s 2>&1 & "
	           "wait %%1; s1=$?; wait %%2; s2=$?; echo $s1 $s2; [ $s1 = 0 ] && [ $s2 = 0 ]",
	           W(), repo, P("a"), P("a.log"), W(), repo, P("b"), P("b.log"));
	RUN_EXPECT(0, "%s pull --repo %s a %s", W(), repo, P("a.out"));
	RUN_EXPECT(0, "%s pull --repo %s b %s", W(), repo, P("b.out"));
	ck_assert(dp_test_files_equal(P("a"), P("a.out")));
	ck_assert(dp_test_files_equal(P("b"), P("b.out")));
	RUN_EXPECT(0, "%s repo check --repo %s --read-data", DP(), repo);
}
END_TEST

START_TEST(test_prune_waits_for_push)
{
	init_repo(NULL);
	signal(SIGPIPE, SIG_IGN);
	int wfd;
	pid_t push = start_push("held", &wfd);
	uint64_t seed = 5;
	feed(wfd, 1 * MiB, &seed);
	char locks[PATH_MAX];
	snprintf(locks, sizeof(locks), "%s/locks", repo);
	for (int i = 0; i < 200 && count_files(locks) == 0; i++)
		usleep(50000);
	ck_assert_msg(count_files(locks) > 0, "the push took no lock");

	dp_test_result r;
	ck_assert_int_eq(run(&r, "%s repo prune --repo %s", DP(), repo), 6);
	ck_assert_msg(strstr(r.err, "lock"), "%s", r.err);
	dp_test_result_free(&r);

	/* With --wait it waits for the push to finish, then runs. */
	pid_t prune = fork();
	ck_assert_int_ge(prune, 0);
	if (prune == 0) {
		close(wfd);
		int nul = open("/dev/null", O_WRONLY);
		dup2(nul, 1);
		dup2(nul, 2);
		execl(DP(), "dp", "repo", "prune", "--repo", repo, "--wait", "60", (char *)NULL);
		_exit(127);
	}
	usleep(1500 * 1000);
	int st;
	ck_assert_msg(waitpid(prune, &st, WNOHANG) == 0, "prune --wait did not wait for the push");
	feed(wfd, 1 * MiB, &seed);
	close(wfd);
	ck_assert_int_eq(wait_status(push), 0);
	ck_assert_int_eq(wait_status(prune), 0);
	ck_assert_int_eq(run(&r, "%s ls --repo %s --json", W(), repo), 0);
	ck_assert_msg(json_has(r.out, "name", "held"), "%s", r.out);
	dp_test_result_free(&r);
	RUN_EXPECT(0, "%s repo check --repo %s --read-data", DP(), repo);
}
END_TEST

START_TEST(test_quiet_output)
{
	init_repo(NULL);
	dp_test_write_data(P("in"), 4 * MiB, 1, true);
	dp_test_result r;
	/* Not a terminal: no progress line, nothing on stderr. */
	ck_assert_int_eq(run(&r, "%s push --repo %s q %s", W(), repo, P("in")), 0);
	ck_assert_str_eq(r.err, "");
	dp_test_result_free(&r);
	ck_assert_int_eq(run(&r, "%s pull --repo %s q %s", W(), repo, P("out")), 0);
	ck_assert_str_eq(r.err, "");
	ck_assert_str_eq(r.out, "");
	dp_test_result_free(&r);
	/* On a terminal (script(1) gives one) the line is drawn while the
	 * push waits for input, then cleared; --quiet turns it off. */
	ck_assert_int_eq(run(&r,
	                     "script -qec \"sh -c '(head -c 1000000 %s; sleep 1; cat %s) | "
	                     "%s push --repo %s tty -'\" /dev/null",
	                     P("in"), P("in"), W(), repo),
	                 0);
	ck_assert_msg(strstr(r.out, "MB/s") && strstr(r.out, "\r\033[K"), "no progress line: %s",
	              r.out);
	dp_test_result_free(&r);
	ck_assert_int_eq(run(&r,
	                     "script -qec \"sh -c '(head -c 1000000 %s; sleep 1; cat %s) | "
	                     "%s push --repo %s --quiet tty -'\" /dev/null",
	                     P("in"), P("in"), W(), repo),
	                 0);
	ck_assert_msg(!strstr(r.out, "MB/s"), "--quiet still drew: %s", r.out);
	dp_test_result_free(&r);
}
END_TEST

START_TEST(test_status_events)
{
	init_repo(NULL);
	dp_test_write_data(P("in"), 3 * MiB, 1, true);
	/* Input that pauses, so that at least one periodic event is due. */
	RUN_EXPECT(0,
	           "(head -c 1000000 %s; sleep 1.3; tail -c +1000001 %s) | DP_STATUS_FD=3 %s push "
	           "--repo %s ev - 3>%s",
	           P("in"), P("in"), W(), repo, P("events"));
	RUN_EXPECT(0, "DP_STATUS_FD=3 %s pull --repo %s ev %s 3>>%s", W(), repo, P("out"),
	           P("events"));
	ck_assert(dp_test_files_equal(P("in"), P("out")));
	dp_test_result r;
	ck_assert_int_eq(run(&r, "cat %s", P("events")), 0);
	const char *push_result = strstr(r.out, "\"verb\":\"push\"}");
	ck_assert_msg(strstr(r.out, "{\"event\":\"progress\",\"verb\":\"push\",\"done\":") &&
	                  push_result && strstr(r.out, "\"event\":\"result\"") &&
	                  strstr(r.out, "{\"event\":\"result\",\"verb\":\"pull\""),
	              "events: %s", r.out);
	ck_assert_double_eq(json_num(r.out, "size"), 3.0 * MiB);
	/* One JSON object per line. */
	for (const char *l = r.out; *l; l = strchr(l, '\n') + 1)
		ck_assert_msg(l[0] == '{' && strchr(l, '\n')[-1] == '}', "not a JSON line: %s", l);
	dp_test_result_free(&r);
	/* Without DP_STATUS_FD nothing is written to descriptor 3. */
	RUN_EXPECT(0, "%s pull --repo %s ev %s 3>%s", W(), repo, P("out"), P("none"));
	ck_assert_uint_eq(dp_test_du(P("none")), 0);
}
END_TEST

/* One case per test, so that CK_RUN_CASE=test_tree_roundtrip runs one. */
static void add(Suite *s, const TTest *t, const char *name)
{
	TCase *tc = tcase_create(name);
	tcase_add_checked_fixture(tc, setup, dp_test_teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, t);
	suite_add_tcase(s, tc);
}
#define ADD(s, t) add(s, t, #t)

static Suite *worker_suite(void)
{
	Suite *s = suite_create("worker");
	ADD(s, test_help_everywhere);
	ADD(s, test_usage_errors_write_nothing);
	ADD(s, test_roundtrip_boundaries);
	ADD(s, test_sparse_file_pull);
	ADD(s, test_200mib_roundtrip_and_dedup);
	ADD(s, test_tree_roundtrip);
	ADD(s, test_tree_holding_the_repo);
	ADD(s, test_tree_exclude);
	ADD(s, test_tree_blocks);
	ADD(s, test_tree_unreadable_entry);
	ADD(s, test_ls_stat_rm);
	ADD(s, test_newest_within_one_second);
	ADD(s, test_passphrase_and_missing_repo);
	ADD(s, test_corrupt_flipped_byte);
	ADD(s, test_corrupt_truncated_pack);
	ADD(s, test_corrupt_missing_index);
	ADD(s, test_crash_kill9_mid_push);
	ADD(s, test_sigterm_aborts_push_cleanly);
	ADD(s, test_two_pushes_at_once);
	ADD(s, test_prune_waits_for_push);
	ADD(s, test_quiet_output);
	ADD(s, test_status_events);
	return s;
}

DP_TEST_MAIN(worker_suite)
