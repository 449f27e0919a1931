/*
 * Private to catalog/: the inside of a dp_manifest and the cJSON helpers the
 * catalog shares between files. cJSON never appears in include/dp/.
 */
#ifndef DP_CATALOG_MANIFEST_INT_H
#define DP_CATALOG_MANIFEST_INT_H

#include <cjson/cJSON.h>
#include <stdbool.h>

#include "dp/buf.h"
#include "dp/resource.h"

struct dp_doc {
	cJSON *root; /* the whole document; owned */
	int index; /* 1-based position in the input */
	int line; /* first line in the input (0 if unknown) */
	dp_kind kind; /* valid after validation */
	char *name; /* owned, after validation */
	char *spec; /* canonical JSON text, owned, after validation */
	char *meta; /* canonical JSON text, owned, after validation */
	cJSON *spec_tree; /* borrowed from root, after validation */
};

struct dp_manifest {
	struct dp_doc *docs;
	size_t n, cap;
	char *source;
	bool validated;
};

/* Where references are looked up outside the manifest (the catalog).
 * get: 0 and the spec (owned by the caller) if found, DP_ENOTFOUND if not,
 * or another code with the message set. actionsets: every ActionSet as an
 * array (owned by the caller) of {"name", "labels": {...}, "backupType"}.
 * Either may be NULL (nothing outside the manifest). */
typedef int (*dp_ref_lookup_fn)(void *arg, dp_kind kind, const char *name, cJSON **spec_out);
typedef int (*dp_ref_actionsets_fn)(void *arg, cJSON **out);
struct dp_ref_source {
	dp_ref_lookup_fn get;
	dp_ref_actionsets_fn actionsets;
	void *arg;
};

/* Checks every reference of every (validated) document against the other
 * documents of the manifest first, then src. */
int dp_manifest_check_refs(dp_manifest *m, const struct dp_ref_source *src);

/* The methods a policy offers: its backupMethods if it lists any, else its
 * engine's defaults: one per ActionSet labelled with the engine (in name
 * order; the first of a method name wins), named by its method label or by
 * its backupType (Full: full, Incremental: incremental, Continuous: wal).
 * Returns a new array of {"name", "actionSetName"}, NULL if out of memory. */
cJSON *dp_policy_methods(const cJSON *policy_spec, const cJSON *actionsets);

/* Refuses a change of an immutable field between the stored spec and a new
 * one (Backup: policy, method, parent; Restore: all of it). */
int dp_resource_check_update(dp_kind kind, const char *name, const cJSON *old_spec,
                             const cJSON *new_spec);

/* Sorts object keys recursively, so that printing is canonical. */
void dp_json_sort(cJSON *v);
/* Appends v as block-style YAML at the given indent (spaces). */
int dp_json_to_yaml(dp_buf *out, const cJSON *v, int indent);
/* Duplicates a string (NULL on out of memory). */
char *dp_strdup(const char *s);

#endif
