/*
 * Private to the REST API (api.c, api_sse.c, api_token.c): the server state
 * shared by its connection threads. Everything in struct dp_api is set by
 * dp_api_start before the daemon runs and read-only afterwards, except
 * `stopping`, `watches` and the connection pool, which are guarded by mu
 * (and signalled on cv).
 */
#ifndef DP_API_INT_H
#define DP_API_INT_H

#include <limits.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "dp/api.h"

#define DP_API_POOL 8

struct dp_api {
	struct MHD_Daemon *d;
	char catalog_path[PATH_MAX];
	bool default_catalog; /* catalog_path unused: dp_catalog_open(NULL) */
	uint8_t token_hash[32]; /* SHA-256 of the token; the token itself is not kept */
	dp_api_opts opts; /* copied; listen and home are not used after start */
	int port;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stopping;
	int watches; /* open watch streams (mu); dp_api_stop lets them end */
	dp_catalog *pool[DP_API_POOL]; /* idle catalog connections (mu) */
	int npool;
};

/* A catalog connection for one request or watch, actor DP_API_ACTOR, used
 * by one thread until given back with dp_api_release (rc: the result of
 * the last catalog call; after an unexpected failure it is closed, not
 * reused). */
int dp_api_catalog(dp_api *a, dp_catalog **out);
void dp_api_release(dp_api *a, dp_catalog *c, int rc);
/* Sleeps up to ms, or until dp_api_stop; returns true once stopping. */
bool dp_api_wait(dp_api *a, int ms);
int64_t dp_api_now_ms(void);

/* A server-sent-events response streaming the changes after since_rv (-1:
 * after the current version) of kind (-1: every kind), or of one object
 * when name is set. */
int dp_api_watch_response(dp_api *a, int kind, const char *name, int64_t since_rv,
                          struct MHD_Response **out);

#endif
