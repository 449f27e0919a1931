/*
 * A dp repository: encrypted, deduplicated, crash-safe storage of byte
 * streams ("snapshots") over any backend. The format is described in
 * repos/format.h; this header is what the worker and the CLI use.
 *
 * Threading: a dp_repo is used by one caller thread at a time; internally a
 * push or pull runs a pipeline on several threads (dp_repo_set_threads).
 * Locks: a push holds a shared lock from begin to commit/abort; pull, check
 * and snapshot removal a shared one; prune and repair-index an exclusive one; stale locks (dead
 * process on this host, or no heartbeat for DP_LOCK_STALE_SECONDS) are ignored and removed.
 */
#ifndef DP_REPO_H
#define DP_REPO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dp/buf.h"
#include "dp/sys/backend.h"

#define DP_ID_HEX 65 /* 64 hex digits + NUL */

typedef struct dp_repo dp_repo;

/* zstd levels a repository accepts (0 in dp_repo_init_opts means the
 * default). */
#define DP_ZSTD_LEVEL_MIN (-7)
#define DP_ZSTD_LEVEL_MAX 19

typedef struct dp_repo_init_opts {
	uint32_t chunk_min, chunk_avg, chunk_max; /* 0: defaults */
	uint32_t pack_size; /* 0: default (16 MiB) */
	int zstd_level; /* 0: default */
} dp_repo_init_opts;

/* Creates a repository. Refuses (DP_EEXIST) if one exists there, changing
 * nothing. passphrase is borrowed; the caller wipes it. */
int dp_repo_init(const char *url, const dp_backend_opts *bopts, const dp_repo_init_opts *opts,
                 const char *passphrase, char id_out[DP_ID_HEX]);
/* Opens one; DP_EAUTH for a wrong passphrase, DP_ENOTFOUND if there is no
 * repository at url. */
int dp_repo_open(dp_repo **out, const char *url, const dp_backend_opts *bopts,
                 const char *passphrase);
/* The same over a backend made by the caller (tests, the controller's
 * pre-check). init borrows b; open takes ownership of b, also on failure. */
int dp_repo_init_backend(dp_backend *b, const dp_repo_init_opts *opts, const char *passphrase,
                         char id_out[DP_ID_HEX]);
int dp_repo_open_backend(dp_repo **out, dp_backend *b, const char *passphrase);
void dp_repo_free(dp_repo *r);

/* ---- key slots: random keys that open the repository without the
 * passphrase (repos/keyslot.c documents the format and the reasoning) ---- */

/* A slot key as text: "dpk1-" + 64 hex digits of the slot id + "-" + 64 hex
 * digits of the 256-bit random secret; the buffer has room for the NUL. */
#define DP_KEYSLOT_TOKEN_LEN 135

typedef struct dp_keyslot_info {
	char id[DP_ID_HEX];
	char kind[16]; /* "passphrase" (scrypt) or "random" (a slot key) */
	char label[200]; /* what a random slot is for; "" if none */
	char created[32]; /* RFC 3339 */
	char host[256]; /* where it was made */
} dp_keyslot_info;

/* Opens with a slot key instead of the passphrase: reads the config and
 * keys/<slot id>, nothing else, and derives the unwrapping key with HKDF
 * (no scrypt). DP_EAUTH if the key is wrong, malformed or revoked. token is
 * borrowed; the caller wipes it. open_key_backend takes ownership of b. */
int dp_repo_open_key(dp_repo **out, const char *url, const dp_backend_opts *bopts,
                     const char *token);
int dp_repo_open_key_backend(dp_repo **out, dp_backend *b, const char *token);
/* Adds a slot opened by a fresh random key, written to token_out (wipe it
 * after storing it; it is never written to the repository). label: printable,
 * at most 199 bytes, e.g. "archive pg-main on db1". id_out may be NULL. */
int dp_keyslot_add(dp_repo *r, const char *label, char token_out[DP_KEYSLOT_TOKEN_LEN],
                   char id_out[DP_ID_HEX]);
/* Every key object, oldest first; free *out with free(). */
int dp_keyslot_list(dp_repo *r, dp_keyslot_info **out, size_t *n);
/* Removes a slot (full id, or a unique prefix of at least 8 hex digits), so
 * its key no longer opens the repository. Refuses to remove the last
 * passphrase slot. DP_ENOTFOUND if there is no such slot. */
int dp_keyslot_remove(dp_repo *r, const char *id);
/* The slot id a token names (no check that it exists); DP_EUSAGE if the
 * token is malformed. */
int dp_keyslot_token_id(const char *token, char id_out[DP_ID_HEX]);

const char *dp_repo_id(const dp_repo *r);
dp_backend *dp_repo_backend(dp_repo *r); /* borrowed */
void dp_repo_set_threads(dp_repo *r, int n); /* compress+encrypt workers; 0 = cores */
void dp_repo_set_zstd_level(dp_repo *r, int level); /* overrides config for new blobs */
/* Cuts this handle's pushes at an average of avg bytes (min avg/4, max
 * avg*4) instead of the config's; 0 restores the config's. avg must be a
 * power of two >= 1K whose max fits the config's chunk maximum (readers
 * bound chunks by it); DP_EUSAGE otherwise. The same data pushed with
 * different averages is cut differently and does not deduplicate. */
int dp_repo_set_chunk_avg(dp_repo *r, uint32_t avg);
void dp_repo_set_lock_wait(dp_repo *r, int seconds); /* wait for a conflicting lock */

/* Live counters of the operation in progress, for a progress line. The
 * caller owns the struct and reads it from any thread. */
typedef struct dp_progress {
	_Atomic uint64_t done; /* logical bytes processed (pushed, pulled, checked) */
	_Atomic uint64_t stored; /* bytes newly written to the repository */
	_Atomic uint64_t total; /* expected logical bytes, 0 if unknown */
} dp_progress;
void dp_repo_set_progress(dp_repo *r, dp_progress *p); /* borrowed; NULL: none */

/* ---- push: a byte stream in, a snapshot out ---- */

typedef struct dp_push dp_push;

typedef struct dp_push_result {
	char id[DP_ID_HEX];
	uint64_t size; /* logical bytes */
	uint64_t stored; /* bytes added to the repository (packs, index, snapshot) */
	uint64_t blobs; /* chunks in the stream */
	uint64_t blobs_new; /* chunks not already stored */
	double seconds;
} dp_push_result;

/* name: a label, 1..255 bytes, no NUL, no "/..", "../" or leading '/'.
 * kind: "stream", "file" or "tree" (a tar stream made by dp-worker). */
int dp_push_begin(dp_push **out, dp_repo *r, const char *name, const char *kind);
/* Attaches a JSON object (text) to the snapshot, e.g. LSNs of a base backup. */
int dp_push_set_meta(dp_push *p, const char *json);
/* Appends bytes to the stream (copies them). */
int dp_push_write(dp_push *p, const void *data, size_t len);
/* The same without the copy: the caller reads the stream straight into the
 * pipeline's buffer. dp_push_buffer gives where the next bytes go: *buf, with
 * room for *room bytes (at least 1, often about 1 MiB, but as little as the
 * current batch has left: read at most that, not a size of one's own).
 * The buffer belongs to the push; it is the caller's to write until the next
 * call on p. dp_push_filled(p, n) says that the first n <= room bytes of it
 * are the stream's next bytes, and chunks them; n == 0 and not calling it
 * at all (e.g. at the end of the input) are fine. Cut points, and so the
 * snapshot, are those of dp_push_write with the same bytes. An error from
 * either stops the push (dp_push_abort it), as one from dp_push_write. */
int dp_push_buffer(dp_push *p, uint8_t **buf, size_t *room);
int dp_push_filled(dp_push *p, size_t n);
/* Ends the chunk being cut at this point of the stream. Then, with block > 0,
 * cuts what follows every block bytes (no content-defined cuts) until the
 * next call; with 0, content-defined chunking resumes. For data made of
 * fixed-size pages (a database file): aligned to the file's start, a
 * changed page changes exactly one chunk. block <= the chunk maximum. */
int dp_push_cut(dp_push *p, uint32_t block);
/* Writes the remaining packs, the index and, last, the snapshot. Frees p. */
int dp_push_commit(dp_push *p, dp_push_result *res);
/* Frees p; no snapshot is written (data already written is left for prune). */
void dp_push_abort(dp_push *p);

/* ---- snapshots ---- */

typedef struct dp_snapshot_info {
	char id[DP_ID_HEX];
	char name[256];
	char kind[16];
	char host[256];
	int64_t time; /* unix seconds, UTC, when the push began */
	int32_t nsec; /* and nanoseconds: "newest" compares (time, nsec) */
	uint64_t size;
	uint64_t blobs;
	char *meta; /* JSON object text or NULL; owned */
} dp_snapshot_info;

/* All snapshots, oldest first. */
int dp_snapshot_list(dp_repo *r, dp_snapshot_info **out, size_t *n);
void dp_snapshot_info_free(dp_snapshot_info *v, size_t n);
/* name -> the newest snapshot of that name; else a full id or a unique id
 * prefix of at least 8 hex digits. DP_ENOTFOUND if none. */
int dp_snapshot_find(dp_repo *r, const char *name_or_id, dp_snapshot_info *out);
/* name: every snapshot of that name; id: that one. Data is freed by prune. */
int dp_snapshot_remove(dp_repo *r, const char *name_or_id, size_t *removed);

/* ---- pull: a snapshot's bytes, in order ---- */

typedef struct dp_pull dp_pull;

int dp_pull_open(dp_pull **out, dp_repo *r, const char *name_or_id);
const dp_snapshot_info *dp_pull_info(const dp_pull *p);
/* Reads up to cap bytes; *got == 0 at the end. Every byte returned has been
 * authenticated. DP_ECORRUPT names the object that failed. */
int dp_pull_read(dp_pull *p, void *buf, size_t cap, size_t *got);
void dp_pull_close(dp_pull *p);

/* ---- small encrypted objects (catalog copies, method metadata) ---- */

/* key: "catalog/NAME.json" and the like (not config/keys/data/index/
 * snapshots/locks). Written atomically, encrypted, authenticated on read. */
int dp_repo_put_file(dp_repo *r, const char *key, const void *data, size_t len);
int dp_repo_get_file(dp_repo *r, const char *key, dp_buf *out);
int dp_repo_remove_file(dp_repo *r, const char *key);

/* ---- maintenance ---- */

typedef void (*dp_problem_fn)(const char *msg, void *arg);

typedef struct dp_check_report {
	uint64_t snapshots, indexes, packs, blobs;
	uint64_t bytes_read;
	uint64_t unreferenced_packs; /* left by interrupted pushes; prune removes them */
	uint64_t errors;
} dp_check_report;

/* Checks structure (config, keys, every index and snapshot decrypts, every
 * blob a snapshot names is indexed, every indexed pack exists with the right
 * size); with read_data every blob is read and authenticated. Each problem
 * goes to problem_fn; returns DP_ECORRUPT if there was any. */
int dp_repo_check(dp_repo *r, bool read_data, dp_check_report *rep, dp_problem_fn problem_fn,
                  void *arg);

typedef struct dp_rebuild_report {
	uint64_t packs; /* packs whose header was read */
	uint64_t packs_skipped; /* unreadable headers, each reported */
	uint64_t blobs; /* blobs in the new index */
	uint64_t indexes_replaced; /* old index objects removed */
} dp_rebuild_report;

/* Rebuilds the index from the packs' own headers (two small ranged reads
 * per pack) and replaces every index object with one new one: recovers a
 * repository whose index objects were lost or damaged. Exclusive lock. */
int dp_repo_rebuild_index(dp_repo *r, dp_rebuild_report *rep, dp_problem_fn problem_fn, void *arg);

typedef struct dp_prune_report {
	uint64_t packs_removed; /* whole packs no snapshot uses */
	uint64_t packs_repacked; /* packs below the fill threshold, rewritten */
	uint64_t packs_written;
	uint64_t blobs_removed;
	uint64_t bytes_freed;
} dp_prune_report;

/* Removes what no snapshot references; repacks packs whose live fraction is
 * below fill_threshold (0..1, e.g. 0.5). Takes the exclusive lock. */
int dp_repo_prune(dp_repo *r, double fill_threshold, dp_prune_report *rep);

#endif
