/*
 * dp's resource kinds and manifests: parsing YAML or JSON documents and
 * validating their fields (apiVersion dataprotection.dp.io/v1alpha1).
 *
 * A manifest is the set of documents read from one input: YAML (several
 * documents separated by `---`), JSON (one object, several concatenated
 * objects, or an array of them), or a `kind: List` with `items`. Each document
 * is {apiVersion, kind, metadata: {name, labels, annotations}, spec}; a
 * `status` is ignored (so `dp get -o yaml` output can be applied again), and
 * so are the read-only metadata fields dp adds (generation, resourceVersion,
 * creationTimestamp, updateTimestamp, uid).
 *
 * dp_manifest_validate checks each document on its own: unknown fields, types,
 * required fields, enums, ranges, durations, cron expressions, timestamps, and
 * that no secret is given inline (passwords, passphrases and keys are
 * `{env: NAME}` or `{file: PATH}` references). It fills defaults in and turns
 * each spec into canonical JSON text (object keys sorted), so two specs with
 * the same meaning have the same text. References between objects (a policy
 * naming a repo) are checked by dp_catalog_apply, which sees the catalog.
 * Messages name the document, the field path and the problem:
 *   backupschedule "nightly": spec.schedules[0].cronExpression: "61 * * * *":
 *   minute out of range
 *
 * A dp_manifest is used by one thread at a time; it owns all the strings its
 * getters return.
 */
#ifndef DP_RESOURCE_H
#define DP_RESOURCE_H

#include <stddef.h>

#define DP_API_VERSION "dataprotection.dp.io/v1alpha1"
#define DP_NAME_MAX 253

/* Labels dp reads. On an ActionSet: the engine it serves, and the method
 * name it provides by default to policies of that engine that list no
 * backupMethods (without it: full, incremental or wal from its backupType).
 * builtin: set by dp on the ActionSets it loads from methods/. */
#define DP_LABEL_ENGINE "dataprotection.dp.io/engine"
#define DP_LABEL_METHOD "dataprotection.dp.io/method"
#define DP_LABEL_BUILTIN "dataprotection.dp.io/builtin"
/* Annotation on a built-in ActionSet: the canonical path of its engine
 * directory under methods/ (its commands run there). */
#define DP_ANNOT_METHOD_DIR "dataprotection.dp.io/method-dir"

typedef enum dp_kind {
	DP_KIND_BACKUP_REPO,
	DP_KIND_ACTION_SET,
	DP_KIND_BACKUP_POLICY,
	DP_KIND_BACKUP_SCHEDULE,
	DP_KIND_BACKUP,
	DP_KIND_RESTORE,
	DP_KIND_COUNT
} dp_kind;

/* "BackupRepo", "ActionSet", ... */
const char *dp_kind_name(dp_kind k);
/* "backuprepo", "actionset", ...: the form used in messages and CLI output. */
const char *dp_kind_lower(dp_kind k);
/* Case-insensitive; singular, plural and short forms like kubectl:
 * backuprepo(s)/repo(s)/br, actionset(s)/as, backuppolicy/backuppolicies/
 * policy/policies/bp, backupschedule(s)/schedule(s)/bs, backup(s)/bk,
 * restore(s)/rs. DP_EUSAGE for anything else. */
int dp_kind_parse(dp_kind *out, const char *text);

/* A resource name: 1..253 characters of [a-z0-9.-], starting and ending
 * with a letter or digit. 0 or DP_EUSAGE (message: what is wrong). */
int dp_name_check(const char *name);

typedef struct dp_manifest dp_manifest;

/* Parses text (YAML or JSON). source names the input in messages (a path,
 * or "-" for stdin). DP_EUSAGE with "SOURCE:LINE:COL: ..." on syntax errors,
 * and for a document that is not an object. An input with no document is an
 * error. */
int dp_manifest_parse(dp_manifest **out, const char *text, size_t len, const char *source);
/* Reads path ("-": stdin, at most 16 MiB) and parses it. */
int dp_manifest_load(dp_manifest **out, const char *path);
void dp_manifest_free(dp_manifest *m);

/* Validates every document (see above); stops at the first problem. Also
 * rejects two documents with the same kind and name. */
int dp_manifest_validate(dp_manifest *m);

size_t dp_manifest_count(const dp_manifest *m);
/* Valid after dp_manifest_validate succeeded: */
dp_kind dp_manifest_kind(const dp_manifest *m, size_t i);
const char *dp_manifest_name(const dp_manifest *m, size_t i);
/* Canonical JSON of the spec (defaults filled in), and of the metadata dp
 * keeps besides the name: {"labels": {...}, "annotations": {...}}, each
 * present only if given ("{}" if neither). */
const char *dp_manifest_spec(const dp_manifest *m, size_t i);
const char *dp_manifest_meta(const dp_manifest *m, size_t i);

#endif
