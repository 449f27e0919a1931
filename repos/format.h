/*
 * The repository format, and the private interfaces between the files of
 * repos/. Nothing outside repos/ includes this header.
 *
 * A repository is a set of objects on a backend (posix or S3, same layout):
 *
 *   config             plaintext JSON, written once by init:
 *                        {"version":3, "id":"<64 hex>",
 *                         "chunker":{"min":N,"avg":N,"max":N},
 *                         "packSize":N, "compression":{"algorithm":"zstd","level":N},
 *                         "encryption":"aes-256-gcm", "blobId":"blake3-keyed"}
 *   keys/<id>          plaintext JSON wrapping the master keys:
 *                        {"kdf":"scrypt","N":..,"r":..,"p":..,"salt":"<b64>",
 *                         "data":"<b64 sealed(wrap key, master, ad "dp-object:key")>",
 *                         "created":"<RFC 3339>","host":"..."}
 *                      wrap key = scrypt(passphrase, salt); master (96 bytes) =
 *                      encryption key | blob-id MAC key | chunker seed.
 *   data/XX/<packid>   a pack; XX = first two hex digits of its id
 *   index/<id>         a sealed index
 *   snapshots/<id>     a sealed snapshot manifest
 *   catalog/..., meta/...   small sealed files (dp_repo_put_file)
 *   locks/<random>     plaintext JSON lock with heartbeat
 *
 * "sealed(x, ad)" is AES-256-GCM under the encryption key: nonce(12) | ct | tag(16)
 * (dp/crypto.h). Index, snapshot and pack-header objects seal flag(1) | payload:
 * flag 0, the plaintext below; flag 1, a zstd frame of it (with its size).
 * Objects other than frames use ad = "dp-object:<type>" where type is "index",
 * "snapshot", "pack-header", or "file:<key>" for small files, so one kind of
 * object cannot be passed off as another. Index and snapshot ids are the
 * SHA-256 of the stored bytes, checked on every read. A pack's id is the
 * SHA-256 of its tail (sealed header and length, dp_pack_id): its frames are
 * authenticated one by one (AES-GCM, bound to their ids), so hashing their
 * bytes again would only cost time (0.2 CPU seconds per 340 MB of packs).
 *
 * Chunk: a piece of a stream cut by the chunker; id = BLAKE3 in keyed mode
 *   (MAC key, plaintext), 32 bytes. Snapshots and indexes name chunks by id.
 *   (The code also calls a chunk a "blob".)
 *
 * Frame: the unit of compression and encryption, several chunks that one push
 *   stored together (up to ~1 MiB of new chunks that were consecutive in its
 *   stream). Compressing them as one zstd frame keeps the ratio of large
 *   blocks while deduplication works on small chunks.
 *     frame id = SHA-256(member ids, in order)
 *     stored   = sealed(flag(1) | payload, ad = frame id)
 *                flag 0: payload is the members' bytes, concatenated;
 *                flag 1: payload is one zstd frame of them.
 *   The index names, for every chunk, its frame and where in the frame's
 *   plaintext it lies; the frame id is recorded beside the frame's location,
 *   so a frame moved, swapped or altered fails authentication. Since the
 *   binding does not involve the pack, prune moves sealed frames between
 *   packs without re-encrypting them.
 *
 * Pack: frame | frame | ... | sealed header | u32 LE length of the sealed header
 *   header plaintext: "DPH2" | per frame:
 *     frame id(32) | offset u32 | length u32 | raw length u32 | u32 n |
 *     n member raw lengths u32 (members back to back from 0)
 *   Member ids are not repeated here (they would cost 32 bytes per chunk):
 *   rebuilding an index from packs reads the frames and hashes the members.
 *
 * Index plaintext: "DPI2" | u32 npacks | per pack: pack id(32) | u32 nframes |
 *   per frame: frame id(32) | offset u32 | length u32 | raw length u32 | u32 n |
 *     n members: id(32) | offset in the frame's plaintext u32 | raw length u32
 *   (all integers little endian). After a prune a frame may list fewer
 *   members than it holds (the dead ones are dropped from the index).
 *
 * Snapshot plaintext: "DPS2" | u32 json length | JSON | u64 n |
 *   n slices of frame id(32) | start u32 | length u32
 *   JSON: {"name","kind","host","time","nsec","size","blobs","meta":{...}}
 *   The stream is the slices' bytes in order: bytes [start, start + length)
 *   of the frame's plaintext. A push stores its new chunks in frames in
 *   stream order, so a full backup is about one slice per frame (~1 MiB)
 *   and an incremental one a slice per unchanged stretch of an old frame,
 *   instead of 36 bytes per chunk. A slice starts and ends on chunk
 *   boundaries; "blobs" counts the chunks, "size" the bytes.
 *   Snapshots name frames, not chunks: prune keeps every frame a snapshot
 *   names, whole (with all its index entries, whether or not a snapshot
 *   still uses them: the bytes are stored anyway, and they deduplicate).
 *   Two pushes running at once may both store a chunk, in frames of their
 *   own; the index then lists the chunk under both frames, and the
 *   in-memory index places it in the first one loaded. A frame whose chunks
 *   all sit in other frames like that keeps its index record with no chunk
 *   entries (restore needs only the frame's place).
 *
 * Writes are ordered so that a crash never leaves a reference to something
 * missing: packs, then the index naming them, then the snapshot naming the
 * blobs. A pack no index names is an orphan of an interrupted push and is
 * removed by prune.
 */
#ifndef DP_REPOS_FORMAT_H
#define DP_REPOS_FORMAT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "dp/crypto.h"
#include "dp/repo.h"

#define DP_FORMAT_VERSION 3
/* Chunking when dp repo init is given no chunk sizes. 32 KiB on average:
 * half the index entries of 16 KiB (40 bytes stored and ~90 in memory per
 * chunk), and the minimum at half the average, as no byte before it is
 * hashed: bench/push.sh's pg tar push ~6% faster than with 16K/4K, and
 * bench/pg.sh's tar-stream backups store the same at 32K with a 16K or an
 * 8K minimum. Streams of pages cut finer per push (dp_repo_set_chunk_avg). */
#define DP_DEFAULT_CHUNK_MIN (16u * 1024)
#define DP_DEFAULT_CHUNK_AVG (32u * 1024)
#define DP_DEFAULT_CHUNK_MAX (128u * 1024)
#define DP_DEFAULT_PACK_SIZE (16u * 1024 * 1024)
/* Chunks a push holds (for its snapshot and index) before it writes them
 * out (push.c): ~2 GB of new data at 32 KiB chunks, 512 MiB in 8 KiB blocks.
 * Pushes of 8.4 / 25 / 50 GB of new data peaked at 73 / 73 / 74 MiB; a
 * window twice as large held ~15 MiB more, with no gain in speed. */
#define DP_PUSH_WINDOW ((size_t)1 << 16)
#define DP_DEFAULT_ZSTD_LEVEL 2
#define DP_MASTER_LEN (3 * DP_KEY_LEN)
/* New chunks gathered into one frame: ~1 MiB plus the chunk that crosses it. */
#define DP_FRAME_TARGET (1u << 20)
#define DP_FRAME_HEAD_LEN (DP_HASH_LEN + 16) /* frame id, offset, length, raw, n */
#define DP_INDEX_ENTRY_LEN (DP_HASH_LEN + 8) /* id, offset in frame, raw length */
#define DP_INDEX_MAX_ENTRIES (1u << 20)
#define DP_SLICE_LEN (DP_HASH_LEN + 8) /* frame id, start, length */
#define DP_LOCK_STALE_SECONDS 300
#define DP_LOCK_REFRESH_SECONDS 60

/* ---- key listings ---- */

/* The keys and sizes a listing returned; a zeroed one is empty. */
typedef struct dp_keylist {
	char **v;
	uint64_t *size;
	size_t n, cap;
} dp_keylist;
int dp_keylist_add(const char *key, uint64_t size, void *arg); /* a dp_backend_list_cb */
void dp_keylist_free(dp_keylist *l);

/* ---- the in-memory index: blob id -> location ---- */

typedef struct dp_frame {
	uint8_t id[DP_HASH_LEN];
	uint32_t pack; /* index into dp_index.packs */
	uint32_t offset, length, raw_length; /* sealed bytes in the pack; plaintext */
} dp_frame;

typedef struct dp_blob_loc {
	uint8_t id[DP_HASH_LEN];
	uint32_t frame; /* index into dp_index.frames */
	uint32_t inner, raw_length; /* where in the frame's plaintext */
} dp_blob_loc;

typedef struct dp_index {
	dp_blob_loc *slots; /* open addressing; frame == UINT32_MAX marks empty */
	size_t cap, count;
	uint8_t (*packs)[DP_HASH_LEN];
	size_t npacks, packs_cap;
	dp_frame *frames;
	size_t nframes, frames_cap;
	/* Frame id -> index into frames: built by dp_index_map_frames, open
	 * addressing, UINT32_MAX marks empty. */
	uint32_t *fslots;
	size_t fcap;
} dp_index;

#define DP_INDEX_EMPTY UINT32_MAX
#define DP_INDEX_PENDING (UINT32_MAX - 1) /* a push's chunk not yet in a pack */

int dp_index_add_pack(dp_index *ix, const uint8_t pack_id[DP_HASH_LEN], uint32_t *pack_out);
/* Appends a frame (f->pack already an index into ix->packs). */
int dp_index_add_frame(dp_index *ix, const dp_frame *f, uint32_t *frame_out);
/* Adds a chunk location (loc->frame already an index into ix->frames)
 * unless the id is already present (first wins); *added tells which. */
int dp_index_add(dp_index *ix, const dp_blob_loc *loc, bool *added);
/* Adds a chunk location, or replaces the one with the same id. */
int dp_index_set(dp_index *ix, const dp_blob_loc *loc);
const dp_blob_loc *dp_index_find(const dp_index *ix, const uint8_t id[DP_HASH_LEN]);
/* Builds the frame id lookup over every frame of ix (the first of equal ids
 * wins: equal ids mean equal contents). Call after the last frame is added. */
int dp_index_map_frames(dp_index *ix);
/* The frame with that id (dp_index_map_frames first), or DP_INDEX_EMPTY. */
uint32_t dp_index_find_frame(const dp_index *ix, const uint8_t id[DP_HASH_LEN]);
void dp_index_free(dp_index *ix);
/* Parses an index plaintext into ix. */
int dp_index_decode(dp_index *ix, const uint8_t *p, size_t len);
/* Loads every index/ object of the repository into ix; with keys, also
 * returns the keys of the index objects read (free with dp_keylist_free). */
int dp_index_load(dp_repo *r, dp_index *ix, dp_keylist *keys);
/* Seals and writes ix as new index objects (index plaintext above), several
 * if it has more than DP_INDEX_MAX_ENTRIES blobs. */
int dp_index_write(dp_repo *r, const dp_index *ix, uint64_t *bytes_out);

/* ---- the repository handle ---- */

struct dp_repo {
	dp_backend *b;
	char id[DP_ID_HEX];
	uint8_t master[DP_MASTER_LEN];
	uint32_t chunk_min, chunk_avg, chunk_max, pack_size; /* config */
	uint32_t cut_min, cut_avg, cut_max; /* this handle's pushes: config's or smaller */
	int zstd_level;
	int threads;
	int lock_wait;
	uint64_t gear[256];
	dp_aead *aead; /* for the caller's thread; pipeline threads make their own */
	dp_progress *progress;
	char host[256];
};

static inline const uint8_t *dp_repo_enc_key(const dp_repo *r)
{
	return r->master;
}
static inline const uint8_t *dp_repo_mac_key(const dp_repo *r)
{
	return r->master + DP_KEY_LEN;
}
static inline const uint8_t *dp_repo_chunk_seed(const dp_repo *r)
{
	return r->master + 2 * DP_KEY_LEN;
}

/* Sealed objects: seal/open with ad "dp-object:<type>". */
int dp_object_seal(dp_repo *r, dp_aead *a, const char *type, const void *plain, size_t len,
                   dp_buf *out);
int dp_object_open(dp_repo *r, dp_aead *a, const char *type, const char *key, const uint8_t *sealed,
                   size_t len, dp_buf *out);
/* Reads a content-addressed object (index, snapshot), checks that its SHA-256
 * matches the id in its key, and opens it. */
int dp_object_read(dp_repo *r, const char *type, const char *key, dp_buf *plain);
/* Seals plain, names it "<dir>/<sha256 hex>" and writes it. */
int dp_object_write(dp_repo *r, const char *type, const char *dir, const void *plain, size_t len,
                    char id_out[DP_ID_HEX], uint64_t *bytes_out);

/* Chunk ids and frame sealing (one dp_sealer per thread: zstd contexts are
 * not shared). */
typedef struct dp_sealer dp_sealer;
int dp_sealer_new(dp_sealer **out, const dp_repo *r);
void dp_sealer_free(dp_sealer *s);
/* The largest frame plaintext a repository can hold. */
static inline size_t dp_frame_max(const dp_repo *r);
/* Upper bound of a sealed frame of raw_len bytes. */
size_t dp_frame_sealed_bound(size_t raw_len);
int dp_blob_id(dp_sealer *s, uint8_t id[DP_HASH_LEN], const void *raw, size_t len);
/* The ids of n blobs, ids[i] of raw[i] (len[i] bytes), as n dp_blob_id calls
 * would give them; faster on a batch of chunks (BLAKE3 fills its lanes across
 * them). */
int dp_blob_ids(dp_sealer *s, uint8_t (*ids)[DP_HASH_LEN], const uint8_t *const *raw,
                const size_t *len, size_t n);
/* The frame id of n member ids (n * DP_HASH_LEN bytes). */
int dp_frame_id(uint8_t id[DP_HASH_LEN], const uint8_t *member_ids, size_t n);
/* Seals raw (len <= dp_frame_max) into out, which has room for
 * dp_frame_sealed_bound(len). */
int dp_frame_seal(dp_sealer *s, const uint8_t id[DP_HASH_LEN], const void *raw, size_t len,
                  uint8_t *out, size_t *out_len);
/* Opens a sealed frame into out (room for raw_len <= dp_frame_max); checks
 * its length. DP_ECORRUPT without a message: the caller names the object. */
int dp_frame_open(dp_sealer *s, const uint8_t id[DP_HASH_LEN], const uint8_t *sealed, size_t len,
                  uint8_t *out, uint32_t raw_len);

/* Chunker (FastCDC-style gear hash, normalised chunking). Streaming: state
 * survives across calls. */
typedef struct dp_chunker {
	const uint64_t *gear;
	uint32_t min, avg, max;
	uint64_t mask_s, mask_l;
	uint64_t fp;
	uint32_t len; /* bytes of the current chunk seen so far */
} dp_chunker;
void dp_chunker_gear(uint64_t gear[256], const uint8_t seed[DP_KEY_LEN]);
void dp_chunker_init(dp_chunker *c, const uint64_t *gear, uint32_t min, uint32_t avg, uint32_t max);
/* Consumes bytes of p up to and including a cut point. Returns how many
 * bytes belong to the current chunk; *cut says whether the chunk ends there. */
size_t dp_chunker_next(dp_chunker *c, const uint8_t *p, size_t n, bool *cut);

/* Packs. A dp_packer accumulates sealed frames, their header entries and the
 * locations of their members; dp_packer_finish appends the sealed header and
 * its length, after which data holds the whole pack. */
typedef struct dp_packer {
	dp_buf data;
	dp_buf header; /* plaintext header */
	dp_frame *frames; /* pack field unused */
	size_t nframes, frames_cap;
	dp_blob_loc *locs; /* frame: index into frames */
	size_t nlocs, cap;
} dp_packer;
/* Adds a sealed frame f (f->offset is set here) whose members are locs[0..n)
 * (their frame field is set here); all_raw: the raw lengths of all the
 * frame's members in order (nall of them) for the header, or NULL when locs
 * are all of them (a fresh frame: nall is n). */
int dp_packer_add(dp_packer *k, dp_frame *f, const uint8_t *sealed, const dp_blob_loc *locs,
                  size_t n, const uint32_t *all_raw, size_t nall);
int dp_packer_finish(dp_repo *r, dp_aead *a, dp_packer *k);
void dp_packer_reset(dp_packer *k);
void dp_packer_free(dp_packer *k);
/* Moves the packer's frames and locations into ix under pack pack_id; a
 * chunk ix already has is given the new location (a push's pending ones). */
int dp_packer_index(const dp_packer *k, const uint8_t pack_id[DP_HASH_LEN], dp_index *ix);
int dp_pack_key(char *key, size_t cap, const uint8_t id[DP_HASH_LEN]);
/* A whole pack's id: the SHA-256 of its sealed header and the length after
 * it (the whole pack if that length does not fit). */
int dp_pack_id(uint8_t id[DP_HASH_LEN], const uint8_t *pack, size_t len);
/* A pack header, parsed: frames, and for frame i its members' raw lengths
 * raw[first[i] .. first[i+1]). */
typedef struct dp_pack_header {
	dp_frame *frames; /* pack field left 0 */
	size_t nframes;
	uint32_t *first; /* nframes + 1 */
	uint32_t *raw;
} dp_pack_header;
/* Parses a pack's header from tail, the last len bytes of a pack of
 * pack_size bytes (the whole pack, or just its header and trailer). */
int dp_pack_read_header(dp_repo *r, dp_aead *a, const char *key, const uint8_t *tail, size_t len,
                        uint64_t pack_size, dp_pack_header *h);
void dp_pack_header_free(dp_pack_header *h);

/* Snapshots: n slices, each bytes [start, start + length) of a frame. */
typedef struct dp_snapshot {
	dp_snapshot_info info;
	size_t n;
	uint8_t (*frame_ids)[DP_HASH_LEN];
	uint32_t *start, *length;
} dp_snapshot;
int dp_snapshot_load(dp_repo *r, const char *id_hex, dp_snapshot *out);
/* The frame of slice i of s in ix (dp_index_map_frames first), or
 * DP_INDEX_EMPTY if no index has it; *fits: the slice lies within the
 * frame's plaintext. */
uint32_t dp_slice_frame(const dp_index *ix, const dp_snapshot *s, size_t i, bool *fits);
/* Like dp_snapshot_list, but an unreadable snapshot is an error instead of
 * a warning (prune must know every snapshot before it deletes anything). */
int dp_snapshot_list_strict(dp_repo *r, dp_snapshot_info **out, size_t *n);
void dp_snapshot_free(dp_snapshot *s);
/* slices: n entries of DP_SLICE_LEN bytes, as in the snapshot plaintext. */
int dp_snapshot_encode(const dp_snapshot_info *info, const uint8_t *slices, size_t n, dp_buf *out);
/* Resolves name_or_id to a full snapshot id. */
int dp_snapshot_resolve(dp_repo *r, const char *name_or_id, char id_out[DP_ID_HEX]);
int dp_validate_name(const char *name);

/* Locks. */
typedef struct dp_lock dp_lock;
int dp_lock_acquire(dp_lock **out, dp_repo *r, bool exclusive, const char *what);
/* 0 if the lock is still ours (its object exists and was refreshed
 * recently); DP_ELOCKED with a message if it may have been taken from us.
 * Call before committing anything that relies on the lock. */
int dp_lock_check(dp_lock *l);
void dp_lock_release(dp_lock *l);

static inline size_t dp_frame_max(const dp_repo *r)
{
	return DP_FRAME_TARGET + r->chunk_max;
}

/* Threads for the pipelines: r->threads, or the number of cores. */
int dp_repo_nthreads(const dp_repo *r);
/* Sets how many chunks a push holds before it writes them out (push.c;
 * DP_PUSH_WINDOW by default, 0: never): for tests. */
void dp_push_set_window(dp_push *p, size_t chunks);

#endif
