/*
 * Human logs on stderr (or a file). Machine events never go here.
 * Secrets are never passed to these functions.
 */
#ifndef DP_LOG_H
#define DP_LOG_H

enum dp_log_level { DP_LOG_DEBUG, DP_LOG_INFO, DP_LOG_WARN, DP_LOG_ERROR };

void dp_log_set_level(enum dp_log_level level);
void dp_log_set_prog(const char *prog); /* prefix, e.g. "dp-worker" */
void dp_log(enum dp_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define dp_debug(...) dp_log(DP_LOG_DEBUG, __VA_ARGS__)
#define dp_info(...) dp_log(DP_LOG_INFO, __VA_ARGS__)
#define dp_warn(...) dp_log(DP_LOG_WARN, __VA_ARGS__)

#endif
