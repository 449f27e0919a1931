/*
 * Implementation of the test helpers in dp_test.h. Test-only code: failures
 * abort the test with ck_abort_msg rather than returning codes.
 */
#include "dp_test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

char dp_test_dir[PATH_MAX];

static char *slurp_fd(int fd)
{
	size_t cap = 4096, len = 0;
	char *s = malloc(cap);
	ck_assert_ptr_nonnull(s);
	for (;;) {
		if (len + 1 >= cap) {
			cap *= 2;
			s = realloc(s, cap);
			ck_assert_ptr_nonnull(s);
		}
		ssize_t n = read(fd, s + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	s[len] = 0;
	return s;
}

int dp_test_run(dp_test_result *res, const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	ck_assert_msg(n > 0 && (size_t)n < sizeof(cmd), "command too long");

	/* Capture through temp files so that a chatty child never blocks. */
	char outp[PATH_MAX], errp[PATH_MAX];
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(outp, sizeof(outp), "%s/dp-test-out-XXXXXX", tmp);
	snprintf(errp, sizeof(errp), "%s/dp-test-err-XXXXXX", tmp);
	int ofd = mkstemp(outp), efd = mkstemp(errp);
	ck_assert_int_ge(ofd, 0);
	ck_assert_int_ge(efd, 0);
	unlink(outp);
	unlink(errp);

	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		dup2(ofd, 1);
		dup2(efd, 2);
		int nul = open("/dev/null", O_RDONLY);
		if (nul >= 0)
			dup2(nul, 0);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	lseek(ofd, 0, SEEK_SET);
	lseek(efd, 0, SEEK_SET);
	res->out = slurp_fd(ofd);
	res->err = slurp_fd(efd);
	close(ofd);
	close(efd);
	res->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	return res->status;
}

void dp_test_result_free(dp_test_result *res)
{
	free(res->out);
	free(res->err);
	res->out = res->err = NULL;
}

const char *dp_test_bin(const char *name)
{
	static char paths[8][PATH_MAX];
	static char names[8][64];
	for (int i = 0; i < 8; i++) {
		if (strcmp(names[i], name) == 0)
			return paths[i];
		if (names[i][0] == 0) {
			const char *bin = getenv("BIN") ? getenv("BIN") : "bin";
			snprintf(names[i], sizeof(names[i]), "%s", name);
			snprintf(paths[i], sizeof(paths[i]), "%s/%s", bin, name);
			return paths[i];
		}
	}
	ck_abort_msg("too many programs");
	return NULL;
}

void dp_test_mkdtemp(char out[PATH_MAX], const char *tag)
{
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(out, PATH_MAX, "%s/dp-%s-XXXXXX", tmp, tag);
	ck_assert_ptr_nonnull(mkdtemp(out));
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

void dp_test_rmrf(const char *path)
{
	if (path && path[0])
		nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS);
}

/* xorshift: fast, deterministic, good enough for test data. */
static uint64_t next_rand(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

void dp_test_write_data(const char *path, uint64_t size, uint32_t seed, bool compressible)
{
	FILE *f = fopen(path, "wb");
	ck_assert_msg(f != NULL, "cannot create %s", path);
	uint64_t s = 0x9e3779b97f4a7c15ull ^ ((uint64_t)seed * 0x100000001b3ull) ^ 1;
	static uint8_t block[65536];
	while (size > 0) {
		size_t n = size < sizeof(block) ? (size_t)size : sizeof(block);
		for (size_t i = 0; i < n; i += 8) {
			uint64_t r = next_rand(&s);
			memcpy(block + i, &r, n - i < 8 ? n - i : 8);
		}
		if (compressible) {
			/* Runs of repeated text between random bytes, about 3:1 for zstd. */
			for (size_t i = 0; i + 64 <= n; i += 96)
				memset(block + i, 'a' + (int)(next_rand(&s) % 4), 64);
		}
		ck_assert_uint_eq(fwrite(block, 1, n, f), n);
		size -= n;
	}
	ck_assert_int_eq(fclose(f), 0);
}

bool dp_test_files_equal(const char *a, const char *b)
{
	FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
	bool eq = fa && fb;
	static uint8_t ba[65536], bb[65536];
	while (eq) {
		size_t na = fread(ba, 1, sizeof(ba), fa);
		size_t nb = fread(bb, 1, sizeof(bb), fb);
		if (na != nb || memcmp(ba, bb, na) != 0)
			eq = false;
		if (na == 0)
			break;
	}
	if (fa)
		fclose(fa);
	if (fb)
		fclose(fb);
	return eq;
}

static uint64_t du_total;
static int du_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)path;
	(void)ftw;
	if (flag == FTW_F && S_ISREG(sb->st_mode))
		du_total += (uint64_t)sb->st_size;
	return 0;
}

uint64_t dp_test_du(const char *dir)
{
	du_total = 0;
	nftw(dir, du_one, 32, FTW_PHYS);
	return du_total;
}

void dp_test_setup(void)
{
	dp_test_mkdtemp(dp_test_dir, "test");
}

void dp_test_teardown(void)
{
	dp_test_rmrf(dp_test_dir);
}
