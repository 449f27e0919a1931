/*
 * Key verbs: key-add, key-ls, key-rm — random-key slots of a repository
 * (repos/keyslot.c), for processes that must open it often and cheaply, such
 * as a database's archive_command, without holding the passphrase.
 *
 * key-add opens the repository with the passphrase, adds a slot and writes
 * its key to a new file (created 0600 with O_EXCL, fsynced): the key never
 * goes to stdout, a log or a command line. key-rm revokes a slot.
 *
 * Single-threaded; every buffer is owned here and the key is wiped.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "dp/crypto.h"
#include "dp/error.h"
#include "dp/repo.h"
#include "worker.h"

enum { OPT_LABEL = 1, OPT_OUT };

typedef struct key_opts {
	const char *label;
	const char *out;
} key_opts;

static int key_on_opt(int val, const char *arg, void *ctx)
{
	key_opts *o = ctx;
	if (val == OPT_LABEL)
		o->label = arg;
	else if (val == OPT_OUT)
		o->out = arg;
	else
		return dp_error_set(DP_EUSAGE, "unexpected option");
	return 0;
}

static const struct option key_options[] = {
    {"label", required_argument, NULL, OPT_LABEL},
    {"out", required_argument, NULL, OPT_OUT},
    {0},
};

/* Writes text + "\n" to a new file only this user can read. */
static int write_new_secret(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return dp_error_errno(errno == EEXIST ? DP_EEXIST : DP_ERROR, errno,
		                      "cannot create the key file \"%s\" (it must not exist yet)",
		                      path);
	int rc = 0;
	size_t len = strlen(text);
	if (fchmod(fd, 0600) != 0 || write(fd, text, len) != (ssize_t)len ||
	    write(fd, "\n", 1) != 1 || fsync(fd) != 0)
		rc = dp_error_errno(errno == ENOSPC ? DP_ENOSPACE : DP_ERROR, errno,
		                    "cannot write the key file \"%s\"", path);
	if (close(fd) != 0 && !rc)
		rc = dp_error_errno(DP_ERROR, errno, "cannot write the key file \"%s\"", path);
	if (rc)
		unlink(path);
	return rc;
}

int dp_worker_key_add(int argc, char **argv)
{
	key_opts o = {0};
	dp_cli c = {0};
	dp_repo *repo = NULL;
	char token[DP_KEYSLOT_TOKEN_LEN], id[DP_ID_HEX];
	const dp_cli_cmd cmd = {
	    .prog = "dp-worker key-add",
	    .synopsis = "[OPTIONS] --out FILE",
	    .about = "Adds a key slot to the repository: a random 256-bit key that opens it\n"
	             "without the passphrase, cheaply (no scrypt), for processes started\n"
	             "often such as archive_command. Opening with the passphrase, writes\n"
	             "the key to FILE (created, mode 0600; it must not exist) and prints\n"
	             "the slot id. Give the key to wal-push/wal-fetch as \"key-file = FILE\"\n"
	             "or \"key = ...\" in their --config. 'key-rm ID' revokes it.\n"
	             "  --out FILE         where to write the key (required)\n"
	             "  --label TEXT       what the key is for (shown by key-ls)\n",
	    .examples =
	        "dp-worker key-add --label 'archive pg-main on db1' --out /etc/dp/pg-main.key",
	    .flags = DP_CLI_REPO_FLAGS | DP_CLI_JSON,
	    .opts = key_options,
	    .on_opt = key_on_opt,
	    .ctx = &o,
	    .min_args = 0,
	    .max_args = 0,
	};
	int rc = dp_cli_parse(&c, &cmd, argc, argv);
	if (rc)
		goto out;
	if (!o.out) {
		rc = dp_error_set(DP_EUSAGE, "--out FILE is required: the key is never printed");
		goto out;
	}
	if (access(o.out, F_OK) == 0) {
		rc = dp_error_set(DP_EEXIST, "key file \"%s\" exists already: name a new file",
		                  o.out);
		goto out;
	}
	if ((rc = dp_worker_open_repo(&repo, &c)))
		goto out;
	if ((rc = dp_keyslot_add(repo, o.label, token, id)))
		goto out;
	if ((rc = write_new_secret(o.out, token))) {
		/* Nobody holds the key: take the slot back. */
		int saved = rc;
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", dp_error_last());
		(void)dp_keyslot_remove(repo, id);
		rc = dp_error_set(saved, "%s", msg);
		goto out;
	}
	if (c.json)
		printf("{\"id\":\"%s\",\"file\":\"%s\"}\n", id, o.out);
	else
		printf("%s\n", id);
	if (fflush(stdout) != 0)
		rc = dp_error_errno(DP_ERROR, errno, "cannot write the result");
out:
	dp_wipe(token, sizeof(token));
	dp_repo_free(repo);
	return rc == DP_CLI_HELP ? 0 : rc;
}

int dp_worker_key_ls(int argc, char **argv)
{
	dp_cli c = {0};
	dp_repo *repo = NULL;
	dp_keyslot_info *v = NULL;
	size_t n = 0;
	const dp_cli_cmd cmd = {
	    .prog = "dp-worker key-ls",
	    .synopsis = "[OPTIONS]",
	    .about = "Lists the repository's keys: id, kind (passphrase or random), created,\n"
	             "host and label; with --json, an array of objects.\n",
	    .examples = "dp-worker key-ls --repo /srv/backups",
	    .flags = DP_CLI_REPO_FLAGS | DP_CLI_JSON,
	    .min_args = 0,
	    .max_args = 0,
	};
	int rc = dp_cli_parse(&c, &cmd, argc, argv);
	if (rc)
		goto out;
	if ((rc = dp_worker_open_repo(&repo, &c)) || (rc = dp_keyslot_list(repo, &v, &n)))
		goto out;
	if (c.json) {
		cJSON *a = cJSON_CreateArray();
		for (size_t i = 0; a && i < n; i++) {
			cJSON *o = cJSON_CreateObject();
			if (!o)
				break;
			cJSON_AddStringToObject(o, "id", v[i].id);
			cJSON_AddStringToObject(o, "kind", v[i].kind);
			cJSON_AddStringToObject(o, "created", v[i].created);
			cJSON_AddStringToObject(o, "host", v[i].host);
			cJSON_AddStringToObject(o, "label", v[i].label);
			cJSON_AddItemToArray(a, o);
		}
		char *txt = a ? cJSON_PrintUnformatted(a) : NULL;
		printf("%s\n", txt ? txt : "[]");
		cJSON_free(txt);
		cJSON_Delete(a);
	} else {
		for (size_t i = 0; i < n; i++)
			printf("%s  %-10s  %s  %s  %s\n", v[i].id, v[i].kind, v[i].created,
			       v[i].host, v[i].label);
	}
	if (fflush(stdout) != 0)
		rc = dp_error_errno(DP_ERROR, errno, "cannot write the listing");
out:
	free(v);
	dp_repo_free(repo);
	return rc == DP_CLI_HELP ? 0 : rc;
}

int dp_worker_key_rm(int argc, char **argv)
{
	dp_cli c = {0};
	dp_repo *repo = NULL;
	const dp_cli_cmd cmd = {
	    .prog = "dp-worker key-rm",
	    .synopsis = "[OPTIONS] ID...",
	    .about = "Removes key slots (full id or a unique prefix of at least 8 hex\n"
	             "digits): their keys no longer open the repository. The last\n"
	             "passphrase key cannot be removed. Revoking does not change the\n"
	             "master keys: data a key holder could read before stays readable to\n"
	             "whoever kept a copy of them.\n",
	    .examples = "dp-worker key-rm --repo /srv/backups 3f9c2a1b",
	    .flags = DP_CLI_REPO_FLAGS,
	    .min_args = 1,
	    .max_args = -1,
	};
	int rc = dp_cli_parse(&c, &cmd, argc, argv);
	if (rc)
		goto out;
	if ((rc = dp_worker_open_repo(&repo, &c)))
		goto out;
	for (int i = 0; i < c.nargs && !rc; i++)
		rc = dp_keyslot_remove(repo, c.args[i]);
out:
	dp_repo_free(repo);
	return rc == DP_CLI_HELP ? 0 : rc;
}
