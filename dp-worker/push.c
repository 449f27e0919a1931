/*
 * dp-worker push: a file, a directory tree (as a pax tar stream, tar.c) or
 * stdin into a new snapshot.
 *
 * Everything the user gave is checked before the repository is opened (the
 * name, the input can be opened, --meta parses), so bad input changes
 * nothing. The snapshot is written by dp_push_commit, last; any failure
 * before that aborts the push and leaves no snapshot (only unreferenced
 * data, which prune removes). Single-threaded here; the repository runs
 * its own pipeline threads behind dp_push_write.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dp/error.h"
#include "tar.h"
#include "worker.h"

#define READ_LEN (1024 * 1024)

enum {
	OPT_META = 1,
	OPT_EXCLUDE,
	OPT_LEVEL,
	OPT_EXCLUDE_FROM,
	OPT_TRAILER,
	OPT_CHUNK_AVG,
	OPT_BLOCK_SIZE
};

struct push_opts {
	const char *meta;
	char **exclude; /* owned array; the patterns are owned too */
	size_t nexclude, capexclude;
	long level; /* 0: the repository's */
	uint64_t chunk_avg; /* 0: the repository's */
	uint64_t block; /* 0: files are chunked like the rest */
	bool trailer;
};

static int add_exclude(struct push_opts *o, const char *pat, size_t len)
{
	if (o->nexclude == o->capexclude) {
		size_t cap = o->capexclude ? o->capexclude * 2 : 16;
		char **v = realloc(o->exclude, cap * sizeof(*v));
		if (!v)
			return dp_error_set(DP_ERROR, "out of memory");
		o->exclude = v;
		o->capexclude = cap;
	}
	char *c = strndup(pat, len);
	if (!c)
		return dp_error_set(DP_ERROR, "out of memory");
	o->exclude[o->nexclude++] = c;
	return 0;
}

/* --exclude-from FILE: one pattern per line; blank lines and lines
 * starting with '#' are skipped. */
static int read_excludes(struct push_opts *o, const char *file)
{
	FILE *f = fopen(file, "re");
	if (!f)
		return dp_error_errno(DP_EUSAGE, errno, "cannot read --exclude-from \"%s\"", file);
	int rc = 0;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	while ((n = getline(&line, &cap, f)) >= 0) {
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			n--;
		if (n == 0 || line[0] == '#')
			continue;
		if ((rc = add_exclude(o, line, (size_t)n)) != 0)
			break;
	}
	if (!rc && ferror(f))
		rc = dp_error_errno(DP_ERROR, errno, "cannot read --exclude-from \"%s\"", file);
	free(line);
	fclose(f);
	return rc;
}

static void free_opts(struct push_opts *o)
{
	for (size_t i = 0; i < o->nexclude; i++)
		free(o->exclude[i]);
	free(o->exclude);
}

static int on_opt(int val, const char *arg, void *ctx)
{
	struct push_opts *o = ctx;
	if (val == OPT_META)
		o->meta = arg;
	if (val == OPT_LEVEL)
		return dp_cli_parse_int(&o->level, "--zstd-level", arg, DP_ZSTD_LEVEL_MIN,
		                        DP_ZSTD_LEVEL_MAX);
	if (val == OPT_EXCLUDE) {
		if (!arg[0])
			return dp_error_set(DP_EUSAGE, "--exclude needs a pattern, e.g. '*.tmp'");
		return add_exclude(o, arg, strlen(arg));
	}
	if (val == OPT_EXCLUDE_FROM)
		return read_excludes(o, arg);
	if (val == OPT_TRAILER)
		o->trailer = true;
	if (val == OPT_CHUNK_AVG)
		return dp_cli_parse_size(&o->chunk_avg, "--chunk-avg", arg, 1024, 64u << 20);
	if (val == OPT_BLOCK_SIZE)
		return dp_cli_parse_size(&o->block, "--block-size", arg, 512, 64u << 20);
	return 0;
}

static const struct option push_options[] = {
    {"meta", required_argument, NULL, OPT_META},
    {"exclude", required_argument, NULL, OPT_EXCLUDE},
    {"exclude-from", required_argument, NULL, OPT_EXCLUDE_FROM},
    {"zstd-level", required_argument, NULL, OPT_LEVEL},
    {"trailer", no_argument, NULL, OPT_TRAILER},
    {"chunk-avg", required_argument, NULL, OPT_CHUNK_AVG},
    {"block-size", required_argument, NULL, OPT_BLOCK_SIZE},
    {0},
};

/* Roughly what a tree's tar stream will hold (file data, holes left out),
 * for the progress line's percentage; one lstat per entry. */
static uint64_t tree_bytes;
static int add_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)path;
	(void)flag;
	(void)ftw;
	uint64_t data = (uint64_t)st->st_blocks * 512;
	if (S_ISREG(st->st_mode))
		tree_bytes += data < (uint64_t)st->st_size ? data : (uint64_t)st->st_size;
	tree_bytes += 1536; /* headers */
	return 0;
}

static uint64_t estimate_tree(const char *root)
{
	tree_bytes = 0;
	if (nftw(root, add_entry, 64, FTW_PHYS) != 0)
		return 0; /* no estimate, no percentage */
	return tree_bytes;
}

static int push_write_cb(void *arg, const void *data, size_t len)
{
	int rc = dp_cli_check_interrupt();
	return rc ? rc : dp_push_write(arg, data, len);
}

/* Options that only make sense for a tree. */
static int need_dir(const char *path, const char *flag, const char *why)
{
	struct stat st;
	if (strcmp(path, "-") == 0 || stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
		return dp_error_set(DP_EUSAGE, "%s applies to a DIR (\"%s\" is not one): it %s",
		                    flag, path, why);
	return 0;
}

static int push_cut_cb(void *arg, uint32_t block)
{
	return dp_push_cut(arg, block);
}

int dp_worker_push_fd(dp_push *p, int fd, const char *what)
{
	int rc = 0;
	for (;;) {
		uint8_t *buf;
		size_t room;
		if ((rc = dp_push_buffer(p, &buf, &room)) != 0)
			break;
		/* Checked before and after: a signal that came before read()
		 * started would not interrupt it. */
		if ((rc = dp_cli_check_interrupt()) != 0)
			break;
		ssize_t n = read(fd, buf, room < READ_LEN ? room : READ_LEN);
		if ((rc = dp_cli_check_interrupt()) != 0)
			break;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = dp_error_errno(DP_ERROR, errno, "cannot read %s", what);
			break;
		}
		if (n == 0)
			break;
		if ((rc = dp_push_filled(p, (size_t)n)) != 0)
			break;
	}
	return rc;
}

/* One line of stdin without its end of line, in *line; 1 at the end of
 * the input. */
static int stdin_line(char **line, size_t *cap)
{
	for (;;) {
		errno = 0;
		ssize_t n = getline(line, cap, stdin);
		int rc = dp_cli_check_interrupt();
		if (rc)
			return rc;
		if (n < 0 && errno == EINTR) {
			clearerr(stdin);
			continue;
		}
		if (n < 0)
			return ferror(stdin)
			           ? dp_error_errno(DP_ERROR, errno, "cannot read standard input")
			           : 1;
		while (n > 0 && ((*line)[n - 1] == '\n' || (*line)[n - 1] == '\r'))
			(*line)[--n] = 0;
		return 0;
	}
}

/* --trailer, before the tree: the repository is open and the push begun
 * (the slow part of starting); tell the producer and wait for its "tree",
 * so that it can start a consistent copy (e.g. a database's backup mode)
 * meanwhile, not before. */
static int trailer_wait_tree(const char *name)
{
	char *line = NULL;
	size_t cap = 0;
	int rc = 0;
	if (printf("ready\n") < 0 || fflush(stdout) != 0)
		return dp_error_errno(DP_ERROR, errno, "cannot write to standard output");
	rc = stdin_line(&line, &cap);
	if (rc == 1)
		rc = dp_error_set(DP_ERROR,
		                  "standard input ended before \"tree\": the producer did not "
		                  "start; nothing was stored as \"%s\"",
		                  name);
	else if (!rc && strcmp(line, "tree") != 0)
		rc = dp_error_set(DP_EUSAGE,
		                  "--trailer: expected \"tree\" on standard input, got \"%.40s\"",
		                  line);
	free(line);
	return rc;
}

/* --trailer: the tree is complete; tell the producer and take the rest of
 * the snapshot from its instructions on stdin (see push_about). */
static int read_trailer(dp_tar_writer *tw, dp_push *p, const char *name)
{
	int rc = 0;
	char *line = NULL;
	size_t cap = 0;
	bool committed = false;
	if (printf("tree-read\n") < 0 || fflush(stdout) != 0)
		return dp_error_errno(DP_ERROR, errno, "cannot write to standard output");
	while (!committed) {
		rc = stdin_line(&line, &cap);
		if (rc == 1)
			rc = dp_error_set(
			    DP_ERROR,
			    "standard input ended without \"commit\": the producer did "
			    "not finish; nothing was stored as \"%s\"",
			    name);
		if (rc)
			break;
		char *arg = strchr(line, '\t');
		if (arg)
			*arg++ = 0;
		if (strcmp(line, "commit") == 0 && !arg) {
			committed = true;
		} else if (strcmp(line, "meta") == 0 && arg) {
			rc = dp_push_set_meta(p, arg);
		} else if (strcmp(line, "file") == 0 && arg && strchr(arg, '\t')) {
			char *src = strchr(arg, '\t');
			*src++ = 0;
			rc = dp_tar_writer_add_file(tw, arg, src);
		} else {
			rc = dp_error_set(DP_EUSAGE,
			                  "--trailer: unknown instruction \"%.40s\" on standard "
			                  "input: expected \"file<TAB>PATH<TAB>SOURCE\", "
			                  "\"meta<TAB>JSON\" or \"commit\"",
			                  line);
		}
		if (rc)
			break;
	}
	free(line);
	return rc;
}

static cJSON *result_json(const char *name, const char *kind, const dp_push_result *res)
{
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "id", res->id);
	cJSON_AddStringToObject(o, "name", name);
	cJSON_AddStringToObject(o, "kind", kind);
	cJSON_AddNumberToObject(o, "size", (double)res->size);
	cJSON_AddNumberToObject(o, "stored", (double)res->stored);
	cJSON_AddNumberToObject(o, "blobs", (double)res->blobs);
	cJSON_AddNumberToObject(o, "blobs_new", (double)res->blobs_new);
	cJSON_AddNumberToObject(o, "dedup_ratio",
	                        res->stored ? (double)res->size / (double)res->stored : 0);
	cJSON_AddNumberToObject(o, "seconds", res->seconds);
	cJSON_AddNumberToObject(o, "mb_per_s",
	                        res->seconds > 0 ? (double)res->size / 1e6 / res->seconds : 0);
	return o;
}

/* The result on stdout (--json) and as a status event (DP_STATUS_FD). */
static void report_json(cJSON *o, bool to_stdout)
{
	if (!o)
		return;
	if (to_stdout) {
		char *s = cJSON_PrintUnformatted(o);
		if (s)
			printf("%s\n", s);
		free(s);
	}
	if (dp_cli_status_fd() >= 0) {
		cJSON_AddStringToObject(o, "event", "result");
		cJSON_AddStringToObject(o, "verb", "push");
		char *s = cJSON_PrintUnformatted(o);
		dp_cli_event(s);
		free(s);
	}
}

static const char push_about[] =
    "Stores FILE, the directory tree DIR, or standard input (no path or \"-\") as a\n"
    "new snapshot called NAME, and prints its id. NAME is a label such as\n"
    "\"db1/base\": pushing the same name again adds a newer snapshot, and data\n"
    "already in the repository is not stored again.\n"
    "A tree is stored as a pax tar stream with modes, owners, times, symlinks,\n"
    "hard links, sparse files, xattrs and ACLs (kind \"tree\"); a regular file\n"
    "is kind \"file\"; anything else (stdin, a pipe, a device) is kind \"stream\".\n"
    "\n"
    "options:\n"
    "  --meta JSON              attach a JSON object to the snapshot (e.g. LSNs)\n"
    "  --exclude PATTERN        (a tree) leave out entries whose name matches\n"
    "                           PATTERN, or whose path under DIR does if PATTERN\n"
    "                           has a '/'; a directory goes with its content.\n"
    "                           Repeatable: --exclude '*.tmp' --exclude 'pg_wal/*'\n"
    "  --exclude-from FILE      (a tree) the patterns in FILE, one per line\n"
    "                           (blank lines and '#' comments skipped)\n"
    "  --trailer                (a tree) a producer drives the push over stdin and\n"
    "                           stdout, one line each: once the repository is\n"
    "                           open dp-worker prints \"ready\" and waits for\n"
    "                           \"tree\"; it reads DIR, prints \"tree-read\", then\n"
    "                           reads instructions, fields separated by a tab:\n"
    "                             file PATH SOURCE  add the regular file SOURCE\n"
    "                                               to the tree as PATH\n"
    "                             meta JSON         attach JSON (replaces --meta)\n"
    "                             commit            write the snapshot\n"
    "                           Input that ends without \"commit\" abandons the\n"
    "                           push: no snapshot. For producers that learn what\n"
    "                           else belongs to a copy of a live tree only once it\n"
    "                           has been read (e.g. a database's log up to the end\n"
    "                           of the copy).\n"
    "  --zstd-level N           compress new blobs at level N (default: the\n"
    "                           repository's)\n"
    "  --chunk-avg N            cut chunks of N bytes on average (a power of two,\n"
    "                           K/M suffixes; at most a quarter of the repository's\n"
    "                           chunk maximum; default: the repository's). Pushes of\n"
    "                           the same data deduplicate only at the same value.\n"
    "  --block-size N           (a tree) cut the content of every regular file of at\n"
    "                           least N bytes into N-byte blocks from its start, the\n"
    "                           rest as usual: for files of fixed-size pages (a\n"
    "                           database's 8K), where a changed page is then one\n"
    "                           changed chunk\n"
    "  --json                   print the result as JSON: id, size (logical bytes),\n"
    "                           stored (bytes added), blobs, blobs_new, dedup_ratio\n"
    "                           (size/stored), seconds, mb_per_s\n";

static const char push_examples[] =
    "  export DP_REPO_PASSPHRASE=...\n"
    "  pg_dump db1 | dp-worker push --repo /srv/backups db1/dump\n"
    "  dp-worker push --repo /srv/backups --json etc/configs /etc\n";

int dp_worker_push(int argc, char **argv)
{
	struct push_opts po = {0};
	dp_cli_cmd cmd = {
	    .prog = "dp-worker push",
	    .synopsis = "[OPTIONS] NAME [FILE|DIR|-]",
	    .about = push_about,
	    .examples = push_examples,
	    .flags = DP_CLI_REPO_FLAGS | DP_CLI_JSON,
	    .opts = push_options,
	    .on_opt = on_opt,
	    .ctx = &po,
	    .min_args = 1,
	    .max_args = 2,
	};
	dp_cli c;
	int rc = dp_cli_parse(&c, &cmd, argc, argv);
	if (rc) {
		free_opts(&po);
		return rc == DP_CLI_HELP ? 0 : rc;
	}

	dp_repo *repo = NULL;
	dp_push *push = NULL;
	dp_tar_writer *tw = NULL;
	dp_cli_progress *pr = NULL;
	cJSON *meta = NULL;
	int fd = -1;
	const char *name = c.args[0];
	const char *path = c.nargs > 1 ? c.args[1] : "-";
	const char *kind = "stream";
	char what[PATH_MAX + 16];
	dp_progress prog;
	atomic_init(&prog.done, 0);
	atomic_init(&prog.stored, 0);
	atomic_init(&prog.total, 0);

	rc = dp_cli_check_name(name);
	if (rc)
		goto out;
	rc = dp_cli_need_repo(&c);
	if (rc)
		goto out;
	if (po.nexclude && strcmp(path, "-") != 0) {
		struct stat xs;
		if (stat(path, &xs) == 0 && !S_ISDIR(xs.st_mode)) {
			rc = dp_error_set(
			    DP_EUSAGE, "--exclude applies to a DIR, and \"%s\" is not one", path);
			goto out;
		}
	}
	if (po.nexclude && strcmp(path, "-") == 0) {
		rc = dp_error_set(DP_EUSAGE, "--exclude applies to a DIR, not to standard input");
		goto out;
	}
	if ((po.block && (rc = need_dir(path, "--block-size", "cuts the files of a tree"))) ||
	    (po.trailer && (rc = need_dir(path, "--trailer", "adds files after the tree"))))
		goto out;
	if (po.meta) {
		meta = cJSON_Parse(po.meta);
		if (!meta || !cJSON_IsObject(meta)) {
			rc = dp_error_set(DP_EUSAGE, "--meta \"%.60s\" is not a JSON object",
			                  po.meta);
			goto out;
		}
	}

	/* Open the input before the repository: a bad path writes nothing. */
	if (strcmp(path, "-") == 0) {
		if (isatty(STDIN_FILENO)) {
			rc = dp_error_set(DP_EUSAGE, "standard input is a terminal: pipe the data "
			                             "in, or give a FILE or DIR to push");
			goto out;
		}
		fd = STDIN_FILENO;
		snprintf(what, sizeof(what), "standard input");
	} else {
		struct stat st;
		if (stat(path, &st) != 0) {
			rc = dp_error_errno(errno == ENOENT || errno == EACCES || errno == ENOTDIR
			                        ? DP_EUSAGE
			                        : DP_ERROR,
			                    errno, "cannot push \"%s\"", path);
			goto out;
		}
		snprintf(what, sizeof(what), "\"%s\"", path);
		if (S_ISDIR(st.st_mode)) {
			kind = "tree";
			if (access(path, R_OK | X_OK) != 0) {
				rc = dp_error_errno(DP_EUSAGE, errno,
				                    "cannot read directory \"%s\"", path);
				goto out;
			}
		} else {
			fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0) {
				rc = dp_error_errno(errno == EACCES ? DP_EUSAGE : DP_ERROR, errno,
				                    "cannot open \"%s\"", path);
				goto out;
			}
			if (S_ISREG(st.st_mode)) {
				kind = "file";
				atomic_store(&prog.total, (uint64_t)st.st_size);
				posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
			}
		}
	}

	/* From here a signal aborts the push cleanly: no snapshot, lock
	 * released. */
	dp_cli_catch_signals();
	rc = dp_worker_open_repo(&repo, &c);
	if (rc)
		goto out;
	dp_repo_set_progress(repo, &prog);
	if (po.level)
		dp_repo_set_zstd_level(repo, (int)po.level);
	if (po.chunk_avg && (rc = dp_repo_set_chunk_avg(repo, (uint32_t)po.chunk_avg)))
		goto out;
	rc = dp_push_begin(&push, repo, name, kind);
	if (rc)
		goto out;
	if (po.meta) {
		rc = dp_push_set_meta(push, po.meta);
		if (rc)
			goto out;
	}
	if (strcmp(kind, "tree") == 0 &&
	    ((!c.quiet && isatty(STDERR_FILENO)) || dp_cli_status_fd() >= 0))
		atomic_store(&prog.total, estimate_tree(path));
	dp_cli_progress_start(&pr, "push", &prog, !c.quiet);
	if (strcmp(kind, "tree") == 0) {
		/* A repository inside the tree is left out, not fed to itself. */
		struct stat rst;
		const char *rpath = strncmp(c.repo, "file://", 7) == 0 ? c.repo + 7 : c.repo;
		bool local = strstr(c.repo, "://") == NULL || rpath != c.repo;
		bool have = local && stat(rpath, &rst) == 0 && S_ISDIR(rst.st_mode);
		dp_tar_opts to = {.skip_dir = have ? &rst : NULL,
		                  .exclude = (const char *const *)po.exclude,
		                  .nexclude = po.nexclude};
		rc = dp_tar_writer_new(&tw, push_write_cb, push);
		if (!rc && po.block)
			dp_tar_writer_set_blocks(tw, push_cut_cb, push, (uint32_t)po.block);
		if (!rc && po.trailer)
			rc = trailer_wait_tree(name);
		if (!rc)
			rc = dp_tar_writer_add_tree(tw, path, &to);
		if (!rc && po.trailer)
			rc = read_trailer(tw, push, name);
		if (!rc)
			rc = dp_tar_writer_close(tw);
	} else {
		rc = dp_worker_push_fd(push, fd, what);
	}
	dp_cli_progress_stop(pr);
	pr = NULL;
	if (!rc)
		rc = dp_cli_check_interrupt();
	if (rc) {
		if (dp_cli_interrupted())
			dp_error_prefix("push of \"%s\" aborted, no snapshot written", name);
		goto out;
	}

	dp_push_result res;
	memset(&res, 0, sizeof(res));
	rc = dp_push_commit(push, &res);
	push = NULL;
	if (rc)
		goto out;
	cJSON *result = result_json(name, kind, &res);
	report_json(result, c.json);
	cJSON_Delete(result);
	if (!c.json) {
		printf("%s\n", res.id);
		if (!c.quiet && isatty(STDERR_FILENO)) {
			char sz[32], st[32];
			dp_cli_fmt_bytes(sz, sizeof(sz), res.size);
			dp_cli_fmt_bytes(st, sizeof(st), res.stored);
			fprintf(stderr,
			        "pushed \"%s\" (%s): %s in %.1f s (%.1f MB/s), %s stored, "
			        "%llu of %llu blobs new, dedup %.2fx\n",
			        name, kind, sz, res.seconds,
			        res.seconds > 0 ? (double)res.size / 1e6 / res.seconds : 0, st,
			        (unsigned long long)res.blobs_new, (unsigned long long)res.blobs,
			        res.stored ? (double)res.size / (double)res.stored : 0);
		}
	}
	if (fflush(stdout) != 0)
		rc = dp_error_errno(DP_ERROR, errno, "cannot write the result to stdout");
out:
	dp_cli_progress_stop(pr);
	dp_tar_writer_free(tw);
	if (push)
		dp_push_abort(push);
	dp_repo_free(repo);
	if (fd > STDIN_FILENO)
		close(fd);
	cJSON_Delete(meta);
	free_opts(&po);
	return rc;
}
