/*
 * Archive verbs: store single files (a database's log segments, history
 * files) under a name in a named archive, and fetch them back. They serve
 * as a database's archive_command / restore_command, so they know nothing
 * of any engine: "store this file under this name, idempotently", "fetch
 * it", "list them", "remove these" (wal-push, wal-fetch, wal-ls, wal-rm).
 * Also put-file / get-file for small method metadata (e.g. a recoverable
 * window computed by a method script), and stream-push: stdin as a snapshot
 * whose metadata is read only at the end of the stream (see its comment).
 *
 * Objects: "wal/<archive>/<name>", a small sealed file (dp_repo_put_file;
 * the key is bound as associated data, so an object renamed in storage fails
 * authentication). Plaintext layout, integers little endian:
 *
 *   "DPW1" | codec u8 (0 raw, 1 zstd) | 3 zero bytes | raw size u64 |
 *   SHA-256 of the raw bytes (32) | payload (the raw bytes or one zstd frame)
 *
 * Idempotence: pushing a name that exists compares the SHA-256 and size in
 * the stored header with the new file's: equal succeeds without writing,
 * different fails (exit 1) and changes nothing. wal-push returns 0 only after
 * the backend's put returned, i.e. the object is durable.
 *
 * Configuration: --config FILE names a file of "key = value" lines (repo,
 * key or key-file, passphrase or passphrase-file, archive, zstd-level,
 * threads) that must be owned by the user running dp-worker and not readable
 * by others, so an archive_command never carries a secret. Values in the
 * file win over --repo / DP_REPO and DP_REPO_PASSPHRASE. "key" is a slot key
 * made by 'dp-worker key-add' (repos/keyslot.c): it opens the repository
 * with HKDF instead of scrypt, and is what archive.sh writes, so the
 * passphrase never sits on the database host.
 *
 * Cost of one wal-push of a 16 MiB segment (2-CPU VM, posix repository; the
 * README's PostgreSQL section has the table): process start and loading the
 * shared libraries ~8 ms; opening with a slot key ~1.5 ms (with the
 * passphrase: scrypt, ~100 ms); mapping the file ~1 ms; SHA-256 (~9 ms) on
 * one thread while zstd level 1 runs on the others (7 ms for TPC-B WAL,
 * ~40 ms on one core for bulk-load WAL, hence split in parts); seal and the
 * durable put (temp file, one fsync, rename, fsync of the directory) 2-15 ms
 * depending on the compressed size. Nothing else is read: no index, no lock
 * (archive objects are independent of snapshots, and prune leaves wal/
 * alone).
 *
 * Threads: wal-push hashes and compresses the parts of a file on short-lived
 * threads that only read the mapped file and write disjoint buffers, joined
 * before anything is stored. Everything else is single-threaded; every
 * buffer is owned here.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include <cjson/cJSON.h>

#include "dp/backend.h"
#include "dp/buf.h"
#include "dp/cliopt.h"
#include "dp/crypto.h"
#include "dp/error.h"
#include "dp/log.h"
#include "dp/repo.h"
#include "worker.h"

#define WAL_MAGIC "DPW1"
#define WAL_HDR_LEN (4 + 4 + 8 + DP_HASH_LEN)
#define WAL_DEFAULT_ARCHIVE "default"
#define WAL_DEFAULT_LEVEL 1
#define WAL_MAX_FILE (1ull << 30) /* segments are at most 1 GiB */
#define CONF_MAX (64 * 1024)

enum { OPT_CONFIG = 1, OPT_ARCHIVE, OPT_LEVEL, OPT_FORCE };

typedef struct wal_opts {
	const char *config;
	const char *archive;
	long level; /* -1: config or default */
} wal_opts;

/* Values read from --config, owned. */
typedef struct wal_conf {
	char *repo;
	char *passphrase;
	char *passphrase_file;
	char *key; /* a slot key (repos/keyslot.c) */
	char *key_file;
	char *archive;
	long level;
	long threads;
} wal_conf;

static void conf_free(wal_conf *c)
{
	free(c->repo);
	if (c->passphrase) {
		dp_wipe(c->passphrase, strlen(c->passphrase));
		free(c->passphrase);
	}
	free(c->passphrase_file);
	if (c->key) {
		dp_wipe(c->key, strlen(c->key));
		free(c->key);
	}
	free(c->key_file);
	free(c->archive);
	memset(c, 0, sizeof(*c));
}

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n > 0 &&
	       (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
		s[--n] = 0;
	return s;
}

/* Reads a file that may hold a secret into text (NUL-terminated, at most
 * CONF_MAX bytes); refuses one that others could read or that belongs to
 * someone else. */
static int read_private(dp_buf *text, const char *path, const char *what)
{
	int rc = 0, fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return dp_error_errno(errno == ENOENT ? DP_ENOTFOUND : DP_ERROR, errno,
		                      "cannot open %s \"%s\"", what, path);
	struct stat st;
	if (fstat(fd, &st) != 0) {
		rc = dp_error_errno(DP_ERROR, errno, "cannot stat %s \"%s\"", what, path);
		goto out;
	}
	if (st.st_uid != geteuid() || (st.st_mode & 077)) {
		rc = dp_error_set(DP_EUSAGE,
		                  "%s \"%s\" must be owned by the user running dp-worker (uid "
		                  "%u) with mode 0600: it may hold a repository secret",
		                  what, path, (unsigned)geteuid());
		goto out;
	}
	if ((rc = dp_buf_reserve(text, CONF_MAX + 1)))
		goto out;
	for (;;) {
		ssize_t n = read(fd, text->data + text->len, CONF_MAX - text->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = dp_error_errno(DP_ERROR, errno, "cannot read %s \"%s\"", what, path);
			goto out;
		}
		if (n == 0)
			break;
		text->len += (size_t)n;
		if (text->len >= CONF_MAX) {
			rc = dp_error_set(DP_EUSAGE, "%s \"%s\" is too large", what, path);
			goto out;
		}
	}
	text->data[text->len] = 0;
out:
	close(fd);
	return rc;
}

/* Reads the config file (see read_private). */
static int conf_load(wal_conf *c, const char *path)
{
	dp_buf text = {0};
	c->level = -1;
	c->threads = -1;
	int rc = read_private(&text, path, "config");
	if (rc)
		goto out;
	int lineno = 0;
	char *save = NULL;
	for (char *line = strtok_r((char *)text.data, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		lineno++;
		char *s = trim(line);
		if (!*s || *s == '#')
			continue;
		char *eq = strchr(s, '=');
		if (!eq) {
			rc = dp_error_set(DP_EUSAGE, "config \"%s\" line %d: expected key = value",
			                  path, lineno);
			goto out;
		}
		*eq = 0;
		char *key = trim(s), *val = trim(eq + 1);
		char **dst = NULL;
		if (strcmp(key, "repo") == 0)
			dst = &c->repo;
		else if (strcmp(key, "passphrase") == 0)
			dst = &c->passphrase;
		else if (strcmp(key, "passphrase-file") == 0)
			dst = &c->passphrase_file;
		else if (strcmp(key, "key") == 0)
			dst = &c->key;
		else if (strcmp(key, "key-file") == 0)
			dst = &c->key_file;
		else if (strcmp(key, "archive") == 0)
			dst = &c->archive;
		if (dst) {
			free(*dst);
			if (!(*dst = strdup(val))) {
				rc = dp_error_set(DP_ERROR, "out of memory");
				goto out;
			}
			continue;
		}
		long *num = strcmp(key, "zstd-level") == 0 ? &c->level
		            : strcmp(key, "threads") == 0  ? &c->threads
		                                           : NULL;
		if (!num) {
			rc = dp_error_set(
			    DP_EUSAGE,
			    "config \"%s\" line %d: unknown key \"%s\" (known: repo, key, "
			    "key-file, passphrase, passphrase-file, archive, zstd-level, "
			    "threads)",
			    path, lineno, key);
			goto out;
		}
		if ((rc = dp_cli_parse_int(num, key, val, 0, 64)))
			goto out;
	}
out:
	dp_buf_wipe(&text);
	return rc;
}

/* Archive and object names: one path component of [A-Za-z0-9._-], not
 * starting with '.', at most 200 bytes. */
static int check_component(const char *what, const char *s)
{
	size_t n = strlen(s);
	bool ok = n > 0 && n <= 200 && s[0] != '.';
	for (size_t i = 0; ok && i < n; i++) {
		char ch = s[i];
		ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		     (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
	}
	return ok ? 0
	          : dp_error_set(DP_EUSAGE,
	                         "%s \"%s\": use 1..200 characters of A-Z a-z 0-9 . _ - (not "
	                         "starting with '.')",
	                         what, s);
}

static int on_opt(int val, const char *arg, void *ctx)
{
	wal_opts *o = ctx;
	switch (val) {
	case OPT_CONFIG:
		o->config = arg;
		return 0;
	case OPT_ARCHIVE:
		o->archive = arg;
		return 0;
	case OPT_LEVEL:
		return dp_cli_parse_int(&o->level, "--zstd-level", arg, 1, 19);
	}
	return dp_error_set(DP_EUSAGE, "unexpected option");
}

static const struct option wal_options[] = {
    {"config", required_argument, NULL, OPT_CONFIG},
    {"archive", required_argument, NULL, OPT_ARCHIVE},
    {"zstd-level", required_argument, NULL, OPT_LEVEL},
    {0},
};

#define WAL_ABOUT_COMMON                                                                           \
	"  --config FILE      \"key = value\" lines: repo, key or key-file (a key from\n"          \
	"                     'key-add': no passphrase needed, fast), or passphrase or\n"          \
	"                     passphrase-file; archive, zstd-level, threads; mode 0600,\n"         \
	"                     owned by the user running dp-worker. Its values win over\n"          \
	"                     --repo and the env.\n"                                               \
	"  --archive NAME     the archive (one per database); default \"" WAL_DEFAULT_ARCHIVE      \
	"\"\n"

/* An open repository plus the settings of one command. */
typedef struct wal_env {
	dp_cli cli;
	wal_conf conf;
	dp_repo *repo;
	const char *archive;
	int level;
} wal_env;

static int env_open(wal_env *e, const dp_cli_cmd *cmd, wal_opts *o, int argc, char **argv)
{
	char *pass = NULL;
	int rc = dp_cli_parse(&e->cli, cmd, argc, argv);
	if (rc)
		return rc;
	if (o->config && (rc = conf_load(&e->conf, o->config)))
		return rc;
	const char *url = e->conf.repo ? e->conf.repo : e->cli.repo;
	if (!url)
		return dp_error_set(DP_EUSAGE, "no repository: give --repo R, DP_REPO, or \"repo = "
		                               "R\" in the --config file");
	e->archive = o->archive        ? o->archive
	             : e->conf.archive ? e->conf.archive
	                               : WAL_DEFAULT_ARCHIVE;
	if ((rc = check_component("archive name", e->archive)))
		return rc;
	e->level = o->level > 0        ? (int)o->level
	           : e->conf.level > 0 ? (int)e->conf.level
	                               : WAL_DEFAULT_LEVEL;
	if (e->conf.key || e->conf.key_file) {
		/* A slot key: no scrypt, no passphrase (repos/keyslot.c). */
		dp_buf kt = {0};
		const char *tok = e->conf.key;
		if (!tok) {
			if ((rc = read_private(&kt, e->conf.key_file, "key file")))
				return rc;
			tok = trim((char *)kt.data);
		}
		rc = dp_repo_open_key(&e->repo, url, &e->cli.bopts, tok);
		dp_buf_wipe(&kt);
	} else {
		if (e->conf.passphrase) {
			if (!(pass = strdup(e->conf.passphrase)))
				return dp_error_set(DP_ERROR, "out of memory");
		} else {
			if (e->conf.passphrase_file)
				e->cli.passphrase_file = e->conf.passphrase_file;
			if ((rc = dp_cli_passphrase(&pass, &e->cli)))
				return rc;
		}
		rc = dp_repo_open(&e->repo, url, &e->cli.bopts, pass);
		dp_cli_passphrase_free(pass);
	}
	if (rc)
		return rc;
	int threads = e->conf.threads >= 0 ? (int)e->conf.threads : e->cli.threads;
	dp_repo_set_threads(e->repo, threads);
	return 0;
}

static void env_close(wal_env *e)
{
	dp_repo_free(e->repo);
	conf_free(&e->conf);
}

static int wal_key(char *out, size_t cap, const char *archive, const char *name)
{
	int n = snprintf(out, cap, "wal/%s/%s", archive, name);
	return (n < 0 || (size_t)n >= cap) ? dp_error_set(DP_EUSAGE, "name too long") : 0;
}

static int read_file(dp_buf *out, const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return dp_error_errno(errno == ENOENT ? DP_ENOTFOUND : DP_ERROR, errno,
		                      "cannot open \"%s\"", path);
	int rc = 0;
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		rc = dp_error_set(DP_EUSAGE, "\"%s\" is not a regular file", path);
		goto out;
	}
	if ((uint64_t)st.st_size > WAL_MAX_FILE) {
		rc = dp_error_set(DP_EUSAGE, "\"%s\" is larger than 1 GiB", path);
		goto out;
	}
	if ((rc = dp_buf_reserve(out, (size_t)st.st_size + 1)))
		goto out;
	for (;;) {
		if (out->len == out->cap - 1 && (rc = dp_buf_reserve(out, 65536)))
			goto out;
		ssize_t n = read(fd, out->data + out->len, out->cap - 1 - out->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = dp_error_errno(DP_ERROR, errno, "cannot read \"%s\"", path);
			goto out;
		}
		if (n == 0)
			break;
		out->len += (size_t)n;
	}
out:
	close(fd);
	return rc;
}

/* Writes data to path through a temp file and a rename, so a reader never
 * sees part of it. */
static int write_file(const char *path, const void *data, size_t len, bool durable)
{
	char tmp[4096];
	int n = snprintf(tmp, sizeof(tmp), "%s.dp-tmp-%ld", path, (long)getpid());
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return dp_error_set(DP_EUSAGE, "path \"%s\" is too long", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return dp_error_errno(DP_ERROR, errno, "cannot create \"%s\"", tmp);
	int rc = 0;
	const uint8_t *p = data;
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			rc = dp_error_errno(errno == ENOSPC ? DP_ENOSPACE : DP_ERROR, errno,
			                    "cannot write \"%s\"", tmp);
			break;
		}
		p += w;
		len -= (size_t)w;
	}
	if (!rc && durable && fsync(fd) != 0)
		rc = dp_error_errno(DP_ERROR, errno, "cannot fsync \"%s\"", tmp);
	if (close(fd) != 0 && !rc)
		rc = dp_error_errno(DP_ERROR, errno, "cannot close \"%s\"", tmp);
	if (!rc && rename(tmp, path) != 0)
		rc = dp_error_errno(DP_ERROR, errno, "cannot rename \"%s\" to \"%s\"", tmp, path);
	if (rc)
		unlink(tmp);
	return rc;
}

/* Parses a stored object's header; payload points into obj. */
static int parse_obj(const dp_buf *obj, const char *key, int *codec, uint64_t *size,
                     const uint8_t **hash, const uint8_t **payload, size_t *plen)
{
	if (obj->len < WAL_HDR_LEN || memcmp(obj->data, WAL_MAGIC, 4) != 0 || obj->data[4] > 1)
		return dp_error_set(DP_ECORRUPT, "archived file \"%s\" has an unknown format", key);
	*codec = obj->data[4];
	*size = dp_get_u64(obj->data + 8);
	*hash = obj->data + 16;
	*payload = obj->data + WAL_HDR_LEN;
	*plen = obj->len - WAL_HDR_LEN;
	return 0;
}

/* Decodes a stored object into raw bytes and checks size and hash. */
static int decode_obj(const dp_buf *obj, const char *key, dp_buf *raw)
{
	int codec;
	uint64_t size;
	const uint8_t *hash, *payload;
	size_t plen;
	uint8_t h[DP_HASH_LEN];
	int rc = parse_obj(obj, key, &codec, &size, &hash, &payload, &plen);
	if (rc)
		return rc;
	if (size > WAL_MAX_FILE)
		return dp_error_set(DP_ECORRUPT, "archived file \"%s\" has a bad size", key);
	if ((rc = dp_buf_reserve(raw, (size_t)size + 1)))
		return rc;
	if (codec == 0) {
		if (plen != size)
			return dp_error_set(DP_ECORRUPT, "archived file \"%s\" has a bad size",
			                    key);
		memcpy(raw->data, payload, plen);
	} else {
		size_t got = ZSTD_decompress(raw->data, (size_t)size, payload, plen);
		if (ZSTD_isError(got) || got != size)
			return dp_error_set(DP_ECORRUPT, "archived file \"%s\" does not decompress",
			                    key);
	}
	raw->len = (size_t)size;
	if ((rc = dp_sha256(h, raw->data, raw->len)))
		return rc;
	if (memcmp(h, hash, DP_HASH_LEN) != 0)
		return dp_error_set(DP_ECORRUPT, "archived file \"%s\" does not match its hash",
		                    key);
	return 0;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- wal-push ---- */

/* A file to push, mapped read-only. A database does not change a segment it
 * has handed to archive_command (PostgreSQL renames segments for reuse only
 * after they are archived), and the size and change time are checked again
 * once it has been read. Mapping instead of read() saves copying 16 MiB
 * into fresh pages: ~8 ms of a segment's ~25. */
typedef struct src_file {
	const uint8_t *p;
	size_t len;
	int fd;
	struct stat st;
} src_file;

static int src_open(src_file *f, const char *path)
{
	f->p = NULL;
	f->len = 0;
	f->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (f->fd < 0)
		return dp_error_errno(errno == ENOENT ? DP_ENOTFOUND : DP_ERROR, errno,
		                      "cannot open \"%s\"", path);
	if (fstat(f->fd, &f->st) != 0 || !S_ISREG(f->st.st_mode))
		return dp_error_set(DP_EUSAGE, "\"%s\" is not a regular file", path);
	if ((uint64_t)f->st.st_size > WAL_MAX_FILE)
		return dp_error_set(DP_EUSAGE, "\"%s\" is larger than 1 GiB", path);
	f->len = (size_t)f->st.st_size;
	if (f->len == 0)
		return 0;
	void *m = mmap(NULL, f->len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, f->fd, 0);
	if (m == MAP_FAILED)
		return dp_error_errno(DP_ERROR, errno, "cannot read \"%s\"", path);
	f->p = m;
	return 0;
}

/* The file must be as it was when mapped: a file that changed while it was
 * read is not archived (the caller retries). */
static int src_check(const src_file *f, const char *path)
{
	struct stat st;
	if (fstat(f->fd, &st) != 0)
		return dp_error_errno(DP_ERROR, errno, "cannot stat \"%s\"", path);
	if (st.st_size != f->st.st_size || st.st_mtim.tv_sec != f->st.st_mtim.tv_sec ||
	    st.st_mtim.tv_nsec != f->st.st_mtim.tv_nsec)
		return dp_error_set(DP_ERROR,
		                    "\"%s\" changed while it was read; nothing was stored", path);
	return 0;
}

static void src_close(src_file *f)
{
	if (f->p)
		munmap((void *)f->p, f->len);
	if (f->fd >= 0)
		close(f->fd);
}

/* SHA-256 of the raw bytes on a second thread while zstd runs on this one:
 * on 2 cores the hash (~9 ms for 16 MiB with SHA-NI) then costs no wall
 * time. */
typedef struct hash_job {
	const uint8_t *p;
	size_t len;
	uint8_t h[DP_HASH_LEN];
	int rc;
} hash_job;

static void *hash_run(void *arg)
{
	hash_job *j = arg;
	j->rc = dp_sha256(j->h, j->p, j->len);
	return NULL;
}

/* One part of the input compressed as its own zstd frame into out (room
 * for cap bytes). */
typedef struct z_job {
	const uint8_t *in;
	size_t len;
	uint8_t *out;
	size_t cap;
	int level;
	size_t got; /* compressed bytes, or a zstd error code */
} z_job;

static void *z_run(void *arg)
{
	z_job *j = arg;
	ZSTD_CCtx *z = ZSTD_createCCtx();
	if (!z) {
		j->got = (size_t)-1; /* ZSTD_isError says yes */
		return NULL;
	}
	ZSTD_CCtx_setParameter(z, ZSTD_c_compressionLevel, j->level);
	ZSTD_CCtx_setParameter(z, ZSTD_c_checksumFlag, 0);
	j->got = ZSTD_compress2(z, j->out, j->cap, j->in, j->len);
	ZSTD_freeCCtx(z);
	return NULL;
}

#define Z_PARTS_MAX 4
#define Z_PART_MIN (2u << 20)

/* Compresses raw into obj after the header, falling back to the raw bytes
 * when zstd does not make them smaller. With parts > 1 the input is cut
 * into that many pieces compressed at once on their own threads, each its
 * own zstd frame: the payload is then a sequence of frames, which
 * ZSTD_decompress reads as one (every wal-fetch, old or new, decodes it).
 * Poorly compressible WAL (bulk loads) goes at ~400 MB/s per core at level
 * 1, so on 2 cores this halves the largest part of a segment's cost. Our
 * own threads rather than zstd's nbWorkers: zstd's copies the input into its
 * own buffers and measured slower here. */
static int wal_compress(dp_buf *obj, const uint8_t *raw, size_t len, int level, int parts)
{
	z_job jobs[Z_PARTS_MAX];
	pthread_t th[Z_PARTS_MAX];
	bool started[Z_PARTS_MAX] = {false};
	if (len == 0)
		return 0; /* codec 0, no payload */
	if (parts > Z_PARTS_MAX)
		parts = Z_PARTS_MAX;
	while (parts > 1 && len / (size_t)parts < Z_PART_MIN)
		parts--;
	if (parts < 1)
		parts = 1;
	size_t total_cap = 0, step = len / (size_t)parts;
	for (int i = 0; i < parts; i++) {
		jobs[i].in = raw + (size_t)i * step;
		jobs[i].len = i == parts - 1 ? len - (size_t)i * step : step;
		jobs[i].cap = ZSTD_compressBound(jobs[i].len);
		jobs[i].level = level;
		total_cap += jobs[i].cap;
	}
	int rc = dp_buf_reserve(obj, total_cap > len ? total_cap : len);
	if (rc)
		return rc;
	size_t off = obj->len;
	for (int i = 0; i < parts; i++) {
		jobs[i].out = obj->data + off;
		off += jobs[i].cap;
	}
	for (int i = 1; i < parts; i++)
		started[i] = pthread_create(&th[i], NULL, z_run, &jobs[i]) == 0;
	z_run(&jobs[0]);
	for (int i = 1; i < parts; i++) {
		if (started[i])
			pthread_join(th[i], NULL);
		else
			z_run(&jobs[i]);
	}
	size_t zn = 0;
	for (int i = 0; i < parts; i++) {
		if (ZSTD_isError(jobs[i].got))
			return dp_error_set(DP_ERROR, "zstd: %s", ZSTD_getErrorName(jobs[i].got));
		zn += jobs[i].got;
	}
	if (zn < len) {
		/* Close the gaps between the frames (each had its bound's room). */
		uint8_t *w = obj->data + obj->len;
		for (int i = 0; i < parts; i++) {
			memmove(w, jobs[i].out, jobs[i].got);
			w += jobs[i].got;
		}
		obj->data[4] = 1;
		obj->len += zn;
	} else {
		memcpy(obj->data + obj->len, raw, len);
		obj->len += len;
	}
	return 0;
}

int dp_worker_wal_push(int argc, char **argv)
{
	wal_opts o = {.level = -1};
	wal_env e = {0};
	dp_buf obj = {0}, old = {0};
	src_file src = {.fd = -1};
	hash_job hj = {0};
	pthread_t ht;
	bool hashing = false;
	char key[512];
	const dp_cli_cmd cmd = {
	    .prog = "dp-worker wal-push",
	    .synopsis = "[OPTIONS] FILE [NAME]",
	    .about = "Stores FILE (a log segment or history file) compressed and encrypted\n"
	             "under NAME (default: its base name) in an archive, and exits 0 only\n"
	             "once it is durable. Pushing a NAME that is stored with the same bytes\n"
	             "succeeds; with different bytes it fails and changes nothing.\n"
	             "Made to be a database's archive_command.\n\n" WAL_ABOUT_COMMON
	             "  --zstd-level N     compression level (default 1)\n",
	    .examples =
	        "dp-worker wal-push --config /etc/dp/archive.conf pg_wal/000000010000000000000003\n"
	        "archive_command = '/usr/bin/dp-worker wal-push --config /etc/dp/archive.conf %p'",
	    .flags = DP_CLI_REPO_FLAGS,
	    .opts = wal_options,
	    .on_opt = on_opt,
	    .ctx = &o,
	    .min_args = 1,
	    .max_args = 2,
	};
	/* A small `ulimit -f` must end in an error, not a signal. */
	signal(SIGXFSZ, SIG_IGN);
	double t0 = now_s();
	int rc = env_open(&e, &cmd, &o, argc, argv);
	if (rc)
		goto out;
	const char *path = e.cli.args[0];
	const char *name = e.cli.nargs > 1 ? e.cli.args[1] : strrchr(path, '/');
	name = name ? (name[0] == '/' ? name + 1 : name) : path;
	if ((rc = check_component("file name", name)) ||
	    (rc = wal_key(key, sizeof(key), e.archive, name)))
		goto out;
	if ((rc = src_open(&src, path)))
		goto out;
	hj.p = src.p;
	hj.len = src.len;
	if (pthread_create(&ht, NULL, hash_run, &hj) == 0)
		hashing = true;
	else
		hash_run(&hj);

	uint64_t stored_size = 0;
	rc = dp_repo_backend(e.repo)->stat(dp_repo_backend(e.repo), key, &stored_size);
	if (rc == 0) {
		int codec;
		uint64_t size;
		const uint8_t *h, *payload;
		size_t plen;
		if ((rc = dp_repo_get_file(e.repo, key, &old)) ||
		    (rc = parse_obj(&old, key, &codec, &size, &h, &payload, &plen)))
			goto out;
		if (hashing) {
			pthread_join(ht, NULL);
			hashing = false;
		}
		if ((rc = hj.rc))
			goto out;
		if (size == src.len && memcmp(h, hj.h, DP_HASH_LEN) == 0) {
			dp_info("\"%s\" is already archived in \"%s\" with the same content", name,
			        e.archive);
			goto out;
		}
		rc = dp_error_set(
		    DP_EEXIST,
		    "\"%s\" is already archived in \"%s\" with different content "
		    "(%llu bytes stored, %zu given); refusing to replace it: is another "
		    "server archiving into the same archive?",
		    name, e.archive, (unsigned long long)size, src.len);
		goto out;
	} else if (rc != DP_ENOTFOUND) {
		goto out;
	}
	dp_error_clear();

	if ((rc = dp_buf_reserve(&obj, WAL_HDR_LEN)))
		goto out;
	memcpy(obj.data, WAL_MAGIC, 4);
	memset(obj.data + 4, 0, 4);
	dp_set_u64(obj.data + 8, src.len);
	obj.len = WAL_HDR_LEN;
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	int workers = e.conf.threads > 0  ? (int)e.conf.threads
	              : e.cli.threads > 0 ? e.cli.threads
	                                  : (cores > 0 ? (int)cores : 1);
	if ((rc = wal_compress(&obj, src.p, src.len, e.level, workers)))
		goto out;
	if (hashing) {
		pthread_join(ht, NULL);
		hashing = false;
	}
	if ((rc = hj.rc) || (rc = src_check(&src, path)))
		goto out;
	memcpy(obj.data + 16, hj.h, DP_HASH_LEN);
	if ((rc = dp_repo_put_file(e.repo, key, obj.data, obj.len)))
		goto out;
	dp_debug("archived \"%s\" in \"%s\": %zu -> %zu bytes in %.3f s", name, e.archive, src.len,
	         obj.len, now_s() - t0);
out:
	if (hashing)
		pthread_join(ht, NULL);
	src_close(&src);
	dp_buf_free(&obj);
	dp_buf_free(&old);
	env_close(&e);
	return rc == DP_CLI_HELP ? 0 : rc;
}

/* ---- wal-fetch ---- */

int dp_worker_wal_fetch(int argc, char **argv)
{
	wal_opts o = {.level = -1};
	wal_env e = {0};
	dp_buf obj = {0}, raw = {0};
	char key[512];
	const dp_cli_cmd cmd = {
	    .prog = "dp-worker wal-fetch",
	    .synopsis = "[OPTIONS] NAME DEST",
	    .about = "Writes the archived file NAME to DEST (through a temp file and a\n"
	             "rename). Exits 5 when NAME is not archived, so a database's\n"
	             "restore_command ends recovery there.\n\n" WAL_ABOUT_COMMON,
	    .examples = "restore_command = '/usr/bin/dp-worker wal-fetch --config "
	                "/etc/dp/archive.conf %f %p'",
	    .flags = DP_CLI_REPO_FLAGS,
	    .opts = wal_options,
	    .on_opt = on_opt,
	    .ctx = &o,
	    .min_args = 2,
	    .max_args = 2,
	};
	int rc = env_open(&e, &cmd, &o, argc, argv);
	if (rc)
		goto out;
	const char *name = e.cli.args[0], *dest = e.cli.args[1];
	if ((rc = check_component("file name", name)) ||
	    (rc = wal_key(key, sizeof(key), e.archive, name)))
		goto out;
	rc = dp_repo_get_file(e.repo, key, &obj);
	if (rc == DP_ENOTFOUND) {
		rc = dp_error_set(DP_ENOTFOUND, "\"%s\" is not in archive \"%s\"", name, e.archive);
		goto out;
	}
	if (rc || (rc = decode_obj(&obj, key, &raw)))
		goto out;
	rc = write_file(dest, raw.data, raw.len, false);
out:
	dp_buf_free(&obj);
	dp_buf_free(&raw);
	env_close(&e);
	return rc == DP_CLI_HELP ? 0 : rc;
}

/* ---- wal-ls ---- */

typedef struct ls_item {
	char *name;
	uint64_t size;
} ls_item;

typedef struct ls_acc {
	ls_item *v;
	size_t n, cap;
	size_t prefix_len;
} ls_acc;

static int ls_cb(const char *key, uint64_t size, void *arg)
{
	ls_acc *a = arg;
	const char *name = key + a->prefix_len;
	if (strchr(name, '/'))
		return 0;
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 256;
		ls_item *v = realloc(a->v, cap * sizeof(*v));
		if (!v)
			return dp_error_set(DP_ERROR, "out of memory");
		a->v = v;
		a->cap = cap;
	}
	if (!(a->v[a->n].name = strdup(name)))
		return dp_error_set(DP_ERROR, "out of memory");
	a->v[a->n++].size = size;
	return 0;
}

static int ls_cmp(const void *x, const void *y)
{
	return strcmp(((const ls_item *)x)->name, ((const ls_item *)y)->name);
}

int dp_worker_wal_ls(int argc, char **argv)
{
	wal_opts o = {.level = -1};
	wal_env e = {0};
	ls_acc acc = {0};
	char prefix[300];
	const dp_cli_cmd cmd = {
	    .prog = "dp-worker wal-ls",
	    .synopsis = "[OPTIONS]",
	    .about = "Lists the names stored in an archive, sorted, one a line (with\n"
	             "--json: [{\"name\":..., \"stored\": bytes}]).\n\n" WAL_ABOUT_COMMON,
	    .examples = "dp-worker wal-ls --repo /srv/backups --archive pg-main",
	    .flags = DP_CLI_REPO_FLAGS | DP_CLI_JSON,
	    .opts = wal_options,
	    .on_opt = on_opt,
	    .ctx = &o,
	    .min_args = 0,
	    .max_args = 0,
	};
	int rc = env_open(&e, &cmd, &o, argc, argv);
	if (rc)
		goto out;
	snprintf(prefix, sizeof(prefix), "wal/%s/", e.archive);
	acc.prefix_len = strlen(prefix);
	dp_backend *b = dp_repo_backend(e.repo);
	if ((rc = b->list(b, prefix, ls_cb, &acc)))
		goto out;
	if (acc.n)
		qsort(acc.v, acc.n, sizeof(*acc.v), ls_cmp);
	if (e.cli.json)
		fputc('[', stdout);
	for (size_t i = 0; i < acc.n; i++) {
		if (e.cli.json)
			printf("%s{\"name\":\"%s\",\"stored\":%llu}", i ? "," : "", acc.v[i].name,
			       (unsigned long long)acc.v[i].size);
		else
			printf("%s\n", acc.v[i].name);
	}
	if (e.cli.json)
		fputs("]\n", stdout);
	if (fflush(stdout) != 0)
		rc = dp_error_errno(DP_ERROR, errno, "cannot write the listing");
out:
	for (size_t i = 0; i < acc.n; i++)
		free(acc.v[i].name);
	free(acc.v);
	env_close(&e);
	return rc == DP_CLI_HELP ? 0 : rc;
}

/* ---- put-file / get-file: small method metadata under "meta/" ---- */

static int meta_key(char *out, size_t cap, const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > 400 || name[0] == '/' || strstr(name, "..") || strstr(name, "//"))
		return dp_error_set(DP_EUSAGE, "bad metadata name \"%s\"", name);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)name[i] < 0x20)
			return dp_error_set(DP_EUSAGE, "bad metadata name \"%s\"", name);
	snprintf(out, cap, "meta/%s", name);
	return 0;
}

static int read_all_fd(dp_buf *out, int fd)
{
	for (;;) {
		int rc = dp_buf_reserve(out, 65536);
		if (rc)
			return rc;
		ssize_t n = read(fd, out->data + out->len, out->cap - out->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return dp_error_errno(DP_ERROR, errno, "cannot read the input");
		if (n == 0)
			return 0;
		out->len += (size_t)n;
		if (out->len > (64u << 20))
			return dp_error_set(DP_EUSAGE, "metadata is limited to 64 MiB");
	}
}

int dp_worker_put_file(int argc, char **argv)
{
	wal_opts o = {.level = -1};
	wal_env e = {0};
	dp_buf data = {0};
	char key[512];
	const dp_cli_cmd cmd = {
	    .prog = "dp-worker put-file",
	    .synopsis = "[OPTIONS] NAME [FILE|-]",
	    .about = "Stores a small file (method metadata, at most 64 MiB) encrypted as\n"
	             "\"meta/NAME\", replacing any previous one atomically.\n\n" WAL_ABOUT_COMMON,
	    .examples = "echo '{\"end\":\"2026-11-25T15:00:00Z\"}' | dp-worker put-file "
	                "archives/pg-main.json -",
	    .flags = DP_CLI_REPO_FLAGS,
	    .opts = wal_options,
	    .on_opt = on_opt,
	    .ctx = &o,
	    .min_args = 1,
	    .max_args = 2,
	};
	int rc = env_open(&e, &cmd, &o, argc, argv);
	if (rc)
		goto out;
	if ((rc = meta_key(key, sizeof(key), e.cli.args[0])))
		goto out;
	const char *src = e.cli.nargs > 1 ? e.cli.args[1] : "-";
	if (strcmp(src, "-") == 0)
		rc = read_all_fd(&data, STDIN_FILENO);
	else
		rc = read_file(&data, src);
	if (rc)
		goto out;
	rc = dp_repo_put_file(e.repo, key, data.data, data.len);
out:
	dp_buf_free(&data);
	env_close(&e);
	return rc == DP_CLI_HELP ? 0 : rc;
}

int dp_worker_get_file(int argc, char **argv)
{
	wal_opts o = {.level = -1};
	wal_env e = {0};
	dp_buf data = {0};
	char key[512];
	const dp_cli_cmd cmd = {
	    .prog = "dp-worker get-file",
	    .synopsis = "[OPTIONS] NAME [FILE|-]",
	    .about = "Writes the metadata file \"meta/NAME\" to FILE or stdout; exit 5 if\n"
	             "there is none.\n\n" WAL_ABOUT_COMMON,
	    .examples = "dp-worker get-file archives/pg-main.json -",
	    .flags = DP_CLI_REPO_FLAGS,
	    .opts = wal_options,
	    .on_opt = on_opt,
	    .ctx = &o,
	    .min_args = 1,
	    .max_args = 2,
	};
	int rc = env_open(&e, &cmd, &o, argc, argv);
	if (rc)
		goto out;
	if ((rc = meta_key(key, sizeof(key), e.cli.args[0])))
		goto out;
	rc = dp_repo_get_file(e.repo, key, &data);
	if (rc == DP_ENOTFOUND)
		rc = dp_error_set(DP_ENOTFOUND, "no metadata file \"%s\" in the repository",
		                  e.cli.args[0]);
	if (rc)
		goto out;
	const char *dst = e.cli.nargs > 1 ? e.cli.args[1] : "-";
	if (strcmp(dst, "-") == 0) {
		if (fwrite(data.data, 1, data.len, stdout) != data.len || fflush(stdout) != 0)
			rc = dp_error_errno(DP_ERROR, errno, "cannot write to stdout");
	} else {
		rc = write_file(dst, data.data, data.len, false);
	}
out:
	dp_buf_free(&data);
	env_close(&e);
	return rc == DP_CLI_HELP ? 0 : rc;
}

/* ---- stream-push: a stream whose metadata is known only at its end ---- */

/* A producer such as a database's base-backup tool learns the facts worth
 * recording (end position, end time) only after it has written the last
 * byte. stream-push reads standard input to the end, then reads the JSON
 * object in --meta-file and attaches it; a missing or invalid file means the
 * producer did not finish, and the push is abandoned (no snapshot), so a
 * truncated stream is never recorded as a backup. */

enum { OPT_META_FILE = 1, OPT_SP_LEVEL, OPT_SP_CHUNK_AVG };

typedef struct sp_opts {
	const char *meta_file;
	long level; /* 0: the repository's */
	uint64_t chunk_avg; /* 0: the repository's */
} sp_opts;

static int sp_on_opt(int val, const char *arg, void *ctx)
{
	sp_opts *o = ctx;
	if (val == OPT_META_FILE) {
		o->meta_file = arg;
		return 0;
	}
	if (val == OPT_SP_LEVEL)
		return dp_cli_parse_int(&o->level, "--zstd-level", arg, 1, 19);
	if (val == OPT_SP_CHUNK_AVG)
		return dp_cli_parse_size(&o->chunk_avg, "--chunk-avg", arg, 1024, 64u << 20);
	return dp_error_set(DP_EUSAGE, "unexpected option");
}

static const struct option sp_options[] = {
    {"meta-file", required_argument, NULL, OPT_META_FILE},
    {"zstd-level", required_argument, NULL, OPT_SP_LEVEL},
    {"chunk-avg", required_argument, NULL, OPT_SP_CHUNK_AVG},
    {0},
};

int dp_worker_stream_push(int argc, char **argv)
{
	sp_opts o = {0};
	dp_cli c = {0};
	dp_repo *repo = NULL;
	dp_push *push = NULL;
	dp_buf meta = {0};
	const dp_cli_cmd cmd = {
	    .prog = "dp-worker stream-push",
	    .synopsis = "[OPTIONS] NAME",
	    .about = "Stores standard input as a snapshot called NAME, like 'push NAME -',\n"
	             "but reads its metadata at the end of the stream:\n"
	             "  --meta-file F      after end of input, F must hold a JSON object (the\n"
	             "                     producer writes it once it has finished); it is\n"
	             "                     attached to the snapshot. If F is missing or not a\n"
	             "                     JSON object the push is abandoned: no snapshot.\n"
	             "  --zstd-level N     compress new blobs at level N (default: the\n"
	             "                     repository\'s)\n"
	             "  --chunk-avg N      cut chunks of N bytes on average (as push)\n"
	             "  --json             print the result as JSON (as push --json)\n",
	    .examples = "( tool-that-streams && echo '{\"end\":\"0/3000100\"}' > m.json ) |\n"
	                "  dp-worker stream-push --meta-file m.json db1-full-1",
	    .flags = DP_CLI_REPO_FLAGS | DP_CLI_JSON,
	    .opts = sp_options,
	    .on_opt = sp_on_opt,
	    .ctx = &o,
	    .min_args = 1,
	    .max_args = 1,
	};
	int rc = dp_cli_parse(&c, &cmd, argc, argv);
	if (rc)
		goto out;
	const char *name = c.args[0];
	if ((rc = dp_cli_check_name(name)))
		goto out;
	if (isatty(STDIN_FILENO)) {
		rc = dp_error_set(DP_EUSAGE, "standard input is a terminal: pipe the data in");
		goto out;
	}
	/* A bigger pipe buffer means fewer, larger reads (and wake-ups) when a
	 * producer streams hundreds of MB/s into us; best effort. */
	(void)fcntl(STDIN_FILENO, F_SETPIPE_SZ, 1 << 20);
	if ((rc = dp_worker_open_repo(&repo, &c)))
		goto out;
	if (o.level > 0)
		dp_repo_set_zstd_level(repo, (int)o.level);
	if (o.chunk_avg && (rc = dp_repo_set_chunk_avg(repo, (uint32_t)o.chunk_avg)))
		goto out;
	if ((rc = dp_push_begin(&push, repo, name, "stream")))
		goto out;
	if ((rc = dp_worker_push_fd(push, STDIN_FILENO, "standard input")))
		goto out;
	if (o.meta_file) {
		rc = read_file(&meta, o.meta_file);
		if (rc == DP_ENOTFOUND || (!rc && meta.len == 0)) {
			rc = dp_error_set(
			    DP_ERROR,
			    "no metadata in \"%s\" at the end of the stream: the producer "
			    "did not finish; nothing was stored as \"%s\"",
			    o.meta_file, name);
			goto out;
		}
		if (rc)
			goto out;
		meta.data[meta.len] = 0;
		cJSON *j = cJSON_Parse((const char *)meta.data);
		bool ok = j && cJSON_IsObject(j);
		cJSON_Delete(j);
		if (!ok) {
			rc = dp_error_set(
			    DP_ERROR,
			    "metadata in \"%s\" is not a JSON object; nothing was stored "
			    "as \"%s\"",
			    o.meta_file, name);
			goto out;
		}
		if ((rc = dp_push_set_meta(push, (const char *)meta.data)))
			goto out;
	}
	dp_push_result res;
	memset(&res, 0, sizeof(res));
	rc = dp_push_commit(push, &res);
	push = NULL;
	if (rc)
		goto out;
	if (c.json) {
		cJSON *j = cJSON_CreateObject();
		char *txt = NULL;
		if (j) {
			cJSON_AddStringToObject(j, "id", res.id);
			cJSON_AddStringToObject(j, "name", name);
			cJSON_AddStringToObject(j, "kind", "stream");
			cJSON_AddNumberToObject(j, "size", (double)res.size);
			cJSON_AddNumberToObject(j, "stored", (double)res.stored);
			cJSON_AddNumberToObject(j, "blobs", (double)res.blobs);
			cJSON_AddNumberToObject(j, "blobs_new", (double)res.blobs_new);
			cJSON_AddNumberToObject(j, "seconds", res.seconds);
			txt = cJSON_PrintUnformatted(j);
		}
		printf("%s\n", txt ? txt : "{}");
		free(txt);
		cJSON_Delete(j);
	} else
		printf("%s\n", res.id);
	if (fflush(stdout) != 0)
		rc = dp_error_errno(DP_ERROR, errno, "cannot write the result");
out:
	if (push)
		dp_push_abort(push);
	dp_repo_free(repo);
	dp_buf_free(&meta);
	return rc == DP_CLI_HELP ? 0 : rc;
}

/* ---- wal-rm ---- */

int dp_worker_wal_rm(int argc, char **argv)
{
	wal_opts o = {.level = -1};
	wal_env e = {0};
	char key[512];
	const dp_cli_cmd cmd = {
	    .prog = "dp-worker wal-rm",
	    .synopsis = "[OPTIONS] NAME...",
	    .about = "Removes the named files from an archive (a method's retention decides\n"
	             "which: e.g. segments older than the oldest base backup kept). Names\n"
	             "that are not archived are skipped.\n\n" WAL_ABOUT_COMMON,
	    .examples = "dp-worker wal-rm --repo /srv/backups --archive pg-main "
	                "000000010000000000000001 000000010000000000000002",
	    .flags = DP_CLI_REPO_FLAGS,
	    .opts = wal_options,
	    .on_opt = on_opt,
	    .ctx = &o,
	    .min_args = 1,
	    .max_args = -1,
	};
	int rc = env_open(&e, &cmd, &o, argc, argv);
	if (rc)
		goto out;
	for (int i = 0; i < e.cli.nargs; i++)
		if ((rc = check_component("file name", e.cli.args[i])))
			goto out;
	for (int i = 0; i < e.cli.nargs; i++) {
		if ((rc = wal_key(key, sizeof(key), e.archive, e.cli.args[i])) ||
		    (rc = dp_repo_remove_file(e.repo, key)))
			goto out;
	}
out:
	env_close(&e);
	return rc == DP_CLI_HELP ? 0 : rc;
}
