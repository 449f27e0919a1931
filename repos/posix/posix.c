/*
 * The posix transport: a repository is a directory tree on a local disk or
 * a NAS mount, one file per object, the key being the path under the root.
 *
 * Invariants (the contract in dp/sys/backend.h):
 *  - put writes "<dir>/.tmp-<random>-<pid>" in the object's own directory,
 *    fsyncs it, renames it over the final name and fsyncs the directory, so a
 *    reader (or a crash) sees no object or the whole object. Directories are
 *    created on demand and their parent is fsynced after each mkdir.
 *  - names starting with '.' are never objects: keys may not have such a
 *    component and list skips them, so temp files left by a killed put (and
 *    things like a NAS's ".snapshot") are never listed.
 *  - files and directories take their mode from the repository root
 *    (files without the x bits), masked by the umask; "create" makes a
 *    missing root 0700. To share a repository with a group, chmod the root.
 *
 * Errors name the object's full path (never the temp name). ENOENT on the root is "repository does
 * not exist" (DP_ENOTFOUND), ENOSPC/EDQUOT is DP_ENOSPACE, EACCES/EPERM/EROFS say "permission
 * denied" / "read-only".
 *
 * Thread safety: the backend holds no mutable state after open (the temp
 * name counter is atomic), so every member may run on several threads.
 * create is meant to run once before the others (it refreshes the modes).
 */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dp/error.h"
#include "dp/sys/backend.h"

#define TMP_PREFIX ".tmp-"

typedef struct posix_backend {
	dp_backend base; /* first: a dp_backend * is a posix_backend * */
	char *root; /* absolute, no trailing '/', not "/" */
	size_t rootlen;
	mode_t fmode; /* for new files */
	mode_t dmode; /* for new directories below the root */
} posix_backend;

static atomic_ulong tmp_counter;

/* ---- errors ---- */

static int io_error(int err, const char *what, const char *path)
{
	switch (err) {
	case ENOSPC:
	case EDQUOT:
		return dp_error_set(DP_ENOSPACE,
		                    "cannot %s \"%s\": no space left on device (or quota "
		                    "exceeded): free space in the repository's filesystem",
		                    what, path);
	case EACCES:
	case EPERM:
		return dp_error_set(DP_ERROR,
		                    "cannot %s \"%s\": permission denied (check the owner and "
		                    "mode of the repository directory)",
		                    what, path);
	case EROFS:
		return dp_error_set(DP_ERROR, "cannot %s \"%s\": read-only file system", what,
		                    path);
	default:
		return dp_error_errno(DP_ERROR, err, "cannot %s \"%s\"", what, path);
	}
}

/* Called when an operation hit ENOENT/ENOTDIR: if the root itself is
 * missing, say so (DP_ENOTFOUND) and return non-zero; else return 0. */
static int root_missing(const posix_backend *p)
{
	struct stat st;
	if (stat(p->root, &st) == 0) {
		if (S_ISDIR(st.st_mode))
			return 0;
		return dp_error_set(DP_ENOTFOUND, "repository \"%s\" is not a directory", p->root);
	}
	if (errno == ENOENT || errno == ENOTDIR)
		return dp_error_set(DP_ENOTFOUND,
		                    "repository \"%s\" does not exist (create it with \"dp repo "
		                    "init\", or check the path)",
		                    p->root);
	return io_error(errno, "access repository", p->root);
}

/* ---- keys and paths ---- */

/* A key (or, with is_prefix, a list prefix) as the contract allows: '/'
 * separated, not starting with '/', no empty component, no component
 * starting with '.' (that covers "." and ".." and our temp names). A prefix
 * may be empty and may end with '/'. */
static int check_key(const char *key, bool is_prefix)
{
	const char *why = NULL;
	if (!key)
		return dp_error_set(DP_EUSAGE, "no object key given");
	if (!key[0] && !is_prefix)
		why = "empty";
	else if (key[0] == '/')
		why = "starts with '/'";
	for (const char *c = key; !why && *c; c++) {
		bool start = c == key || c[-1] == '/';
		if (start && *c == '/')
			why = "has an empty component (\"//\")";
		else if (start && *c == '.')
			why = "has a component starting with '.'";
	}
	size_t len = strlen(key);
	if (!why && !is_prefix && key[len - 1] == '/')
		why = "ends with '/'";
	if (why)
		return dp_error_set(DP_EUSAGE, "invalid object key \"%s\": it %s", key, why);
	return 0;
}

/* root + "/" + key into out[PATH_MAX]. */
static int join(const posix_backend *p, const char *key, char *out)
{
	int n = snprintf(out, PATH_MAX, "%s/%s", p->root, key);
	if (n < 0 || n >= PATH_MAX)
		return dp_error_set(DP_EUSAGE, "object key \"%s\" too long for repository \"%s\"",
		                    key, p->root);
	return 0;
}

/* A fresh temp name in the directory dir (length dlen of path). Random so
 * that hosts sharing a NAS never collide; pid + counter so that this host
 * never does even without randomness. */
static void tmp_name(char *out, const char *dir, size_t dlen)
{
	uint64_t r = 0;
	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r)) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		r = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30);
	}
	unsigned long c = atomic_fetch_add(&tmp_counter, 1);
	snprintf(out, PATH_MAX, "%.*s/" TMP_PREFIX "%016llx-%ld-%lu", (int)dlen, dir,
	         (unsigned long long)r, (long)getpid(), c);
}

/* fsync a directory given as the first dlen bytes of path. Some
 * filesystems refuse fsync on directories (EINVAL): that is not an error. */
static int fsync_dir(const char *path, size_t dlen)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%.*s", (int)dlen, path);
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return io_error(errno, "open directory", dir);
	int rc = 0;
	if (fsync(fd) != 0 && errno != EINVAL && errno != EBADF)
		rc = io_error(errno, "sync directory", dir);
	close(fd);
	return rc;
}

/* Creates the directories of path below the root, up to (not including)
 * byte dlen, fsyncing the parent of each one made. */
static int make_parents(const posix_backend *p, char *path, size_t dlen)
{
	for (size_t i = p->rootlen + 1; i <= dlen; i++) {
		if (i < dlen && path[i] != '/')
			continue;
		char saved = path[i];
		path[i] = 0;
		int rc = 0;
		if (mkdir(path, p->dmode) == 0) {
			char *slash = strrchr(path, '/');
			rc = fsync_dir(path, (size_t)(slash - path));
		} else if (errno == ENOENT) {
			/* Only the root can be missing: we create from the top down. */
			rc = root_missing(p);
			if (rc == 0)
				rc = io_error(ENOENT, "create directory", path);
		} else if (errno != EEXIST) {
			rc = io_error(errno, "create directory", path);
		}
		path[i] = saved;
		if (rc)
			return rc;
	}
	return 0;
}

static int write_all(int fd, const uint8_t *data, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, data, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Writes data to the new, empty file fd. A large buffer aligned to the
 * page goes to the disk with O_DIRECT, up to its last whole page, and the
 * rest through the page cache: the kernel then does not copy it (copying
 * packs into the page cache was ~11% of a push's CPU on compressible-text
 * streams). Where O_DIRECT is refused (tmpfs, some network filesystems) it
 * falls back to an ordinary write. The caller fsyncs either way. */
#define DIRECT_ALIGN 4096u
#define DIRECT_MIN (1u << 20)

static int write_new(int fd, const uint8_t *data, size_t len)
{
	size_t head = len & ~(size_t)(DIRECT_ALIGN - 1);
	int fl = fcntl(fd, F_GETFL);
	if (len < DIRECT_MIN || (uintptr_t)data % DIRECT_ALIGN || fl < 0 ||
	    fcntl(fd, F_SETFL, fl | O_DIRECT) != 0)
		return write_all(fd, data, len);
	size_t done = 0;
	while (done < head) {
		ssize_t n = write(fd, data + done, head - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || (size_t)n % DIRECT_ALIGN)
			break; /* refused (EINVAL) or short: the page cache does the rest */
		done += (size_t)n;
	}
	if (fcntl(fd, F_SETFL, fl) != 0)
		return -1;
	if (done < head && lseek(fd, (off_t)done, SEEK_SET) < 0)
		return -1;
	return write_all(fd, data + done, len - done);
}

/* ---- the members ---- */

static int posix_put(dp_backend *b, const char *key, const void *data, size_t len)
{
	posix_backend *p = (posix_backend *)b;
	char path[PATH_MAX], tmp[PATH_MAX];
	int fd = -1, rc = check_key(key, false);
	bool tmp_exists = false;
	if (rc)
		return rc;
	if ((rc = join(p, key, path)))
		return rc;
	size_t dlen = (size_t)(strrchr(path, '/') - path);
	tmp_name(tmp, path, dlen);

	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, p->fmode);
	if (fd < 0 && (errno == ENOENT || errno == ENOTDIR)) {
		if ((rc = make_parents(p, path, dlen)))
			goto out;
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, p->fmode);
	}
	if (fd < 0) {
		int err = errno;
		if ((err == ENOENT || err == ENOTDIR) && (rc = root_missing(p)))
			goto out;
		rc = io_error(err, "write", path);
		goto out;
	}
	tmp_exists = true;
	if (write_new(fd, data, len) != 0) {
		rc = io_error(errno, "write", path);
		goto out;
	}
	if (fsync(fd) != 0) {
		rc = io_error(errno, "sync", path);
		goto out;
	}
	/* NFS may report a failed write only at close. */
	int cr = close(fd);
	fd = -1;
	if (cr != 0) {
		rc = io_error(errno, "write", path);
		goto out;
	}
	if (rename(tmp, path) != 0) {
		rc = io_error(errno, "rename into place", path);
		goto out;
	}
	tmp_exists = false;
	rc = fsync_dir(path, dlen);
out:
	if (fd >= 0)
		close(fd);
	if (tmp_exists)
		unlink(tmp);
	return rc;
}

static int not_found(const posix_backend *p, const char *path)
{
	int rc = root_missing(p);
	if (rc)
		return rc;
	return dp_error_set(DP_ENOTFOUND, "object \"%s\" not found", path);
}

static int posix_get(dp_backend *b, const char *key, uint64_t off, uint64_t len, dp_buf *out)
{
	posix_backend *p = (posix_backend *)b;
	char path[PATH_MAX];
	int fd = -1, rc = check_key(key, false);
	if (rc)
		return rc;
	if ((rc = join(p, key, path)))
		return rc;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return not_found(p, path);
		return io_error(errno, "open", path);
	}
	struct stat st;
	if (fstat(fd, &st) != 0) {
		rc = io_error(errno, "stat", path);
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = dp_error_set(DP_ENOTFOUND, "object \"%s\" not found (not a regular file)",
		                  path);
		goto out;
	}
	uint64_t size = (uint64_t)st.st_size;
	if (off > size || (len != UINT64_MAX && len > size - off)) {
		rc = dp_error_set(DP_ECORRUPT,
		                  "object \"%s\" is truncated: it has %llu bytes, bytes %llu..%llu "
		                  "were asked for",
		                  path, (unsigned long long)size, (unsigned long long)off,
		                  (unsigned long long)(len == UINT64_MAX ? size : off + len));
		goto out;
	}
	uint64_t want = len == UINT64_MAX ? size - off : len;
	if (want > SIZE_MAX / 2) {
		rc = dp_error_set(DP_ERROR, "object \"%s\" too large to read at once", path);
		goto out;
	}
	if ((rc = dp_buf_reserve(out, (size_t)want)))
		goto out;
	size_t done = 0;
	while (done < want) {
		ssize_t n = pread(fd, out->data + out->len + done, (size_t)want - done,
		                  (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = io_error(errno, "read", path);
			goto out;
		}
		if (n == 0) {
			rc =
			    dp_error_set(DP_ECORRUPT,
			                 "object \"%s\" is truncated: it ended at %llu bytes while "
			                 "being read",
			                 path, (unsigned long long)(off + done));
			goto out;
		}
		done += (size_t)n;
	}
	out->len += done;
	out->data[out->len] = 0;
out:
	if (fd >= 0)
		close(fd);
	return rc;
}

static int posix_stat(dp_backend *b, const char *key, uint64_t *size_out)
{
	posix_backend *p = (posix_backend *)b;
	char path[PATH_MAX];
	int rc = check_key(key, false);
	if (rc)
		return rc;
	if ((rc = join(p, key, path)))
		return rc;
	struct stat st;
	if (stat(path, &st) != 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return not_found(p, path);
		return io_error(errno, "stat", path);
	}
	if (!S_ISREG(st.st_mode))
		return dp_error_set(DP_ENOTFOUND, "object \"%s\" not found (not a regular file)",
		                    path);
	if (size_out)
		*size_out = (uint64_t)st.st_size;
	return 0;
}

typedef struct list_ctx {
	posix_backend *p;
	char key[PATH_MAX]; /* the key of the directory being read, then of each entry */
	dp_backend_list_cb cb;
	void *arg;
} list_ctx;

static int list_error(list_ctx *c, int err, size_t klen)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%.*s", c->p->root, (int)klen, c->key);
	return io_error(err, "list", path);
}

/* Lists the directory dfd (owned: closed here) whose key prefix is
 * c->key[0..klen) ("" or ending in '/'). Only entries whose name starts with
 * filter (if not NULL) are taken. */
static int list_dir(list_ctx *c, int dfd, size_t klen, const char *filter)
{
	int rc = 0;
	size_t flen = filter ? strlen(filter) : 0;
	DIR *d = fdopendir(dfd);
	if (!d) {
		rc = list_error(c, errno, klen);
		close(dfd);
		return rc;
	}
	for (;;) {
		errno = 0;
		struct dirent *e = readdir(d);
		if (!e) {
			if (errno)
				rc = list_error(c, errno, klen);
			break;
		}
		const char *name = e->d_name;
		if (name[0] == '.' || (flen && strncmp(name, filter, flen) != 0))
			continue;
		size_t nlen = strlen(name);
		if (klen + nlen + 2 > sizeof(c->key)) {
			rc = dp_error_set(DP_ERROR, "cannot list \"%s/%.*s%s\": path too long",
			                  c->p->root, (int)klen, c->key, name);
			break;
		}
		memcpy(c->key + klen, name, nlen + 1);
		struct stat st;
		bool have_st = false;
		unsigned char type = e->d_type;
		if (type == DT_UNKNOWN || type == DT_LNK || type == DT_REG) {
			if (fstatat(dirfd(d), name, &st, 0) != 0) {
				if (errno == ENOENT) /* removed while we list */
					continue;
				rc = list_error(c, errno, klen + nlen);
				break;
			}
			have_st = true;
			type = S_ISDIR(st.st_mode)   ? DT_DIR
			       : S_ISREG(st.st_mode) ? DT_REG
			                             : DT_UNKNOWN;
		}
		if (type == DT_DIR) {
			int child = openat(dirfd(d), name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (child < 0) {
				if (errno == ENOENT)
					continue;
				rc = list_error(c, errno, klen + nlen);
				break;
			}
			c->key[klen + nlen] = '/';
			c->key[klen + nlen + 1] = 0;
			if ((rc = list_dir(c, child, klen + nlen + 1, NULL)))
				break;
		} else if (type == DT_REG && have_st) {
			if ((rc = c->cb(c->key, (uint64_t)st.st_size, c->arg)))
				break;
		}
	}
	closedir(d);
	return rc;
}

static int posix_list(dp_backend *b, const char *prefix, dp_backend_list_cb cb, void *arg)
{
	posix_backend *p = (posix_backend *)b;
	if (!prefix)
		prefix = "";
	int rc = check_key(prefix, true);
	if (rc)
		return rc;
	list_ctx *c = malloc(sizeof(*c));
	if (!c)
		return dp_error_set(DP_ERROR, "out of memory");
	c->p = p;
	c->cb = cb;
	c->arg = arg;
	const char *slash = strrchr(prefix, '/');
	size_t klen = slash ? (size_t)(slash - prefix) + 1 : 0;
	char dir[PATH_MAX];
	int n = snprintf(dir, sizeof(dir), "%s/%.*s", p->root, (int)klen, prefix);
	if (n < 0 || n >= (int)sizeof(dir)) {
		rc = dp_error_set(DP_EUSAGE, "list prefix \"%s\" too long", prefix);
		goto out;
	}
	memcpy(c->key, prefix, klen);
	c->key[klen] = 0;
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			rc = root_missing(p); /* a missing sub-directory lists nothing */
		else
			rc = io_error(errno, "list", dir);
		goto out;
	}
	rc = list_dir(c, fd, klen, prefix[klen] ? prefix + klen : NULL);
out:
	free(c);
	return rc;
}

static int posix_remove(dp_backend *b, const char *key)
{
	posix_backend *p = (posix_backend *)b;
	char path[PATH_MAX];
	int rc = check_key(key, false);
	if (rc)
		return rc;
	if ((rc = join(p, key, path)))
		return rc;
	if (unlink(path) != 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		return io_error(errno, "remove", path);
	}
	return fsync_dir(path, (size_t)(strrchr(path, '/') - path));
}

/* Unlinks every key, then fsyncs each directory touched once (a prune may
 * remove thousands of packs from 256 directories). */
static int posix_remove_many(dp_backend *b, const char *const *keys, size_t n)
{
	posix_backend *p = (posix_backend *)b;
	char path[PATH_MAX];
	char **dirs = calloc(n, sizeof(*dirs));
	size_t ndirs = 0;
	int rc = 0;
	if (!dirs)
		return dp_error_set(DP_ERROR, "out of memory");
	for (size_t i = 0; i < n && rc == 0; i++) {
		if ((rc = check_key(keys[i], false)) || (rc = join(p, keys[i], path)))
			break;
		if (unlink(path) != 0) {
			if (errno != ENOENT && errno != ENOTDIR)
				rc = io_error(errno, "remove", path);
			continue;
		}
		*strrchr(path, '/') = 0;
		bool seen = false;
		for (size_t j = 0; j < ndirs && !seen; j++)
			seen = strcmp(dirs[j], path) == 0;
		if (!seen) {
			if (!(dirs[ndirs] = strdup(path)))
				rc = dp_error_set(DP_ERROR, "out of memory");
			else
				ndirs++;
		}
	}
	for (size_t j = 0; j < ndirs; j++) {
		if (rc == 0)
			rc = fsync_dir(dirs[j], strlen(dirs[j]));
		free(dirs[j]);
	}
	free(dirs);
	return rc;
}

/* New files and directories follow the root's mode. */
static void take_modes(posix_backend *p, mode_t root_mode)
{
	p->dmode = root_mode & 0777;
	p->fmode = root_mode & 0666;
}

static int posix_create(dp_backend *b)
{
	posix_backend *p = (posix_backend *)b;
	char path[PATH_MAX], tmp[PATH_MAX];
	struct stat st;
	int fd = -1, rc = 0;
	snprintf(path, sizeof(path), "%s", p->root);
	/* mkdir -p: intermediate directories get the umask's mode, the root
	 * itself 0700. */
	for (size_t i = 1; i <= p->rootlen; i++) {
		if (i < p->rootlen && path[i] != '/')
			continue;
		path[i] = 0;
		bool last = i == p->rootlen;
		if (mkdir(path, last ? 0700 : 0777) == 0) {
			char *slash = strrchr(path, '/');
			if ((rc = fsync_dir(path, slash == path ? 1 : (size_t)(slash - path))))
				return rc;
		} else if (errno != EEXIST) {
			if (errno == ENOTDIR)
				return dp_error_set(
				    DP_ERROR,
				    "cannot create repository \"%s\": a component of "
				    "the path is not a directory",
				    p->root);
			return io_error(errno, "create repository directory", path);
		}
		if (!last)
			path[i] = '/';
	}
	if (stat(p->root, &st) != 0)
		return io_error(errno, "access repository", p->root);
	if (!S_ISDIR(st.st_mode))
		return dp_error_set(DP_ERROR, "repository \"%s\" is not a directory", p->root);
	take_modes(p, st.st_mode);

	/* Writable? access() lies for root and on NFS: try it. */
	tmp_name(tmp, p->root, p->rootlen);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, p->fmode);
	if (fd < 0)
		return io_error(errno, "write in repository", p->root);
	if (write_all(fd, (const uint8_t *)"probe", 5) != 0 || fsync(fd) != 0)
		rc = io_error(errno, "write in repository", p->root);
	close(fd);
	unlink(tmp);
	return rc;
}

/* Unlinks the temporary files under the directory dfd (owned: closed here),
 * recursively; path is for messages. */
static int sweep_tmp(int dfd, const char *path)
{
	int rc = 0;
	DIR *d = fdopendir(dfd);
	if (!d) {
		rc = io_error(errno, "clean", path);
		close(dfd);
		return rc;
	}
	struct dirent *e;
	while ((e = readdir(d))) {
		const char *name = e->d_name;
		if (strncmp(name, TMP_PREFIX, strlen(TMP_PREFIX)) == 0) {
			if (unlinkat(dirfd(d), name, 0) != 0 && errno != ENOENT) {
				rc = io_error(errno, "remove a temporary file in", path);
				break;
			}
			continue;
		}
		struct stat st;
		if (name[0] == '.' || fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
		    !S_ISDIR(st.st_mode))
			continue;
		int child = openat(dirfd(d), name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
		if (child < 0)
			continue;
		char sub[PATH_MAX];
		snprintf(sub, sizeof(sub), "%s/%s", path, name);
		if ((rc = sweep_tmp(child, sub)))
			break;
	}
	closedir(d);
	return rc;
}

static int posix_cleanup(dp_backend *b, const char *prefix)
{
	posix_backend *p = (posix_backend *)b;
	char dir[PATH_MAX];
	int rc = check_key(prefix, true);
	if (rc)
		return rc;
	int n = snprintf(dir, sizeof(dir), "%s/%s", p->root, prefix);
	if (n < 0 || n >= (int)sizeof(dir))
		return dp_error_set(DP_EUSAGE, "prefix \"%s\" too long", prefix);
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return (errno == ENOENT || errno == ENOTDIR) ? 0 : io_error(errno, "clean", dir);
	return sweep_tmp(fd, dir);
}

static void posix_free(dp_backend *b)
{
	posix_backend *p = (posix_backend *)b;
	if (!p)
		return;
	free(p->root);
	free(p);
}

/* url: "file:///PATH", "file://localhost/PATH", or a path (relative paths
 * are made absolute against the current directory, once, here). */
int dp_posix_backend_open(dp_backend **out, const char *url, const dp_backend_opts *opts)
{
	(void)opts;
	assert(out);
	*out = NULL;
	const char *path = url;
	char buf[PATH_MAX];
	if (!url || !url[0])
		return dp_error_set(DP_EUSAGE, "no repository path given");
	if (strncasecmp(url, "file://", 7) == 0) {
		path = url + 7;
		if (strncasecmp(path, "localhost/", 10) == 0)
			path += 9;
		if (path[0] != '/')
			return dp_error_set(
			    DP_EUSAGE,
			    "repository address \"%s\" is not a local absolute path: "
			    "use file:///PATH",
			    url);
	}
	if (path[0] != '/') {
		char cwd[PATH_MAX];
		if (!getcwd(cwd, sizeof(cwd)))
			return io_error(errno, "find the current directory for", path);
		int n = snprintf(buf, sizeof(buf), "%s/%s", cwd, path);
		if (n < 0 || n >= (int)sizeof(buf))
			return dp_error_set(DP_EUSAGE, "repository path \"%s\" too long", path);
		path = buf;
	}
	/* Drop empty and "." components so messages show a clean path ("..",
	 * which depends on symlinks, is kept as given). */
	char clean[PATH_MAX];
	size_t len = 0;
	for (const char *c = path; *c;) {
		while (*c == '/')
			c++;
		size_t n = strcspn(c, "/");
		if (n == 0 || (n == 1 && c[0] == '.')) {
			c += n;
			continue;
		}
		if (len + 1 + n >= sizeof(clean))
			return dp_error_set(DP_EUSAGE, "repository path \"%s\" too long", path);
		clean[len++] = '/';
		memcpy(clean + len, c, n);
		len += n;
		c += n;
	}
	clean[len] = 0;
	path = clean;
	if (len == 0)
		return dp_error_set(DP_EUSAGE,
		                    "refusing to use \"/\" as a repository: give a directory");
	if (len + 2 >= PATH_MAX)
		return dp_error_set(DP_EUSAGE, "repository path \"%s\" too long", path);

	posix_backend *p = calloc(1, sizeof(*p));
	if (!p || !(p->root = strndup(path, len))) {
		free(p);
		return dp_error_set(DP_ERROR, "out of memory");
	}
	p->rootlen = len;
	p->base.version = DP_BACKEND_VERSION;
	p->base.features = DP_BACKEND_F_RANGE | DP_BACKEND_F_LOCAL;
	p->base.name = "posix";
	p->base.put = posix_put;
	p->base.get = posix_get;
	p->base.stat = posix_stat;
	p->base.list = posix_list;
	p->base.remove = posix_remove;
	p->base.free = posix_free;
	p->base.create = posix_create;
	p->base.remove_many = posix_remove_many;
	p->base.cleanup = posix_cleanup;
	struct stat st;
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		take_modes(p, st.st_mode);
	else
		take_modes(p, 0700);
	*out = &p->base;
	return 0;
}
