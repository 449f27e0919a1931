/*
 * Directory trees -> pax tar streams over libarchive (see tar.h).
 *
 * A tree is read on two threads, so that reading files overlaps with what
 * the caller does with the stream (chunking, hashing and compressing it):
 *
 *   reader thread  archive_read_disk walks the tree (lstat, xattrs, ACLs,
 *                  sparse map; symlinks stored, not followed, except the
 *                  root), the link resolver turns second and later names of
 *                  an inode into hard-link entries, and file data is read
 *                  with plain read() into a fixed pool of buffers, a file
 *                  ahead of the writer at most NBUF buffers
 *   caller thread  writes headers and data with an unbuffered pax writer:
 *                  the data goes from the pool buffer straight to the write
 *                  callback, no copy in between
 *
 * They meet in a bounded queue of items (an entry, a data buffer, a run of
 * zeros for a hole, the end, or the reader's error). Holes reported by the
 * disk reader are passed as zeros, which the pax writer drops because the
 * entry carries the sparse map (the same scheme as bsdtar). A file that
 * shrinks while it is read is padded with zeros, one that grows is cut at
 * the size its header gave: a database's own log repairs both (that is what
 * a backup taken with the server running relies on).
 *
 * Ownership: entries are made by the reader and freed by the writer; pool
 * buffers belong to the walk and move between the two through the queue.
 * The first error on either side stops both: the reader's error (code and
 * message) is carried to the caller's thread. A dp_tar_writer is used by one
 * thread; only the walk inside dp_tar_writer_add_tree runs a second one.
 */
#include "tar.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dp/error.h"
#include "dp/log.h"

#define BUF_LEN (1024 * 1024) /* one read */
#define NBUF 8 /* read-ahead: at most this many buffers in flight */
#define QCAP 256 /* queued items (entries of small files, buffers) */
#define ZERO_LEN (1024 * 1024)

bool dp_tar_path_is_safe(const char *p)
{
	if (!p || p[0] == '/' || p[0] == 0)
		return false;
	for (const char *s = p; s;) {
		const char *e = strchr(s, '/');
		size_t n = e ? (size_t)(e - s) : strlen(s);
		if (n == 2 && s[0] == '.' && s[1] == '.')
			return false;
		s = e ? e + 1 : NULL;
	}
	return true;
}

/* ---- the writer (caller's thread) ---- */

struct dp_tar_writer {
	dp_tar_write_fn fn;
	void *arg;
	int rc; /* the callback's failure, kept for the caller */
	struct archive *out;
	struct archive *disk; /* for dp_tar_writer_add_file's entries */
	uint8_t *zeros;
	uint8_t *buf; /* dp_tar_writer_add_file's reads */
	dp_tar_cut_fn cut; /* dp_tar_writer_set_blocks */
	void *cut_arg;
	uint32_t block;
};

void dp_tar_writer_set_blocks(dp_tar_writer *w, dp_tar_cut_fn cut, void *arg, uint32_t block)
{
	w->cut = cut;
	w->cut_arg = arg;
	w->block = cut ? block : 0;
}

/* After an entry's header: whether its data is cut in blocks (and the cut
 * before it is made). The header reached the callback already: the archive
 * is unblocked. */
static int blocks_begin(dp_tar_writer *w, struct archive_entry *e, bool *on)
{
	*on = w->block && archive_entry_filetype(e) == AE_IFREG &&
	      archive_entry_size(e) >= (la_int64_t)w->block;
	return *on ? w->cut(w->cut_arg, w->block) : 0;
}

static la_ssize_t write_cb(struct archive *a, void *arg, const void *buf, size_t len)
{
	dp_tar_writer *w = arg;
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
static int writer_error(dp_tar_writer *w, const char *path)
{
	if (w->rc)
		return w->rc;
	return dp_error_set(DP_ERROR, "cannot archive \"%s\": %s", path,
	                    archive_error_string(w->out));
}

int dp_tar_writer_new(dp_tar_writer **out, dp_tar_write_fn fn, void *arg)
{
	int rc = 0;
	dp_tar_writer *w = calloc(1, sizeof(*w));
	*out = NULL;
	if (!w)
		return dp_error_set(DP_ERROR, "out of memory");
	w->fn = fn;
	w->arg = arg;
	w->zeros = calloc(1, ZERO_LEN);
	w->out = archive_write_new();
	if (!w->zeros || !w->out) {
		rc = dp_error_set(DP_ERROR, "out of memory");
		goto out;
	}
	/* Block size 0: no blocking, every write goes straight to the
	 * callback, so file data is not copied into a block buffer first. */
	if (archive_write_set_format_pax(w->out) != ARCHIVE_OK ||
	    archive_write_set_bytes_per_block(w->out, 0) != ARCHIVE_OK ||
	    archive_write_open2(w->out, w, NULL, write_cb, NULL, NULL) != ARCHIVE_OK) {
		rc = writer_error(w, "(stream)");
		goto out;
	}
	*out = w;
	w = NULL;
out:
	dp_tar_writer_free(w);
	return rc;
}

void dp_tar_writer_free(dp_tar_writer *w)
{
	if (!w)
		return;
	if (w->out)
		archive_write_free(w->out);
	if (w->disk)
		archive_read_free(w->disk);
	free(w->zeros);
	free(w->buf);
	free(w);
}

int dp_tar_writer_close(dp_tar_writer *w)
{
	if (archive_write_close(w->out) != ARCHIVE_OK)
		return writer_error(w, "(end of archive)");
	return 0;
}

/* Writes all of len bytes of the current entry's data. */
static int write_data(dp_tar_writer *w, const void *buf, size_t len, const char *path)
{
	const uint8_t *p = buf;
	while (len > 0) {
		la_ssize_t n = archive_write_data(w->out, p, len);
		if (n < 0)
			return writer_error(w, path);
		if (n == 0)
			break; /* the entry is full */
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int write_zeros(dp_tar_writer *w, uint64_t n, const char *path)
{
	while (n > 0) {
		size_t k = n > ZERO_LEN ? ZERO_LEN : (size_t)n;
		int rc = write_data(w, w->zeros, k, path);
		if (rc)
			return rc;
		n -= k;
	}
	return 0;
}

/* 1 if the header was written, 0 if the entry is skipped (pax has no
 * place for sockets and the like: bsdtar skips them too), <0 on error. */
static int write_header(dp_tar_writer *w, struct archive_entry *e)
{
	int r = archive_write_header(w->out, e);
	if (r == ARCHIVE_FAILED && !w->rc) {
		dp_warn("skipping \"%s\": %s", archive_entry_pathname(e),
		        archive_error_string(w->out));
		return 0;
	}
	if (r < ARCHIVE_WARN)
		return writer_error(w, archive_entry_pathname(e));
	if (r == ARCHIVE_WARN)
		dp_warn("\"%s\": %s", archive_entry_pathname(e), archive_error_string(w->out));
	return 1;
}

static int finish_entry(dp_tar_writer *w, struct archive_entry *e)
{
	if (archive_write_finish_entry(w->out) < ARCHIVE_WARN)
		return writer_error(w, archive_entry_pathname(e));
	return 0;
}

/* ---- the walk: reader thread and queue ---- */

enum { IT_ENTRY, IT_DATA, IT_ZEROS, IT_DONE, IT_ERROR };

struct item {
	int kind;
	struct archive_entry *e; /* IT_ENTRY: owned by the queue, then the writer */
	int buf; /* IT_DATA: pool index */
	uint64_t len; /* IT_DATA, IT_ZEROS */
};

struct walk {
	const char *root; /* without trailing '/' */
	const dp_tar_opts *o;

	pthread_mutex_t mu;
	pthread_cond_t cv_item; /* the writer waits for an item */
	pthread_cond_t cv_space; /* the reader waits for a queue slot or a buffer */
	struct item q[QCAP];
	size_t qhead, qn;
	uint8_t *bufs[NBUF];
	int freeb[NBUF];
	int nfree;
	bool stop; /* the writer gave up: the reader ends */

	int rc; /* the reader's failure */
	char err[1024];
};

/* Queues an item; false if the writer stopped (the item is not queued). */
static bool put(struct walk *k, struct item it)
{
	pthread_mutex_lock(&k->mu);
	while (k->qn == QCAP && !k->stop)
		pthread_cond_wait(&k->cv_space, &k->mu);
	bool ok = !k->stop;
	if (ok) {
		k->q[(k->qhead + k->qn) % QCAP] = it;
		k->qn++;
		pthread_cond_signal(&k->cv_item);
	}
	pthread_mutex_unlock(&k->mu);
	return ok;
}

/* A free pool buffer, or -1 if the writer stopped. */
static int get_buf(struct walk *k)
{
	pthread_mutex_lock(&k->mu);
	while (k->nfree == 0 && !k->stop)
		pthread_cond_wait(&k->cv_space, &k->mu);
	int b = k->stop ? -1 : k->freeb[--k->nfree];
	pthread_mutex_unlock(&k->mu);
	return b;
}

static void put_buf(struct walk *k, int b)
{
	pthread_mutex_lock(&k->mu);
	k->freeb[k->nfree++] = b;
	pthread_cond_signal(&k->cv_space);
	pthread_mutex_unlock(&k->mu);
}

/* The reader's failure, sent to the writer (the message crosses threads
 * as text). Returns rc. */
static int reader_fail(struct walk *k, int rc)
{
	pthread_mutex_lock(&k->mu);
	k->rc = rc;
	snprintf(k->err, sizeof(k->err), "%s", dp_error_last());
	pthread_mutex_unlock(&k->mu);
	put(k, (struct item){.kind = IT_ERROR});
	return rc;
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

/* Reads len bytes at the current offset of fd into pool buffers and queues
 * them; a file that ends early is padded with zeros (*short_read set).
 * Returns 0, a DP_E* code, or 1 if the writer stopped. */
static int read_span(struct walk *k, int fd, uint64_t len, const char *path, bool *short_read)
{
	while (len > 0) {
		int b = get_buf(k);
		if (b < 0)
			return 1;
		size_t want = len > BUF_LEN ? BUF_LEN : (size_t)len;
		size_t got = 0;
		while (got < want && !*short_read) {
			ssize_t n = read(fd, k->bufs[b] + got, want - got);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				int e = errno;
				put_buf(k, b);
				return dp_error_errno(DP_ERROR, e, "cannot read \"%s\"", path);
			}
			if (n == 0)
				*short_read = true;
			got += (size_t)n;
		}
		if (got < want)
			memset(k->bufs[b] + got, 0, want - got);
		if (!put(k, (struct item){.kind = IT_DATA, .buf = b, .len = want})) {
			put_buf(k, b);
			return 1;
		}
		len -= want;
	}
	return 0;
}

/* A file's data regions (its sparse map), copied out of the entry before
 * the entry is handed to the writer: from then on only the writer touches
 * the entry (iterating its sparse map moves a cursor inside it). */
struct region {
	int64_t off, len;
};

/* Queues a regular file's data: its data regions and, for the holes of a
 * sparse file, runs of zeros. Returns 0, a DP_E* code or 1 (stopped). */
static int read_file_data(struct walk *k, int64_t size, const struct region *rg, size_t nrg,
                          const char *path)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
	if (fd < 0 && errno == ENOENT) {
		/* Removed after it was listed: its header is out already, so
		 * it is stored as zeros (a database replays its log over it). */
		dp_warn("\"%s\" vanished while it was read; stored as zeros", path);
		return put(k, (struct item){.kind = IT_ZEROS, .len = (uint64_t)size}) ? 0 : 1;
	}
	if (fd < 0)
		return dp_error_errno(DP_ERROR, errno, "cannot open \"%s\"", path);
	(void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	int rc = 0;
	bool short_read = false;
	if (nrg > 0) {
		int64_t pos = 0;
		for (size_t i = 0; i < nrg && rc == 0; i++) {
			if (rg[i].off > pos &&
			    !put(k, (struct item){.kind = IT_ZEROS,
			                          .len = (uint64_t)(rg[i].off - pos)})) {
				rc = 1;
				break;
			}
			if (lseek(fd, rg[i].off, SEEK_SET) < 0) {
				rc = dp_error_errno(DP_ERROR, errno, "cannot seek in \"%s\"", path);
				break;
			}
			rc = read_span(k, fd, (uint64_t)rg[i].len, path, &short_read);
			pos = rg[i].off + rg[i].len;
		}
		if (rc == 0 && pos < size &&
		    !put(k, (struct item){.kind = IT_ZEROS, .len = (uint64_t)(size - pos)}))
			rc = 1;
	} else {
		rc = read_span(k, fd, (uint64_t)size, path, &short_read);
	}
	close(fd);
	if (rc == 0 && short_read)
		dp_warn("\"%s\" shrank while it was read; the rest is stored as zeros", path);
	return rc;
}

/* Queues one entry (and its data). 0, a DP_E* code, or 1 (stopped). */
static int send_entry(struct walk *k, struct archive_entry *e, const char *path)
{
	bool data = archive_entry_filetype(e) == AE_IFREG && archive_entry_size(e) > 0 &&
	            archive_entry_hardlink(e) == NULL;
	int64_t size = archive_entry_size(e);
	struct region *rg = NULL;
	size_t nrg = 0;
	int n = data ? archive_entry_sparse_reset(e) : 0;
	if (n > 0) {
		rg = calloc((size_t)n, sizeof(*rg));
		if (!rg) {
			archive_entry_free(e);
			return dp_error_set(DP_ERROR, "out of memory");
		}
		la_int64_t off, len;
		while (nrg < (size_t)n && archive_entry_sparse_next(e, &off, &len) == ARCHIVE_OK)
			rg[nrg++] = (struct region){off, len};
		archive_entry_sparse_reset(e);
	}
	int rc = 0;
	if (!put(k, (struct item){.kind = IT_ENTRY, .e = e})) {
		archive_entry_free(e);
		rc = 1;
	} else if (data) {
		rc = read_file_data(k, size, rg, nrg, path);
	}
	free(rg);
	return rc;
}

static void *reader_main(void *arg)
{
	struct walk *k = arg;
	const char *root = k->root;
	const dp_tar_opts *o = k->o;
	int rc = 0;
	struct archive *disk = archive_read_disk_new();
	struct archive_entry_linkresolver *lr = archive_entry_linkresolver_new();
	struct archive_entry *e = NULL, *spare = NULL;
	char rel[PATH_MAX], path[PATH_MAX];

	if (!disk || !lr) {
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
	archive_entry_linkresolver_set_strategy(lr, ARCHIVE_FORMAT_TAR_PAX_INTERCHANGE);

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
			/* The file to read: root joined with the entry's path. */
			const char *ep = archive_entry_pathname(e);
			if (strcmp(ep, ".") == 0)
				snprintf(path, sizeof(path), "%s", root);
			else if ((size_t)snprintf(path, sizeof(path), "%s/%s",
			                          strcmp(root, "/") == 0 ? "" : root,
			                          ep) >= sizeof(path)) {
				rc = dp_error_set(DP_ERROR, "path \"%s/%s\" is too long", root, ep);
				goto out;
			}
			rc = send_entry(k, e, path);
			e = spare;
			spare = NULL;
			if (rc)
				goto out;
		}
	}
	/* Entries the resolver still holds (none for tar, kept for safety). */
	archive_entry_free(e);
	e = NULL;
	for (;;) {
		archive_entry_linkify(lr, &e, &spare);
		if (!e)
			break;
		snprintf(path, sizeof(path), "%s/%s", root, archive_entry_pathname(e));
		rc = send_entry(k, e, path);
		e = NULL;
		if (rc)
			goto out;
	}
	put(k, (struct item){.kind = IT_DONE});
out:
	if (rc < 0)
		reader_fail(k, rc);
	archive_entry_free(e);
	archive_entry_free(spare);
	if (lr)
		archive_entry_linkresolver_free(lr);
	if (disk)
		archive_read_free(disk);
	return NULL;
}

/* The writer's side of the walk: consumes items until the end. */
static int write_items(dp_tar_writer *w, struct walk *k)
{
	int rc = 0;
	struct archive_entry *cur = NULL; /* the open entry */
	bool skipping = false; /* its header was skipped: drop its data */
	bool blocks = false; /* its data is cut in fixed blocks */
	for (;;) {
		pthread_mutex_lock(&k->mu);
		while (k->qn == 0)
			pthread_cond_wait(&k->cv_item, &k->mu);
		struct item it = k->q[k->qhead];
		k->qhead = (k->qhead + 1) % QCAP;
		k->qn--;
		pthread_cond_signal(&k->cv_space);
		pthread_mutex_unlock(&k->mu);

		if (it.kind == IT_ERROR) {
			pthread_mutex_lock(&k->mu);
			dp_error_restore(k->rc, k->err);
			rc = k->rc;
			pthread_mutex_unlock(&k->mu);
			break;
		}
		if (it.kind == IT_DATA || it.kind == IT_ZEROS) {
			if (!skipping && cur)
				rc = it.kind == IT_DATA
				         ? write_data(w, k->bufs[it.buf], it.len,
				                      archive_entry_pathname(cur))
				         : write_zeros(w, it.len, archive_entry_pathname(cur));
			if (it.kind == IT_DATA)
				put_buf(k, it.buf);
			if (rc)
				break;
			continue;
		}
		/* A new entry or the end: the open entry is complete. */
		if (cur) {
			if (!skipping)
				rc = finish_entry(w, cur);
			if (!rc && blocks)
				rc = w->cut(w->cut_arg, 0);
			blocks = false;
			archive_entry_free(cur);
			cur = NULL;
			if (rc) {
				if (it.kind == IT_ENTRY)
					archive_entry_free(it.e);
				break;
			}
		}
		if (it.kind == IT_DONE)
			break;
		cur = it.e;
		int r = write_header(w, cur);
		if (r < 0) {
			rc = r;
			break;
		}
		skipping = r == 0;
		if (!skipping && (rc = blocks_begin(w, cur, &blocks)))
			break;
	}
	archive_entry_free(cur);
	return rc;
}

int dp_tar_writer_add_tree(dp_tar_writer *w, const char *root_in, const dp_tar_opts *o)
{
	int rc = 0;
	char root[PATH_MAX];
	struct walk *k = NULL;
	pthread_t th;
	bool started = false;

	/* "dir/" and "dir" name the same root; the reader joins with '/'. */
	size_t rl = strlen(root_in);
	while (rl > 1 && root_in[rl - 1] == '/')
		rl--;
	if (rl >= sizeof(root))
		return dp_error_set(DP_EUSAGE, "path \"%s\" is too long", root_in);
	memcpy(root, root_in, rl);
	root[rl] = 0;

	k = calloc(1, sizeof(*k));
	if (!k)
		return dp_error_set(DP_ERROR, "out of memory");
	k->root = root;
	k->o = o;
	pthread_mutex_init(&k->mu, NULL);
	pthread_cond_init(&k->cv_item, NULL);
	pthread_cond_init(&k->cv_space, NULL);
	for (int i = 0; i < NBUF; i++) {
		if (!(k->bufs[i] = malloc(BUF_LEN))) {
			rc = dp_error_set(DP_ERROR, "out of memory");
			goto out;
		}
		k->freeb[k->nfree++] = i;
	}
	/* Signals stay with the caller's thread (it turns them into a clean
	 * stop); the reader blocks them all. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int e = pthread_create(&th, NULL, reader_main, k);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (e != 0) {
		rc = dp_error_errno(DP_ERROR, e, "cannot start the reader thread");
		goto out;
	}
	started = true;
	rc = write_items(w, k);
out:
	if (started) {
		pthread_mutex_lock(&k->mu);
		k->stop = true;
		pthread_cond_broadcast(&k->cv_space);
		pthread_mutex_unlock(&k->mu);
		pthread_join(th, NULL);
		/* Entries left in the queue after a failure. */
		for (; k->qn > 0; k->qn--, k->qhead = (k->qhead + 1) % QCAP)
			if (k->q[k->qhead].kind == IT_ENTRY)
				archive_entry_free(k->q[k->qhead].e);
	}
	for (int i = 0; i < NBUF; i++)
		free(k->bufs[i]);
	pthread_cond_destroy(&k->cv_space);
	pthread_cond_destroy(&k->cv_item);
	pthread_mutex_destroy(&k->mu);
	free(k);
	return rc;
}

/* ---- single files ---- */

int dp_tar_writer_add_file(dp_tar_writer *w, const char *rel, const char *src)
{
	int rc = 0;
	struct archive_entry *e = NULL;
	if (!dp_tar_path_is_safe(rel))
		return dp_error_set(DP_EUSAGE,
		                    "\"%s\" cannot be a path in the tree: give a relative "
		                    "path without \"..\"",
		                    rel);
	int fd = open(src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return dp_error_errno(errno == ENOENT || errno == EACCES ? DP_EUSAGE : DP_ERROR,
		                      errno, "cannot open \"%s\"", src);
	struct stat st;
	if (fstat(fd, &st) != 0) {
		rc = dp_error_errno(DP_ERROR, errno, "cannot stat \"%s\"", src);
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = dp_error_set(DP_EUSAGE, "\"%s\" is not a regular file", src);
		goto out;
	}
	if (!w->disk) {
		w->disk = archive_read_disk_new();
		if (!w->disk) {
			rc = dp_error_set(DP_ERROR, "out of memory");
			goto out;
		}
		archive_read_disk_set_standard_lookup(w->disk);
	}
	if (!w->buf && !(w->buf = malloc(BUF_LEN))) {
		rc = dp_error_set(DP_ERROR, "out of memory");
		goto out;
	}
	e = archive_entry_new();
	if (!e) {
		rc = dp_error_set(DP_ERROR, "out of memory");
		goto out;
	}
	archive_entry_copy_sourcepath(e, src);
	if (archive_read_disk_entry_from_file(w->disk, e, fd, &st) < ARCHIVE_WARN) {
		rc = dp_error_set(DP_ERROR, "cannot read \"%s\": %s", src,
		                  archive_error_string(w->disk));
		goto out;
	}
	/* Plain data: whatever sparse map the reader found is not used. */
	archive_entry_sparse_clear(e);
	archive_entry_copy_pathname(e, rel);
	int r = write_header(w, e);
	if (r <= 0) {
		rc = r < 0 ? r : dp_error_set(DP_ERROR, "cannot archive \"%s\"", src);
		goto out;
	}
	uint64_t left = (uint64_t)st.st_size;
	while (left > 0) {
		size_t want = left > BUF_LEN ? BUF_LEN : (size_t)left;
		ssize_t n = read(fd, w->buf, want);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = dp_error_errno(DP_ERROR, errno, "cannot read \"%s\"", src);
			goto out;
		}
		if (n == 0) {
			dp_warn("\"%s\" shrank while it was read; the rest is stored as zeros",
			        src);
			rc = write_zeros(w, left, rel);
			if (rc)
				goto out;
			break;
		}
		rc = write_data(w, w->buf, (size_t)n, rel);
		if (rc)
			goto out;
		left -= (uint64_t)n;
	}
	rc = finish_entry(w, e);
out:
	archive_entry_free(e);
	close(fd);
	return rc;
}

int dp_tar_write_tree(const char *root, const dp_tar_opts *o, dp_tar_write_fn fn, void *arg)
{
	dp_tar_writer *w = NULL;
	int rc = dp_tar_writer_new(&w, fn, arg);
	if (!rc)
		rc = dp_tar_writer_add_tree(w, root, o);
	if (!rc)
		rc = dp_tar_writer_close(w);
	dp_tar_writer_free(w);
	return rc;
}
