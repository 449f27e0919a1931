/*
 * `?watch=1`: the catalog's change feed (dp_catalog_changes) as server-sent
 * events. Each watch owns one catalog connection and runs on its
 * connection's thread (the daemon runs a thread per connection), so the
 * content reader may block: it polls the feed every poll_ms, waking early
 * when the server stops, and sends a comment line every heartbeat_ms when
 * nothing changed (which also finds clients that went away).
 *
 * Stream: first "retry: 3000" and a comment naming the starting version,
 * then per change, in resourceVersion order:
 *   id: 42
 *   data: {"type":"status","resourceVersion":"42","kind":"Backup","name":"b1","object":{...}}
 * The object is read when the event is sent (so it may be newer than the
 * change; absent once deleted). A failure to read the catalog ends the
 * stream with an event {"type":"error","error":"..."}; the client resumes
 * with Last-Event-ID.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_int.h"
#include "dp/error.h"
#include "dp/log.h"

#define FEED_BATCH 100

typedef struct watch {
	dp_api *a;
	dp_catalog *c;
	int kind; /* -1: all */
	char name[DP_NAME_MAX + 1]; /* "": all */
	int64_t rv; /* the last version looked at */
	dp_buf out; /* bytes not yet handed to MHD, from off */
	size_t off;
	int64_t last_send_ms;
	bool ended;
} watch;

static int render_change(watch *w, const dp_change *ch)
{
	dp_resource r = {0};
	dp_buf obj = {0};
	int rc = 0;
	if (strcmp(ch->op, "delete") != 0) {
		rc = dp_catalog_get(w->c, ch->kind, ch->name, &r);
		if (rc == DP_ENOTFOUND) {
			dp_error_clear();
			rc = 0;
		} else if (!rc) {
			rc = dp_resource_json(&obj, &r, false);
		}
		if (rc)
			goto out;
		while (obj.len && (obj.data[obj.len - 1] == '\n'))
			obj.len--;
	}
	/* kind, name and op are [A-Za-z0-9.-]: nothing to escape. */
	rc = dp_buf_appendf(&w->out,
	                    "id: %" PRId64 "\ndata: {\"type\":\"%s\",\"resourceVersion\":\"%" PRId64
	                    "\",\"kind\":\"%s\",\"name\":\"%s\"%s%.*s}\n\n",
	                    ch->resource_version, ch->op, ch->resource_version,
	                    dp_kind_name(ch->kind), ch->name, obj.len ? ",\"object\":" : "",
	                    (int)obj.len, obj.len ? (const char *)obj.data : "");
out:
	dp_buf_free(&obj);
	dp_resource_clear(&r);
	return rc;
}

static int poll_feed(watch *w)
{
	dp_change *v = NULL;
	size_t n = 0;
	int rc = dp_catalog_changes(w->c, w->rv, FEED_BATCH, &v, &n);
	for (size_t i = 0; !rc && i < n; i++) {
		bool match = (w->kind < 0 || (int)v[i].kind == w->kind) &&
		             (!w->name[0] || strcmp(w->name, v[i].name) == 0);
		if (match && (rc = render_change(w, &v[i])))
			break;
		w->rv = v[i].resource_version;
	}
	free(v);
	return rc;
}

static void end_with_error(watch *w)
{
	/* The message may hold anything: escape it by hand (\" \\ and controls). */
	const char *m = dp_error_last();
	dp_warn("api: watch ends: %s", m);
	dp_buf_appendf(&w->out, "data: {\"type\":\"error\",\"error\":\"");
	for (; *m; m++) {
		unsigned char ch = (unsigned char)*m;
		if (ch == '"' || ch == '\\')
			dp_buf_appendf(&w->out, "\\%c", ch);
		else if (ch < 0x20)
			dp_buf_appendf(&w->out, "\\u%04x", ch);
		else
			dp_buf_append(&w->out, &ch, 1);
	}
	dp_buf_appendf(&w->out, "\"}\n\n");
	w->ended = true;
}

static ssize_t watch_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)pos;
	watch *w = cls;
	for (;;) {
		if (w->off < w->out.len) {
			size_t n = w->out.len - w->off;
			if (n > max)
				n = max;
			memcpy(buf, w->out.data + w->off, n);
			w->off += n;
			if (w->off == w->out.len) {
				dp_buf_reset(&w->out);
				w->off = 0;
			}
			w->last_send_ms = dp_api_now_ms();
			return (ssize_t)n;
		}
		if (w->ended)
			return MHD_CONTENT_READER_END_OF_STREAM;
		pthread_mutex_lock(&w->a->mu);
		bool stopping = w->a->stopping;
		pthread_mutex_unlock(&w->a->mu);
		if (stopping)
			return MHD_CONTENT_READER_END_OF_STREAM;
		if (poll_feed(w)) {
			end_with_error(w);
			continue;
		}
		if (w->out.len)
			continue;
		if (dp_api_now_ms() - w->last_send_ms >= w->a->opts.heartbeat_ms) {
			if (dp_buf_appendf(&w->out, ": heartbeat\n\n"))
				return MHD_CONTENT_READER_END_WITH_ERROR;
			continue;
		}
		dp_api_wait(w->a, w->a->opts.poll_ms);
	}
}

static void watch_free(void *cls)
{
	watch *w = cls;
	pthread_mutex_lock(&w->a->mu);
	w->a->watches--;
	pthread_cond_broadcast(&w->a->cv);
	pthread_mutex_unlock(&w->a->mu);
	dp_api_release(w->a, w->c, w->ended ? DP_ERROR : 0);
	dp_buf_free(&w->out);
	free(w);
}

int dp_api_watch_response(dp_api *a, int kind, const char *name, int64_t since_rv,
                          struct MHD_Response **out)
{
	int rc;
	watch *w = calloc(1, sizeof(*w));
	if (!w)
		return dp_error_set(DP_ERROR, "out of memory");
	w->a = a;
	pthread_mutex_lock(&a->mu);
	a->watches++;
	pthread_mutex_unlock(&a->mu);
	w->kind = kind;
	snprintf(w->name, sizeof(w->name), "%s", name ? name : "");
	if ((rc = dp_api_catalog(a, &w->c)))
		goto fail;
	if (since_rv < 0 && (rc = dp_catalog_version(w->c, &since_rv)))
		goto fail;
	w->rv = since_rv;
	if ((rc = dp_buf_appendf(&w->out,
	                         "retry: 3000\n: watching from resourceVersion %" PRId64 "\n\n",
	                         since_rv)))
		goto fail;
	w->last_send_ms = dp_api_now_ms();
	*out = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, watch_read, w,
	                                         watch_free);
	if (!*out) {
		rc = dp_error_set(DP_ERROR, "out of memory");
		goto fail;
	}
	return 0;
fail:
	watch_free(w);
	return rc;
}
