/*
 * Directory trees as pax tar streams (libarchive), for snapshots of kind
 * "tree". The stream goes through a caller's write function on push and
 * comes from a caller's read function on pull, so neither side ever holds
 * more than a few buffers of it. The callbacks run on the caller's thread;
 * writing a tree reads its files ahead on a second thread (tar_write.c).
 */
#ifndef DP_WORKER_TAR_H
#define DP_WORKER_TAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Return 0 or a DP_E* code (with a message); the code is passed on. */
typedef int (*dp_tar_write_fn)(void *arg, const void *data, size_t len);
/* Ends the chunk at this point of the stream; block > 0: cut what follows
 * every block bytes, 0: content-defined again (dp_push_cut). */
typedef int (*dp_tar_cut_fn)(void *arg, uint32_t block);
/* *got == 0 at the end of the stream. */
typedef int (*dp_tar_read_fn)(void *arg, void *buf, size_t cap, size_t *got);

#include <sys/stat.h>
#include <sys/types.h>

typedef struct dp_tar_opts {
	/* The directory that is this inode is left out with everything under
	 * it: the repository itself when it lives inside the tree. */
	const struct stat *skip_dir;
	/* Entries to leave out: a pattern with a '/' is matched (fnmatch,
	 * FNM_PATHNAME) against the path relative to the root, one without
	 * against the entry's name anywhere in the tree. A directory that
	 * matches is left out with everything under it. */
	const char *const *exclude;
	size_t nexclude;
} dp_tar_opts;

/* A pax archive written through fn, built from trees and single files;
 * dp_tar_writer_close writes its end. One thread at a time. */
typedef struct dp_tar_writer dp_tar_writer;
int dp_tar_writer_new(dp_tar_writer **out, dp_tar_write_fn fn, void *arg);
/* Adds the tree under root (root itself as ".", the rest as relative
 * paths): modes, owners (ids and names), times, symlinks, hard links,
 * sparse files, xattrs and ACLs. Files are read ahead on a second thread
 * while the caller's fn runs. An unreadable entry fails the whole stream;
 * one removed while the tree is read is a warning, a file that changes
 * size while it is read is stored at the size it had when listed (cut or
 * padded with zeros, with a warning). o may be NULL. */
int dp_tar_writer_add_tree(dp_tar_writer *w, const char *root, const dp_tar_opts *o);
/* Adds the regular file src under the relative path rel (no "..", no
 * leading '/'), with src's mode, owner and times. */
int dp_tar_writer_add_file(dp_tar_writer *w, const char *rel, const char *src);
/* The data of every regular file of at least block bytes added from now on
 * starts a new chunk and is cut every block bytes (cut(arg, block) before
 * it, cut(arg, 0) after): files made of fixed-size pages (a database's)
 * then change one chunk per changed page. block 0: off. */
void dp_tar_writer_set_blocks(dp_tar_writer *w, dp_tar_cut_fn cut, void *arg, uint32_t block);
int dp_tar_writer_close(dp_tar_writer *w);
void dp_tar_writer_free(dp_tar_writer *w); /* NULL: no-op */

/* new + add_tree + close. */
int dp_tar_write_tree(const char *root, const dp_tar_opts *o, dp_tar_write_fn fn, void *arg);

/* true if p is a relative path that stays below its root (no "..", not
 * empty, no leading '/'). */
bool dp_tar_path_is_safe(const char *p);

typedef struct dp_tar_extract_opts {
	/* Every entry belongs to uid:gid instead of the owner it was stored
	 * with (takes effect when run as root). */
	bool set_owner;
	uid_t uid;
	gid_t gid;
} dp_tar_extract_opts;

/* Extracts a stream made by dp_tar_write_tree (or any ustar, pax or GNU
 * tar stream) into the existing directory dir: permissions, times, owners
 * (when root), sparse files, xattrs, ACLs; refuses absolute paths, ".."
 * and writes through symlinks. Reads the stream to its end, so every byte
 * is authenticated. o may be NULL. */
int dp_tar_extract(const char *dir, const dp_tar_extract_opts *o, dp_tar_read_fn fn, void *arg);

#endif
