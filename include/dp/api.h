/*
 * dp's REST API: the resources of the catalog over HTTP/JSON, served by
 * dp-controller (libmicrohttpd, one thread per connection, 127.0.0.1:8780
 * by default).
 *
 *   GET    /healthz                                  no auth; 200 {"status":"ok"}
 *   GET    /api/v1alpha1                             the kinds served
 *   POST   /api/v1alpha1                             apply a manifest (any number of
 *                                                    documents, all or nothing)
 *   GET    /api/v1alpha1/<kind>                      list (a List, like dp get -o json;
 *                                                    ?labelSelector= as dp get -l)
 *   GET    /api/v1alpha1/<kind>/<name>               one object
 *   PUT    /api/v1alpha1/<kind>/<name>               create or update it from a JSON
 *                                                    or YAML body (one document)
 *   DELETE /api/v1alpha1/<kind>/<name>               as `dp delete`
 *   GET    /api/v1alpha1/<kind>/<name>/events        its events, oldest first
 *   GET    ...?watch=1                               server-sent events of changes
 *                                                    (all kinds, a kind, or one object)
 *
 * <kind> is any spelling dp_kind_parse accepts (backuprepos, actionsets,
 * backuppolicies, backupschedules, backups, restores, singular, short).
 * Every request but /healthz carries `Authorization: Bearer TOKEN`, the token
 * in $DP_HOME/api-token (dp_api_token); a GET may give it as
 * ?access_token=TOKEN instead (browsers' EventSource cannot send headers; the
 * query is never logged); changes made through the API are
 * audited as actor "api". PUT and POST validate exactly like `dp apply`
 * (same messages; with ?source=NAME the input is named NAME in them, as
 * `dp apply -f NAME` would); nothing is stored on error. Errors are JSON
 * {"error": "message", "code": HTTP status}: 400 bad input, 401 no or wrong
 * token, 404 unknown kind/object/path, 405 wrong method (with Allow), 409 a
 * delete refused by the rules, 413 a body over max_body, 500 anything else.
 *
 * Watches: each change of the catalog (dp_catalog_changes: create, update,
 * status, delete) is one SSE event, `id: <resourceVersion>` and `data:` one
 * line of JSON {"type", "resourceVersion", "kind", "name", "object"} (the
 * object as read when the event is sent, absent once deleted). A watch
 * starts after the current resourceVersion, or after the one given by
 * ?resourceVersion=N or a Last-Event-ID header (resuming replays what was
 * missed: the feed is never rewritten). Comment lines (": heartbeat") are
 * sent every heartbeat_ms when nothing changes. List responses carry
 * metadata.resourceVersion, so list-then-watch misses nothing.
 *
 * Thread safety: dp_api_start and dp_api_stop are called by one thread;
 * the server runs on its own threads, each request with its own catalog
 * connection, so the caller's connections are never shared.
 */
#ifndef DP_API_H
#define DP_API_H

#include <stddef.h>

#include "dp/buf.h"
#include "dp/catalog.h"

#define DP_API_LISTEN_DEFAULT "127.0.0.1:8780"
#define DP_API_TOKEN_FILE "api-token"
#define DP_API_ACTOR "api" /* the token's name, as the audit log shows it */
#define DP_API_MAX_BODY_DEFAULT (1u << 20)

typedef struct dp_api dp_api;

/* DELETE /api/v1alpha1/<kind>/<name> calls this instead of
 * dp_catalog_delete when set (the controller: a Backup with data is marked
 * for deletion and its data removed later). c is the request's connection,
 * actor already "api". Return 0, or a DP_E* code with the message set
 * (DP_ENOTFOUND: 404, DP_EUSAGE: 409, others: 500). A 202 is sent instead of
 * 200 when it returns DP_API_ACCEPTED (the deletion goes on). */
#define DP_API_ACCEPTED 1
typedef int (*dp_api_delete_fn)(void *arg, dp_catalog *c, dp_kind kind, const char *name);

/* Other paths (not /healthz, not under /api/): /metrics, the dashboard.
 * Called with the request's method and path (no query), authorized true if
 * it carried the right token. Fill body and *content_type (static) and return
 * an HTTP status; 0: not handled (404); DP_EAUTH: 401; another negative
 * DP_E*: 500 with the message. Runs on a connection thread. */
typedef int (*dp_api_route_fn)(void *arg, const char *method, const char *path, int authorized,
                               dp_buf *body, const char **content_type);

typedef struct dp_api_opts {
	const char *listen; /* "HOST:PORT" or "[V6]:PORT"; NULL: DP_API_LISTEN_DEFAULT;
	                       port 0 picks a free one (dp_api_port) */
	const char *home; /* where the token file lives; NULL: dp_home() */
	size_t max_body; /* 0: DP_API_MAX_BODY_DEFAULT (1 MiB) */
	int heartbeat_ms; /* watch heartbeat comment interval; 0: 15000 */
	int poll_ms; /* how often a watch reads the change feed; 0: 200 */
	unsigned max_connections; /* 0: 64; watches may hold up to 3/4 of them (then
	                             503), the rest is kept for other requests */
	dp_api_delete_fn on_delete;
	void *on_delete_arg;
	dp_api_route_fn route;
	void *route_arg;
} dp_api_opts;

/* Loads (or creates) the token, binds the address and starts serving.
 * catalog_path NULL: the default catalog ($DP_HOME/catalog.db). opts may be
 * NULL. Bind failures name the address ("127.0.0.1:8780: address already in
 * use"). */
int dp_api_start(dp_api **out, const char *catalog_path, const dp_api_opts *opts);
/* The port bound (useful with port 0). */
int dp_api_port(const dp_api *a);
/* Ends watches, waits for the connection threads, frees a. NULL: no-op. */
void dp_api_stop(dp_api *a);

/* The API token (hex text, NUL-terminated) from home/DP_API_TOKEN_FILE
 * (home NULL: dp_home()), created mode 0600 with 32 random bytes if missing.
 * Refused (DP_EAUTH) if the file is readable by group or others, not owned
 * by this user, or not a regular file. Clients (dp) read it with this too.
 * outlen >= 65 for a created token. Wipe out after use. */
int dp_api_token(char *out, size_t outlen, const char *home);

#endif
