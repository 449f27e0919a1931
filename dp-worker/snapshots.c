/*
 * dp-worker ls, stat, rm: listing, describing and removing snapshots.
 *
 * Output: a table for people (ls), "key: value" lines (stat), or JSON with
 * --json (an array for ls, an object for stat) whose fields do not change
 * with the terminal. rm removes snapshot objects only; their data stays
 * until `dp repo prune`. Single-threaded.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp/error.h"
#include "worker.h"

#define SHORT_ID 12

static cJSON *info_json(const dp_snapshot_info *s)
{
	char t[40];
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return NULL;
	dp_cli_fmt_time(t, sizeof(t), s->time);
	cJSON_AddStringToObject(o, "id", s->id);
	cJSON_AddStringToObject(o, "name", s->name);
	cJSON_AddStringToObject(o, "kind", s->kind);
	cJSON_AddNumberToObject(o, "size", (double)s->size);
	cJSON_AddNumberToObject(o, "blobs", (double)s->blobs);
	cJSON_AddStringToObject(o, "time", t);
	cJSON_AddStringToObject(o, "host", s->host);
	cJSON *meta = s->meta ? cJSON_Parse(s->meta) : NULL;
	if (meta)
		cJSON_AddItemToObject(o, "meta", meta);
	else
		cJSON_AddNullToObject(o, "meta");
	return o;
}

static int print_json(cJSON *o)
{
	if (!o)
		return dp_error_set(DP_ERROR, "out of memory");
	char *s = cJSON_Print(o);
	cJSON_Delete(o);
	if (!s)
		return dp_error_set(DP_ERROR, "out of memory");
	printf("%s\n", s);
	free(s);
	return 0;
}

/* NAME matches itself; "db1/" matches every name under it. */
static bool name_matches(const char *name, const char *filter)
{
	if (!filter)
		return true;
	size_t n = strlen(filter);
	if (n > 0 && filter[n - 1] == '/')
		return strncmp(name, filter, n) == 0;
	return strcmp(name, filter) == 0;
}

static const char ls_about[] =
    "Lists the snapshots in the repository, oldest first: short ID, NAME, KIND\n"
    "(file, tree or stream), SIZE (logical), TIME (UTC, when the push began) and\n"
    "HOST. NAME shows only that name; \"PREFIX/\" every name under PREFIX.\n"
    "\n"
    "options:\n"
    "  --json                   print a JSON array with full ids and metadata\n";

int dp_worker_ls(int argc, char **argv)
{
	dp_cli_cmd cmd = {
	    .prog = "dp-worker ls",
	    .synopsis = "[OPTIONS] [NAME|PREFIX/]",
	    .about = ls_about,
	    .examples = "  dp-worker ls --repo /srv/backups db1/\n",
	    .flags = DP_CLI_REPO_FLAGS | DP_CLI_JSON,
	    .min_args = 0,
	    .max_args = 1,
	};
	dp_cli c;
	int rc = dp_cli_parse(&c, &cmd, argc, argv);
	if (rc)
		return rc == DP_CLI_HELP ? 0 : rc;
	const char *filter = c.nargs > 0 ? c.args[0] : NULL;
	dp_repo *repo = NULL;
	dp_snapshot_info *v = NULL;
	size_t n = 0;
	rc = dp_worker_open_repo(&repo, &c);
	if (rc)
		goto out;
	rc = dp_snapshot_list(repo, &v, &n);
	if (rc)
		goto out;

	if (c.json) {
		cJSON *arr = cJSON_CreateArray();
		for (size_t i = 0; arr && i < n; i++)
			if (name_matches(v[i].name, filter))
				cJSON_AddItemToArray(arr, info_json(&v[i]));
		rc = print_json(arr);
		goto out;
	}

	/* Column widths from the content, kubectl style. */
	int wn = 4, wk = 4, ws = 4, wh = 4;
	size_t shown = 0;
	char sz[32];
	for (size_t i = 0; i < n; i++) {
		if (!name_matches(v[i].name, filter))
			continue;
		shown++;
		dp_cli_fmt_bytes(sz, sizeof(sz), v[i].size);
		int l;
		if ((l = (int)strlen(v[i].name)) > wn)
			wn = l;
		if ((l = (int)strlen(v[i].kind)) > wk)
			wk = l;
		if ((l = (int)strlen(sz)) > ws)
			ws = l;
		if ((l = (int)strlen(v[i].host)) > wh)
			wh = l;
	}
	if (shown == 0) {
		fprintf(stderr, "no snapshots%s%s%s\n", filter ? " match \"" : "",
		        filter ? filter : "", filter ? "\"" : "");
		goto out;
	}
	printf("%-*s   %-*s   %-*s   %*s   %-20s   %s\n", SHORT_ID, "ID", wn, "NAME", wk, "KIND",
	       ws, "SIZE", "TIME", "HOST");
	for (size_t i = 0; i < n; i++) {
		if (!name_matches(v[i].name, filter))
			continue;
		char t[40];
		dp_cli_fmt_bytes(sz, sizeof(sz), v[i].size);
		dp_cli_fmt_time(t, sizeof(t), v[i].time);
		printf("%.*s   %-*s   %-*s   %*s   %-20s   %s\n", SHORT_ID, v[i].id, wn, v[i].name,
		       wk, v[i].kind, ws, sz, t, v[i].host);
	}
out:
	if (v)
		dp_snapshot_info_free(v, n);
	dp_repo_free(repo);
	return rc;
}

static const char stat_about[] =
    "Shows one snapshot: NAME (the newest of that name) or ID (full, or a unique\n"
    "prefix of 8+ hex digits): id, name, kind, size, blobs, time, host and the\n"
    "metadata attached with push --meta.\n"
    "\n"
    "options:\n"
    "  --json                   print a JSON object\n";

int dp_worker_stat(int argc, char **argv)
{
	dp_cli_cmd cmd = {
	    .prog = "dp-worker stat",
	    .synopsis = "[OPTIONS] NAME|ID",
	    .about = stat_about,
	    .examples = "  dp-worker stat --repo /srv/backups --json db1/dump\n",
	    .flags = DP_CLI_REPO_FLAGS | DP_CLI_JSON,
	    .min_args = 1,
	    .max_args = 1,
	};
	dp_cli c;
	int rc = dp_cli_parse(&c, &cmd, argc, argv);
	if (rc)
		return rc == DP_CLI_HELP ? 0 : rc;
	dp_repo *repo = NULL;
	dp_snapshot_info s;
	memset(&s, 0, sizeof(s));
	bool found = false;
	if (!c.args[0][0]) {
		rc = dp_error_set(DP_EUSAGE, "empty snapshot name: give a NAME or an ID");
		goto out;
	}
	rc = dp_worker_open_repo(&repo, &c);
	if (rc)
		goto out;
	rc = dp_snapshot_find(repo, c.args[0], &s);
	if (rc)
		goto out;
	found = true;
	if (c.json) {
		rc = print_json(info_json(&s));
		goto out;
	}
	char t[40], sz[32];
	dp_cli_fmt_time(t, sizeof(t), s.time);
	dp_cli_fmt_bytes(sz, sizeof(sz), s.size);
	printf("id:     %s\nname:   %s\nkind:   %s\nsize:   %llu (%s)\nblobs:  %llu\n"
	       "time:   %s\nhost:   %s\n",
	       s.id, s.name, s.kind, (unsigned long long)s.size, sz, (unsigned long long)s.blobs, t,
	       s.host);
	if (s.meta)
		printf("meta:   %s\n", s.meta);
out:
	if (found)
		free(s.meta);
	dp_repo_free(repo);
	return rc;
}

static const char rm_about[] =
    "Removes snapshots: a NAME removes every snapshot of that name, an ID (or a\n"
    "unique prefix of 8+ hex digits) that one. Their data stays in the repository\n"
    "until 'dp repo prune' frees what no snapshot uses any more.\n";

int dp_worker_rm(int argc, char **argv)
{
	dp_cli_cmd cmd = {
	    .prog = "dp-worker rm",
	    .synopsis = "[OPTIONS] NAME|ID...",
	    .about = rm_about,
	    .examples = "  dp-worker rm --repo /srv/backups db1/dump && dp repo prune --repo "
	                "/srv/backups\n",
	    .flags = DP_CLI_REPO_FLAGS,
	    .min_args = 1,
	    .max_args = -1,
	};
	dp_cli c;
	int rc = dp_cli_parse(&c, &cmd, argc, argv);
	if (rc)
		return rc == DP_CLI_HELP ? 0 : rc;
	dp_repo *repo = NULL;
	for (int i = 0; i < c.nargs; i++) {
		if (!c.args[i][0]) {
			rc = dp_error_set(DP_EUSAGE, "empty snapshot name: give a NAME or an ID");
			goto out;
		}
	}
	rc = dp_worker_open_repo(&repo, &c);
	if (rc)
		goto out;
	for (int i = 0; i < c.nargs; i++) {
		size_t removed = 0;
		rc = dp_snapshot_remove(repo, c.args[i], &removed);
		if (!rc && removed == 0)
			rc = dp_error_set(DP_ENOTFOUND, "no snapshot \"%s\"", c.args[i]);
		if (rc)
			goto out;
		printf("removed %zu snapshot%s \"%s\"\n", removed, removed == 1 ? "" : "s",
		       c.args[i]);
	}
out:
	dp_repo_free(repo);
	return rc;
}
