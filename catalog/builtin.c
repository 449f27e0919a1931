/*
 * Built-in ActionSets: every engine directory under methods/ holds ActionSet
 * manifests (methods/<engine>/NAME.yaml, .yml or .json) and the scripts they
 * run. dp and dp-controller load them into the catalog when they start, as
 * actor "builtin", with the label DP_LABEL_BUILTIN=true and the annotation
 * DP_ANNOT_METHOD_DIR=<the engine directory, canonical path> (commands run
 * there), so policies can name them (or get them as their engine's
 * defaults). Loading is idempotent:
 * an unchanged ActionSet is left alone. Each file is applied on its own; a
 * broken file is reported and skipped, the others still load.
 * Single-threaded, like the dp_catalog it is given.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dp/catalog.h"
#include "dp/error.h"
#include "dp/log.h"
#include "manifest_int.h"

static bool is_dir(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int dp_methods_dir(char *out, size_t outlen)
{
	const char *env = getenv("DP_METHODS_DIR");
	if (env && *env) {
		snprintf(out, outlen, "%s", env);
		if (!is_dir(out))
			return dp_error_set(DP_ENOTFOUND,
			                    "DP_METHODS_DIR \"%s\" is not a directory", env);
		return 0;
	}
	/* Next to the program: <prefix>/bin/dp -> <prefix>/methods (the source
	 * tree) or <prefix>/share/dp/methods (an install). */
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = 0;
		char *slash = strrchr(exe, '/');
		if (slash) {
			*slash = 0;
			const char *rel[] = {"../methods", "../share/dp/methods"};
			for (int i = 0; i < 2; i++) {
				snprintf(out, outlen, "%s/%s", exe, rel[i]);
				if (is_dir(out))
					return 0;
			}
		}
	}
	snprintf(out, outlen, "/usr/share/dp/methods");
	if (is_dir(out))
		return 0;
	out[0] = 0;
	return dp_error_set(DP_ENOTFOUND, "no methods directory found (set DP_METHODS_DIR)");
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names in dir passing keep(); *out owned by the caller. */
static int list_dir(const char *dir, bool (*keep)(const char *dir, const char *name), char ***out,
                    size_t *n)
{
	DIR *d = opendir(dir);
	char **v = NULL;
	size_t len = 0, cap = 0;
	*out = NULL;
	*n = 0;
	if (!d)
		return dp_error_errno(DP_ERROR, errno, "cannot read \"%s\"", dir);
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.' || !keep(dir, e->d_name))
			continue;
		if (len == cap) {
			cap = cap ? cap * 2 : 16;
			char **nv = realloc(v, cap * sizeof(*v));
			if (!nv)
				break;
			v = nv;
		}
		if (!(v[len] = dp_strdup(e->d_name)))
			break;
		len++;
	}
	closedir(d);
	if (len)
		qsort(v, len, sizeof(*v), cmp_str);
	*out = v;
	*n = len;
	return 0;
}

static void free_list(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static bool keep_dir(const char *dir, const char *name)
{
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	return is_dir(p);
}

static bool keep_manifest(const char *dir, const char *name)
{
	size_t n = strlen(name);
	(void)dir;
	return (n > 5 && strcmp(name + n - 5, ".yaml") == 0) ||
	       (n > 4 && strcmp(name + n - 4, ".yml") == 0) ||
	       (n > 5 && strcmp(name + n - 5, ".json") == 0);
}

/* Only ActionSets, each labelled builtin. */
static int mark_builtin(dp_manifest *m, const char *engine_dir)
{
	for (size_t i = 0; i < m->n; i++) {
		cJSON *root = m->docs[i].root;
		const cJSON *kind = cJSON_GetObjectItemCaseSensitive(root, "kind");
		if (!cJSON_IsString(kind) || strcmp(kind->valuestring, "ActionSet") != 0)
			return dp_error_set(DP_EUSAGE,
			                    "document %d is not an ActionSet: a methods directory "
			                    "holds only ActionSets",
			                    m->docs[i].index);
		cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "metadata");
		if (!cJSON_IsObject(meta))
			continue; /* validation names the problem */
		cJSON *labels = cJSON_GetObjectItemCaseSensitive(meta, "labels");
		if (!labels)
			labels = cJSON_AddObjectToObject(meta, "labels");
		if (!cJSON_IsObject(labels))
			continue;
		cJSON_DeleteItemFromObjectCaseSensitive(labels, DP_LABEL_BUILTIN);
		if (!cJSON_AddStringToObject(labels, DP_LABEL_BUILTIN, "true"))
			return dp_error_set(DP_ERROR, "out of memory");
		cJSON *annotations = cJSON_GetObjectItemCaseSensitive(meta, "annotations");
		if (!annotations)
			annotations = cJSON_AddObjectToObject(meta, "annotations");
		if (!cJSON_IsObject(annotations))
			continue;
		cJSON_DeleteItemFromObjectCaseSensitive(annotations, DP_ANNOT_METHOD_DIR);
		if (!cJSON_AddStringToObject(annotations, DP_ANNOT_METHOD_DIR, engine_dir))
			return dp_error_set(DP_ERROR, "out of memory");
	}
	return 0;
}

int dp_catalog_load_builtins(dp_catalog *c, const char *dir, size_t *loaded, size_t *failed)
{
	char **engines = NULL;
	size_t ne = 0;
	int rc = list_dir(dir, keep_dir, &engines, &ne);
	*loaded = *failed = 0;
	if (rc)
		return rc;
	char actor[128];
	snprintf(actor, sizeof(actor), "%s", dp_catalog_actor(c));
	dp_catalog_set_actor(c, "builtin");
	for (size_t i = 0; i < ne; i++) {
		char edir[PATH_MAX];
		char **files = NULL;
		size_t nf = 0;
		char joined[PATH_MAX + 256];
		snprintf(joined, sizeof(joined), "%s/%s", dir, engines[i]);
		/* The canonical path, so every loader writes the same annotation. */
		if (!realpath(joined, edir))
			snprintf(edir, sizeof(edir), "%s", joined);
		if (list_dir(edir, keep_manifest, &files, &nf)) {
			dp_warn("built-in methods: %s", dp_error_last());
			(*failed)++;
			continue;
		}
		for (size_t j = 0; j < nf; j++) {
			char path[PATH_MAX];
			dp_manifest *m = NULL;
			snprintf(path, sizeof(path), "%s/%s", edir, files[j]);
			int frc = dp_manifest_load(&m, path);
			if (!frc)
				frc = mark_builtin(m, edir);
			if (!frc)
				frc = dp_manifest_validate(m);
			if (!frc)
				frc = dp_catalog_apply(c, m, false, NULL);
			if (frc) {
				dp_warn("built-in methods: \"%s\" skipped: %s", path,
				        dp_error_last());
				(*failed)++;
			} else {
				*loaded += m->n;
			}
			dp_manifest_free(m);
		}
		free_list(files, nf);
	}
	free_list(engines, ne);
	dp_catalog_set_actor(c, actor);
	dp_error_clear();
	return 0;
}
