/*
 * Directory trees <-> pax tar streams over libarchive (see tar.h).
 *
 * Push: archive_read_disk walks the tree (symlinks are stored, not
 * followed, except the root given on the command line), a link resolver
 * turns second and later names of an inode into hard-link entries, and
 * file data is copied block by block; holes reported by the disk reader are
 * passed as zeros, which the pax writer drops because the entry carries the
 * sparse map (the same scheme as bsdtar). Paths are stored relative to the
 * root, the root itself as ".".
 *
 * Pull: every entry path is checked (no absolute path, no "..") and put
 * under the real path of the target directory; archive_write_disk then
 * refuses to write through symlinks (SECURE_SYMLINKS) and recreates holes
 * (SPARSE). Directory modes and times are applied at the end, when the
 * writer is closed.
 *
 * Errors carry the DP_E* code of the callback that failed (a corrupt
 * stream stays DP_ECORRUPT); libarchive's own failures are DP_ERROR, or
 * DP_ECORRUPT when the stream does not parse.
 */
#include "tar.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fnmatch.h>
#include <fcntl.h>
#include <stdbool.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dp/error.h"
#include "dp/log.h"

#define TAR_BLOCK (64 * 1024)
#define ZERO_LEN (1024 * 1024)
#define READ_LEN (1024 * 1024)

/* ---- push ---- */

struct wctx {
	dp_tar_write_fn fn;
	void *arg;
	int rc; /* the callback's failure, kept for the caller */
};

static la_ssize_t write_cb(struct archive *a, void *arg, const void *buf, size_t len)
{
	struct wctx *w = arg;
	int rc = w->fn(w->arg, buf, len);
	if (rc) {
		w->rc = rc;
		archive_set_error(a, EIO, "%s", dp_error_last());
		return -1;
	}
	return (la_ssize_t)len;
}

/* The failure of a libarchive call on the writer: the callback's own code
 * and message if it was the callback that failed. */
static int writer_error(struct wctx *w, struct archive *a, const char *path)
{
	if (w->rc)
		return w->rc;
	return dp_error_set(DP_ERROR, "cannot archive \"%s\": %s", path, archive_error_string(a));
}

static int copy_file_data(struct archive *disk, struct archive *out, struct archive_entry *e,
                          struct wctx *w, const uint8_t *zeros)
{
	const void *buf;
	size_t len;
	la_int64_t off;
	int64_t progress = 0;
	int r;
	const char *path = archive_entry_pathname(e);
	while ((r = archive_read_data_block(disk, &buf, &len, &off)) == ARCHIVE_OK) {
		while (off > progress) {
			size_t n = off - progress > ZERO_LEN ? ZERO_LEN : (size_t)(off - progress);
			la_ssize_t wr = archive_write_data(out, zeros, n);
			if (wr < 0)
				return writer_error(w, out, path);
			if (wr == 0)
				break; /* the entry is full: the file grew */
			progress += wr;
		}
		if (len == 0)
			continue;
		la_ssize_t wr = archive_write_data(out, buf, len);
		if (wr < 0)
			return writer_error(w, out, path);
		progress += (int64_t)len;
	}
	if (r < ARCHIVE_WARN)
		return dp_error_set(DP_ERROR, "cannot read \"%s\": %s", path,
		                    archive_error_string(disk));
	if (r == ARCHIVE_WARN)
		dp_warn("\"%s\": %s", path, archive_error_string(disk));
	if (progress < archive_entry_size(e) && !archive_entry_sparse_count(e))
		dp_warn("\"%s\" shrank while it was read; the rest is stored as zeros", path);
	return 0;
}

/* root-relative path of an entry the disk reader named root + "/..." */
static int relative_path(char *out, size_t cap, const char *root, const char *path)
{
	size_t rl = strlen(root);
	const char *rel;
	if (strcmp(path, root) == 0)
		rel = ".";
	else if (strcmp(root, "/") == 0 && path[0] == '/')
		rel = path + 1;
	else if (strncmp(path, root, rl) == 0 && path[rl] == '/')
		rel = path + rl + 1;
	else
		return dp_error_set(DP_ERROR, "unexpected path \"%s\" under \"%s\"", path, root);
	if ((size_t)snprintf(out, cap, "%s", rel) >= cap)
		return dp_error_set(DP_ERROR, "path \"%s\" is too long", path);
	return 0;
}

static int write_entry(struct archive *disk, struct archive *out, struct archive_entry *e,
                       struct wctx *w, const uint8_t *zeros)
{
	int r = archive_write_header(out, e);
	if (r == ARCHIVE_FAILED && !w->rc) {
		/* pax has no place for sockets and the like: bsdtar skips them too. */
		dp_warn("skipping \"%s\": %s", archive_entry_pathname(e),
		        archive_error_string(out));
		return 0;
	}
	if (r < ARCHIVE_WARN)
		return writer_error(w, out, archive_entry_pathname(e));
	if (r == ARCHIVE_WARN)
		dp_warn("\"%s\": %s", archive_entry_pathname(e), archive_error_string(out));
	if (archive_entry_filetype(e) == AE_IFREG && archive_entry_size(e) > 0 &&
	    archive_entry_hardlink(e) == NULL) {
		int rc = copy_file_data(disk, out, e, w, zeros);
		if (rc)
			return rc;
	}
	if (archive_write_finish_entry(out) < ARCHIVE_WARN)
		return writer_error(w, out, archive_entry_pathname(e));
	return 0;
}

static bool excluded(const dp_tar_opts *o, const char *rel)
{
	if (!o || strcmp(rel, ".") == 0)
		return false;
	const char *base = strrchr(rel, '/');
	base = base ? base + 1 : rel;
	for (size_t i = 0; i < o->nexclude; i++) {
		const char *pat = o->exclude[i];
		if (strchr(pat, '/') ? fnmatch(pat, rel, FNM_PATHNAME) == 0
		                     : fnmatch(pat, base, 0) == 0)
			return true;
	}
	return false;
}

int dp_tar_write_tree(const char *root_in, const dp_tar_opts *o, dp_tar_write_fn fn, void *arg)
{
	int rc = 0;
	struct wctx w = {fn, arg, 0};
	struct archive *disk = NULL, *out = NULL;
	struct archive_entry *e = NULL, *spare = NULL;
	struct archive_entry_linkresolver *lr = NULL;
	uint8_t *zeros = NULL;
	char root[PATH_MAX], rel[PATH_MAX];

	/* "dir/" and "dir" name the same root; the reader joins with '/'. */
	size_t rl = strlen(root_in);
	while (rl > 1 && root_in[rl - 1] == '/')
		rl--;
	if (rl >= sizeof(root))
		return dp_error_set(DP_EUSAGE, "path \"%s\" is too long", root_in);
	memcpy(root, root_in, rl);
	root[rl] = 0;

	zeros = calloc(1, ZERO_LEN);
	disk = archive_read_disk_new();
	out = archive_write_new();
	lr = archive_entry_linkresolver_new();
	if (!zeros || !disk || !out || !lr) {
		rc = dp_error_set(DP_ERROR, "out of memory");
		goto out;
	}
	archive_read_disk_set_symlink_hybrid(disk);
	archive_read_disk_set_standard_lookup(disk);
	if (archive_read_disk_open(disk, root) != ARCHIVE_OK) {
		rc = dp_error_set(DP_ERROR, "cannot read \"%s\": %s", root,
		                  archive_error_string(disk));
		goto out;
	}
	if (archive_write_set_format_pax(out) != ARCHIVE_OK ||
	    archive_write_set_bytes_per_block(out, TAR_BLOCK) != ARCHIVE_OK ||
	    archive_write_set_bytes_in_last_block(out, 1) != ARCHIVE_OK ||
	    archive_write_open2(out, &w, NULL, write_cb, NULL, NULL) != ARCHIVE_OK) {
		rc = writer_error(&w, out, root);
		goto out;
	}
	archive_entry_linkresolver_set_strategy(lr, archive_format(out));

	for (;;) {
		e = archive_entry_new();
		if (!e) {
			rc = dp_error_set(DP_ERROR, "out of memory");
			goto out;
		}
		int r = archive_read_next_header2(disk, e);
		if (r == ARCHIVE_EOF)
			break;
		if (r == ARCHIVE_FAILED && archive_errno(disk) == ENOENT) {
			/* Removed between the directory listing and its lstat:
			 * nothing to keep (GNU tar says the same and goes on). */
			dp_warn("\"%s\" vanished while the tree was read; left out",
			        archive_entry_pathname(e) ? archive_entry_pathname(e) : "?");
			archive_entry_free(e);
			e = NULL;
			continue;
		}
		if (r < ARCHIVE_WARN) {
			rc = dp_error_set(DP_ERROR, "cannot read \"%s\": %s",
			                  archive_entry_pathname(e) ? archive_entry_pathname(e)
			                                            : root,
			                  archive_error_string(disk));
			goto out;
		}
		/* The message names its own path (e.g. a file removed before it
		 * was read), not necessarily this entry's. */
		if (r == ARCHIVE_WARN)
			dp_warn("%s", archive_error_string(disk));
		const struct stat *skip = o ? o->skip_dir : NULL;
		if (skip && archive_entry_filetype(e) == AE_IFDIR &&
		    archive_entry_dev(e) == skip->st_dev &&
		    archive_entry_ino64(e) == (la_int64_t)skip->st_ino) {
			dp_warn("leaving out \"%s\": it is the repository",
			        archive_entry_pathname(e));
			archive_entry_free(e);
			e = NULL;
			continue;
		}
		rc = relative_path(rel, sizeof(rel), root, archive_entry_pathname(e));
		if (rc)
			goto out;
		/* Not descending into an excluded directory leaves out all of it. */
		if (excluded(o, rel)) {
			archive_entry_free(e);
			e = NULL;
			continue;
		}
		archive_read_disk_descend(disk);
		archive_entry_copy_pathname(e, rel);

		archive_entry_linkify(lr, &e, &spare);
		while (e) {
			rc = write_entry(disk, out, e, &w, zeros);
			if (rc)
				goto out;
			archive_entry_free(e);
			e = spare;
			spare = NULL;
		}
	}
	/* Entries the resolver still holds (none for tar, kept for safety). */
	archive_entry_free(e);
	e = NULL;
	for (;;) {
		archive_entry_linkify(lr, &e, &spare);
		if (!e)
			break;
		rc = write_entry(disk, out, e, &w, zeros);
		archive_entry_free(e);
		e = NULL;
		if (rc)
			goto out;
	}
	if (archive_write_close(out) != ARCHIVE_OK) {
		rc = writer_error(&w, out, root);
		goto out;
	}
out:
	archive_entry_free(e);
	archive_entry_free(spare);
	if (lr)
		archive_entry_linkresolver_free(lr);
	if (out)
		archive_write_free(out);
	if (disk)
		archive_read_free(disk);
	free(zeros);
	return rc;
}

/* ---- pull ---- */

struct rctx {
	dp_tar_read_fn fn;
	void *arg;
	int rc;
	void *buf;
};

static la_ssize_t read_cb(struct archive *a, void *arg, const void **buf)
{
	struct rctx *r = arg;
	size_t got = 0;
	int rc = r->fn(r->arg, r->buf, READ_LEN, &got);
	if (rc) {
		r->rc = rc;
		archive_set_error(a, EIO, "%s", dp_error_last());
		return -1;
	}
	*buf = r->buf;
	return (la_ssize_t)got;
}

static int reader_error(struct rctx *r, struct archive *a)
{
	if (r->rc)
		return r->rc;
	return dp_error_set(DP_ECORRUPT, "the tree's tar stream does not parse: %s",
	                    archive_error_string(a));
}

/* Rejects paths that could land outside the target. */
static int safe_relative(const char *p)
{
	if (!p)
		return 1;
	if (p[0] == '/')
		return 0;
	for (const char *s = p; s;) {
		const char *e = strchr(s, '/');
		size_t n = e ? (size_t)(e - s) : strlen(s);
		if (n == 2 && s[0] == '.' && s[1] == '.')
			return 0;
		s = e ? e + 1 : NULL;
	}
	return 1;
}

static int under(char *out, size_t cap, const char *dir, const char *rel)
{
	while (rel[0] == '.' && rel[1] == '/')
		rel += 2;
	int n = (strcmp(rel, ".") == 0 || rel[0] == 0) ? snprintf(out, cap, "%s", dir)
	                                               : snprintf(out, cap, "%s/%s", dir, rel);
	if (n < 0 || (size_t)n >= cap)
		return dp_error_set(DP_ERROR, "path \"%s/%s\" is too long", dir, rel);
	return 0;
}

/* Directory metadata, applied after everything is extracted: files
 * created in a directory change its times, and libarchive leaves the mode
 * and times of a directory that already existed (the target itself, or a
 * tree pulled with --force) alone. */
struct dirfix {
	char *path;
	mode_t mode;
	uid_t uid;
	gid_t gid;
	struct timespec times[2];
};

static int remember_dir(struct dirfix **v, size_t *n, size_t *cap, const char *path,
                        struct archive_entry *e)
{
	if (*n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 64;
		struct dirfix *nv = realloc(*v, ncap * sizeof(**v));
		if (!nv)
			return dp_error_set(DP_ERROR, "out of memory");
		*v = nv;
		*cap = ncap;
	}
	struct dirfix *f = &(*v)[*n];
	f->path = strdup(path);
	if (!f->path)
		return dp_error_set(DP_ERROR, "out of memory");
	f->mode = archive_entry_perm(e);
	f->uid = (uid_t)archive_entry_uid(e);
	f->gid = (gid_t)archive_entry_gid(e);
	f->times[1].tv_sec = archive_entry_mtime(e);
	f->times[1].tv_nsec = archive_entry_mtime_nsec(e);
	if (archive_entry_atime_is_set(e)) {
		f->times[0].tv_sec = archive_entry_atime(e);
		f->times[0].tv_nsec = archive_entry_atime_nsec(e);
	} else {
		f->times[0] = f->times[1];
	}
	(*n)++;
	return 0;
}

static int by_path_desc(const void *a, const void *b)
{
	return strcmp(((const struct dirfix *)b)->path, ((const struct dirfix *)a)->path);
}

static int apply_dirs(struct dirfix *v, size_t n, bool owner)
{
	/* Reverse order: children before their parents. */
	qsort(v, n, sizeof(*v), by_path_desc);
	for (size_t i = 0; i < n; i++) {
		if (owner && lchown(v[i].path, v[i].uid, v[i].gid) != 0)
			dp_warn("cannot set the owner of \"%s\": %s", v[i].path, strerror(errno));
		if (chmod(v[i].path, v[i].mode) != 0 ||
		    utimensat(AT_FDCWD, v[i].path, v[i].times, AT_SYMLINK_NOFOLLOW) != 0)
			return dp_error_errno(DP_ERROR, errno,
			                      "cannot set the mode and times of \"%s\"", v[i].path);
	}
	return 0;
}

int dp_tar_extract(const char *dir_in, dp_tar_read_fn fn, void *arg)
{
	int rc = 0;
	struct rctx rd = {fn, arg, 0, NULL};
	struct archive *in = NULL, *ext = NULL;
	char dir[PATH_MAX], path[PATH_MAX], link[PATH_MAX];
	struct dirfix *fix = NULL;
	size_t nfix = 0, capfix = 0;

	/* The real path, so that the symlink check finds none above the tree. */
	if (!realpath(dir_in, dir))
		return dp_error_errno(DP_ERROR, errno, "cannot resolve directory \"%s\"", dir_in);

	int flags = ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_ACL |
	            ARCHIVE_EXTRACT_XATTR | ARCHIVE_EXTRACT_FFLAGS | ARCHIVE_EXTRACT_SPARSE |
	            ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_SECURE_SYMLINKS;
	if (geteuid() == 0)
		flags |= ARCHIVE_EXTRACT_OWNER;

	rd.buf = malloc(READ_LEN);
	in = archive_read_new();
	ext = archive_write_disk_new();
	if (!rd.buf || !in || !ext) {
		rc = dp_error_set(DP_ERROR, "out of memory");
		goto out;
	}
	archive_read_support_format_tar(in);
	archive_write_disk_set_options(ext, flags);
	archive_write_disk_set_standard_lookup(ext);
	if (archive_read_open2(in, &rd, NULL, read_cb, NULL, NULL) != ARCHIVE_OK) {
		rc = reader_error(&rd, in);
		goto out;
	}

	for (;;) {
		struct archive_entry *e;
		int r = archive_read_next_header(in, &e);
		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN) {
			rc = reader_error(&rd, in);
			goto out;
		}
		const char *name = archive_entry_pathname(e);
		const char *hl = archive_entry_hardlink(e);
		if (!name || !safe_relative(name) || !safe_relative(hl)) {
			rc = dp_error_set(DP_ECORRUPT,
			                  "the tree holds an unsafe path \"%s\"; nothing is "
			                  "written outside \"%s\"",
			                  name ? name : hl, dir);
			goto out;
		}
		rc = under(path, sizeof(path), dir, name);
		if (rc)
			goto out;
		if (archive_entry_filetype(e) == AE_IFDIR) {
			rc = remember_dir(&fix, &nfix, &capfix, path, e);
			if (rc)
				goto out;
		}
		archive_entry_copy_pathname(e, path);
		if (hl) {
			rc = under(link, sizeof(link), dir, hl);
			if (rc)
				goto out;
			archive_entry_copy_hardlink(e, link);
		}
		r = archive_write_header(ext, e);
		if (r < ARCHIVE_WARN) {
			rc = dp_error_set(DP_ERROR, "cannot create \"%s\": %s", path,
			                  archive_error_string(ext));
			goto out;
		}
		if (r == ARCHIVE_WARN)
			dp_warn("\"%s\": %s", path, archive_error_string(ext));
		if (archive_entry_size(e) > 0 && !hl) {
			const void *buf;
			size_t len;
			la_int64_t off;
			while ((r = archive_read_data_block(in, &buf, &len, &off)) == ARCHIVE_OK) {
				if (archive_write_data_block(ext, buf, len, off) < ARCHIVE_WARN) {
					rc = dp_error_set(DP_ERROR, "cannot write \"%s\": %s", path,
					                  archive_error_string(ext));
					goto out;
				}
			}
			if (r < ARCHIVE_WARN) {
				rc = reader_error(&rd, in);
				goto out;
			}
		}
		r = archive_write_finish_entry(ext);
		if (r < ARCHIVE_WARN) {
			rc = dp_error_set(DP_ERROR, "cannot finish \"%s\": %s", path,
			                  archive_error_string(ext));
			goto out;
		}
		if (r == ARCHIVE_WARN)
			dp_warn("\"%s\": %s", path, archive_error_string(ext));
	}
	/* Directory modes and times are set here. */
	if (archive_write_close(ext) < ARCHIVE_WARN) {
		rc = dp_error_set(DP_ERROR, "cannot finish extracting into \"%s\": %s", dir,
		                  archive_error_string(ext));
		goto out;
	}
	rc = apply_dirs(fix, nfix, (flags & ARCHIVE_EXTRACT_OWNER) != 0);
	if (rc)
		goto out;
	/* Read what follows the end-of-archive marker, so that the whole
	 * stream has been authenticated. */
	for (;;) {
		size_t got = 0;
		rc = fn(arg, rd.buf, READ_LEN, &got);
		if (rc || got == 0)
			break;
	}
out:
	if (ext)
		archive_write_free(ext);
	if (in)
		archive_read_free(in);
	free(rd.buf);
	for (size_t i = 0; i < nfix; i++)
		free(fix[i].path);
	free(fix);
	return rc;
}
