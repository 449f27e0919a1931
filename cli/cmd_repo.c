/*
 * dp repo init|check|prune|repair-index: creating, verifying, pruning and
 * repairing a repository.
 *
 * Each subcommand parses its flags with dp_cli_parse, opens the repository
 * with the passphrase (wiped right after), calls one function of
 * dp/repo.h and prints what it did. check prints every problem on stdout
 * as it is found and returns DP_ECORRUPT (exit 4) if there was any.
 * Single-threaded; the repository runs its own threads.
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "dp/cliopt.h"
#include "dp/error.h"
#include "dp/repo.h"

static int open_repo(dp_repo **out, const dp_cli *c)
{
	*out = NULL;
	char *pass = NULL;
	int rc = dp_cli_need_repo(c);
	if (rc)
		return rc;
	rc = dp_cli_passphrase(&pass, c);
	if (rc)
		return rc;
	rc = dp_repo_open(out, c->repo, &c->bopts, pass);
	dp_cli_passphrase_free(pass);
	if (rc)
		return rc;
	if (c->threads > 0)
		dp_repo_set_threads(*out, c->threads);
	return 0;
}

#define S(n) ((n) == 1 ? "" : "s")

static int print_json(cJSON *o)
{
	char *s = o ? cJSON_Print(o) : NULL;
	cJSON_Delete(o);
	if (!s)
		return dp_error_set(DP_ERROR, "out of memory");
	printf("%s\n", s);
	free(s);
	return 0;
}

/* ---- init ---- */

enum { OPT_CHUNK_MIN = 1, OPT_CHUNK_AVG, OPT_CHUNK_MAX, OPT_PACK_SIZE, OPT_ZSTD_LEVEL };

struct init_opts {
	dp_repo_init_opts o;
};

static int init_opt(int val, const char *arg, void *ctx)
{
	struct init_opts *io = ctx;
	uint64_t v = 0;
	long l = 0;
	int rc = 0;
	switch (val) {
	case OPT_CHUNK_MIN:
		rc = dp_cli_parse_size(&v, "--chunk-min", arg, 64, 64u << 20);
		io->o.chunk_min = (uint32_t)v;
		break;
	case OPT_CHUNK_AVG:
		rc = dp_cli_parse_size(&v, "--chunk-avg", arg, 256, 64u << 20);
		io->o.chunk_avg = (uint32_t)v;
		break;
	case OPT_CHUNK_MAX:
		rc = dp_cli_parse_size(&v, "--chunk-max", arg, 1024, 256u << 20);
		io->o.chunk_max = (uint32_t)v;
		break;
	case OPT_PACK_SIZE:
		rc = dp_cli_parse_size(&v, "--pack-size", arg, 4096, 1u << 30);
		io->o.pack_size = (uint32_t)v;
		break;
	case OPT_ZSTD_LEVEL:
		rc =
		    dp_cli_parse_int(&l, "--zstd-level", arg, DP_ZSTD_LEVEL_MIN, DP_ZSTD_LEVEL_MAX);
		if (!rc && l == 0)
			rc = dp_error_set(DP_EUSAGE,
			                  "--zstd-level 0: give a level from %d to %d (0 is not a "
			                  "level), or leave it out",
			                  DP_ZSTD_LEVEL_MIN, DP_ZSTD_LEVEL_MAX);
		io->o.zstd_level = (int)l;
		break;
	}
	return rc;
}

static const struct option init_options[] = {
    {"chunk-min", required_argument, NULL, OPT_CHUNK_MIN},
    {"chunk-avg", required_argument, NULL, OPT_CHUNK_AVG},
    {"chunk-max", required_argument, NULL, OPT_CHUNK_MAX},
    {"pack-size", required_argument, NULL, OPT_PACK_SIZE},
    {"zstd-level", required_argument, NULL, OPT_ZSTD_LEVEL},
    {0},
};

static const char init_about[] =
    "Creates an empty repository at R, protected by the passphrase (from\n"
    "--passphrase-file or DP_REPO_PASSPHRASE), and prints its id. Refuses, changing\n"
    "nothing, if a repository is already there (exit 1).\n"
    "\n"
    "options (fixed for the life of the repository, except --zstd-level):\n"
    "  --chunk-avg N            average chunk size, e.g. 1M (min/max default to\n"
    "                           avg/4 and avg*4 when only this is given; with\n"
    "                           no chunk option: 16K/32K/128K min/avg/max)\n"
    "  --chunk-min N, --chunk-max N\n"
    "                           chunk size bounds\n"
    "  --pack-size N            target pack file size (default 16M)\n"
    "  --zstd-level N           zstd level for new blobs (-7..19, default 2)\n"
    "  --json                   print {\"id\", \"repo\"} as JSON\n"
    "sizes take K, M, G suffixes (binary: 1K = 1024).\n";

static int repo_init(int argc, char **argv)
{
	struct init_opts io;
	memset(&io, 0, sizeof(io));
	dp_cli_cmd cmd = {
	    .prog = "dp repo init",
	    .synopsis = "--repo R [OPTIONS]",
	    .about = init_about,
	    .examples = "  dp repo init --repo /srv/backups --passphrase-file /etc/dp/pass\n"
	                "  DP_REPO_PASSPHRASE=... dp repo init --repo /tmp/r --chunk-avg 64K\n",
	    .flags = DP_CLI_REPO | DP_CLI_PASS | DP_CLI_S3 | DP_CLI_JSON,
	    .opts = init_options,
	    .on_opt = init_opt,
	    .ctx = &io,
	    .min_args = 0,
	    .max_args = 0,
	};
	dp_cli c;
	int rc = dp_cli_parse(&c, &cmd, argc, argv);
	if (rc)
		return rc == DP_CLI_HELP ? 0 : rc;
	rc = dp_cli_need_repo(&c);
	if (rc)
		return rc;
	dp_repo_init_opts *o = &io.o;
	if (o->chunk_avg) {
		if (!o->chunk_min)
			o->chunk_min = o->chunk_avg / 4;
		if (!o->chunk_max)
			o->chunk_max = o->chunk_avg * 4;
	}
	if ((o->chunk_min || o->chunk_max) && !o->chunk_avg)
		return dp_error_set(DP_EUSAGE, "--chunk-min and --chunk-max need --chunk-avg too");
	if (o->chunk_avg && !(o->chunk_min < o->chunk_avg && o->chunk_avg < o->chunk_max))
		return dp_error_set(DP_EUSAGE,
		                    "chunk sizes must satisfy min < avg < max (got %u, %u, %u)",
		                    o->chunk_min, o->chunk_avg, o->chunk_max);
	if (o->chunk_max && o->pack_size && o->pack_size < o->chunk_max)
		return dp_error_set(DP_EUSAGE,
		                    "--pack-size %u is smaller than the largest chunk (%u): raise "
		                    "it",
		                    o->pack_size, o->chunk_max);

	char *pass = NULL;
	char id[DP_ID_HEX];
	rc = dp_cli_passphrase(&pass, &c);
	if (rc)
		return rc;
	rc = dp_repo_init(c.repo, &c.bopts, o, pass, id);
	dp_cli_passphrase_free(pass);
	if (rc) {
		if (!strstr(dp_error_last(), c.repo))
			dp_error_prefix("\"%s\"", c.repo);
		return rc;
	}
	if (c.json) {
		cJSON *j = cJSON_CreateObject();
		if (j) {
			cJSON_AddStringToObject(j, "id", id);
			cJSON_AddStringToObject(j, "repo", c.repo);
		}
		return print_json(j);
	}
	printf("created repository %s at %s\n", id, c.repo);
	return 0;
}

/* ---- check ---- */

enum { OPT_READ_DATA = 1 };

struct check_state {
	bool read_data;
	bool json;
	uint64_t problems;
	cJSON *list;
	char first[512];
};

static int check_opt(int val, const char *arg, void *ctx)
{
	(void)arg;
	struct check_state *st = ctx;
	if (val == OPT_READ_DATA)
		st->read_data = true;
	return 0;
}

static void on_problem(const char *msg, void *arg)
{
	struct check_state *st = arg;
	if (st->problems++ == 0)
		snprintf(st->first, sizeof(st->first), "%s", msg);
	if (st->json) {
		if (st->list)
			cJSON_AddItemToArray(st->list, cJSON_CreateString(msg));
		return;
	}
	/* The progress line lives on stderr; problems go to stdout, whole lines. */
	printf("problem: %s\n", msg);
	fflush(stdout);
}

static const struct option check_options[] = {
    {"read-data", no_argument, NULL, OPT_READ_DATA},
    {0},
};

static const char check_about[] =
    "Checks the repository's structure: config and keys, that every index and\n"
    "snapshot decrypts, every blob a snapshot names is indexed, every indexed pack\n"
    "exists with the right size. With --read-data every blob is also read and\n"
    "authenticated. Prints each problem as it is found (\"problem: ...\", naming the\n"
    "object), then a summary; exits 4 if there was any problem.\n"
    "\n"
    "options:\n"
    "  --read-data              read and authenticate every blob\n"
    "  --json                   print the report and the problems as JSON\n";

static int repo_check(int argc, char **argv)
{
	struct check_state st;
	memset(&st, 0, sizeof(st));
	dp_cli_cmd cmd = {
	    .prog = "dp repo check",
	    .synopsis = "--repo R [--read-data]",
	    .about = check_about,
	    .examples = "  dp repo check --repo /srv/backups --read-data\n",
	    .flags = DP_CLI_REPO_FLAGS | DP_CLI_JSON,
	    .opts = check_options,
	    .on_opt = check_opt,
	    .ctx = &st,
	    .min_args = 0,
	    .max_args = 0,
	};
	dp_cli c;
	int rc = dp_cli_parse(&c, &cmd, argc, argv);
	if (rc)
		return rc == DP_CLI_HELP ? 0 : rc;
	st.json = c.json;
	dp_repo *repo = NULL;
	dp_cli_progress *pr = NULL;
	dp_progress prog;
	atomic_init(&prog.done, 0);
	atomic_init(&prog.stored, 0);
	atomic_init(&prog.total, 0);
	dp_check_report rep;
	memset(&rep, 0, sizeof(rep));

	rc = open_repo(&repo, &c);
	if (rc)
		goto out;
	if (c.json)
		st.list = cJSON_CreateArray();
	dp_repo_set_progress(repo, &prog);
	dp_cli_progress_start(&pr, "check", &prog, !c.quiet);
	rc = dp_repo_check(repo, st.read_data, &rep, on_problem, &st);
	dp_cli_progress_stop(pr);
	pr = NULL;
	if (rc && rc != DP_ECORRUPT)
		goto out;
	if (rc == DP_ECORRUPT || st.problems)
		rc = dp_error_set(DP_ECORRUPT,
		                  "repository \"%s\": %" PRIu64 " problem%s found; the first: %s",
		                  c.repo, st.problems, st.problems == 1 ? "" : "s",
		                  st.first[0] ? st.first : "(not named)");

	if (c.json) {
		cJSON *j = cJSON_CreateObject();
		if (j) {
			cJSON_AddBoolToObject(j, "ok", rc == 0);
			cJSON_AddBoolToObject(j, "read_data", st.read_data);
			cJSON_AddNumberToObject(j, "snapshots", (double)rep.snapshots);
			cJSON_AddNumberToObject(j, "indexes", (double)rep.indexes);
			cJSON_AddNumberToObject(j, "packs", (double)rep.packs);
			cJSON_AddNumberToObject(j, "blobs", (double)rep.blobs);
			cJSON_AddNumberToObject(j, "bytes_read", (double)rep.bytes_read);
			cJSON_AddNumberToObject(j, "unreferenced_packs",
			                        (double)rep.unreferenced_packs);
			cJSON_AddNumberToObject(j, "errors", (double)rep.errors);
			cJSON_AddItemToObject(j, "problems", st.list);
			st.list = NULL;
		}
		int prc = print_json(j);
		if (!rc)
			rc = prc;
		goto out;
	}
	char rb[32];
	dp_cli_fmt_bytes(rb, sizeof(rb), rep.bytes_read);
	printf("checked %" PRIu64 " snapshot%s, %" PRIu64 " index%s, %" PRIu64 " pack%s, %" PRIu64
	       " blob%s%s%s%s\n",
	       rep.snapshots, S(rep.snapshots), rep.indexes, rep.indexes == 1 ? "" : "es",
	       rep.packs, S(rep.packs), rep.blobs, S(rep.blobs), st.read_data ? " (read " : "",
	       st.read_data ? rb : "", st.read_data ? ")" : "");
	/* Unindexed packs are prune's to remove only in a repository that
	 * checks clean; next to missing blobs they may be what is missing. */
	if (rep.unreferenced_packs && !st.problems)
		printf("%" PRIu64 " unreferenced pack%s (left by interrupted pushes): 'dp repo "
		       "prune' removes them\n",
		       rep.unreferenced_packs, S(rep.unreferenced_packs));
	else if (rep.unreferenced_packs)
		printf("packs in no index: %" PRIu64 " (they may hold data the problems above "
		       "miss: keep them; 'dp repo repair-index' rebuilds the index from them)\n",
		       rep.unreferenced_packs);
	printf("%s: %" PRIu64 " problem%s\n", rc ? "FAILED" : "ok", st.problems,
	       st.problems == 1 ? "" : "s");
out:
	dp_cli_progress_stop(pr);
	cJSON_Delete(st.list);
	dp_repo_free(repo);
	return rc;
}

/* ---- prune ---- */

enum { OPT_WAIT = 1, OPT_REPACK_BELOW };

struct prune_opts {
	long wait;
	long repack_below; /* percent */
};

static int prune_opt(int val, const char *arg, void *ctx)
{
	struct prune_opts *po = ctx;
	if (val == OPT_WAIT)
		return dp_cli_parse_int(&po->wait, "--wait", arg, 0, 7 * 24 * 3600);
	if (val == OPT_REPACK_BELOW)
		return dp_cli_parse_int(&po->repack_below, "--repack-below", arg, 0, 100);
	return 0;
}

static const struct option prune_options[] = {
    {"wait", required_argument, NULL, OPT_WAIT},
    {"repack-below", required_argument, NULL, OPT_REPACK_BELOW},
    {0},
};

static const char prune_about[] =
    "Removes what no snapshot references (data of removed snapshots, packs left\n"
    "by interrupted pushes) and repacks packs whose live part fell below a\n"
    "threshold. Needs the repository to itself: while a push or check holds it,\n"
    "prune refuses (exit 6) unless --wait gives it time to finish.\n"
    "\n"
    "options:\n"
    "  --wait SECONDS           wait up to SECONDS for other users (default 0)\n"
    "  --repack-below PCT       repack packs less than PCT% live (default 50)\n"
    "  --json                   print the report as JSON\n";

static int repo_prune(int argc, char **argv)
{
	struct prune_opts po = {0, 50};
	dp_cli_cmd cmd = {
	    .prog = "dp repo prune",
	    .synopsis = "--repo R [--wait SECONDS]",
	    .about = prune_about,
	    .examples = "  dp-worker rm --repo /srv/backups db1/old\n"
	                "  dp repo prune --repo /srv/backups --wait 600\n",
	    .flags = DP_CLI_REPO_FLAGS | DP_CLI_JSON,
	    .opts = prune_options,
	    .on_opt = prune_opt,
	    .ctx = &po,
	    .min_args = 0,
	    .max_args = 0,
	};
	dp_cli c;
	int rc = dp_cli_parse(&c, &cmd, argc, argv);
	if (rc)
		return rc == DP_CLI_HELP ? 0 : rc;
	dp_repo *repo = NULL;
	dp_prune_report rep;
	memset(&rep, 0, sizeof(rep));
	rc = open_repo(&repo, &c);
	if (rc)
		goto out;
	dp_repo_set_lock_wait(repo, (int)po.wait);
	rc = dp_repo_prune(repo, (double)po.repack_below / 100.0, &rep);
	if (rc)
		goto out;
	if (c.json) {
		cJSON *j = cJSON_CreateObject();
		if (j) {
			cJSON_AddNumberToObject(j, "packs_removed", (double)rep.packs_removed);
			cJSON_AddNumberToObject(j, "packs_repacked", (double)rep.packs_repacked);
			cJSON_AddNumberToObject(j, "packs_written", (double)rep.packs_written);
			cJSON_AddNumberToObject(j, "blobs_removed", (double)rep.blobs_removed);
			cJSON_AddNumberToObject(j, "bytes_freed", (double)rep.bytes_freed);
		}
		rc = print_json(j);
		goto out;
	}
	char fb[32];
	dp_cli_fmt_bytes(fb, sizeof(fb), rep.bytes_freed);
	printf("removed %" PRIu64 " unused pack%s, repacked %" PRIu64 " into %" PRIu64
	       ", removed %" PRIu64 " blob%s, freed %s\n",
	       rep.packs_removed, rep.packs_removed == 1 ? "" : "s", rep.packs_repacked,
	       rep.packs_written, rep.blobs_removed, rep.blobs_removed == 1 ? "" : "s", fb);
out:
	dp_repo_free(repo);
	return rc;
}

/* ---- repair-index ---- */

static void print_problem(const char *msg, void *arg)
{
	(void)arg;
	printf("problem: %s\n", msg);
}

static const char repair_about[] =
    "Rebuilds the index from the packs' own headers and replaces every index\n"
    "object with one new one. Use it when check reports blobs \"in no index\" or\n"
    "damaged index objects: every pack carries a sealed copy of its part of the\n"
    "index, so nothing is lost while the packs are whole. Reads two small ranges\n"
    "per pack, no chunk data. Packs whose header fails authentication are\n"
    "reported and left alone. Needs the repository to itself (exit 6 otherwise).\n"
    "\n"
    "options:\n"
    "  --json                   print the report as JSON\n";

static int repo_repair_index(int argc, char **argv)
{
	dp_cli_cmd cmd = {
	    .prog = "dp repo repair-index",
	    .synopsis = "--repo R",
	    .about = repair_about,
	    .examples = "  dp repo check --repo /srv/backups\n"
	                "  dp repo repair-index --repo /srv/backups\n",
	    .flags = DP_CLI_REPO_FLAGS | DP_CLI_JSON,
	    .min_args = 0,
	    .max_args = 0,
	};
	dp_cli c;
	int rc = dp_cli_parse(&c, &cmd, argc, argv);
	if (rc)
		return rc == DP_CLI_HELP ? 0 : rc;
	dp_repo *repo = NULL;
	dp_rebuild_report rep;
	memset(&rep, 0, sizeof(rep));
	if ((rc = open_repo(&repo, &c)))
		goto out;
	if ((rc = dp_repo_rebuild_index(repo, &rep, print_problem, NULL)))
		goto out;
	if (c.json) {
		cJSON *j = cJSON_CreateObject();
		if (j) {
			cJSON_AddNumberToObject(j, "packs", (double)rep.packs);
			cJSON_AddNumberToObject(j, "packs_skipped", (double)rep.packs_skipped);
			cJSON_AddNumberToObject(j, "blobs", (double)rep.blobs);
			cJSON_AddNumberToObject(j, "indexes_replaced",
			                        (double)rep.indexes_replaced);
		}
		rc = print_json(j);
		goto out;
	}
	printf("indexed %" PRIu64 " blob%s from %" PRIu64 " pack%s, replaced %" PRIu64
	       " index object%s\n",
	       rep.blobs, S(rep.blobs), rep.packs, S(rep.packs), rep.indexes_replaced,
	       S(rep.indexes_replaced));
	if (rep.packs_skipped) {
		printf("%" PRIu64 " pack%s could not be read (see above): run 'dp repo check "
		       "--read-data'\n",
		       rep.packs_skipped, S(rep.packs_skipped));
		rc = dp_error_set(DP_ECORRUPT, "%" PRIu64 " damaged pack%s", rep.packs_skipped,
		                  S(rep.packs_skipped));
	}
out:
	dp_repo_free(repo);
	return rc;
}

/* ---- the group ---- */

static const dp_cli_command subcommands[] = {
    {"init", repo_init, "create a repository"},
    {"check", repo_check, "check a repository's structure (and with --read-data, its data)"},
    {"prune", repo_prune, "free the data no snapshot uses"},
    {"repair-index", repo_repair_index, "rebuild the index from the packs' own headers"},
};

int dp_cli_repo(int argc, char **argv)
{
	const char *ran;
	return dp_cli_dispatch("dp repo", subcommands, sizeof(subcommands) / sizeof(subcommands[0]),
	                       "example: dp repo init --repo /srv/backups --passphrase-file "
	                       "/etc/dp/pass\n",
	                       argc, argv, &ran);
}
