/*
 * The scripted HTTP responder (see http_responder.h). One accept thread and
 * one thread per connection; a mutex guards the step counter and the
 * request log. Bodies are read by Content-Length only (no chunked
 * uploads: the S3 transport always sends a length). "Expect: 100-continue"
 * is answered with 100 before the body is read.
 */
#include "http_responder.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 64
#define MAX_REQS 256

typedef struct req_rec {
	char *head;
	char *body;
	size_t body_len;
} req_rec;

struct dp_http_responder {
	int lfd;
	int port;
	char url[64];
	dp_http_step *steps;
	size_t nsteps;
	pthread_t accept_thread;
	pthread_mutex_t mu;
	bool stopping;
	size_t nreq;
	req_rec reqs[MAX_REQS];
	struct {
		pthread_t t;
		int fd;
	} conns[MAX_CONNS];
	size_t nconns;
};

typedef struct conn_arg {
	dp_http_responder *r;
	int fd;
} conn_arg;

static void send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

static const char *reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 204:
		return "No Content";
	case 206:
		return "Partial Content";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 500:
		return "Internal Server Error";
	case 503:
		return "Service Unavailable";
	default:
		return "Status";
	}
}

/* Finds a header's value in head (case-insensitive name); copies it. */
static bool header_value(const char *head, const char *name, char *out, size_t n)
{
	size_t nl = strlen(name);
	for (const char *p = strstr(head, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
		const char *line = p + 2;
		if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
			const char *v = line + nl + 1;
			while (*v == ' ')
				v++;
			const char *e = strstr(v, "\r\n");
			size_t l = e ? (size_t)(e - v) : strlen(v);
			if (l >= n)
				l = n - 1;
			memcpy(out, v, l);
			out[l] = 0;
			return true;
		}
	}
	return false;
}

static void *conn_main(void *arg)
{
	conn_arg a = *(conn_arg *)arg;
	free(arg);
	dp_http_responder *r = a.r;
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	for (;;) {
		/* Read a head. */
		char *end;
		while (!(end = memmem(buf, len, "\r\n\r\n", 4))) {
			if (len + 1 >= cap) {
				cap *= 2;
				buf = realloc(buf, cap);
			}
			ssize_t n = recv(a.fd, buf + len, cap - len - 1, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				goto out;
			len += (size_t)n;
		}
		size_t hlen = (size_t)(end - buf);
		char *head = strndup(buf, hlen);
		memmove(buf, end + 4, len - hlen - 4);
		len -= hlen + 4;
		char v[64];
		size_t clen = 0;
		if (header_value(head, "Content-Length", v, sizeof(v)))
			clen = strtoul(v, NULL, 10);
		if (header_value(head, "Expect", v, sizeof(v)) &&
		    strcasecmp(v, "100-continue") == 0)
			send_all(a.fd, "HTTP/1.1 100 Continue\r\n\r\n", 25);
		while (len < clen) {
			if (clen + 1 > cap) {
				cap = clen + 1;
				buf = realloc(buf, cap);
			}
			ssize_t n = recv(a.fd, buf + len, cap - len - 1, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				free(head);
				goto out;
			}
			len += (size_t)n;
		}
		char *body = malloc(clen + 1);
		memcpy(body, buf, clen);
		body[clen] = 0;
		memmove(buf, buf + clen, len - clen);
		len -= clen;

		bool is_head = strncmp(head, "HEAD ", 5) == 0;
		pthread_mutex_lock(&r->mu);
		size_t i = r->nreq;
		dp_http_step st = r->steps[i < r->nsteps ? i : r->nsteps - 1];
		if (r->nreq < MAX_REQS) {
			r->reqs[r->nreq].head = head;
			r->reqs[r->nreq].body = body;
			r->reqs[r->nreq].body_len = clen;
			r->nreq++;
		} else {
			free(head);
			free(body);
		}
		pthread_mutex_unlock(&r->mu);

		if (st.action == DP_HTTP_RESET) {
			struct linger l = {1, 0};
			setsockopt(a.fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
			goto out;
		}
		if (st.action == DP_HTTP_STALL) {
			/* Sleep in slices so stop does not wait long. */
			for (int t = 0; t < st.delay_ms; t += 20) {
				struct timespec ts = {0, 20 * 1000000L};
				nanosleep(&ts, NULL);
				pthread_mutex_lock(&r->mu);
				bool stop = r->stopping;
				pthread_mutex_unlock(&r->mu);
				if (stop)
					goto out;
			}
		}
		const char *b = st.body ? st.body : "";
		size_t blen = strlen(b);
		char hdr[1024];
		int hn =
		    snprintf(hdr, sizeof(hdr), "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s%s\r\n",
		             st.status, reason(st.status), blen, st.headers ? st.headers : "",
		             blen ? "Content-Type: application/xml\r\n" : "");
		send_all(a.fd, hdr, (size_t)hn);
		if (st.action == DP_HTTP_DROP_BODY) {
			if (!is_head)
				send_all(a.fd, b, blen / 2);
			goto out;
		}
		if (!is_head)
			send_all(a.fd, b, blen);
	}
out:
	free(buf);
	shutdown(a.fd, SHUT_RDWR);
	return NULL;
}

static void *accept_main(void *arg)
{
	dp_http_responder *r = arg;
	for (;;) {
		struct pollfd p = {.fd = r->lfd, .events = POLLIN};
		int n = poll(&p, 1, 50);
		pthread_mutex_lock(&r->mu);
		bool stop = r->stopping;
		pthread_mutex_unlock(&r->mu);
		if (stop)
			return NULL;
		if (n <= 0)
			continue;
		int fd = accept(r->lfd, NULL, NULL);
		if (fd < 0)
			continue;
		pthread_mutex_lock(&r->mu);
		if (r->nconns == MAX_CONNS) {
			pthread_mutex_unlock(&r->mu);
			close(fd);
			continue;
		}
		conn_arg *ca = malloc(sizeof(*ca));
		ca->r = r;
		ca->fd = fd;
		r->conns[r->nconns].fd = fd;
		pthread_create(&r->conns[r->nconns].t, NULL, conn_main, ca);
		r->nconns++;
		pthread_mutex_unlock(&r->mu);
	}
}

dp_http_responder *dp_http_responder_start(const dp_http_step *steps, size_t n)
{
	ck_assert_msg(n > 0, "a responder needs at least one step");
	dp_http_responder *r = calloc(1, sizeof(*r));
	ck_assert_ptr_nonnull(r);
	r->steps = malloc(n * sizeof(*steps));
	memcpy(r->steps, steps, n * sizeof(*steps));
	r->nsteps = n;
	pthread_mutex_init(&r->mu, NULL);
	r->lfd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(r->lfd, 0);
	int one = 1;
	setsockopt(r->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in a = {.sin_family = AF_INET};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t alen = sizeof(a);
	ck_assert_int_eq(bind(r->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(listen(r->lfd, 16), 0);
	ck_assert_int_eq(getsockname(r->lfd, (struct sockaddr *)&a, &alen), 0);
	r->port = ntohs(a.sin_port);
	snprintf(r->url, sizeof(r->url), "http://127.0.0.1:%d", r->port);
	ck_assert_int_eq(pthread_create(&r->accept_thread, NULL, accept_main, r), 0);
	return r;
}

int dp_http_responder_port(dp_http_responder *r)
{
	return r->port;
}

const char *dp_http_responder_url(dp_http_responder *r)
{
	return r->url;
}

size_t dp_http_responder_connections(dp_http_responder *r)
{
	pthread_mutex_lock(&r->mu);
	size_t n = r->nconns;
	pthread_mutex_unlock(&r->mu);
	return n;
}

size_t dp_http_responder_count(dp_http_responder *r)
{
	pthread_mutex_lock(&r->mu);
	size_t n = r->nreq;
	pthread_mutex_unlock(&r->mu);
	return n;
}

const char *dp_http_responder_head(dp_http_responder *r, size_t i)
{
	pthread_mutex_lock(&r->mu);
	const char *h = i < r->nreq && i < MAX_REQS ? r->reqs[i].head : NULL;
	pthread_mutex_unlock(&r->mu);
	return h;
}

const char *dp_http_responder_body(dp_http_responder *r, size_t i, size_t *len)
{
	pthread_mutex_lock(&r->mu);
	const char *b = NULL;
	if (i < r->nreq && i < MAX_REQS) {
		b = r->reqs[i].body;
		if (len)
			*len = r->reqs[i].body_len;
	}
	pthread_mutex_unlock(&r->mu);
	return b;
}

void dp_http_responder_stop(dp_http_responder *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	r->stopping = true;
	pthread_mutex_unlock(&r->mu);
	pthread_join(r->accept_thread, NULL);
	close(r->lfd);
	for (size_t i = 0; i < r->nconns; i++)
		shutdown(r->conns[i].fd, SHUT_RDWR);
	for (size_t i = 0; i < r->nconns; i++) {
		pthread_join(r->conns[i].t, NULL);
		close(r->conns[i].fd);
	}
	for (size_t i = 0; i < r->nreq && i < MAX_REQS; i++) {
		free(r->reqs[i].head);
		free(r->reqs[i].body);
	}
	free(r->steps);
	pthread_mutex_destroy(&r->mu);
	free(r);
}
