/*
 * The posix transport: the backend conformance suite, plus what only a
 * filesystem shows — no temp file visible after a put, a put killed
 * mid-write leaves no object (and an overwritten object intact), clear
 * errors for a missing repository, permission denied and a full disk,
 * key validation, modes, and the addresses dp_backend_open accepts.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../harness/backend_conformance.h"
#include "../../harness/dp_test.h"
#include "dp/backend.h"
#include "dp/error.h"

/* snprintf into a PATH_MAX buffer; a test path never gets that long. */
static void mkpath(char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void mkpath(char *out, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out, PATH_MAX, fmt, ap);
	va_end(ap);
	ck_assert_msg(n >= 0 && n < PATH_MAX, "path too long");
}

static int make_posix(dp_backend **out, const char *tmpdir)
{
	char path[PATH_MAX];
	mkpath(path, "%s/repo", tmpdir);
	int rc = dp_backend_open(out, path, NULL);
	if (rc)
		return rc;
	if ((rc = (*out)->create(*out))) {
		dp_backend_free(*out);
		*out = NULL;
	}
	return rc;
}

static char repo[PATH_MAX];

static dp_backend *open_repo(void)
{
	dp_backend *b;
	mkpath(repo, "%s/repo", dp_test_dir);
	ck_assert_msg(make_posix(&b, dp_test_dir) == 0, "%s", dp_error_last());
	return b;
}

static int count_entries(const char *dir, const char *skip)
{
	DIR *d = opendir(dir);
	ck_assert_msg(d != NULL, "opendir %s: %s", dir, strerror(errno));
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (skip && strcmp(e->d_name, skip) == 0)
			continue;
		n++;
	}
	closedir(d);
	return n;
}

static int count_cb(const char *key, uint64_t size, void *arg)
{
	(void)key;
	(void)size;
	(*(int *)arg)++;
	return 0;
}

static bool exists(const char *fmt, const char *a)
{
	char p[PATH_MAX];
	mkpath(p, fmt, a);
	struct stat st;
	return lstat(p, &st) == 0;
}

START_TEST(t_no_temp_visible)
{
	dp_backend *b = open_repo();
	ck_assert_int_eq(count_entries(repo, NULL), 0); /* create's probe is gone */
	ck_assert_int_eq(b->put(b, "data/ab/pack1", "xyz", 3), 0);
	char dir[PATH_MAX];
	mkpath(dir, "%s/data/ab", repo);
	ck_assert_int_eq(count_entries(dir, NULL), 1);
	ck_assert(exists("%s/data/ab/pack1", repo));
	ck_assert_int_eq(b->put(b, "data/ab/pack1", "abcd", 4), 0); /* overwrite */
	ck_assert_int_eq(count_entries(dir, NULL), 1);
	ck_assert_int_eq(count_entries(repo, NULL), 1);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_leftover_temp_not_listed)
{
	dp_backend *b = open_repo();
	ck_assert_int_eq(b->put(b, "data/ab/pack1", "xyz", 3), 0);
	char p[PATH_MAX];
	mkpath(p, "%s/data/ab/.tmp-0123456789abcdef-1-0", repo);
	FILE *f = fopen(p, "w");
	ck_assert_ptr_nonnull(f);
	fputs("partial", f);
	fclose(f);
	int n = 0;
	ck_assert_int_eq(b->list(b, "", count_cb, &n), 0);
	ck_assert_int_eq(n, 1);
	n = 0;
	ck_assert_int_eq(b->list(b, "data/ab/", count_cb, &n), 0);
	ck_assert_int_eq(n, 1);
	uint64_t size;
	ck_assert_int_eq(b->stat(b, "data/ab/.tmp-0123456789abcdef-1-0", &size), DP_EUSAGE);
	dp_backend_free(b);
}
END_TEST

/* ---- a put killed mid-write ---- */

static int notify_fd = -1;

/* SIGXFSZ arrives when the put's write crosses RLIMIT_FSIZE: the child is
 * then inside write(). Tell the parent and wait there to be killed. */
static void on_xfsz(int sig)
{
	(void)sig;
	ssize_t w = write(notify_fd, "x", 1);
	(void)w;
	for (;;)
		pause();
}

/* Forks a child that puts size bytes under key and is SIGKILLed by us while
 * its write is under way (stopped in the middle by RLIMIT_FSIZE). */
static void put_and_kill(const char *key, size_t size)
{
	int pfd[2];
	ck_assert_int_eq(pipe(pfd), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(pfd[0]);
		notify_fd = pfd[1];
		uint8_t *data = malloc(size);
		if (!data)
			_exit(3);
		memset(data, 'd', size);
		dp_backend *b;
		if (dp_backend_open(&b, repo, NULL) != 0)
			_exit(4);
		struct sigaction sa = {0};
		sa.sa_handler = on_xfsz;
		sigaction(SIGXFSZ, &sa, NULL);
		struct rlimit rl = {1 << 20, 1 << 20};
		setrlimit(RLIMIT_FSIZE, &rl);
		b->put(b, key, data, size);
		_exit(5); /* the put was not interrupted */
	}
	close(pfd[1]);
	struct pollfd p = {pfd[0], POLLIN, 0};
	int ready = poll(&p, 1, 20000);
	char c = 0;
	bool notified = ready == 1 && read(pfd[0], &c, 1) == 1;
	close(pfd[0]);
	/* While the child sits mid-write, the object is not visible. */
	kill(pid, SIGKILL);
	int st;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_msg(notified, "the child never reached the middle of its write (status %d)", st);
	ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "child status %d", st);
}

static int temp_files(const char *dir)
{
	DIR *d = opendir(dir);
	ck_assert_ptr_nonnull(d);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		n += strncmp(e->d_name, ".tmp-", 5) == 0;
	closedir(d);
	return n;
}

START_TEST(t_killed_put_leaves_nothing)
{
	dp_backend *b = open_repo();
	put_and_kill("data/cd/big", 8u << 20);
	uint64_t size;
	ck_assert_int_eq(b->stat(b, "data/cd/big", &size), DP_ENOTFOUND);
	dp_buf out = {0};
	ck_assert_int_eq(b->get(b, "data/cd/big", 0, UINT64_MAX, &out), DP_ENOTFOUND);
	int n = 0;
	ck_assert_int_eq(b->list(b, "", count_cb, &n), 0);
	ck_assert_int_eq(n, 0);
	/* The partial write is there, under a temp name nobody lists. */
	char dir[PATH_MAX];
	mkpath(dir, "%s/data/cd", repo);
	ck_assert_int_eq(temp_files(dir), 1);
	/* The next put of the same key works. */
	ck_assert_int_eq(b->put(b, "data/cd/big", "whole", 5), 0);
	ck_assert_int_eq(b->get(b, "data/cd/big", 0, UINT64_MAX, &out), 0);
	ck_assert_uint_eq(out.len, 5);
	dp_buf_free(&out);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_killed_overwrite_keeps_old)
{
	dp_backend *b = open_repo();
	ck_assert_int_eq(b->put(b, "locks/l", "old lock", 8), 0);
	put_and_kill("locks/l", 8u << 20);
	dp_buf out = {0};
	ck_assert_int_eq(b->get(b, "locks/l", 0, UINT64_MAX, &out), 0);
	ck_assert_uint_eq(out.len, 8);
	ck_assert_int_eq(memcmp(out.data, "old lock", 8), 0);
	dp_buf_free(&out);
	dp_backend_free(b);
}
END_TEST

/* ---- errors ---- */

START_TEST(t_missing_repository)
{
	dp_backend *b;
	char path[PATH_MAX];
	mkpath(path, "%s/no/such/repo", dp_test_dir);
	ck_assert_int_eq(dp_backend_open(&b, path, NULL), 0); /* opening checks nothing */
	dp_buf out = {0};
	uint64_t size;
	int n = 0;
	ck_assert_int_eq(b->get(b, "config", 0, UINT64_MAX, &out), DP_ENOTFOUND);
	ck_assert_msg(strstr(dp_error_last(), path) && strstr(dp_error_last(), "does not exist"),
	              "%s", dp_error_last());
	ck_assert_int_eq(b->put(b, "data/00/p", "x", 1), DP_ENOTFOUND);
	ck_assert_msg(strstr(dp_error_last(), "repository") && strstr(dp_error_last(), path) &&
	                  strstr(dp_error_last(), "does not exist"),
	              "%s", dp_error_last());
	ck_assert_int_eq(b->put(b, "config", "x", 1), DP_ENOTFOUND);
	ck_assert_int_eq(b->stat(b, "config", &size), DP_ENOTFOUND);
	ck_assert_ptr_nonnull(strstr(dp_error_last(), "does not exist"));
	ck_assert_int_eq(b->list(b, "index/", count_cb, &n), DP_ENOTFOUND);
	ck_assert_ptr_nonnull(strstr(dp_error_last(), "does not exist"));
	/* Nothing was created on the way. */
	ck_assert(!exists("%s/no", dp_test_dir));
	dp_backend_free(b);
}
END_TEST

/* Runs fn in a child as nobody (when we are root) and returns its exit
 * status. The child prints dp_error_last() on stderr for the log. */
static int as_nobody(int (*fn)(void))
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		if (getuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0))
			_exit(99);
		_exit(fn());
	}
	int st;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFEXITED(st));
	return WEXITSTATUS(st);
}

static int try_put_denied(void)
{
	dp_backend *b;
	if (dp_backend_open(&b, repo, NULL) != 0)
		return 10;
	int rc = b->put(b, "data/00/p", "x", 1);
	const char *m = dp_error_last();
	fprintf(stderr, "put as nobody: %s\n", m);
	if (rc != DP_ERROR)
		return 11;
	if (!strstr(m, "permission denied") || !strstr(m, repo))
		return 12;
	rc = b->put(b, "config", "x", 1);
	if (rc != DP_ERROR || !strstr(dp_error_last(), "permission denied"))
		return 13;
	dp_buf out = {0};
	rc = b->get(b, "keys/secret", 0, UINT64_MAX, &out);
	fprintf(stderr, "get as nobody: %s\n", dp_error_last());
	if (rc != DP_ERROR || !strstr(dp_error_last(), "permission denied") ||
	    !strstr(dp_error_last(), "keys/secret"))
		return 14;
	if (b->create(b) != DP_ERROR || !strstr(dp_error_last(), "permission denied"))
		return 15;
	dp_backend_free(b);
	return 0;
}

START_TEST(t_permission_denied)
{
	dp_backend *b = open_repo();
	ck_assert_int_eq(b->put(b, "keys/secret", "k", 1), 0);
	dp_backend_free(b);
	/* Let nobody reach the repository, but not write in it. */
	ck_assert_int_eq(chmod(dp_test_dir, 0755), 0);
	ck_assert_int_eq(chmod(repo, 0755), 0);
	char p[PATH_MAX];
	mkpath(p, "%s/keys", repo);
	ck_assert_int_eq(chmod(p, 0755), 0);
	if (getuid() != 0) /* not root: the owner's write bit must go too */
		ck_assert_int_eq(chmod(repo, 0555), 0);
	ck_assert_int_eq(as_nobody(try_put_denied), 0);
	ck_assert_int_eq(chmod(repo, 0755), 0);
}
END_TEST

/* Mounts a tmpfs of the given size at mnt (dp_test_dir/name) in a mount
 * namespace of this forked test's own. False, with a note, where no
 * namespace can be made: the caller skips what needs it. */
static bool private_tmpfs(char mnt[PATH_MAX], const char *name, const char *size, const char *test)
{
	if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
		fprintf(stderr, "%s: cannot make a mount namespace (%s): tmpfs not tried\n", test,
		        strerror(errno));
		return false;
	}
	char opts[64];
	snprintf(opts, sizeof(opts), "size=%s", size);
	mkpath(mnt, "%s/%s", dp_test_dir, name);
	ck_assert_int_eq(mkdir(mnt, 0700), 0);
	ck_assert_msg(mount("tmpfs", mnt, "tmpfs", 0, opts) == 0, "mount: %s", strerror(errno));
	return true;
}

START_TEST(t_disk_full)
{
	char mnt[PATH_MAX];
	if (!private_tmpfs(mnt, "small", "1m", "t_disk_full"))
		return;
	dp_backend *b;
	ck_assert_int_eq(make_posix(&b, mnt), 0);
	static uint8_t data[2 << 20];
	int rc = b->put(b, "data/00/big", data, sizeof(data));
	ck_assert_int_eq(rc, DP_ENOSPACE);
	ck_assert_msg(strstr(dp_error_last(), "no space left") && strstr(dp_error_last(), mnt),
	              "%s", dp_error_last());
	/* Nothing visible, and the space was given back. */
	uint64_t size;
	ck_assert_int_eq(b->stat(b, "data/00/big", &size), DP_ENOTFOUND);
	char dir[PATH_MAX];
	mkpath(dir, "%s/repo/data/00", mnt);
	ck_assert_int_eq(count_entries(dir, NULL), 0);
	ck_assert_int_eq(b->put(b, "data/00/small", data, 100000), 0);
	dp_backend_free(b);
	umount(mnt);
}
END_TEST

/* Large page-aligned puts go to the disk with O_DIRECT up to their last
 * whole page and through the page cache for the rest; a filesystem that
 * refuses O_DIRECT (tmpfs) gets ordinary writes. Either way the object
 * reads back byte for byte, for aligned and unaligned lengths and buffers. */
static void put_get_sizes(dp_backend *b)
{
	static const size_t sizes[] = {1u << 20, (3u << 20) + 123, (2u << 20) - 1, 4096 * 300 + 1};
	uint8_t *buf = NULL;
	ck_assert_int_eq(posix_memalign((void **)&buf, 4096, (4u << 20) + 4096), 0);
	for (size_t i = 0; i < (4u << 20) + 4096; i++)
		buf[i] = (uint8_t)(i * 2654435761u >> 13);
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		for (int shift = 0; shift < 2; shift++) { /* aligned, then not */
			const uint8_t *d = buf + shift;
			ck_assert_msg(b->put(b, "data/00/p", d, sizes[k]) == 0, "%s",
			              dp_error_last());
			dp_buf out = {0};
			ck_assert_int_eq(b->get(b, "data/00/p", 0, UINT64_MAX, &out), 0);
			ck_assert_uint_eq(out.len, sizes[k]);
			ck_assert(memcmp(out.data, d, sizes[k]) == 0);
			dp_buf_free(&out);
		}
	}
	free(buf);
}

START_TEST(t_direct_writes)
{
	dp_backend *b = open_repo();
	put_get_sizes(b);
	dp_backend_free(b);
	/* tmpfs, which refuses O_DIRECT */
	char mnt[PATH_MAX];
	if (!private_tmpfs(mnt, "tmpfs", "64m", "t_direct_writes"))
		return;
	ck_assert_int_eq(make_posix(&b, mnt), 0);
	put_get_sizes(b);
	dp_backend_free(b);
	umount(mnt);
}
END_TEST

START_TEST(t_truncated_file)
{
	dp_backend *b = open_repo();
	static uint8_t data[10000];
	ck_assert_int_eq(b->put(b, "data/ef/pack", data, sizeof(data)), 0);
	char p[PATH_MAX];
	mkpath(p, "%s/data/ef/pack", repo);
	ck_assert_int_eq(truncate(p, 6000), 0);
	dp_buf out = {0};
	ck_assert_int_eq(b->get(b, "data/ef/pack", 5000, 2000, &out), DP_ECORRUPT);
	ck_assert_msg(strstr(dp_error_last(), "truncated") && strstr(dp_error_last(), p), "%s",
	              dp_error_last());
	ck_assert_int_eq(b->get(b, "data/ef/pack", 0, 6000, &out), 0);
	dp_buf_free(&out);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_invalid_keys)
{
	dp_backend *b = open_repo();
	const char *bad[] = {"",   "/etc/passwd", "../escape",   "data/../../escape", "a//b",
	                     "a/", ".hidden",     "data/.tmp-x", "data/./x",          "data/.."};
	dp_buf out = {0};
	uint64_t size;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(b->put(b, bad[i], "x", 1) == DP_EUSAGE, "put \"%s\"", bad[i]);
		ck_assert_msg(strstr(dp_error_last(), "invalid object key"), "%s", dp_error_last());
		ck_assert_int_eq(b->get(b, bad[i], 0, UINT64_MAX, &out), DP_EUSAGE);
		ck_assert_int_eq(b->stat(b, bad[i], &size), DP_EUSAGE);
		ck_assert_int_eq(b->remove(b, bad[i]), DP_EUSAGE);
	}
	int n = 0;
	ck_assert_int_eq(b->list(b, "../", count_cb, &n), DP_EUSAGE);
	ck_assert_int_eq(b->list(b, "/", count_cb, &n), DP_EUSAGE);
	ck_assert(!exists("%s/escape", dp_test_dir));
	ck_assert_int_eq(count_entries(repo, NULL), 0);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_modes)
{
	umask(022);
	dp_backend *b = open_repo();
	struct stat st;
	ck_assert_int_eq(stat(repo, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0700);
	ck_assert_int_eq(b->put(b, "data/00/p", "x", 1), 0);
	char p[PATH_MAX];
	mkpath(p, "%s/data/00/p", repo);
	ck_assert_int_eq(stat(p, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	mkpath(p, "%s/data/00", repo);
	ck_assert_int_eq(stat(p, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0700);
	dp_backend_free(b);
	/* A group-shared root: new objects follow it. */
	ck_assert_int_eq(chmod(repo, 0750), 0);
	ck_assert_int_eq(dp_backend_open(&b, repo, NULL), 0);
	ck_assert_int_eq(b->put(b, "index/i", "x", 1), 0);
	mkpath(p, "%s/index/i", repo);
	ck_assert_int_eq(stat(p, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0640);
	mkpath(p, "%s/index", repo);
	ck_assert_int_eq(stat(p, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0750);
	dp_backend_free(b);
}
END_TEST

START_TEST(t_create)
{
	dp_backend *b;
	char path[PATH_MAX];
	mkpath(path, "%s/a/b/repo/", dp_test_dir);
	ck_assert_int_eq(dp_backend_open(&b, path, NULL), 0);
	ck_assert_msg(b->create(b) == 0, "%s", dp_error_last());
	ck_assert_msg(b->create(b) == 0, "%s", dp_error_last()); /* again: fine */
	ck_assert(exists("%s/a/b/repo", dp_test_dir));
	dp_backend_free(b);
	/* Under a file: a clear error. */
	mkpath(path, "%s/file", dp_test_dir);
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fclose(f);
	mkpath(path, "%s/file/repo", dp_test_dir);
	ck_assert_int_eq(dp_backend_open(&b, path, NULL), 0);
	ck_assert_int_eq(b->create(b), DP_ERROR);
	ck_assert_msg(strstr(dp_error_last(), "not a directory") && strstr(dp_error_last(), path),
	              "%s", dp_error_last());
	dp_backend_free(b);
	/* The repository itself a file. */
	mkpath(path, "%s/file", dp_test_dir);
	ck_assert_int_eq(dp_backend_open(&b, path, NULL), 0);
	ck_assert_int_eq(b->create(b), DP_ERROR);
	ck_assert_ptr_nonnull(strstr(dp_error_last(), "not a directory"));
	dp_buf out = {0};
	ck_assert_int_eq(b->get(b, "config", 0, UINT64_MAX, &out), DP_ENOTFOUND);
	ck_assert_ptr_nonnull(strstr(dp_error_last(), "not a directory"));
	dp_backend_free(b);
}
END_TEST

/* Opens url, puts "config", and checks it landed in dir. */
static void check_address(const char *url, const char *dir)
{
	dp_backend *b;
	int rc = dp_backend_open(&b, url, NULL);
	ck_assert_msg(rc == 0, "open \"%s\": %s", url, dp_error_last());
	ck_assert_str_eq(b->name, "posix");
	ck_assert_uint_eq(b->features, DP_BACKEND_F_RANGE | DP_BACKEND_F_LOCAL);
	ck_assert_msg(b->create(b) == 0, "%s", dp_error_last());
	ck_assert_int_eq(b->put(b, "config", url, strlen(url)), 0);
	dp_backend_free(b);
	ck_assert_msg(exists("%s/config", dir), "\"%s\" did not write in %s", url, dir);
}

static void check_refused(const char *url, const char *needle)
{
	dp_backend *b = (dp_backend *)1;
	ck_assert_int_eq(dp_backend_open(&b, url, NULL), DP_EUSAGE);
	ck_assert_ptr_null(b);
	ck_assert_msg(strstr(dp_error_last(), needle), "\"%s\": %s", url, dp_error_last());
}

START_TEST(t_addresses)
{
	char url[PATH_MAX], dir[PATH_MAX];
	mkpath(dir, "%s/abs", dp_test_dir);
	check_address(dir, dir);
	mkpath(dir, "%s/url", dp_test_dir);
	mkpath(url, "file://%s", dir);
	check_address(url, dir);
	mkpath(dir, "%s/upper", dp_test_dir);
	mkpath(url, "FILE://%s", dir);
	check_address(url, dir);
	mkpath(dir, "%s/local", dp_test_dir);
	mkpath(url, "file://localhost%s", dir);
	check_address(url, dir);
	/* Relative paths are taken against the current directory at open. */
	ck_assert_int_eq(chdir(dp_test_dir), 0);
	mkpath(dir, "%s/rel/repo", dp_test_dir);
	check_address("rel/repo", dir);
	mkpath(dir, "%s/dot", dp_test_dir);
	check_address("./dot/", dir);

	/* Messages show the path cleaned of "//" and "/./". */
	dp_backend *b;
	mkpath(url, "%s//x/./y/", dp_test_dir);
	ck_assert_int_eq(dp_backend_open(&b, url, NULL), 0);
	dp_buf out = {0};
	ck_assert_int_eq(b->get(b, "config", 0, UINT64_MAX, &out), DP_ENOTFOUND);
	mkpath(dir, "\"%s/x/y\" does not exist", dp_test_dir);
	ck_assert_msg(strstr(dp_error_last(), dir), "%s", dp_error_last());
	dp_backend_free(b);

	check_refused("", "no repository");
	check_refused("ftp://host/x", "\"ftp\" is not known");
	check_refused("file://otherhost/x", "file:///PATH");
	check_refused("file://relative", "file:///PATH");
	check_refused("/", "\"/\"");
	check_refused("///", "\"/\"");
}
END_TEST

static Suite *posix_suite(void)
{
	Suite *s = suite_create("posix backend");
	TCase *tc = tcase_create("posix");
	tcase_add_checked_fixture(tc, dp_test_setup, dp_test_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, t_no_temp_visible);
	tcase_add_test(tc, t_direct_writes);
	tcase_add_test(tc, t_leftover_temp_not_listed);
	tcase_add_test(tc, t_killed_put_leaves_nothing);
	tcase_add_test(tc, t_killed_overwrite_keeps_old);
	tcase_add_test(tc, t_missing_repository);
	tcase_add_test(tc, t_permission_denied);
	tcase_add_test(tc, t_disk_full);
	tcase_add_test(tc, t_truncated_file);
	tcase_add_test(tc, t_invalid_keys);
	tcase_add_test(tc, t_modes);
	tcase_add_test(tc, t_create);
	tcase_add_test(tc, t_addresses);
	suite_add_tcase(s, tc);
	dp_backend_conformance_add(s, "posix", make_posix);
	return s;
}

DP_TEST_MAIN(posix_suite)
