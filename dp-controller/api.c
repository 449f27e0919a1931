/*
 * The REST API server (see dp/api.h for the endpoints): libmicrohttpd with
 * an internal polling thread and one thread per connection, bound to a
 * socket this file opens (close-on-exec, so workers forked by the
 * controller never inherit it).
 *
 * A request goes through on_request several times: the first call checks
 * the token and the announced Content-Length, the next calls collect the
 * body (up to max_body; past it, or after a refusal, the rest is dropped
 * and the answer is 413 or 401), the last one dispatches. A request takes
 * a catalog connection (sqlite WAL, busy timeout, actor DP_API_ACTOR) from
 * a small pool, or opens one, uses it alone, and gives it back; watches
 * keep theirs for the life of the stream (api_sse.c).
 *
 * The token is compared as SHA-256 digests in constant time, so neither its
 * bytes nor its length leak through timing; it is never logged.
 *
 * Thread safety: struct dp_api is read-only while the daemon runs except
 * for `stopping`, the watch count and the connection pool (all under mu);
 * everything else is per request, on its connection's thread.
 */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api_int.h"
#include "dp/cron.h"
#include "dp/crypto.h"
#include "dp/error.h"
#include "dp/log.h"

#define API_PREFIX "/api/v1alpha1"
#define JSON_TYPE "application/json"
#define YAML_TYPE "application/yaml"
/* How much of a refused body is read (and dropped) before answering. */
#define DISCARD_MAX ((size_t)16 << 20)

static const char *const plurals[DP_KIND_COUNT] = {
    [DP_KIND_BACKUP_REPO] = "backuprepos",
    [DP_KIND_ACTION_SET] = "actionsets",
    [DP_KIND_BACKUP_POLICY] = "backuppolicies",
    [DP_KIND_BACKUP_SCHEDULE] = "backupschedules",
    [DP_KIND_BACKUP] = "backups",
    [DP_KIND_RESTORE] = "restores",
};

/* Per request, from the first call of on_request to its completion. */
typedef struct req {
	dp_buf body;
	unsigned reject; /* 401 or 413: answered once the body is dropped */
	size_t discarded;
	bool authorized;
	unsigned status; /* what was answered, for the log */
	int64_t start_ms;
	char method[16];
	char path[256];
} req;

/* ---- small helpers ---- */

int64_t dp_api_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool dp_api_wait(dp_api *a, int ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&a->mu);
	while (!a->stopping && pthread_cond_timedwait(&a->cv, &a->mu, &ts) == 0)
		;
	bool stopping = a->stopping;
	pthread_mutex_unlock(&a->mu);
	return stopping;
}

int dp_api_catalog(dp_api *a, dp_catalog **out)
{
	*out = NULL;
	pthread_mutex_lock(&a->mu);
	if (a->npool)
		*out = a->pool[--a->npool];
	pthread_mutex_unlock(&a->mu);
	int rc = 0;
	if (!*out) {
		/* dp_catalog_open calls getpwuid(), which is not thread-safe: one
		 * open at a time among the API's threads. */
		static pthread_mutex_t open_mu = PTHREAD_MUTEX_INITIALIZER;
		pthread_mutex_lock(&open_mu);
		rc = dp_catalog_open(out, a->default_catalog ? NULL : a->catalog_path);
		pthread_mutex_unlock(&open_mu);
	}
	if (!rc)
		dp_catalog_set_actor(*out, DP_API_ACTOR); /* a delete hook may have changed it */
	return rc;
}

void dp_api_release(dp_api *a, dp_catalog *c, int rc)
{
	if (!c)
		return;
	/* Every catalog call ends its transaction, also on failure; a failure
	 * other than the user's (not found, refused, invalid) may have left the
	 * connection in a state nobody checked: close it rather than reuse it. */
	bool reuse = rc == 0 || rc == DP_EUSAGE || rc == DP_ENOTFOUND || rc == DP_EEXIST ||
	             rc == DP_API_ACCEPTED;
	pthread_mutex_lock(&a->mu);
	if (reuse && !a->stopping && a->npool < DP_API_POOL) {
		a->pool[a->npool++] = c;
		c = NULL;
	}
	pthread_mutex_unlock(&a->mu);
	dp_catalog_close(c);
}

static bool is_true(const char *v)
{
	return v && (strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0 ||
	             strcasecmp(v, "yes") == 0 || strcmp(v, "All") == 0);
}

/* A flag in the query: ?watch, ?watch=1, ?watch=true (dryRun=All too). */
static bool flag(struct MHD_Connection *con, const char *key)
{
	const char *v = NULL;
	size_t vlen = 0;
	if (MHD_lookup_connection_value_n(con, MHD_GET_ARGUMENT_KIND, key, strlen(key), &v,
	                                  &vlen) != MHD_YES)
		return false;
	return !v || !*v || is_true(v);
}

static const char *query(struct MHD_Connection *con, const char *key)
{
	return MHD_lookup_connection_value(con, MHD_GET_ARGUMENT_KIND, key);
}

static const char *header(struct MHD_Connection *con, const char *key)
{
	return MHD_lookup_connection_value(con, MHD_HEADER_KIND, key);
}

/* The token from "Authorization: Bearer T", or, for GET and HEAD only,
 * from ?access_token=T (RFC 6750 2.3): browsers' EventSource cannot send
 * headers, so the dashboard's watches need it. Compared in constant time
 * over the digests: no early exit, no length leak. */
static bool token_ok(const dp_api *a, struct MHD_Connection *con, const char *method)
{
	const char *h = header(con, MHD_HTTP_HEADER_AUTHORIZATION);
	if (h) {
		if (strncasecmp(h, "Bearer ", 7) != 0)
			return false;
		h += 7;
	} else if (strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
	           strcmp(method, MHD_HTTP_METHOD_HEAD) == 0) {
		h = query(con, "access_token");
	}
	if (!h)
		return false;
	while (*h == ' ')
		h++;
	size_t n = strlen(h);
	while (n && (h[n - 1] == ' ' || h[n - 1] == '\t'))
		n--;
	uint8_t d[DP_HASH_LEN];
	if (dp_sha256(d, h, n))
		return false;
	volatile uint8_t diff = 0;
	for (size_t i = 0; i < DP_HASH_LEN; i++)
		diff |= (uint8_t)(d[i] ^ a->token_hash[i]);
	return diff == 0;
}

/* ---- responses ---- */

static enum MHD_Result send_body(req *q, struct MHD_Connection *con, unsigned status,
                                 const char *ctype, const void *data, size_t len, const char *allow)
{
	struct MHD_Response *r =
	    MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	if (allow)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
	if (status == MHD_HTTP_UNAUTHORIZED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"dp\"");
	enum MHD_Result ret = MHD_queue_response(con, status, r);
	MHD_destroy_response(r);
	q->status = status;
	return ret;
}

/* Replaces each byte that is not part of valid UTF-8 with '?', in place:
 * messages echo user input, and JSON must be UTF-8. */
static void utf8_scrub(char *s)
{
	unsigned char *p = (unsigned char *)s;
	while (*p) {
		int n = *p < 0x80             ? 0
		        : (*p & 0xe0) == 0xc0 ? 1
		        : (*p & 0xf0) == 0xe0 ? 2
		        : (*p & 0xf8) == 0xf0 ? 3
		                              : -1;
		bool ok = n >= 0 && !(*p == 0xc0 || *p == 0xc1 || *p > 0xf4);
		for (int i = 1; ok && i <= n; i++)
			ok = (p[i] & 0xc0) == 0x80;
		if (!ok) {
			*p++ = '?';
			continue;
		}
		p += n + 1;
	}
}

/* {"error": msg, "code": status}, printf-style. */
static enum MHD_Result send_error(req *q, struct MHD_Connection *con, unsigned status,
                                  const char *allow, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static enum MHD_Result send_error(req *q, struct MHD_Connection *con, unsigned status,
                                  const char *allow, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	utf8_scrub(msg);
	cJSON *o = cJSON_CreateObject();
	char *text = NULL;
	if (o && cJSON_AddStringToObject(o, "error", msg) &&
	    cJSON_AddNumberToObject(o, "code", status))
		text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (status >= 500)
		dp_warn("api: %s %s: %s", q->method, q->path, msg);
	enum MHD_Result ret;
	if (text) {
		dp_buf b = {0};
		if (dp_buf_appendf(&b, "%s\n", text) == 0)
			ret = send_body(q, con, status, JSON_TYPE, b.data, b.len, allow);
		else
			ret = MHD_NO;
		dp_buf_free(&b);
		cJSON_free(text);
	} else {
		ret = MHD_NO;
	}
	return ret;
}

/* The HTTP status for a DP_E* code. refusal: what DP_EUSAGE means here. */
static unsigned http_status(int rc, unsigned refusal)
{
	switch (rc) {
	case DP_EUSAGE:
		return refusal;
	case DP_ENOTFOUND:
		return MHD_HTTP_NOT_FOUND;
	case DP_EEXIST:
	case DP_ELOCKED:
	case DP_ETRANSIENT:
		return MHD_HTTP_CONFLICT;
	default:
		return MHD_HTTP_INTERNAL_SERVER_ERROR;
	}
}

static enum MHD_Result send_dp_error(req *q, struct MHD_Connection *con, int rc, unsigned refusal)
{
	return send_error(q, con, http_status(rc, refusal), NULL, "%s", dp_error_last());
}

static bool want_yaml(struct MHD_Connection *con)
{
	const char *o = query(con, "output");
	if (o)
		return strcasecmp(o, "yaml") == 0;
	const char *acc = header(con, MHD_HTTP_HEADER_ACCEPT);
	return acc && (strstr(acc, "yaml") != NULL);
}

/* ---- handlers ---- */

static enum MHD_Result do_healthz(dp_api *a, req *q, struct MHD_Connection *con)
{
	dp_catalog *c = NULL;
	int64_t rv;
	int rc = dp_api_catalog(a, &c);
	if (!rc)
		rc = dp_catalog_version(c, &rv);
	dp_api_release(a, c, rc);
	if (rc)
		return send_error(q, con, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, "catalog: %s",
		                  dp_error_last());
	static const char ok[] = "{\"status\":\"ok\"}\n";
	return send_body(q, con, MHD_HTTP_OK, JSON_TYPE, ok, sizeof(ok) - 1, NULL);
}

static enum MHD_Result do_discovery(req *q, struct MHD_Connection *con)
{
	dp_buf b = {0};
	int rc = dp_buf_appendf(&b, "{\"apiVersion\":\"%s\",\"resources\":[", DP_API_VERSION);
	for (int k = 0; !rc && k < DP_KIND_COUNT; k++)
		rc = dp_buf_appendf(&b,
		                    "%s{\"name\":\"%s\",\"singularName\":\"%s\",\"kind\":\"%s\","
		                    "\"verbs\":[\"get\",\"list\",\"watch\",\"put\",\"delete\"]}",
		                    k ? "," : "", plurals[k], dp_kind_lower((dp_kind)k),
		                    dp_kind_name((dp_kind)k));
	if (!rc)
		rc = dp_buf_appendf(&b, "]}\n");
	enum MHD_Result ret = rc ? send_dp_error(q, con, rc, 500)
	                         : send_body(q, con, MHD_HTTP_OK, JSON_TYPE, b.data, b.len, NULL);
	dp_buf_free(&b);
	return ret;
}

/* Parses ?resourceVersion= or Last-Event-ID into *out (-1 if neither). */
static int since_version(struct MHD_Connection *con, int64_t *out)
{
	const char *v = query(con, "resourceVersion");
	const char *what = "resourceVersion";
	if (!v || !*v) {
		v = header(con, "Last-Event-ID");
		what = "Last-Event-ID";
	}
	*out = -1;
	if (!v || !*v)
		return 0;
	char *end;
	errno = 0;
	long long n = strtoll(v, &end, 10);
	if (errno || *end || n < 0 || v[0] < '0' || v[0] > '9')
		return dp_error_set(DP_EUSAGE,
		                    "%s \"%.40s\": expected a resourceVersion (a number)", what, v);
	*out = n;
	return 0;
}

static enum MHD_Result do_watch(dp_api *a, req *q, struct MHD_Connection *con, int kind,
                                const char *name)
{
	int64_t since;
	struct MHD_Response *r = NULL;
	int rc = since_version(con, &since);
	if (rc)
		return send_dp_error(q, con, rc, MHD_HTTP_BAD_REQUEST);
	/* Each watch holds a connection (and its thread) for as long as it
	 * lasts: keep a quarter of them for everything else. */
	unsigned cap = a->opts.max_connections - a->opts.max_connections / 4;
	pthread_mutex_lock(&a->mu);
	bool full = (unsigned)a->watches >= cap;
	pthread_mutex_unlock(&a->mu);
	if (full)
		return send_error(q, con, MHD_HTTP_SERVICE_UNAVAILABLE, NULL,
		                  "too many watches open (%u); close one, or watch the whole "
		                  "API (" API_PREFIX "?watch=1) instead of each kind",
		                  cap);
	if ((rc = dp_api_watch_response(a, kind, name, since, &r)))
		return send_dp_error(q, con, rc, 500);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
	MHD_add_response_header(r, "X-Accel-Buffering", "no");
	enum MHD_Result ret = MHD_queue_response(con, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	q->status = MHD_HTTP_OK;
	return ret;
}

/* Re-prints compact JSON text in b (NUL-terminated outside len) with indentation. */
static int pretty_json(dp_buf *out, dp_buf *b)
{
	cJSON *t = cJSON_ParseWithLength((const char *)b->data, b->len);
	char *s = t ? cJSON_Print(t) : NULL;
	cJSON_Delete(t);
	if (!s)
		return dp_error_set(DP_ERROR, "out of memory");
	int rc = dp_buf_appendf(out, "%s\n", s);
	cJSON_free(s);
	return rc;
}

static enum MHD_Result do_list(dp_api *a, req *q, struct MHD_Connection *con, dp_kind kind)
{
	dp_catalog *c = NULL;
	dp_resource *v = NULL;
	size_t n = 0;
	int64_t rv = 0;
	dp_buf b = {0}, out = {0};
	bool yaml = want_yaml(con);
	enum MHD_Result ret;
	/* The version first: a watch from it may replay a change the list already
	 * shows, never miss one. */
	int rc = dp_api_catalog(a, &c);
	if (!rc && !(rc = dp_catalog_version(c, &rv)))
		rc = dp_catalog_list(c, kind, &v, &n);
	dp_api_release(a, c, rc);
	c = NULL;
	const char *sel = query(con, "labelSelector");
	if (!rc && sel && *sel) {
		/* Keep the matching items in place; free the others. */
		size_t kept = 0;
		for (size_t i = 0; i < n; i++) {
			bool match = false;
			if (!rc)
				rc = dp_resource_match_labels(&v[i], sel, &match);
			if (!rc && match)
				v[kept++] = v[i];
			else
				dp_resource_clear(&v[i]);
		}
		n = kept;
		if (rc) {
			ret = send_dp_error(q, con, rc, MHD_HTTP_BAD_REQUEST);
			goto out;
		}
	}
	if (!rc && yaml) {
		rc = dp_buf_appendf(&out, "metadata:\n  resourceVersion: \"%" PRId64 "\"\n", rv);
		if (!rc)
			rc = dp_resource_list_yaml(&out, v, n);
	} else if (!rc) {
		/* {apiVersion, kind, metadata: {resourceVersion}, items}: the items as
		 * dp_resource_json renders them, so a list item and a GET agree. */
		rc = dp_buf_appendf(&b,
		                    "{\"apiVersion\":\"%s\",\"kind\":\"List\",\"metadata\":{"
		                    "\"resourceVersion\":\"%" PRId64 "\"},\"items\":[",
		                    DP_API_VERSION, rv);
		for (size_t i = 0; !rc && i < n; i++) {
			if (i && (rc = dp_buf_append(&b, ",", 1)))
				break;
			if (!(rc = dp_resource_json(&b, &v[i], false)))
				while (b.len && b.data[b.len - 1] == '\n')
					b.len--;
		}
		if (!rc)
			rc = dp_buf_appendf(&b, "]}\n");
		if (!rc && flag(con, "pretty"))
			rc = pretty_json(&out, &b);
		else if (!rc)
			rc = dp_buf_append(&out, b.data, b.len);
	}
	ret = rc ? send_dp_error(q, con, rc, 500)
	         : send_body(q, con, MHD_HTTP_OK, yaml ? YAML_TYPE : JSON_TYPE, out.data, out.len,
	                     NULL);
out:
	dp_buf_free(&out);
	dp_buf_free(&b);
	dp_resources_free(v, n);
	return ret;
}

static enum MHD_Result send_resource(req *q, struct MHD_Connection *con, unsigned status,
                                     const dp_resource *r)
{
	dp_buf b = {0};
	bool yaml = want_yaml(con);
	int rc = yaml ? dp_resource_yaml(&b, r) : dp_resource_json(&b, r, flag(con, "pretty"));
	enum MHD_Result ret =
	    rc ? send_dp_error(q, con, rc, 500)
	       : send_body(q, con, status, yaml ? YAML_TYPE : JSON_TYPE, b.data, b.len, NULL);
	dp_buf_free(&b);
	return ret;
}

static enum MHD_Result do_get(dp_api *a, req *q, struct MHD_Connection *con, dp_kind kind,
                              const char *name)
{
	dp_catalog *c = NULL;
	dp_resource r = {0};
	enum MHD_Result ret;
	int rc = dp_api_catalog(a, &c);
	if (!rc)
		rc = dp_catalog_get(c, kind, name, &r);
	dp_api_release(a, c, rc);
	c = NULL;
	ret = rc ? send_dp_error(q, con, rc, MHD_HTTP_BAD_REQUEST)
	         : send_resource(q, con, MHD_HTTP_OK, &r);
	dp_resource_clear(&r);
	return ret;
}

static enum MHD_Result do_events(dp_api *a, req *q, struct MHD_Connection *con, dp_kind kind,
                                 const char *name)
{
	dp_catalog *c = NULL;
	dp_resource r = {0};
	dp_event *ev = NULL;
	size_t n = 0;
	cJSON *o = NULL;
	char *text = NULL;
	enum MHD_Result ret;
	int rc = dp_api_catalog(a, &c);
	if (!rc && !(rc = dp_catalog_get(c, kind, name, &r)))
		rc = dp_catalog_events(c, kind, name, &ev, &n);
	dp_api_release(a, c, rc);
	c = NULL;
	if (rc) {
		ret = send_dp_error(q, con, rc, MHD_HTTP_BAD_REQUEST);
		goto out;
	}
	o = cJSON_CreateObject();
	cJSON *items = cJSON_CreateArray();
	cJSON_AddStringToObject(o, "apiVersion", DP_API_VERSION);
	cJSON_AddStringToObject(o, "kind", "EventList");
	cJSON_AddItemToObject(o, "items", items);
	for (size_t i = 0; i < n; i++) {
		char t[32];
		cJSON *e = cJSON_CreateObject();
		dp_time_format(t, sizeof(t), ev[i].time);
		cJSON_AddNumberToObject(e, "id", (double)ev[i].id);
		cJSON_AddStringToObject(e, "time", t);
		cJSON_AddStringToObject(e, "type", ev[i].type);
		cJSON_AddStringToObject(e, "reason", ev[i].reason);
		cJSON_AddStringToObject(e, "message", ev[i].message ? ev[i].message : "");
		cJSON_AddItemToArray(items, e);
	}
	text = flag(con, "pretty") ? cJSON_Print(o) : cJSON_PrintUnformatted(o);
	if (!text) {
		ret = send_error(q, con, 500, NULL, "out of memory");
		goto out;
	}
	ret = send_body(q, con, MHD_HTTP_OK, JSON_TYPE, text, strlen(text), NULL);
out:
	if (text)
		cJSON_free(text);
	cJSON_Delete(o);
	dp_events_free(ev, n);
	dp_resource_clear(&r);
	return ret;
}

/* ?source=NAME names the input in messages (dp apply -f NAME through the
 * API); printable ASCII only, else the default. */
static const char *source_name(struct MHD_Connection *con)
{
	const char *s = query(con, "source");
	if (!s || !*s || strlen(s) > 255)
		return "request body";
	for (const char *p = s; *p; p++)
		if (*p < 0x20 || *p > 0x7e)
			return "request body";
	return s;
}

static enum MHD_Result do_put(dp_api *a, req *q, struct MHD_Connection *con, dp_kind kind,
                              const char *name)
{
	dp_manifest *m = NULL;
	dp_catalog *c = NULL;
	dp_resource r = {0};
	dp_apply_action action = DP_APPLY_UNCHANGED;
	bool dry = flag(con, "dryRun");
	const char *src = source_name(con);
	enum MHD_Result ret;
	int rc =
	    dp_manifest_parse(&m, q->body.data ? (const char *)q->body.data : "", q->body.len, src);
	if (!rc && dp_manifest_count(m) != 1)
		rc = dp_error_set(DP_EUSAGE,
		                  "%s: holds %zu documents; PUT takes one (POST " API_PREFIX
		                  " applies several)",
		                  src, dp_manifest_count(m));
	if (!rc)
		rc = dp_manifest_validate(m);
	if (!rc && (dp_manifest_kind(m, 0) != kind || strcmp(dp_manifest_name(m, 0), name) != 0))
		rc = dp_error_set(
		    DP_EUSAGE,
		    "%s: the document is %s \"%s\" but the URL names %s \"%s\"; they must "
		    "agree",
		    src, dp_kind_lower(dp_manifest_kind(m, 0)), dp_manifest_name(m, 0),
		    dp_kind_lower(kind), name);
	if (rc) {
		ret = send_dp_error(q, con, rc, MHD_HTTP_BAD_REQUEST);
		goto out;
	}
	if ((rc = dp_api_catalog(a, &c)) || (rc = dp_catalog_apply(c, m, dry, &action))) {
		ret = send_dp_error(q, con, rc, MHD_HTTP_BAD_REQUEST);
		goto out;
	}
	rc = dp_catalog_get(c, kind, name, &r);
	if (dry && rc == DP_ENOTFOUND) {
		dp_error_clear();
		rc = 0;
	}
	if (rc) {
		ret = send_dp_error(q, con, rc, 500);
		goto out;
	}
	unsigned status = action == DP_APPLY_CREATED ? MHD_HTTP_CREATED : MHD_HTTP_OK;
	if (dry) {
		/* Show what would be stored; nothing was. */
		dp_resource_clear(&r);
		r.kind = kind;
		snprintf(r.name, sizeof(r.name), "%s", name);
		r.spec = (char *)dp_manifest_spec(m, 0);
		r.meta = (char *)dp_manifest_meta(m, 0);
		r.status = (char *)"{}";
		ret = send_resource(q, con, status, &r);
		memset(&r, 0, sizeof(r)); /* borrowed strings */
		goto out;
	}
	ret = send_resource(q, con, status, &r);
out:
	dp_resource_clear(&r);
	dp_api_release(a, c, rc);
	dp_manifest_free(m);
	return ret;
}

static enum MHD_Result do_apply(dp_api *a, req *q, struct MHD_Connection *con)
{
	static const char *const words[] = {"created", "configured", "unchanged"};
	dp_manifest *m = NULL;
	dp_catalog *c = NULL;
	dp_apply_action *actions = NULL;
	dp_buf b = {0};
	bool dry = flag(con, "dryRun");
	enum MHD_Result ret;
	int rc = dp_manifest_parse(&m, q->body.data ? (const char *)q->body.data : "", q->body.len,
	                           source_name(con));
	if (!rc)
		rc = dp_manifest_validate(m);
	if (rc) {
		ret = send_dp_error(q, con, rc, MHD_HTTP_BAD_REQUEST);
		goto out;
	}
	size_t n = dp_manifest_count(m);
	if (!(actions = calloc(n, sizeof(*actions)))) {
		ret = send_error(q, con, 500, NULL, "out of memory");
		goto out;
	}
	rc = dp_api_catalog(a, &c);
	if (!rc)
		rc = dp_catalog_apply(c, m, dry, actions);
	dp_api_release(a, c, rc);
	c = NULL;
	if (rc) {
		ret = send_dp_error(q, con, rc, MHD_HTTP_BAD_REQUEST);
		goto out;
	}
	rc = dp_buf_appendf(&b, "{\"dryRun\":%s,\"items\":[", dry ? "true" : "false");
	for (size_t i = 0; !rc && i < n; i++)
		rc = dp_buf_appendf(&b, "%s{\"kind\":\"%s\",\"name\":\"%s\",\"action\":\"%s\"}",
		                    i ? "," : "", dp_kind_name(dp_manifest_kind(m, i)),
		                    dp_manifest_name(m, i), words[actions[i]]);
	if (!rc)
		rc = dp_buf_appendf(&b, "]}\n");
	ret = rc ? send_dp_error(q, con, rc, 500)
	         : send_body(q, con, MHD_HTTP_OK, JSON_TYPE, b.data, b.len, NULL);
out:
	dp_buf_free(&b);
	free(actions);
	dp_manifest_free(m);
	return ret;
}

static enum MHD_Result do_delete(dp_api *a, req *q, struct MHD_Connection *con, dp_kind kind,
                                 const char *name)
{
	dp_catalog *c = NULL;
	dp_buf b = {0};
	enum MHD_Result ret;
	int rc = dp_api_catalog(a, &c);
	if (!rc)
		rc = a->opts.on_delete ? a->opts.on_delete(a->opts.on_delete_arg, c, kind, name)
		                       : dp_catalog_delete(c, kind, name);
	dp_api_release(a, c, rc);
	c = NULL;
	if (rc < 0) {
		ret = send_dp_error(q, con, rc, MHD_HTTP_CONFLICT);
		goto out;
	}
	bool accepted = rc == DP_API_ACCEPTED;
	rc = dp_buf_appendf(
	    &b,
	    "{\"kind\":\"Status\",\"status\":\"Success\",\"message\":\"%s \\\"%s\\\" "
	    "%s\"}\n",
	    dp_kind_lower(kind), name, accepted ? "is being deleted" : "deleted");
	ret = rc ? send_dp_error(q, con, rc, 500)
	         : send_body(q, con, accepted ? MHD_HTTP_ACCEPTED : MHD_HTTP_OK, JSON_TYPE, b.data,
	                     b.len, NULL);
out:
	dp_buf_free(&b);
	return ret;
}

static enum MHD_Result do_route_hook(dp_api *a, req *q, struct MHD_Connection *con,
                                     const char *method, const char *url)
{
	dp_buf b = {0};
	const char *ctype = "text/plain; charset=utf-8";
	int st = a->opts.route
	             ? a->opts.route(a->opts.route_arg, method, url, q->authorized, &b, &ctype)
	             : 0;
	enum MHD_Result ret;
	if (st == 0)
		ret = send_error(q, con, MHD_HTTP_NOT_FOUND, NULL, "no such path \"%.200s\"", url);
	else if (st == DP_EAUTH)
		ret = send_error(q, con, MHD_HTTP_UNAUTHORIZED, NULL,
		                 "this path needs the API token: send Authorization: Bearer TOKEN");
	else if (st < 0)
		ret = send_dp_error(q, con, st, 500);
	else
		ret = send_body(q, con, (unsigned)st, ctype, b.data, b.len, NULL);
	dp_buf_free(&b);
	return ret;
}

static bool is_get(const char *m)
{
	return strcmp(m, MHD_HTTP_METHOD_GET) == 0 || strcmp(m, MHD_HTTP_METHOD_HEAD) == 0;
}

/* /api/v1alpha1[/<kind>[/<name>[/events]]] */
static enum MHD_Result dispatch_api(dp_api *a, req *q, struct MHD_Connection *con,
                                    const char *method, const char *rest)
{
	char seg[3][DP_NAME_MAX + 2];
	int nseg = 0;
	const char *p = rest;
	while (*p == '/')
		p++;
	while (*p) {
		size_t len = strcspn(p, "/");
		if (nseg == 3 || len >= sizeof(seg[0]))
			return send_error(q, con, MHD_HTTP_NOT_FOUND, NULL,
			                  "no such path \"%.200s\"", q->path);
		memcpy(seg[nseg], p, len);
		seg[nseg++][len] = '\0';
		p += len;
		if (*p == '/')
			p++;
	}
	bool get = is_get(method);
	bool watch = strcmp(method, MHD_HTTP_METHOD_GET) == 0 && flag(con, "watch");
	if (nseg == 0) {
		if (watch)
			return do_watch(a, q, con, -1, NULL);
		if (get)
			return do_discovery(q, con);
		if (strcmp(method, MHD_HTTP_METHOD_POST) == 0)
			return do_apply(a, q, con);
		return send_error(q, con, MHD_HTTP_METHOD_NOT_ALLOWED, "GET, HEAD, POST",
		                  "method %s is not allowed on " API_PREFIX " (use GET or POST)",
		                  method);
	}
	dp_kind kind;
	if (dp_kind_parse(&kind, seg[0]) != 0)
		return send_error(
		    q, con, MHD_HTTP_NOT_FOUND, NULL,
		    "unknown kind \"%.64s\" (use backuprepos, actionsets, backuppolicies, "
		    "backupschedules, backups or restores)",
		    seg[0]);
	dp_error_clear();
	if (nseg == 1) {
		if (watch)
			return do_watch(a, q, con, (int)kind, NULL);
		if (get)
			return do_list(a, q, con, kind);
		return send_error(q, con, MHD_HTTP_METHOD_NOT_ALLOWED, "GET, HEAD",
		                  "method %s is not allowed on a list of %s; PUT or DELETE "
		                  "%s/%s/NAME",
		                  method, plurals[kind], API_PREFIX, plurals[kind]);
	}
	const char *name = seg[1];
	if (dp_name_check(name) != 0)
		return send_error(q, con, MHD_HTTP_BAD_REQUEST, NULL, "%s name \"%.64s\": %s",
		                  dp_kind_lower(kind), name, dp_error_last());
	if (nseg == 3) {
		if (strcmp(seg[2], "events") != 0)
			return send_error(q, con, MHD_HTTP_NOT_FOUND, NULL,
			                  "no such path \"%.200s\"", q->path);
		if (get)
			return do_events(a, q, con, kind, name);
		return send_error(q, con, MHD_HTTP_METHOD_NOT_ALLOWED, "GET, HEAD",
		                  "method %s is not allowed on events", method);
	}
	if (watch)
		return do_watch(a, q, con, (int)kind, name);
	if (get)
		return do_get(a, q, con, kind, name);
	if (strcmp(method, MHD_HTTP_METHOD_PUT) == 0)
		return do_put(a, q, con, kind, name);
	if (strcmp(method, MHD_HTTP_METHOD_DELETE) == 0)
		return do_delete(a, q, con, kind, name);
	return send_error(q, con, MHD_HTTP_METHOD_NOT_ALLOWED, "GET, HEAD, PUT, DELETE",
	                  "method %s is not allowed on %s \"%s\" (use GET, PUT or DELETE)", method,
	                  dp_kind_lower(kind), name);
}

static enum MHD_Result send_reject(dp_api *a, req *q, struct MHD_Connection *con)
{
	if (q->reject == MHD_HTTP_UNAUTHORIZED)
		return send_error(q, con, MHD_HTTP_UNAUTHORIZED, NULL, "%s",
		                  header(con, MHD_HTTP_HEADER_AUTHORIZATION) ||
		                          query(con, "access_token")
		                      ? "wrong API token"
		                      : "no API token: send Authorization: Bearer TOKEN (the "
		                        "token is in $DP_HOME/" DP_API_TOKEN_FILE ")");
	return send_error(q, con, MHD_HTTP_CONTENT_TOO_LARGE, NULL,
	                  "request body is larger than %zu bytes", a->opts.max_body);
}

static bool is_api_path(const char *url, const char **rest)
{
	size_t n = strlen(API_PREFIX);
	if (strncmp(url, "/api/", 5) != 0 && strcmp(url, "/api") != 0)
		return false;
	*rest = NULL;
	if (strncmp(url, API_PREFIX, n) == 0 && (url[n] == '\0' || url[n] == '/'))
		*rest = url + n;
	return true;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *con, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
	(void)version;
	dp_api *a = cls;
	req *q = *con_cls;
	const char *rest = NULL;
	bool api = is_api_path(url, &rest);
	bool healthz = strcmp(url, "/healthz") == 0;
	if (!q) {
		if (!(q = calloc(1, sizeof(*q))))
			return MHD_NO;
		*con_cls = q;
		q->start_ms = dp_api_now_ms();
		snprintf(q->method, sizeof(q->method), "%s", method);
		snprintf(q->path, sizeof(q->path), "%s", url);
		q->authorized = token_ok(a, con, method);
		dp_error_clear();
		/* A request refused for its token or its announced size is answered
		 * before its body is read when the client waits for that (Expect:
		 * 100-continue) or the body is absurd; otherwise the body is read
		 * and dropped first, so that the client, still sending, gets the
		 * answer rather than a connection reset. */
		if (api && !q->authorized)
			q->reject = MHD_HTTP_UNAUTHORIZED;
		const char *cl = header(con, MHD_HTTP_HEADER_CONTENT_LENGTH);
		unsigned long long clen = 0;
		if (cl) {
			char *end;
			errno = 0;
			clen = strtoull(cl, &end, 10);
			if (errno || *end)
				clen = ULLONG_MAX;
			if (clen > a->opts.max_body && !q->reject)
				q->reject = MHD_HTTP_CONTENT_TOO_LARGE;
		}
		const char *expect = header(con, MHD_HTTP_HEADER_EXPECT);
		if (q->reject && ((expect && strcasestr(expect, "100-continue")) ||
		                  clen > a->opts.max_body + DISCARD_MAX))
			return send_reject(a, q, con);
		return MHD_YES;
	}
	if (*upload_size) {
		if (!q->reject && q->body.len + *upload_size > a->opts.max_body) {
			q->reject = MHD_HTTP_CONTENT_TOO_LARGE;
			q->discarded = q->body.len;
			dp_buf_free(&q->body);
		}
		if (q->reject) {
			q->discarded += *upload_size;
			*upload_size = 0;
			if (q->discarded > a->opts.max_body + DISCARD_MAX)
				return send_reject(a, q, con);
			return MHD_YES;
		}
		if (dp_buf_append(&q->body, upload_data, *upload_size))
			return MHD_NO;
		*upload_size = 0;
		return MHD_YES;
	}
	if (q->reject)
		return send_reject(a, q, con);
	if (healthz) {
		if (!is_get(method))
			return send_error(q, con, MHD_HTTP_METHOD_NOT_ALLOWED, "GET, HEAD",
			                  "method %s is not allowed on /healthz", method);
		return do_healthz(a, q, con);
	}
	if (api) {
		if (!rest)
			return send_error(
			    q, con, MHD_HTTP_NOT_FOUND, NULL,
			    "no such path \"%.200s\" (the API is under " API_PREFIX ")", q->path);
		return dispatch_api(a, q, con, method, rest);
	}
	return do_route_hook(a, q, con, method, url);
}

static void on_completed(void *cls, struct MHD_Connection *con, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)con;
	req *q = *con_cls;
	if (!q)
		return;
	int64_t ms = dp_api_now_ms() - q->start_ms;
	bool change = strcmp(q->method, "GET") != 0 && strcmp(q->method, "HEAD") != 0;
	dp_log(change || q->status >= 400 ? DP_LOG_INFO : DP_LOG_DEBUG,
	       "api: %s %s -> %u (%" PRId64 " ms)%s", q->method, q->path, q->status, ms,
	       toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection closed)");
	dp_buf_free(&q->body);
	free(q);
	*con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	char msg[512];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	size_t n = strlen(msg);
	while (n && msg[n - 1] == '\n')
		msg[--n] = '\0';
	/* libmicrohttpd 0.9.75 says this even when the logger is the first option. */
	if (strstr(msg, "MHD_OPTION_EXTERNAL_LOGGER is not the first option"))
		return;
	dp_warn("api: %s", msg);
}

/* ---- start and stop ---- */

static int bind_listen(const char *spec, int *fd_out, int *port_out, int *family)
{
	char host[256], port[16];
	const char *colon;
	int rc = 0, fd = -1, err = 0;
	struct addrinfo hints = {0}, *res = NULL;
	if (spec[0] == '[') {
		const char *close = strchr(spec, ']');
		if (!close || close[1] != ':' || (size_t)(close - spec - 1) >= sizeof(host))
			goto bad;
		snprintf(host, sizeof(host), "%.*s", (int)(close - spec - 1), spec + 1);
		colon = close + 1;
	} else {
		colon = strrchr(spec, ':');
		if (!colon || colon == spec || (size_t)(colon - spec) >= sizeof(host))
			goto bad;
		snprintf(host, sizeof(host), "%.*s", (int)(colon - spec), spec);
	}
	if (!colon[1] || strlen(colon + 1) >= sizeof(port) ||
	    strspn(colon + 1, "0123456789") != strlen(colon + 1))
		goto bad;
	snprintf(port, sizeof(port), "%s", colon + 1);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	int g = getaddrinfo(host, port, &hints, &res);
	if (g != 0)
		return dp_error_set(DP_EUSAGE, "listen address \"%s\": %s", spec, gai_strerror(g));
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			err = errno;
			continue;
		}
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 128) == 0) {
			*family = ai->ai_family;
			break;
		}
		err = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return dp_error_errno(err == EADDRINUSE ? DP_EEXIST : DP_ERROR, err,
		                      "cannot listen on \"%s\"", spec);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
		rc = dp_error_errno(DP_ERROR, errno, "cannot listen on \"%s\"", spec);
		close(fd);
		return rc;
	}
	*port_out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
	                                           : ((struct sockaddr_in *)&ss)->sin_port);
	*fd_out = fd;
	return 0;
bad:
	return dp_error_set(DP_EUSAGE,
	                    "listen address \"%s\": use HOST:PORT, e.g. 127.0.0.1:8780 or "
	                    "[::1]:8780",
	                    spec);
}

int dp_api_start(dp_api **out, const char *catalog_path, const dp_api_opts *opts)
{
	static const dp_api_opts none = {0};
	char token[512];
	int rc, fd = -1, family = AF_INET;
	dp_api *a = calloc(1, sizeof(*a));
	*out = NULL;
	if (!a)
		return dp_error_set(DP_ERROR, "out of memory");
	a->opts = opts ? *opts : none;
	if (!a->opts.listen)
		a->opts.listen = DP_API_LISTEN_DEFAULT;
	if (!a->opts.max_body)
		a->opts.max_body = DP_API_MAX_BODY_DEFAULT;
	if (a->opts.heartbeat_ms <= 0)
		a->opts.heartbeat_ms = 15000;
	if (a->opts.poll_ms <= 0)
		a->opts.poll_ms = 200;
	if (!a->opts.max_connections)
		a->opts.max_connections = 64;
	a->default_catalog = catalog_path == NULL;
	if (catalog_path)
		snprintf(a->catalog_path, sizeof(a->catalog_path), "%s", catalog_path);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&a->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&a->mu, NULL);

	/* Open the catalog once here, so a broken path fails the start, not
	 * every request. */
	dp_catalog *c = NULL;
	if ((rc = dp_api_catalog(a, &c)))
		goto fail;
	dp_api_release(a, c, 0);

	rc = dp_api_token(token, sizeof(token), a->opts.home);
	if (!rc)
		rc = dp_sha256(a->token_hash, token, strlen(token));
	dp_wipe(token, sizeof(token));
	if (rc)
		goto fail;
	if ((rc = bind_listen(a->opts.listen, &fd, &a->port, &family)))
		goto fail;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
	                 MHD_USE_AUTO | MHD_USE_ERROR_LOG | (family == AF_INET6 ? MHD_USE_IPv6 : 0);
	a->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, a, MHD_OPTION_LISTEN_SOCKET,
	                        (MHD_socket)fd, MHD_OPTION_NOTIFY_COMPLETED, on_completed, a,
	                        MHD_OPTION_CONNECTION_LIMIT, a->opts.max_connections,
	                        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
	                        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, a, MHD_OPTION_END);
	if (!a->d) {
		rc =
		    dp_error_set(DP_ERROR, "cannot start the API server on \"%s\"", a->opts.listen);
		close(fd);
		goto fail;
	}
	/* opts.listen and opts.home point at the caller's strings: not kept. */
	dp_info("api: listening on %s (port %d)", a->opts.listen, a->port);
	a->opts.listen = NULL;
	a->opts.home = NULL;
	*out = a;
	return 0;
fail:
	for (int i = 0; i < a->npool; i++)
		dp_catalog_close(a->pool[i]);
	pthread_mutex_destroy(&a->mu);
	pthread_cond_destroy(&a->cv);
	free(a);
	return rc;
}

int dp_api_port(const dp_api *a)
{
	return a->port;
}

void dp_api_stop(dp_api *a)
{
	if (!a)
		return;
	pthread_mutex_lock(&a->mu);
	a->stopping = true;
	pthread_cond_broadcast(&a->cv);
	/* Let open watches send their last chunk, so clients see a clean end
	 * (they reconnect with Last-Event-ID); a client that does not read is
	 * cut off by MHD_stop_daemon after the grace period. */
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += 2;
	while (a->watches > 0 && pthread_cond_timedwait(&a->cv, &a->mu, &ts) == 0)
		;
	pthread_mutex_unlock(&a->mu);
	MHD_stop_daemon(a->d);
	for (int i = 0; i < a->npool; i++)
		dp_catalog_close(a->pool[i]);
	pthread_mutex_destroy(&a->mu);
	pthread_cond_destroy(&a->cv);
	dp_wipe(a->token_hash, sizeof(a->token_hash));
	free(a);
}
