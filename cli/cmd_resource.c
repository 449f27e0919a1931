/*
 * dp apply / get / describe / delete: resources in the local catalog
 * ($DP_HOME/catalog.db). Each command parses its arguments, opens the
 * catalog, does one thing and prints the result on stdout; errors go back
 * to main as DP_E* codes with the message set. Single-threaded.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "dp/catalog.h"
#include "dp/error.h"
#include "dp/log.h"
#include "dp/resource.h"

static const char kinds_help[] =
    "kinds (any case; singular, plural or short):\n"
    "  backuprepo (repo, br)   actionset (as)   backuppolicy (policy, bp)\n"
    "  backupschedule (schedule, bs)   backup (bk)   restore (rs)\n";

static bool is_help(const char *a)
{
	return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0;
}

static int write_buf(const dp_buf *b)
{
	if (b->len && fwrite(b->data, 1, b->len, stdout) != b->len)
		return dp_error_set(DP_ERROR, "cannot write to stdout");
	return fflush(stdout) == 0 ? 0 : dp_error_set(DP_ERROR, "cannot write to stdout");
}

/* Opens the catalog in $DP_HOME and loads the built-in ActionSets from the
 * methods directory (problems there are warnings: they do not stop the
 * command). */
static int open_catalog(dp_catalog **out)
{
	char dir[4096];
	size_t loaded, failed;
	int rc = dp_catalog_open(out, NULL);
	if (rc)
		return rc;
	if (dp_methods_dir(dir, sizeof(dir)) == 0)
		dp_catalog_load_builtins(*out, dir, &loaded, &failed);
	else if (getenv("DP_METHODS_DIR"))
		dp_warn("%s", dp_error_last());
	dp_error_clear();
	return 0;
}

/* ---- apply ---- */

static void apply_usage(FILE *f)
{
	fprintf(f, "usage: dp apply -f FILE|- [--dry-run]\n\n"
	           "Creates or updates the resources described in FILE (YAML, several documents\n"
	           "separated by ---, or JSON; - reads stdin) in the catalog in $DP_HOME.\n"
	           "Every document is validated first, including references between objects\n"
	           "(in the catalog or in the same file); if any is wrong nothing is stored.\n\n"
	           "  -f, --filename FILE   the manifest to apply\n"
	           "  --dry-run             validate and report, store nothing\n");
}

int dp_cli_apply(int argc, char **argv)
{
	const char *file = NULL;
	bool dry = false;
	dp_manifest *m = NULL;
	dp_catalog *c = NULL;
	dp_apply_action *actions = NULL;
	int rc = 0;
	for (int i = 1; i < argc; i++) {
		if (is_help(argv[i])) {
			apply_usage(stdout);
			return 0;
		} else if ((strcmp(argv[i], "-f") == 0 || strcmp(argv[i], "--filename") == 0) &&
		           i + 1 < argc) {
			if (file)
				return dp_error_set(DP_EUSAGE, "give -f once");
			file = argv[++i];
		} else if (strncmp(argv[i], "--filename=", 11) == 0) {
			file = argv[i] + 11;
		} else if (strcmp(argv[i], "--dry-run") == 0) {
			dry = true;
		} else {
			apply_usage(stderr);
			return dp_error_set(DP_EUSAGE, "unexpected argument \"%s\"", argv[i]);
		}
	}
	if (!file) {
		apply_usage(stderr);
		return dp_error_set(DP_EUSAGE, "-f FILE is required");
	}
	if ((rc = dp_manifest_load(&m, file)) || (rc = dp_manifest_validate(m)))
		goto out;
	size_t n = dp_manifest_count(m);
	if (!(actions = calloc(n, sizeof(*actions)))) {
		rc = dp_error_set(DP_ERROR, "out of memory");
		goto out;
	}
	if ((rc = open_catalog(&c)) || (rc = dp_catalog_apply(c, m, dry, actions)))
		goto out;
	static const char *words[] = {"created", "configured", "unchanged"};
	for (size_t i = 0; i < n; i++)
		printf("%s/%s %s%s\n", dp_kind_lower(dp_manifest_kind(m, i)),
		       dp_manifest_name(m, i), words[actions[i]], dry ? " (dry run)" : "");
out:
	free(actions);
	dp_catalog_close(c);
	dp_manifest_free(m);
	return rc;
}

/* ---- get ---- */

static void get_usage(FILE *f)
{
	fprintf(f,
	        "usage: dp get KIND [NAME] [-o table|wide|json|yaml] [-l SELECTOR]\n\n"
	        "Lists the resources of KIND, or shows one. -o json and -o yaml print whole\n"
	        "objects (spec and status) in a form dp apply accepts back; a list is a\n"
	        "List with items. -l keeps the resources whose labels match: key=value,\n"
	        "key!=value, key (has it), !key (has not), several joined by commas.\n\n%s",
	        kinds_help);
}

int dp_cli_get(int argc, char **argv)
{
	const char *kind_arg = NULL, *name = NULL, *fmt = "table", *selector = NULL;
	dp_catalog *c = NULL;
	dp_resource one = {0}, *list = NULL;
	size_t n = 0;
	dp_buf out = {0};
	dp_kind kind;
	int rc = 0;
	for (int i = 1; i < argc; i++) {
		if (is_help(argv[i])) {
			get_usage(stdout);
			return 0;
		} else if ((strcmp(argv[i], "-o") == 0 || strcmp(argv[i], "--output") == 0) &&
		           i + 1 < argc) {
			fmt = argv[++i];
		} else if (strncmp(argv[i], "-o", 2) == 0 && argv[i][2]) {
			fmt = argv[i] + 2 + (argv[i][2] == '=');
		} else if (strncmp(argv[i], "--output=", 9) == 0) {
			fmt = argv[i] + 9;
		} else if ((strcmp(argv[i], "-l") == 0 || strcmp(argv[i], "--selector") == 0) &&
		           i + 1 < argc) {
			selector = argv[++i];
		} else if (strncmp(argv[i], "--selector=", 11) == 0) {
			selector = argv[i] + 11;
		} else if (argv[i][0] == '-') {
			get_usage(stderr);
			return dp_error_set(DP_EUSAGE, "unknown option \"%s\"", argv[i]);
		} else if (!kind_arg) {
			kind_arg = argv[i];
		} else if (!name) {
			name = argv[i];
		} else {
			get_usage(stderr);
			return dp_error_set(DP_EUSAGE, "unexpected argument \"%s\"", argv[i]);
		}
	}
	if (!kind_arg) {
		get_usage(stderr);
		return dp_error_set(DP_EUSAGE, "KIND is required");
	}
	if (strcmp(fmt, "table") && strcmp(fmt, "wide") && strcmp(fmt, "json") &&
	    strcmp(fmt, "yaml"))
		return dp_error_set(DP_EUSAGE, "-o \"%s\": use table, wide, json or yaml", fmt);
	if (name && selector)
		return dp_error_set(DP_EUSAGE, "give NAME or -l, not both");
	if ((rc = dp_kind_parse(&kind, kind_arg)) || (rc = open_catalog(&c)))
		goto out;
	if (name) {
		if ((rc = dp_catalog_get(c, kind, name, &one)))
			goto out;
		if (strcmp(fmt, "json") == 0)
			rc = dp_resource_json(&out, &one, true);
		else if (strcmp(fmt, "yaml") == 0)
			rc = dp_resource_yaml(&out, &one);
		else
			rc = dp_resource_table(&out, kind, &one, 1, strcmp(fmt, "wide") == 0);
	} else {
		if ((rc = dp_catalog_list(c, kind, &list, &n)))
			goto out;
		size_t kept = 0;
		for (size_t i = 0; selector && i < n; i++) {
			bool match;
			if ((rc = dp_resource_match_labels(&list[i], selector, &match)))
				goto out;
			if (match) {
				dp_resource tmp = list[kept];
				list[kept++] = list[i];
				list[i] = tmp;
			}
		}
		if (selector) {
			for (size_t i = kept; i < n; i++)
				dp_resource_clear(&list[i]);
			n = kept;
		}
		bool table = strcmp(fmt, "table") == 0 || strcmp(fmt, "wide") == 0;
		if (n == 0 && table) {
			fprintf(stderr, "No resources found.\n");
			goto out;
		}
		if (strcmp(fmt, "json") == 0)
			rc = dp_resource_list_json(&out, list, n, true);
		else if (strcmp(fmt, "yaml") == 0)
			rc = dp_resource_list_yaml(&out, list, n);
		else
			rc = dp_resource_table(&out, kind, list, n, strcmp(fmt, "wide") == 0);
	}
	if (!rc)
		rc = write_buf(&out);
out:
	dp_buf_free(&out);
	dp_resource_clear(&one);
	dp_resources_free(list, n);
	dp_catalog_close(c);
	return rc;
}

/* ---- describe ---- */

static void describe_usage(FILE *f)
{
	fprintf(f,
	        "usage: dp describe KIND NAME\n\n"
	        "Shows one resource: its metadata, spec, status and events.\n\n%s",
	        kinds_help);
}

int dp_cli_describe(int argc, char **argv)
{
	dp_catalog *c = NULL;
	dp_resource r = {0};
	dp_event *ev = NULL;
	size_t nev = 0;
	dp_buf out = {0};
	dp_kind kind;
	int rc;
	for (int i = 1; i < argc; i++)
		if (is_help(argv[i])) {
			describe_usage(stdout);
			return 0;
		}
	if (argc != 3) {
		describe_usage(stderr);
		return dp_error_set(DP_EUSAGE, "give KIND and NAME");
	}
	if ((rc = dp_kind_parse(&kind, argv[1])) || (rc = open_catalog(&c)) ||
	    (rc = dp_catalog_get(c, kind, argv[2], &r)) ||
	    (rc = dp_catalog_events(c, kind, argv[2], &ev, &nev)) ||
	    (rc = dp_resource_describe(&out, &r, ev, nev)))
		goto out;
	rc = write_buf(&out);
out:
	dp_buf_free(&out);
	dp_events_free(ev, nev);
	dp_resource_clear(&r);
	dp_catalog_close(c);
	return rc;
}

/* ---- delete ---- */

static void delete_usage(FILE *f)
{
	fprintf(f,
	        "usage: dp delete KIND NAME...\n\n"
	        "Deletes resources from the catalog. Refused while another resource refers\n"
	        "to one (a policy to its repo, a schedule or backup to its policy, an\n"
	        "incremental backup to its parent). A Backup that has data (phase other\n"
	        "than New) is deleted with 'dp backup delete NAME', which also removes its\n"
	        "data and honours its deletionPolicy; here it is refused.\n\n%s",
	        kinds_help);
}

int dp_cli_delete(int argc, char **argv)
{
	dp_catalog *c = NULL;
	dp_kind kind;
	int rc;
	for (int i = 1; i < argc; i++)
		if (is_help(argv[i])) {
			delete_usage(stdout);
			return 0;
		}
	if (argc < 3) {
		delete_usage(stderr);
		return dp_error_set(DP_EUSAGE, "give KIND and NAME");
	}
	for (int i = 1; i < argc; i++)
		if (argv[i][0] == '-') {
			delete_usage(stderr);
			return dp_error_set(DP_EUSAGE, "unknown option \"%s\"", argv[i]);
		}
	if ((rc = dp_kind_parse(&kind, argv[1])) || (rc = open_catalog(&c)))
		goto out;
	for (int i = 2; i < argc; i++) {
		if ((rc = dp_catalog_delete(c, kind, argv[i])))
			goto out;
		printf("%s \"%s\" deleted\n", dp_kind_lower(kind), argv[i]);
	}
out:
	dp_catalog_close(c);
	return rc;
}
