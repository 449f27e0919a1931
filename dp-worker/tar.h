/*
 * Directory trees as pax tar streams (libarchive), for snapshots of kind
 * "tree". The stream goes through a caller's write function on push and
 * comes from a caller's read function on pull, so neither side ever holds
 * more than one block of it. Single-threaded; the callbacks run on the
 * caller's thread.
 */
#ifndef DP_WORKER_TAR_H
#define DP_WORKER_TAR_H

#include <stddef.h>

/* Return 0 or a DP_E* code (with a message); the code is passed on. */
typedef int (*dp_tar_write_fn)(void *arg, const void *data, size_t len);
/* *got == 0 at the end of the stream. */
typedef int (*dp_tar_read_fn)(void *arg, void *buf, size_t cap, size_t *got);

#include <sys/stat.h>

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

/* Writes the tree under root (root itself as ".", the rest as relative
 * paths) as a pax archive: modes, owners (ids and names), times, symlinks,
 * hard links, sparse files, xattrs and ACLs. An unreadable entry fails the
 * whole stream; one removed while the tree is read is a warning. o may be
 * NULL. */
int dp_tar_write_tree(const char *root, const dp_tar_opts *o, dp_tar_write_fn fn, void *arg);

/* Extracts a stream made by dp_tar_write_tree into the existing directory
 * dir: permissions, times, owners (when root), sparse files, xattrs, ACLs;
 * refuses absolute paths, ".." and writes through symlinks. Reads the
 * stream to its end, so every byte is authenticated. */
int dp_tar_extract(const char *dir, dp_tar_read_fn fn, void *arg);

#endif
