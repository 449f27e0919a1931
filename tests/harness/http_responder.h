/*
 * A scripted HTTP/1.1 responder for testing a client's error paths (the S3
 * transport's retries): it listens on a free 127.0.0.1 port and answers the
 * Nth request with the Nth step of a script (the last step repeats), and
 * records every request (head and body) so a test can inspect what was sent
 * (e.g. check a SigV4 signature).
 *
 * Runs in threads of the test process (one per connection); stop joins
 * them. Test-only code: failures abort the test.
 */
#ifndef DP_TEST_HTTP_RESPONDER_H
#define DP_TEST_HTTP_RESPONDER_H

#include <stddef.h>

typedef enum dp_http_action {
	DP_HTTP_RESPOND, /* status, headers, body */
	DP_HTTP_STALL, /* wait delay_ms, then respond as above */
	DP_HTTP_DROP_BODY, /* send the head with the full Content-Length and
	                    * half of the body, then close the connection */
	DP_HTTP_RESET /* close at once with a TCP reset, no answer */
} dp_http_action;

typedef struct dp_http_step {
	dp_http_action action;
	int status; /* e.g. 200, 503 */
	const char *headers; /* extra "Name: value\r\n" lines, or NULL */
	const char *body; /* or NULL for none */
	int delay_ms; /* for DP_HTTP_STALL */
} dp_http_step;

typedef struct dp_http_responder dp_http_responder;

/* steps is copied. */
dp_http_responder *dp_http_responder_start(const dp_http_step *steps, size_t n);
int dp_http_responder_port(dp_http_responder *r);
/* "http://127.0.0.1:PORT" (owned by r). */
const char *dp_http_responder_url(dp_http_responder *r);
/* TCP connections accepted so far. */
size_t dp_http_responder_connections(dp_http_responder *r);
/* Requests received so far (complete heads). */
size_t dp_http_responder_count(dp_http_responder *r);
/* Request i: its head (request line and headers, CRLFs kept, without the
 * blank line) and body. Owned by r, valid until stop. */
const char *dp_http_responder_head(dp_http_responder *r, size_t i);
const char *dp_http_responder_body(dp_http_responder *r, size_t i, size_t *len);
void dp_http_responder_stop(dp_http_responder *r);

#endif
