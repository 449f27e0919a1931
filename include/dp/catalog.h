/*
 * The catalog: dp's record of every resource (BackupRepo, ActionSet,
 * BackupPolicy, BackupSchedule, Backup, Restore), an event log per resource
 * and an audit log of every change, in one sqlite3 database.
 *
 * Where: $DP_HOME/catalog.db; $DP_HOME defaults to ~/.local/share/dp and is
 * created 0700 (dp_home). The database runs in WAL mode with a 5 s busy
 * timeout, so several processes (dp, dp-controller) can share it; every
 * change is one IMMEDIATE transaction. The schema carries a version
 * (PRAGMA user_version) and is brought forward, step by step, by a table of
 * migrations when opened; a catalog newer than this build is refused.
 *
 * Records: each resource has its spec (canonical JSON written by apply),
 * status (JSON written by the controller, "{}" at first), metadata (labels
 * and annotations), a generation (bumped when the spec changes), a
 * resourceVersion (a counter over the whole catalog, bumped by every change
 * of any resource, so a watcher can ask "what changed after N") and
 * created/updated times (unix seconds, UTC).
 *
 * Audit: every create, update, delete, and every status change that moves
 * the phase, is a row: who (the actor: an API token name, or the local user
 * from getpwuid), what, when. Events: kubectl-like (type Normal/Warning,
 * reason, message) per resource, shown by `dp describe`; they go with the
 * resource when it is deleted, the audit rows stay.
 *
 * Thread safety: a dp_catalog (one sqlite connection) is used by one thread
 * at a time; open one per thread. Results are owned by the caller.
 */
#ifndef DP_CATALOG_H
#define DP_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dp/buf.h"
#include "dp/resource.h"

#define DP_CATALOG_SCHEMA_VERSION 3

/* $DP_HOME, else $HOME/.local/share/dp (HOME from getpwuid if unset);
 * created (with parents) mode 0700 if missing. */
int dp_home(char *out, size_t outlen);

typedef struct dp_catalog dp_catalog;

/* Opens (creating if needed) the catalog at path; NULL: $DP_HOME/catalog.db.
 * Runs pending migrations. */
int dp_catalog_open(dp_catalog **out, const char *path);
void dp_catalog_close(dp_catalog *c);
int dp_catalog_schema_version(dp_catalog *c);
/* Who the audit log names for changes made through c; default: the local
 * user name. Copied. */
void dp_catalog_set_actor(dp_catalog *c, const char *actor);
const char *dp_catalog_actor(const dp_catalog *c);

typedef struct dp_resource {
	dp_kind kind;
	char name[DP_NAME_MAX + 1];
	char *spec; /* JSON object text, owned */
	char *status; /* JSON object text, "{}" if none, owned */
	char *meta; /* {"labels":{...},"annotations":{...}}, owned */
	int64_t generation, resource_version;
	int64_t created, updated; /* unix seconds */
} dp_resource;

void dp_resource_clear(dp_resource *r); /* frees the strings */
void dp_resources_free(dp_resource *v, size_t n);

typedef enum dp_apply_action {
	DP_APPLY_CREATED,
	DP_APPLY_CONFIGURED, /* spec or labels changed */
	DP_APPLY_UNCHANGED
} dp_apply_action;

/* Validates m (fields, then references against m itself and the catalog,
 * then immutable fields of existing objects) and stores every document, in
 * one transaction: all or nothing. actions (may be NULL) receives one entry
 * per document, in order. With dry_run nothing is stored. */
int dp_catalog_apply(dp_catalog *c, dp_manifest *m, bool dry_run, dp_apply_action *actions);

/* DP_ENOTFOUND ("backup \"x\" not found") if missing. */
int dp_catalog_get(dp_catalog *c, dp_kind kind, const char *name, dp_resource *out);
/* All resources of a kind, by name. */
int dp_catalog_list(dp_catalog *c, dp_kind kind, dp_resource **out, size_t *n);

/* Deletes the record, as `dp delete` does: refused (DP_EUSAGE, naming the
 * user) while another resource refers to it (a policy to its repo or
 * ActionSets, a schedule or backup to its policy, an incremental to its
 * parent); a Backup only while it has no data (phase empty or New), since
 * removing data is the controller's job; a Restore not while Running. */
int dp_catalog_delete(dp_catalog *c, dp_kind kind, const char *name);
/* Deletes the record without those checks (the controller, after it has
 * removed a backup's data). Audited. */
int dp_catalog_remove(dp_catalog *c, dp_kind kind, const char *name);

/* The methods a policy offers, as JSON text appended to out: an array of
 * {"name", "actionSetName", ...}: its backupMethods if it lists any, else
 * the defaults of its engine: one per ActionSet labelled
 * DP_LABEL_ENGINE=<engine>, named by its DP_LABEL_METHOD label or by its
 * backupType (Full: full, Incremental: incremental, Continuous: wal); the
 * first by ActionSet name wins. Validation of backups and schedules uses the
 * same rule. */
int dp_catalog_policy_methods(dp_catalog *c, const char *policy, dp_buf *out);

/* Replaces the status (a JSON object). expect_rv: the resourceVersion the
 * caller read, or 0 for any; a mismatch is DP_ETRANSIENT (read again and
 * retry). A change of status.phase is audited. new_rv may be NULL. */
int dp_catalog_set_status(dp_catalog *c, dp_kind kind, const char *name, const char *status_json,
                          int64_t expect_rv, int64_t *new_rv);

typedef struct dp_event {
	int64_t id, time;
	char type[16]; /* Normal, Warning */
	char reason[64]; /* Created, Updated, BackupFailed, ... */
	char *message; /* owned */
} dp_event;

int dp_catalog_event(dp_catalog *c, dp_kind kind, const char *name, const char *type,
                     const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* Oldest first. */
int dp_catalog_events(dp_catalog *c, dp_kind kind, const char *name, dp_event **out, size_t *n);
void dp_events_free(dp_event *v, size_t n);

typedef struct dp_audit_entry {
	int64_t id, time, generation;
	char *actor, *action, *kind, *name, *detail; /* owned; action: create, update,
	                                                 delete, status */
} dp_audit_entry;

/* Entries with id > since_id, oldest first, at most limit (0: all). */
int dp_catalog_audit(dp_catalog *c, int64_t since_id, size_t limit, dp_audit_entry **out,
                     size_t *n);
void dp_audit_free(dp_audit_entry *v, size_t n);

/* The change feed, for watchers (`?watch=1`, the controller's loop): one
 * entry per resourceVersion handed out, oldest first, with rv > since_rv,
 * at most limit (0: all). op: create, update (spec or labels), status,
 * delete. Read the object itself for its current state. */
typedef struct dp_change {
	int64_t resource_version, time;
	dp_kind kind;
	char name[DP_NAME_MAX + 1];
	char op[8];
} dp_change;

int dp_catalog_changes(dp_catalog *c, int64_t since_rv, size_t limit, dp_change **out, size_t *n);
/* The last resourceVersion handed out (0 for an empty catalog). */
int dp_catalog_version(dp_catalog *c, int64_t *out);

/* ---- built-in ActionSets (catalog/builtin.c) ---- */

/* The methods directory: $DP_METHODS_DIR, else ../methods or
 * ../share/dp/methods next to the program, else /usr/share/dp/methods.
 * DP_ENOTFOUND if none exists. */
int dp_methods_dir(char *out, size_t outlen);
/* Applies every dir/<engine>/NAME.yaml, .yml or .json (ActionSets only) as
 * actor "builtin", labelled DP_LABEL_BUILTIN=true and annotated
 * DP_ANNOT_METHOD_DIR=<realpath of dir/<engine>>, each file all or nothing. A file that
 * fails is logged (dp_warn) and counted in *failed; the others load.
 * *loaded counts the documents applied (created, updated or unchanged).
 * Fails only if dir cannot be read. */
int dp_catalog_load_builtins(dp_catalog *c, const char *dir, size_t *loaded, size_t *failed);

/* ---- output (catalog/render.c) ---- */

/* Label selectors, as kubectl's -l: "k=v", "k!=v", "k" (has the label),
 * "!k" (has not), several joined by ","; all must hold. *out: whether r
 * matches. DP_EUSAGE for a malformed selector. */
int dp_resource_match_labels(const dp_resource *r, const char *selector, bool *out);

/* The full object {apiVersion, kind, metadata, spec, status} as JSON (pretty
 * or one line) or YAML; what `dp get -o json|yaml` prints, and what `dp
 * apply` accepts back. A list is {"kind": "List", "items": [...]}. */
int dp_resource_json(dp_buf *out, const dp_resource *r, bool pretty);
int dp_resource_yaml(dp_buf *out, const dp_resource *r);
int dp_resource_list_json(dp_buf *out, const dp_resource *v, size_t n, bool pretty);
int dp_resource_list_yaml(dp_buf *out, const dp_resource *v, size_t n);

/* A kubectl-like table of resources of one kind (header line included).
 * Backups: NAME POLICY METHOD STATUS TOTAL-SIZE STORED DURATION CREATED
 * EXPIRES (wide: + REPO DELETION-POLICY COMPLETED PARENT). The status fields
 * read are status.phase, totalSize and storedSize (bytes, number or numeric
 * string), duration (seconds or a string), startTimestamp,
 * completionTimestamp, expiration (RFC 3339), backupRepoName. */
int dp_resource_table(dp_buf *out, dp_kind kind, const dp_resource *v, size_t n, bool wide);

/* `dp describe`: name, times, spec and status as YAML, then the events. */
int dp_resource_describe(dp_buf *out, const dp_resource *r, const dp_event *ev, size_t nev);

#endif
