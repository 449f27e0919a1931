/*
 * The API token file: $DP_HOME/api-token, one line of hex (32 random bytes),
 * mode 0600, owned by the user who runs dp. Created on first use by writing
 * a temp file and link()ing it into place, so two processes starting at once
 * agree on one token and nobody ever reads a half-written file. The token is
 * never logged; buffers that held it are wiped. Thread-safe (no state).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dp/api.h"
#include "dp/catalog.h"
#include "dp/crypto.h"
#include "dp/error.h"

#define TOKEN_BYTES 32

static int create_token(const char *home, const char *path)
{
	uint8_t raw[TOKEN_BYTES];
	char line[2 * TOKEN_BYTES + 2], tmp[PATH_MAX + 64], rnd[9];
	uint8_t r4[4];
	int rc, fd = -1;
	if ((rc = dp_random(raw, sizeof(raw))) || (rc = dp_random(r4, sizeof(r4))))
		return rc;
	dp_hex(line, raw, sizeof(raw));
	dp_wipe(raw, sizeof(raw));
	line[2 * TOKEN_BYTES] = '\n';
	line[2 * TOKEN_BYTES + 1] = '\0';
	dp_hex(rnd, r4, sizeof(r4));
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp.%ld.%s", home, DP_API_TOKEN_FILE, (long)getpid(),
	         rnd);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		rc = dp_error_errno(DP_ERROR, errno, "cannot create API token file \"%s\"", tmp);
		goto out;
	}
	size_t len = 2 * TOKEN_BYTES + 1;
	if (write(fd, line, len) != (ssize_t)len || fsync(fd) != 0) {
		rc = dp_error_errno(DP_ERROR, errno, "cannot write API token file \"%s\"", tmp);
		goto out;
	}
	/* link() fails with EEXIST if another process won the race: use theirs. */
	if (link(tmp, path) != 0 && errno != EEXIST) {
		rc = dp_error_errno(DP_ERROR, errno, "cannot create API token file \"%s\"", path);
		goto out;
	}
	int dfd = open(home, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
out:
	dp_wipe(line, sizeof(line));
	if (fd >= 0) {
		close(fd);
		unlink(tmp);
	}
	return rc;
}

static int read_token(char *out, size_t outlen, const char *path)
{
	char text[512];
	struct stat st;
	int rc = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errno == ENOENT ? DP_ENOTFOUND
		                       : dp_error_errno(errno == ELOOP ? DP_EAUTH : DP_ERROR, errno,
		                                        "cannot open API token file \"%s\"", path);
	if (fstat(fd, &st) != 0) {
		rc = dp_error_errno(DP_ERROR, errno, "cannot stat API token file \"%s\"", path);
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = dp_error_set(DP_EAUTH, "API token file \"%s\" is not a regular file", path);
		goto out;
	}
	if (st.st_uid != geteuid()) {
		rc =
		    dp_error_set(DP_EAUTH,
		                 "API token file \"%s\" is owned by uid %ld, not by this user (uid "
		                 "%ld); remove it to get a new token",
		                 path, (long)st.st_uid, (long)geteuid());
		goto out;
	}
	if (st.st_mode & 077) {
		rc = dp_error_set(DP_EAUTH,
		                  "API token file \"%s\" is readable by others (mode %03o); run "
		                  "chmod 600 \"%s\", or remove it to get a new token",
		                  path, (unsigned)(st.st_mode & 0777), path);
		goto out;
	}
	ssize_t n = read(fd, text, sizeof(text) - 1);
	if (n < 0) {
		rc = dp_error_errno(DP_ERROR, errno, "cannot read API token file \"%s\"", path);
		goto out;
	}
	text[n] = '\0';
	while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r' || text[n - 1] == ' ' ||
	                 text[n - 1] == '\t'))
		text[--n] = '\0';
	bool ok = n >= 16 && (size_t)n < sizeof(text) - 1;
	for (ssize_t i = 0; ok && i < n; i++)
		ok = text[i] > ' ' && text[i] < 127;
	if (!ok) {
		rc =
		    dp_error_set(DP_EAUTH,
		                 "API token file \"%s\" does not hold a token (16 to 500 printable "
		                 "characters on one line); remove it to get a new token",
		                 path);
		goto out;
	}
	if ((size_t)n >= outlen) {
		rc = dp_error_set(DP_ERROR, "API token in \"%s\" is too long for this build", path);
		goto out;
	}
	memcpy(out, text, (size_t)n + 1);
out:
	dp_wipe(text, sizeof(text));
	close(fd);
	return rc;
}

int dp_api_token(char *out, size_t outlen, const char *home)
{
	char dir[PATH_MAX], path[PATH_MAX + 32];
	int rc;
	if (!home) {
		if ((rc = dp_home(dir, sizeof(dir))))
			return rc;
		home = dir;
	}
	snprintf(path, sizeof(path), "%s/%s", home, DP_API_TOKEN_FILE);
	rc = read_token(out, outlen, path);
	if (rc != DP_ENOTFOUND)
		return rc;
	if ((rc = create_token(home, path)))
		return rc;
	rc = read_token(out, outlen, path);
	if (rc == DP_ENOTFOUND)
		rc = dp_error_set(DP_ERROR, "API token file \"%s\" vanished after it was created",
		                  path);
	return rc;
}
