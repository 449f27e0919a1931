/*
 * The S3 transport: repository objects as S3 objects under
 * s3://BUCKET/PREFIX/, over libcurl, signed with AWS Signature V4.
 *
 * Why not libs3: Debian's libs3 2.0 signs only V2 and cannot do multipart,
 * so requests are built here and signed by libcurl (CURLOPT_AWS_SIGV4). The
 * 7.88 signer signs the path and query exactly as they appear in the URL and
 * every header we add, and takes the payload hash from our
 * x-amz-content-sha256 header; so URLs are built canonical here (RFC 3986
 * encoding, sorted query: s3_int.h) and every request carries the SHA-256
 * of its body, which S3 checks against the bytes it receives.
 *
 * Guarantees (dp/sys/backend.h): an S3 PUT is atomic and replaces an object
 * whole, so a reader never sees part of one; a PUT that fails or is cut off
 * leaves no new object. Ranged GETs read blobs out of packs. list pages
 * through ListObjectsV2 with continuation tokens; remove_many uses
 * DeleteObjects (1000 keys a request, Content-MD5 as S3 requires).
 *
 * Retries: 5xx, 429, SlowDown, RequestTimeout, connection failures, resets,
 * truncated bodies and stalls (no byte moved for timeout_ms) are retried with
 * exponential backoff and jitter; a request that finally fails reports every
 * attempt in one message. 403, 404 on the bucket, a redirect to another
 * region and TLS verification errors fail at once with what to fix.
 *
 * Threads: every vtable member may be called from several threads at once.
 * Each request borrows an easy handle from a pool under a mutex (a handle
 * keeps its connections alive between requests, so connections are reused);
 * DNS and TLS sessions are shared through a CURLSH with a mutex per data
 * kind. The backend's own fields are read-only after open.
 *
 * Secrets: the access keys live in s3_cred, are never logged or put in a
 * message, and are wiped on free. libcurl keeps its own copy of the secret
 * (CURLOPT_PASSWORD) in each handle, which it frees without wiping; the
 * session token header list is wiped before it is freed.
 */
#include <assert.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "dp/crypto.h"
#include "dp/error.h"
#include "dp/log.h"
#include "dp/sys/backend.h"
#include "s3_int.h"

#define S3_DEFAULT_TIMEOUT_MS 30000
#define S3_DEFAULT_RETRIES 5
#define S3_BACKOFF_BASE_MS 200
#define S3_BACKOFF_CAP_MS 20000
#define S3_ERRBODY_MAX (64 * 1024)
#define S3_LIST_MAX (32u << 20) /* a ListObjectsV2 page is ~300 KB */
#define S3_DELETE_BATCH 1000

typedef struct s3_backend {
	dp_backend base; /* first: the vtable */
	s3_addr addr;
	s3_cred cred;
	char sigv4[128]; /* "aws:amz:REGION:s3" */
	char *url_root; /* objects are url_root + "/" + encoded key */
	char *bucket_url; /* the bucket itself (list, DeleteObjects) */
	char *display; /* "s3://BUCKET/PREFIX" for messages */
	char *ca_file;
	long timeout_ms;
	int retries;
	unsigned backoff_base_ms;

	pthread_mutex_t pool_lock;
	CURL **pool;
	size_t npool, pool_cap;
	CURLSH *share;
	pthread_mutex_t share_lock[CURL_LOCK_DATA_LAST];
} s3_backend;

/* One request. The caller fills the first part; s3_perform the rest. */
typedef struct s3_req {
	const char *method; /* GET PUT HEAD DELETE POST */
	const char *verb; /* for messages: "read", "write", ... */
	const char *key; /* relative to the prefix; NULL: the bucket */
	const char *query; /* canonical query or NULL */
	const void *body;
	size_t body_len;
	const char *content_type;
	const char *content_md5; /* base64 or NULL */
	bool ranged;
	uint64_t off, len; /* with ranged; len UINT64_MAX: to the end */
	dp_buf *out; /* 2xx body is appended here (may be NULL) */
	uint64_t max_body; /* refuse a longer 2xx body (0: no limit) */

	long status;
	uint64_t length; /* Content-Length of the response */
	bool has_length;
} s3_req;

/* State of one attempt, seen by the callbacks. */
typedef struct s3_xfer {
	s3_backend *b;
	s3_req *r;
	CURL *h;
	dp_buf err; /* non-2xx body, capped */
	size_t out_base; /* r->out->len before the attempt */
	uint64_t skip; /* bytes to drop (server ignored our Range) */
	uint64_t want; /* most bytes to accept into out; UINT64_MAX: any */
	bool overflow; /* the server sent more than asked */
	bool status_known;
	bool ok_status;
	long timeout_ms;
	int64_t last_move_ms;
	curl_off_t last_bytes;
	bool stalled;
	long retry_after_s;
	int64_t range_start; /* from Content-Range, -1 if none */
	bool bad_range; /* the server's range does not cover ours */
	char region_hint[64]; /* x-amz-bucket-region */
} s3_xfer;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Drops what an attempt appended, keeping the buffer NUL-terminated. */
static void buf_truncate(dp_buf *b, size_t len)
{
	b->len = len;
	if (b->data)
		b->data[len] = 0;
}

/* ---- handle pool ---- */

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *arg)
{
	(void)h;
	(void)access;
	s3_backend *b = arg;
	pthread_mutex_lock(&b->share_lock[data < CURL_LOCK_DATA_LAST ? data : 0]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *arg)
{
	(void)h;
	s3_backend *b = arg;
	pthread_mutex_unlock(&b->share_lock[data < CURL_LOCK_DATA_LAST ? data : 0]);
}

static CURL *handle_get(s3_backend *b)
{
	CURL *h = NULL;
	pthread_mutex_lock(&b->pool_lock);
	if (b->npool > 0)
		h = b->pool[--b->npool];
	pthread_mutex_unlock(&b->pool_lock);
	if (!h)
		h = curl_easy_init();
	else
		curl_easy_reset(h); /* keeps live connections and caches */
	return h;
}

static void handle_put(s3_backend *b, CURL *h)
{
	pthread_mutex_lock(&b->pool_lock);
	if (b->npool == b->pool_cap) {
		size_t cap = b->pool_cap ? b->pool_cap * 2 : 8;
		CURL **p = realloc(b->pool, cap * sizeof(*p));
		if (p) {
			b->pool = p;
			b->pool_cap = cap;
		}
	}
	if (b->npool < b->pool_cap) {
		b->pool[b->npool++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&b->pool_lock);
	if (h)
		curl_easy_cleanup(h);
}

/* ---- callbacks ---- */

static void learn_status(s3_xfer *x)
{
	if (x->status_known)
		return;
	long code = 0;
	curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &code);
	x->r->status = code;
	x->ok_status = code >= 200 && code < 300;
	x->status_known = true;
	/* A server may ignore Range (200, the whole object) or answer with a
	 * wider range than asked (s3rver does for "bytes=0-0"): keep the part
	 * we asked for, as Content-Range places it. */
	if (x->r->ranged && code == 200) {
		x->skip = x->r->off;
	} else if (x->r->ranged && code == 206 && x->range_start >= 0) {
		if ((uint64_t)x->range_start > x->r->off)
			x->bad_range = true;
		else
			x->skip = x->r->off - (uint64_t)x->range_start;
	}
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
	s3_xfer *x = arg;
	size_t n = size * nmemb;
	learn_status(x);
	if (!x->ok_status) {
		size_t room = S3_ERRBODY_MAX - x->err.len;
		if (dp_buf_append(&x->err, ptr, n < room ? n : room) < 0)
			return 0;
		return n;
	}
	if (x->bad_range)
		return 0;
	if (!x->r->out)
		return n;
	const char *p = ptr;
	size_t m = n;
	if (x->skip) {
		size_t d = x->skip < m ? (size_t)x->skip : m;
		x->skip -= d;
		p += d;
		m -= d;
	}
	uint64_t have = x->r->out->len - x->out_base;
	if (x->want != UINT64_MAX && have + m > x->want) {
		if (x->r->ranged) {
			m = (size_t)(x->want - have); /* beyond the range we asked for */
		} else {
			x->overflow = true;
			return 0;
		}
	}
	if (m && dp_buf_append(x->r->out, p, m) < 0)
		return 0;
	return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *arg)
{
	s3_xfer *x = arg;
	size_t n = size * nmemb;
	static const char ra[] = "retry-after:", br[] = "x-amz-bucket-region:",
	                  cr[] = "content-range:";
	if (n > sizeof(cr) - 1 && strncasecmp(ptr, cr, sizeof(cr) - 1) == 0) {
		/* "Content-Range: bytes START-END/TOTAL" */
		char v[96];
		size_t l = n - (sizeof(cr) - 1);
		if (l >= sizeof(v))
			l = sizeof(v) - 1;
		memcpy(v, ptr + sizeof(cr) - 1, l);
		v[l] = 0;
		const char *d = strstr(v, "bytes");
		if (d) {
			d += 5;
			while (*d == ' ')
				d++;
			char *end;
			errno = 0;
			unsigned long long st = strtoull(d, &end, 10);
			if (!errno && end != d && *end == '-' && st <= INT64_MAX)
				x->range_start = (int64_t)st;
		}
	} else if (n > sizeof(ra) - 1 && strncasecmp(ptr, ra, sizeof(ra) - 1) == 0) {
		char v[32];
		size_t l = n - (sizeof(ra) - 1);
		if (l >= sizeof(v))
			l = sizeof(v) - 1;
		memcpy(v, ptr + sizeof(ra) - 1, l);
		v[l] = 0;
		char *end;
		long s = strtol(v, &end, 10);
		if (end != v && s >= 0)
			x->retry_after_s = s;
	} else if (n > sizeof(br) - 1 && strncasecmp(ptr, br, sizeof(br) - 1) == 0) {
		const char *v = ptr + sizeof(br) - 1;
		size_t l = n - (sizeof(br) - 1);
		while (l && (*v == ' ' || *v == '\t'))
			v++, l--;
		while (l && (v[l - 1] == '\r' || v[l - 1] == '\n' || v[l - 1] == ' '))
			l--;
		if (l >= sizeof(x->region_hint))
			l = sizeof(x->region_hint) - 1;
		memcpy(x->region_hint, v, l);
		x->region_hint[l] = 0;
	}
	return n;
}

/* Stall detection: abort when no byte moved for timeout_ms. A total timeout
 * would cut off a large upload on a slow but healthy link. */
static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
	(void)dltotal;
	(void)ultotal;
	s3_xfer *x = arg;
	int64_t t = now_ms();
	curl_off_t bytes = dlnow + ulnow;
	if (bytes != x->last_bytes) {
		x->last_bytes = bytes;
		x->last_move_ms = t;
		return 0;
	}
	if (t - x->last_move_ms > x->timeout_ms) {
		x->stalled = true;
		return 1;
	}
	return 0;
}

/* ---- one attempt ---- */

enum outcome { OUT_OK, OUT_FAIL, OUT_RETRY };

typedef struct err_fields {
	char code[64];
	char message[200];
} err_fields;

static int err_cb(const char *path, const char *text, size_t len, void *arg)
{
	err_fields *f = arg;
	(void)len;
	if (strcmp(path, "Error/Code") == 0)
		snprintf(f->code, sizeof(f->code), "%s", text);
	else if (strcmp(path, "Error/Message") == 0)
		snprintf(f->message, sizeof(f->message), "%s", text);
	return 0;
}

static void parse_error_body(s3_xfer *x, err_fields *f)
{
	memset(f, 0, sizeof(*f));
	if (x->err.len == 0)
		return;
	int saved = dp_error_code();
	char msg[1024];
	snprintf(msg, sizeof(msg), "%s", dp_error_last());
	(void)s3_xml_parse((const char *)x->err.data, x->err.len, err_cb, f);
	dp_error_restore(saved, msg); /* a garbled error body is not the news */
	/* Keep messages printable and on one line. */
	for (char *c = f->message; *c; c++)
		if ((unsigned char)*c < 0x20)
			*c = ' ';
	for (char *c = f->code; *c; c++)
		if ((unsigned char)*c < 0x20)
			*c = ' ';
}

static struct curl_slist *add_header(struct curl_slist *l, bool *ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static struct curl_slist *add_header(struct curl_slist *l, bool *ok, const char *fmt, ...)
{
	char line[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line)) {
		*ok = false;
		return l;
	}
	struct curl_slist *nl = curl_slist_append(l, line);
	dp_wipe(line, sizeof(line));
	if (!nl) {
		*ok = false;
		return l;
	}
	return nl;
}

static void free_headers(struct curl_slist *l)
{
	for (struct curl_slist *p = l; p; p = p->next)
		dp_wipe(p->data, strlen(p->data));
	curl_slist_free_all(l);
}

/* Builds the full URL of the request into url. */
static int build_url(s3_backend *b, const s3_req *r, dp_buf *url)
{
	int rc;
	if (r->key) {
		rc = dp_buf_appendf(url, "%s/", b->url_root);
		if (rc == 0)
			rc = s3_uri_encode(url, b->addr.prefix, strlen(b->addr.prefix), true);
		if (rc == 0)
			rc = s3_uri_encode(url, r->key, strlen(r->key), true);
	} else {
		rc = dp_buf_appendf(url, "%s", b->bucket_url);
	}
	if (rc == 0 && r->query && *r->query)
		rc = dp_buf_appendf(url, "?%s", r->query);
	return rc;
}

/* curl's message, less the " after N ms" of its connect errors: the
 * attempt's time is reported beside it, and without it attempts that failed
 * the same way fold into one range (fold_attempts). */
static void curl_message(char *out, size_t n, const char *errbuf)
{
	const char *a = strstr(errbuf, " after "), *d = a ? a + strlen(" after ") : NULL;
	while (d && *d >= '0' && *d <= '9')
		d++;
	if (!errbuf[0])
		snprintf(out, n, "-");
	else if (a && d > a + strlen(" after ") && strncmp(d, " ms", 3) == 0)
		snprintf(out, n, "%.*s%s", (int)(a - errbuf), errbuf, d + 3);
	else
		snprintf(out, n, "%s", errbuf);
}

static void describe_curl(char *out, size_t n, s3_xfer *x, CURLcode cc, const char *errbuf)
{
	char msg[CURL_ERROR_SIZE];
	curl_message(msg, sizeof(msg), errbuf);
	if (x->stalled)
		snprintf(out, n, "timed out (no progress for %ld ms)", x->timeout_ms);
	else if (cc == CURLE_COULDNT_CONNECT)
		snprintf(out, n, "connection refused or unreachable (%s)", msg);
	else
		snprintf(out, n, "%s (%s)", curl_easy_strerror(cc), msg);
}

static bool curl_transient(CURLcode cc)
{
	switch (cc) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_ABORTED_BY_CALLBACK: /* our stall timer */
		return true;
	default:
		return false;
	}
}

/* Runs one attempt. On OUT_FAIL the dp error is set; on OUT_RETRY, what
 * describes the failure. *rc_out is the code to return on OUT_FAIL. */
static enum outcome attempt(s3_backend *b, s3_req *r, const char *url, char *what, size_t whatn,
                            int *rc_out, long *retry_after_s)
{
	enum outcome res = OUT_FAIL;
	s3_xfer x = {
	    .b = b, .r = r, .timeout_ms = b->timeout_ms, .last_bytes = -1, .range_start = -1};
	struct curl_slist *hdr = NULL;
	char errbuf[CURL_ERROR_SIZE] = "";
	bool ok = true;
	char sha_hex[2 * DP_HASH_LEN + 1];
	*rc_out = DP_ERROR;
	*retry_after_s = -1;

	x.h = handle_get(b);
	if (!x.h) {
		*rc_out = dp_error_set(DP_ERROR, "cannot create an http handle (out of memory)");
		return OUT_FAIL;
	}
	if (r->out)
		x.out_base = r->out->len;
	x.want = UINT64_MAX;
	if (r->ranged && r->len != UINT64_MAX)
		x.want = r->len;
	else if (r->max_body)
		x.want = r->max_body;
	r->status = 0;
	r->has_length = false;

	/* Payload hash: S3 checks it against the bytes it receives. */
	uint8_t sha[DP_HASH_LEN];
	if (dp_sha256(sha, r->body ? r->body : "", r->body_len) < 0) {
		*rc_out = DP_ERROR;
		goto out;
	}
	dp_hex(sha_hex, sha, sizeof(sha));
	hdr = add_header(hdr, &ok, "x-amz-content-sha256: %s", sha_hex);
	if (b->cred.token)
		hdr = add_header(hdr, &ok, "x-amz-security-token: %s", b->cred.token);
	if (r->content_type)
		hdr = add_header(hdr, &ok, "Content-Type: %s", r->content_type);
	if (r->content_md5)
		hdr = add_header(hdr, &ok, "Content-MD5: %s", r->content_md5);
	if (r->ranged) {
		if (r->len == UINT64_MAX)
			hdr = add_header(hdr, &ok, "Range: bytes=%" PRIu64 "-", r->off);
		else
			hdr = add_header(hdr, &ok, "Range: bytes=%" PRIu64 "-%" PRIu64, r->off,
			                 r->off + r->len - 1);
	}
	if (!ok) {
		*rc_out = dp_error_set(DP_ERROR, "cannot build request headers (out of memory)");
		goto out;
	}

	CURL *h = x.h;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "dp/0.1");
	curl_easy_setopt(h, CURLOPT_SHARE, b->share);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
	curl_easy_setopt(h, CURLOPT_AWS_SIGV4, b->sigv4);
	curl_easy_setopt(h, CURLOPT_USERNAME, b->cred.key_id);
	curl_easy_setopt(h, CURLOPT_PASSWORD, b->cred.secret);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &x);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, &x);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, b->timeout_ms);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_EXPECT_100_TIMEOUT_MS, 1000L);
	if (b->ca_file)
		curl_easy_setopt(h, CURLOPT_CAINFO, b->ca_file);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);

	if (strcmp(r->method, "HEAD") == 0) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else if (strcmp(r->method, "PUT") == 0 || strcmp(r->method, "POST") == 0) {
		/* POSTFIELDS (not a read callback) so that curl can resend the
		 * body by itself; the method is set explicitly. */
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, r->body ? r->body : "");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r->method);
	} else if (strcmp(r->method, "GET") != 0) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r->method);
	}

	x.last_move_ms = now_ms();
	CURLcode cc = curl_easy_perform(h);
	learn_status(&x);
	curl_off_t clen = -1;
	curl_easy_getinfo(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &clen);
	if (clen >= 0) {
		r->length = (uint64_t)clen;
		r->has_length = true;
	}
	*retry_after_s = x.retry_after_s > 0 ? x.retry_after_s : -1;

	if (cc != CURLE_OK) {
		if (r->out)
			buf_truncate(r->out, x.out_base);
		if (x.bad_range) {
			*rc_out = dp_error_set(
			    DP_ECORRUPT, "the s3 server answered with another byte range than "
			                 "asked for");
			goto out;
		}
		if (x.overflow) {
			*rc_out = dp_error_set(DP_ECORRUPT,
			                       "the s3 server sent more bytes than asked for");
			goto out;
		}
		if (cc == CURLE_PEER_FAILED_VERIFICATION || cc == CURLE_SSL_CACERT_BADFILE ||
		    cc == CURLE_SSL_CERTPROBLEM) {
			*rc_out =
			    dp_error_set(DP_ERROR,
			                 "tls certificate check failed for %s://%s (%s): pass the "
			                 "server's CA bundle with --s3-ca-file",
			                 b->addr.scheme, b->addr.host, errbuf);
			goto out;
		}
		describe_curl(what, whatn, &x, cc, errbuf);
		if (curl_transient(cc)) {
			res = OUT_RETRY;
		} else {
			*rc_out = dp_error_set(DP_ERROR, "%s", what);
		}
		goto out;
	}

	long st = r->status;
	if (st >= 200 && st < 300) {
		res = OUT_OK;
		goto out;
	}
	if (r->out)
		buf_truncate(r->out, x.out_base);
	err_fields f;
	parse_error_body(&x, &f);
	const char *code = f.code[0] ? f.code : "";
	snprintf(what, whatn, "HTTP %ld%s%s%s%.120s%s", st, code[0] ? " " : "", code,
	         f.message[0] ? " \"" : "", f.message, f.message[0] ? "\"" : "");
	if (st >= 500 || st == 429 || strcmp(code, "SlowDown") == 0 ||
	    strcmp(code, "RequestTimeout") == 0 || strcmp(code, "InternalError") == 0 ||
	    strcmp(code, "IncompleteBody") == 0 || strcmp(code, "OperationAborted") == 0) {
		res = OUT_RETRY;
		goto out;
	}
	/* Everything else will not get better by asking again. */
	const char *fix = "";
	int rc = DP_ERROR;
	char hint[512] = "";
	if (st == 401 || st == 403) {
		rc = DP_EAUTH;
		if (strcmp(code, "InvalidAccessKeyId") == 0)
			fix = "the access key id is unknown to the server: check AWS_ACCESS_KEY_ID "
			      "(or the credentials file)";
		else if (strcmp(code, "SignatureDoesNotMatch") == 0)
			fix = "the signature does not match: check AWS_SECRET_ACCESS_KEY (or the "
			      "credentials file) and --s3-region";
		else if (strcmp(code, "RequestTimeTooSkewed") == 0)
			fix = "this machine's clock is off: fix the time (NTP)";
		else if (strcmp(code, "ExpiredToken") == 0 || strcmp(code, "InvalidToken") == 0)
			fix = "the session token is expired or invalid: renew AWS_SESSION_TOKEN";
		else {
			snprintf(hint, sizeof(hint),
			         "access denied: check the credentials (from the %s) and that "
			         "the bucket policy lets them read, write, list and delete under "
			         "this prefix",
			         b->cred.source);
			fix = hint;
		}
	} else if (st == 404 && strcmp(code, "NoSuchBucket") == 0) {
		rc = r->key && strcmp(r->method, "GET") == 0 ? DP_ENOTFOUND : DP_ERROR;
		snprintf(hint, sizeof(hint),
		         "bucket \"%s\" does not exist at %s://%s: create it (e.g. aws s3 mb "
		         "s3://%s) or check --s3-endpoint and --s3-region",
		         b->addr.bucket, b->addr.scheme, b->addr.host, b->addr.bucket);
		fix = hint;
	} else if (st == 404) {
		rc = DP_ENOTFOUND;
		fix = "no such object";
	} else if (st == 416) {
		rc = DP_ECORRUPT;
		fix = "the object is shorter than the range asked for (truncated?)";
	} else if (st == 301 || st == 307 || st == 308 ||
	           strcmp(code, "AuthorizationHeaderMalformed") == 0 ||
	           strcmp(code, "PermanentRedirect") == 0) {
		if (x.region_hint[0])
			snprintf(hint, sizeof(hint),
			         "the bucket is in region \"%s\", not \"%s\": pass --s3-region %s",
			         x.region_hint, b->addr.region, x.region_hint);
		else
			snprintf(hint, sizeof(hint),
			         "the server redirects: check --s3-region (now \"%s\") and "
			         "--s3-endpoint",
			         b->addr.region);
		fix = hint;
	} else if (strcmp(code, "XAmzContentSHA256Mismatch") == 0 ||
	           strcmp(code, "BadDigest") == 0) {
		fix = "the server received other bytes than were sent";
	}
	*rc_out = dp_error_set(rc, "%s%s%s", what, fix[0] ? ": " : "", fix);
out:
	free_headers(hdr);
	dp_buf_free(&x.err);
	handle_put(b, x.h);
	return res;
}

/* Appends "1: what (12 ms); 2-5: what" to log: consecutive attempts that
 * ended the same way are folded into one range. */
static void fold_attempts(dp_buf *log, char (*what)[400], const long *ms, int n)
{
	for (int i = 0; i < n;) {
		int j = i;
		while (j + 1 < n && strcmp(what[j + 1], what[i]) == 0)
			j++;
		if (j > i)
			dp_buf_appendf(log, "%s%d-%d: %s", i ? "; " : "", i + 1, j + 1, what[i]);
		else
			dp_buf_appendf(log, "%s%d: %s (%ld ms)", i ? "; " : "", i + 1, what[i],
			               ms[i]);
		i = j + 1;
	}
}

#define S3_MAX_ATTEMPTS 32

/* Runs a request with retries. Returns 0 for a 2xx answer; otherwise a
 * negative code with a message naming the object and folding in every
 * attempt. */
static int s3_perform(s3_backend *b, s3_req *r)
{
	dp_buf url = {0}, log = {0};
	char(*what)[400] = NULL;
	long ms[S3_MAX_ATTEMPTS];
	int rc = build_url(b, r, &url);
	if (rc < 0)
		goto out;
	int attempts = b->retries + 1;
	if (attempts > S3_MAX_ATTEMPTS)
		attempts = S3_MAX_ATTEMPTS;
	what = calloc((size_t)attempts, sizeof(*what));
	if (!what) {
		rc = dp_error_set(DP_ERROR, "out of memory");
		goto out;
	}
	const char *name = r->key ? r->key : "";
	int64_t t0 = now_ms();
	for (int i = 0;; i++) {
		long retry_after = -1;
		int64_t ta = now_ms();
		enum outcome o = attempt(b, r, (const char *)url.data, what[i], sizeof(what[i]),
		                         &rc, &retry_after);
		ms[i] = (long)(now_ms() - ta);
		if (o == OUT_OK) {
			if (i > 0) {
				fold_attempts(&log, what, ms, i);
				dp_info("s3: %s of \"%s%s\" succeeded on attempt %d (%s)", r->verb,
				        b->display, name, i + 1,
				        log.data ? (const char *)log.data : "");
			}
			rc = 0;
			goto out;
		}
		if (o == OUT_FAIL) {
			if (i > 0) {
				char msg[1024];
				snprintf(msg, sizeof(msg), "%s", dp_error_last());
				fold_attempts(&log, what, ms, i);
				dp_error_set(rc, "%s (earlier attempts: %s)", msg,
				             log.data ? (const char *)log.data : "");
			}
			dp_error_prefix("s3 %s of \"%s%s\" failed", r->verb, b->display, name);
			goto out;
		}
		if (i + 1 >= attempts) {
			fold_attempts(&log, what, ms, i + 1);
			rc = dp_error_set(
			    DP_ETRANSIENT,
			    "s3 %s of \"%s%s\" failed after %d attempt%s in %.1f s (%s); "
			    "check that the server at %s://%s is up and reachable",
			    r->verb, b->display, name, i + 1, i ? "s" : "",
			    (double)(now_ms() - t0) / 1000.0,
			    log.data ? (const char *)log.data : "", b->addr.scheme, b->addr.host);
			goto out;
		}
		/* Exponential backoff with jitter: half fixed, half random, so
		 * that parallel uploaders spread out. Retry-After wins if longer. */
		long cap = S3_BACKOFF_CAP_MS;
		long d = (long)b->backoff_base_ms << (i < 16 ? i : 16);
		if (d > cap)
			d = cap;
		uint32_t rnd = 0;
		(void)dp_random(&rnd, sizeof(rnd));
		long delay = d / 2 + (long)(rnd % (uint32_t)(d / 2 + 1));
		if (retry_after > 0 && retry_after * 1000 > delay)
			delay = retry_after * 1000 < cap ? retry_after * 1000 : cap;
		dp_debug("s3: %s of \"%s%s\": attempt %d failed (%s), retrying in %ld ms", r->verb,
		         b->display, name, i + 1, what[i], delay);
		sleep_ms(delay);
	}
out:
	free(what);
	dp_buf_free(&url);
	dp_buf_free(&log);
	return rc;
}

/* ---- the vtable ---- */

static int s3_put(dp_backend *base, const char *key, const void *data, size_t len)
{
	s3_backend *b = (s3_backend *)base;
	s3_req r = {.method = "PUT",
	            .verb = "write",
	            .key = key,
	            .body = data,
	            .body_len = len,
	            .content_type = "application/octet-stream"};
	return s3_perform(b, &r);
}

static int s3_stat(dp_backend *base, const char *key, uint64_t *size_out)
{
	s3_backend *b = (s3_backend *)base;
	s3_req r = {.method = "HEAD", .verb = "stat", .key = key};
	int rc = s3_perform(b, &r);
	if (rc < 0)
		return rc;
	if (!r.has_length)
		return dp_error_set(DP_ECORRUPT,
		                    "s3 stat of \"%s%s\": no Content-Length in the reply",
		                    b->display, key);
	if (size_out)
		*size_out = r.length;
	return 0;
}

static int s3_get(dp_backend *base, const char *key, uint64_t off, uint64_t len, dp_buf *out)
{
	s3_backend *b = (s3_backend *)base;
	if (len == 0 || (off > 0 && len == UINT64_MAX)) {
		/* Nothing to read, or "from off to the end": S3 answers 416 when
		 * off == size, which is a valid empty read here. */
		uint64_t size;
		int rc = s3_stat(base, key, &size);
		if (rc < 0)
			return rc;
		if (off > size || (len != UINT64_MAX && len > size - off))
			return dp_error_set(DP_ECORRUPT,
			                    "s3 read of \"%s%s\": bytes [%" PRIu64 ", +%" PRIu64
			                    ") asked, object has %" PRIu64 " (truncated?)",
			                    b->display, key, off, len, size);
		if (len == 0 || off == size)
			return 0;
		len = size - off;
	}
	if (len != UINT64_MAX && off > UINT64_MAX - len)
		return dp_error_set(DP_EUSAGE, "s3 read of \"%s%s\": bad range", b->display, key);
	s3_req r = {.method = "GET", .verb = "read", .key = key, .out = out};
	if (off > 0 || len != UINT64_MAX) {
		r.ranged = true;
		r.off = off;
		r.len = len;
	}
	size_t base_len = out->len;
	if (len != UINT64_MAX && len < ((uint64_t)1 << 31)) {
		int rc = dp_buf_reserve(out, (size_t)len);
		if (rc < 0)
			return rc;
	}
	int rc = s3_perform(b, &r);
	if (rc < 0)
		return rc;
	uint64_t got = out->len - base_len;
	if (len != UINT64_MAX && got != len) {
		buf_truncate(out, base_len);
		return dp_error_set(DP_ECORRUPT,
		                    "s3 read of \"%s%s\": asked for %" PRIu64 " bytes at %" PRIu64
		                    ", got %" PRIu64 " (the object is truncated)",
		                    b->display, key, len, off, got);
	}
	return 0;
}

static int s3_remove(dp_backend *base, const char *key)
{
	s3_backend *b = (s3_backend *)base;
	s3_req r = {.method = "DELETE", .verb = "delete", .key = key};
	int rc = s3_perform(b, &r);
	if (rc == DP_ENOTFOUND)
		rc = 0; /* removing a missing object is not an error */
	return rc;
}

/* ---- list ---- */

typedef struct list_page {
	char **keys;
	uint64_t *sizes;
	size_t n, cap;
	char *cur_key;
	uint64_t cur_size;
	bool cur_has_size;
	bool truncated;
	char *token;
	int rc;
} list_page;

static void page_free(list_page *p)
{
	for (size_t i = 0; i < p->n; i++)
		free(p->keys[i]);
	free(p->keys);
	free(p->sizes);
	free(p->cur_key);
	free(p->token);
	memset(p, 0, sizeof(*p));
}

static int list_cb(const char *path, const char *text, size_t len, void *arg)
{
	list_page *p = arg;
	if (strcmp(path, "ListBucketResult/Contents/Key") == 0) {
		if (memchr(text, 0, len))
			return dp_error_set(DP_ECORRUPT, "s3 listing: key with a NUL byte");
		free(p->cur_key);
		p->cur_key = strdup(text);
		if (!p->cur_key)
			return dp_error_set(DP_ERROR, "out of memory");
	} else if (strcmp(path, "ListBucketResult/Contents/Size") == 0) {
		char *end;
		errno = 0;
		unsigned long long v = strtoull(text, &end, 10);
		if (errno || end == text || *end || text[0] == '-')
			return dp_error_set(DP_ECORRUPT, "s3 listing: bad object size \"%.40s\"",
			                    text);
		p->cur_size = v;
		p->cur_has_size = true;
	} else if (strcmp(path, "ListBucketResult/Contents") == 0) {
		if (!p->cur_key || !p->cur_has_size)
			return dp_error_set(DP_ECORRUPT,
			                    "s3 listing: an entry without Key or Size");
		if (p->n == p->cap) {
			size_t cap = p->cap ? p->cap * 2 : 1024;
			char **k = realloc(p->keys, cap * sizeof(*k));
			if (k)
				p->keys = k;
			uint64_t *s = realloc(p->sizes, cap * sizeof(*s));
			if (s)
				p->sizes = s;
			if (!k || !s)
				return dp_error_set(DP_ERROR, "out of memory");
			p->cap = cap;
		}
		p->keys[p->n] = p->cur_key;
		p->sizes[p->n++] = p->cur_size;
		p->cur_key = NULL;
		p->cur_has_size = false;
	} else if (strcmp(path, "ListBucketResult/IsTruncated") == 0) {
		p->truncated = strcmp(text, "true") == 0;
	} else if (strcmp(path, "ListBucketResult/NextContinuationToken") == 0) {
		free(p->token);
		p->token = strdup(text);
		if (!p->token)
			return dp_error_set(DP_ERROR, "out of memory");
	}
	return 0;
}

static int s3_list(dp_backend *base, const char *prefix, dp_backend_list_cb cb, void *arg)
{
	s3_backend *b = (s3_backend *)base;
	dp_buf full = {0}, query = {0}, body = {0};
	char *token = NULL;
	list_page page = {0};
	int rc = dp_buf_appendf(&full, "%s%s", b->addr.prefix, prefix ? prefix : "");
	if (rc < 0)
		goto out;
	size_t strip = strlen(b->addr.prefix);
	for (int pages = 0;; pages++) {
		s3_param params[3] = {{"list-type", "2"}, {"prefix", (const char *)full.data}};
		size_t np = 2;
		if (token)
			params[np++] = (s3_param){"continuation-token", token};
		dp_buf_reset(&query);
		dp_buf_reset(&body);
		rc = s3_query_build(&query, params, np);
		if (rc < 0)
			goto out;
		s3_req r = {.method = "GET",
		            .verb = "list",
		            .query = (const char *)query.data,
		            .out = &body,
		            .max_body = S3_LIST_MAX};
		rc = s3_perform(b, &r);
		if (rc < 0)
			goto out;
		if (body.len > S3_LIST_MAX) {
			rc = dp_error_set(DP_ECORRUPT, "s3 listing of \"%s%s\": page too large",
			                  b->display, prefix ? prefix : "");
			goto out;
		}
		page_free(&page);
		rc = s3_xml_parse((const char *)body.data, body.len, list_cb, &page);
		if (rc < 0) {
			dp_error_prefix("s3 listing of \"%s%s\"", b->display, prefix ? prefix : "");
			goto out;
		}
		for (size_t i = 0; i < page.n; i++) {
			const char *k = page.keys[i];
			if (strncmp(k, (const char *)full.data, full.len) != 0) {
				rc = dp_error_set(DP_ECORRUPT,
				                  "s3 listing of \"%s%s\": the server returned key "
				                  "\"%.200s\" outside the prefix",
				                  b->display, prefix ? prefix : "", k);
				goto out;
			}
			rc = cb(k + strip, page.sizes[i], arg);
			if (rc != 0)
				goto out;
		}
		if (!page.truncated)
			break;
		if (!page.token || !page.token[0] || (token && strcmp(token, page.token) == 0)) {
			rc = dp_error_set(DP_ECORRUPT,
			                  "s3 listing of \"%s%s\": truncated page without a new "
			                  "continuation token",
			                  b->display, prefix ? prefix : "");
			goto out;
		}
		free(token);
		token = page.token;
		page.token = NULL;
	}
out:
	page_free(&page);
	free(token);
	dp_buf_free(&full);
	dp_buf_free(&query);
	dp_buf_free(&body);
	return rc;
}

/* ---- remove_many ---- */

static int xml_escape(dp_buf *out, const char *s)
{
	int rc = 0;
	for (; *s && rc == 0; s++) {
		switch (*s) {
		case '&':
			rc = dp_buf_appendf(out, "&amp;");
			break;
		case '<':
			rc = dp_buf_appendf(out, "&lt;");
			break;
		case '>':
			rc = dp_buf_appendf(out, "&gt;");
			break;
		case '"':
			rc = dp_buf_appendf(out, "&quot;");
			break;
		case '\'':
			rc = dp_buf_appendf(out, "&apos;");
			break;
		default:
			rc = dp_buf_append(out, s, 1);
		}
	}
	return rc;
}

typedef struct del_result {
	char key[256];
	char code[64];
	char message[200];
	int nerrors;
	char first[600];
	bool error_root;
} del_result;

static int del_cb(const char *path, const char *text, size_t len, void *arg)
{
	del_result *d = arg;
	(void)len;
	if (strcmp(path, "DeleteResult/Error/Key") == 0)
		snprintf(d->key, sizeof(d->key), "%s", text);
	else if (strcmp(path, "DeleteResult/Error/Code") == 0)
		snprintf(d->code, sizeof(d->code), "%s", text);
	else if (strcmp(path, "DeleteResult/Error/Message") == 0)
		snprintf(d->message, sizeof(d->message), "%s", text);
	else if (strcmp(path, "DeleteResult/Error") == 0) {
		if (strcmp(d->code, "NoSuchKey") != 0) {
			if (d->nerrors++ == 0)
				snprintf(d->first, sizeof(d->first), "\"%s\": %s %s", d->key,
				         d->code, d->message);
		}
		d->key[0] = d->code[0] = d->message[0] = 0;
	} else if (strcmp(path, "Error") == 0) {
		d->error_root = true;
	}
	return 0;
}

static int s3_remove_many(dp_backend *base, const char *const *keys, size_t n)
{
	s3_backend *b = (s3_backend *)base;
	dp_buf body = {0}, resp = {0}, md5b64 = {0}, query = {0};
	int rc = 0;
	s3_param qp[1] = {{"delete", NULL}};
	rc = s3_query_build(&query, qp, 1);
	for (size_t i = 0; i < n && rc == 0; i += S3_DELETE_BATCH) {
		size_t m = n - i < S3_DELETE_BATCH ? n - i : S3_DELETE_BATCH;
		dp_buf_reset(&body);
		dp_buf_reset(&resp);
		dp_buf_reset(&md5b64);
		rc = dp_buf_appendf(&body,
		                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
		                    "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
		                    "<Quiet>true</Quiet>");
		for (size_t j = 0; j < m && rc == 0; j++) {
			rc = dp_buf_appendf(&body, "<Object><Key>");
			if (rc == 0)
				rc = xml_escape(&body, b->addr.prefix);
			if (rc == 0)
				rc = xml_escape(&body, keys[i + j]);
			if (rc == 0)
				rc = dp_buf_appendf(&body, "</Key></Object>");
		}
		if (rc == 0)
			rc = dp_buf_appendf(&body, "</Delete>");
		if (rc < 0)
			break;
		unsigned char md5[EVP_MAX_MD_SIZE];
		unsigned int md5len = 0;
		if (!EVP_Digest(body.data, body.len, md5, &md5len, EVP_md5(), NULL)) {
			rc = dp_error_set(DP_ERROR, "cannot compute MD5 (OpenSSL)");
			break;
		}
		rc = dp_base64_encode(&md5b64, md5, md5len);
		if (rc < 0)
			break;
		s3_req r = {.method = "POST",
		            .verb = "batch delete",
		            .query = (const char *)query.data,
		            .body = body.data,
		            .body_len = body.len,
		            .content_type = "application/xml",
		            .content_md5 = (const char *)md5b64.data,
		            .out = &resp,
		            .max_body = S3_LIST_MAX};
		rc = s3_perform(b, &r);
		if (rc < 0)
			break;
		del_result d = {0};
		if (resp.len) {
			rc = s3_xml_parse((const char *)resp.data, resp.len, del_cb, &d);
			if (rc < 0) {
				dp_error_prefix("s3 batch delete in \"%s\"", b->display);
				break;
			}
		}
		if (d.error_root || d.nerrors) {
			rc =
			    dp_error_set(DP_ERROR,
			                 "s3 batch delete in \"%s\": %d of %zu objects not deleted "
			                 "(first: %s); check that the credentials may delete",
			                 b->display, d.error_root ? (int)m : d.nerrors, m,
			                 d.error_root ? "the whole request failed" : d.first);
			break;
		}
	}
	dp_buf_free(&body);
	dp_buf_free(&resp);
	dp_buf_free(&md5b64);
	dp_buf_free(&query);
	return rc;
}

/* ---- create: the write / read back / delete probe ---- */

static int s3_create(dp_backend *base)
{
	s3_backend *b = (s3_backend *)base;
	uint8_t rnd[16], payload[64];
	char hex[33], key[64];
	dp_buf back = {0};
	int rc = dp_random(rnd, sizeof(rnd));
	if (rc < 0)
		return rc;
	rc = dp_random(payload, sizeof(payload));
	if (rc < 0)
		return rc;
	dp_hex(hex, rnd, sizeof(rnd));
	snprintf(key, sizeof(key), ".dp-probe-%s", hex);

	rc = s3_put(base, key, payload, sizeof(payload));
	if (rc < 0) {
		dp_error_prefix("s3 repository check failed at step 1 of 3 (write a probe object "
		                "into \"%s\")",
		                b->display);
		goto out;
	}
	rc = s3_get(base, key, 0, UINT64_MAX, &back);
	if (rc == 0 && (back.len != sizeof(payload) || memcmp(back.data, payload, back.len) != 0))
		rc = dp_error_set(DP_ECORRUPT,
		                  "read back %zu bytes that differ from the %zu written", back.len,
		                  sizeof(payload));
	if (rc < 0) {
		dp_error_prefix("s3 repository check failed at step 2 of 3 (read back the probe "
		                "object \"%s%s\")",
		                b->display, key);
		/* Best effort: do not leave the probe behind. */
		int saved = dp_error_code();
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", dp_error_last());
		(void)s3_remove(base, key);
		dp_error_restore(saved, msg);
		goto out;
	}
	rc = s3_remove(base, key);
	if (rc == 0) {
		rc = s3_stat(base, key, NULL);
		if (rc == 0)
			rc =
			    dp_error_set(DP_ERROR, "the probe object is still there after a delete "
			                           "that reported success");
		else if (rc == DP_ENOTFOUND)
			rc = 0;
	}
	if (rc < 0)
		dp_error_prefix("s3 repository check failed at step 3 of 3 (delete the probe "
		                "object \"%s%s\")",
		                b->display, key);
out:
	dp_buf_free(&back);
	dp_wipe(payload, sizeof(payload));
	return rc;
}

/* ---- open / free ---- */

static void s3_free(dp_backend *base)
{
	s3_backend *b = (s3_backend *)base;
	if (!b)
		return;
	for (size_t i = 0; i < b->npool; i++)
		curl_easy_cleanup(b->pool[i]);
	free(b->pool);
	if (b->share)
		curl_share_cleanup(b->share);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&b->share_lock[i]);
	pthread_mutex_destroy(&b->pool_lock);
	s3_cred_wipe(&b->cred);
	s3_addr_free(&b->addr);
	free(b->url_root);
	free(b->bucket_url);
	free(b->display);
	free(b->ca_file);
	dp_wipe(b, sizeof(*b));
	free(b);
}

int dp_s3_backend_open(dp_backend **out, const char *url, const dp_backend_opts *opts)
{
	static const dp_backend_opts none = {.retries = -1};
	assert(out);
	*out = NULL;
	if (!opts)
		opts = &none;
	pthread_once(&curl_once, curl_init);
	if (curl_init_rc != CURLE_OK)
		return dp_error_set(DP_ERROR, "cannot initialise libcurl: %s",
		                    curl_easy_strerror(curl_init_rc));

	s3_backend *b = calloc(1, sizeof(*b));
	if (!b)
		return dp_error_set(DP_ERROR, "out of memory");
	pthread_mutex_init(&b->pool_lock, NULL);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&b->share_lock[i], NULL);
	int rc =
	    s3_addr_parse(&b->addr, url, opts->s3_endpoint, opts->s3_region, opts->s3_uri_style);
	if (rc < 0)
		goto fail;
	rc = s3_cred_load(&b->cred, opts->s3_credentials_file);
	if (rc < 0)
		goto fail;
	snprintf(b->sigv4, sizeof(b->sigv4), "aws:amz:%s:s3", b->addr.region);
	b->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : S3_DEFAULT_TIMEOUT_MS;
	b->retries = opts->retries >= 0 ? opts->retries : S3_DEFAULT_RETRIES;
	b->backoff_base_ms = S3_BACKOFF_BASE_MS;
	/* Test hook: shorter backoff so that fault tests run in seconds. */
	const char *bo = getenv("DP_S3_BACKOFF_MS");
	if (bo && *bo) {
		char *end;
		long v = strtol(bo, &end, 10);
		if (*end == 0 && v > 0 && v < 60000)
			b->backoff_base_ms = (unsigned)v;
	}
	if (opts->s3_ca_file && *opts->s3_ca_file) {
		b->ca_file = strdup(opts->s3_ca_file);
		if (!b->ca_file) {
			rc = dp_error_set(DP_ERROR, "out of memory");
			goto fail;
		}
	}
	dp_buf root = {0}, burl = {0}, disp = {0};
	if (b->addr.virtual_host) {
		rc = dp_buf_appendf(&root, "%s://%s.%s%s", b->addr.scheme, b->addr.bucket,
		                    b->addr.host, b->addr.base);
		if (rc == 0)
			rc = dp_buf_appendf(&burl, "%s/", (const char *)root.data);
	} else {
		rc = dp_buf_appendf(&root, "%s://%s%s/%s", b->addr.scheme, b->addr.host,
		                    b->addr.base, b->addr.bucket);
		if (rc == 0)
			rc = dp_buf_appendf(&burl, "%s", (const char *)root.data);
	}
	if (rc == 0)
		rc = dp_buf_appendf(&disp, "s3://%s/%s", b->addr.bucket, b->addr.prefix);
	b->url_root = (char *)root.data;
	b->bucket_url = (char *)burl.data;
	b->display = (char *)disp.data;
	if (rc < 0)
		goto fail;
	b->share = curl_share_init();
	if (!b->share) {
		rc = dp_error_set(DP_ERROR, "cannot create a curl share handle");
		goto fail;
	}
	curl_share_setopt(b->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(b->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(b->share, CURLSHOPT_USERDATA, b);
	curl_share_setopt(b->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(b->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);

	b->base.version = DP_BACKEND_VERSION;
	b->base.features = DP_BACKEND_F_RANGE | DP_BACKEND_F_PARALLEL;
	b->base.name = "s3";
	b->base.put = s3_put;
	b->base.get = s3_get;
	b->base.stat = s3_stat;
	b->base.list = s3_list;
	b->base.remove = s3_remove;
	b->base.free = s3_free;
	b->base.create = s3_create;
	b->base.remove_many = s3_remove_many;
	dp_debug("s3: %s via %s (%s-style, region %s, credentials from %s)", b->display,
	         b->url_root, b->addr.virtual_host ? "virtual-host" : "path", b->addr.region,
	         b->cred.source);
	*out = &b->base;
	return 0;
fail:
	s3_free(&b->base);
	return rc;
}
