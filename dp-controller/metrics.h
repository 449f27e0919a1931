/*
 * Private to dp-controller/: the /metrics route (metrics.c) for the API's
 * route hook. arg: the catalog path (a string that outlives the server).
 */
#ifndef DP_CTL_METRICS_H
#define DP_CTL_METRICS_H

#include "dp/buf.h"

int dp_ctl_metrics_route(void *arg, const char *method, const char *path, int authorized,
                         dp_buf *body, const char **content_type);

#endif
