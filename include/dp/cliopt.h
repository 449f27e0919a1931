/*
 * Command-line plumbing shared by every dp binary (dp, dp-worker,
 * dp-controller): the common flags, --help, the passphrase, numbers with
 * units, and the progress line on a terminal.
 *
 * A command describes itself with a dp_cli_cmd (its synopsis, help text,
 * examples, which common flags it takes and its own getopt_long options);
 * dp_cli_parse handles the common flags and --help and hands the command's
 * own options to its callback. Option values and arguments are borrowed from
 * argv. Secrets never come from flag values: the passphrase is read from the
 * file named by --passphrase-file or from DP_REPO_PASSPHRASE, and is wiped
 * by dp_cli_passphrase_free.
 *
 * Parsing uses getopt_long's globals: one thread, one parse at a time.
 * The progress line runs on its own thread and only reads the counters.
 */
#ifndef DP_CLIOPT_H
#define DP_CLIOPT_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dp/sys/backend.h"

struct dp_progress; /* dp/repo.h */

/* The common flags a command accepts. */
enum {
	DP_CLI_REPO = 1 << 0, /* --repo R (else env DP_REPO) */
	DP_CLI_PASS = 1 << 1, /* --passphrase-file F (else env DP_REPO_PASSPHRASE) */
	DP_CLI_S3 = 1 << 2, /* --s3-endpoint/-region/-uri-style/-ca-file/-credentials-file */
	DP_CLI_THREADS = 1 << 3, /* --threads N */
	DP_CLI_QUIET = 1 << 4, /* --quiet: no progress line */
	DP_CLI_JSON = 1 << 5, /* --json: machine-readable output */
	/* What every command that opens a repository takes. */
	DP_CLI_REPO_FLAGS = DP_CLI_REPO | DP_CLI_PASS | DP_CLI_S3 | DP_CLI_THREADS | DP_CLI_QUIET
};

/* Values of a command's own options must lie in 1..DP_CLI_OPT_MAX; the
 * common flags use values above it. */
#define DP_CLI_OPT_MAX 0xfff

typedef struct dp_cli_cmd {
	const char *prog; /* "dp-worker push": usage lines and messages */
	const char *synopsis; /* after prog: "[OPTIONS] NAME [FILE|DIR|-]" */
	const char *about; /* what it does, its arguments and its own options */
	const char *examples; /* one or more example lines */
	unsigned flags; /* DP_CLI_* */
	/* The command's own options ({0}-terminated) or NULL, and the callback
	 * that receives them (val, optarg or NULL); it returns 0 or a DP_E*
	 * code with a message. */
	const struct option *opts;
	int (*on_opt)(int val, const char *arg, void *ctx);
	void *ctx;
	int min_args, max_args; /* positional arguments; max_args -1: any number */
} dp_cli_cmd;

typedef struct dp_cli {
	const char *repo; /* --repo or DP_REPO; NULL if neither */
	const char *passphrase_file; /* --passphrase-file or NULL */
	dp_backend_opts bopts; /* the --s3-* flags; retries -1 (default) */
	int threads; /* 0: default */
	bool quiet;
	bool json;
	char **args; /* positional arguments, borrowed from argv */
	int nargs;
} dp_cli;

/* Returned (positive) by dp_cli_parse when --help was printed: the command
 * returns 0 without doing anything. */
#define DP_CLI_HELP 1

/* Parses argv (argv[0] is the command name). Returns 0, DP_CLI_HELP, or
 * DP_EUSAGE with a message that names the bad flag or argument and says
 * where the help is. */
int dp_cli_parse(dp_cli *out, const dp_cli_cmd *cmd, int argc, char **argv);

/* Prints the full help of cmd (synopsis, about, common flags, exit
 * status, examples). */
void dp_cli_help(const dp_cli_cmd *cmd, FILE *f);

/* DP_EUSAGE "no repository: ..." if c->repo is NULL. */
int dp_cli_need_repo(const dp_cli *c);

/* Reads the passphrase: the first line of the --passphrase-file file, else
 * DP_REPO_PASSPHRASE. DP_EUSAGE if neither is given or it is empty. Free
 * (and wipe) *out with dp_cli_passphrase_free. */
int dp_cli_passphrase(char **out, const dp_cli *c);
void dp_cli_passphrase_free(char *p);

/* Snapshot names: 1..255 bytes, no leading '/', no ".." path component,
 * no control characters. DP_EUSAGE naming the problem otherwise. */
int dp_cli_check_name(const char *name);

/* "16M", "4KiB", "1g", "512" -> bytes (binary units). DP_EUSAGE naming
 * what (e.g. "--pack-size") if s is not a size in [min, max]. */
int dp_cli_parse_size(uint64_t *out, const char *what, const char *s, uint64_t min, uint64_t max);
/* A decimal integer in [min, max]. */
int dp_cli_parse_int(long *out, const char *what, const char *s, long min, long max);

/* A command group: dp's commands, dp-worker's, `dp repo`'s subcommands. */
typedef struct dp_cli_command {
	const char *name;
	int (*run)(int argc, char **argv); /* argv[0] is the name */
	const char *summary;
} dp_cli_command;

/* Runs the command argv[1] names. With no command, prints the list to
 * stderr and returns DP_EUSAGE; with --help/-h/help prints it to stdout and
 * returns 0; an unknown name is DP_EUSAGE naming it. *ran is set to the
 * command that ran (NULL if none), so the caller can prefix its messages.
 * footer (may be NULL) is printed after the list, e.g. an example. */
int dp_cli_dispatch(const char *prog, const dp_cli_command *cmds, size_t n, const char *footer,
                    int argc, char **argv, const char **ran);

/* A program's main over dp_cli_dispatch: prints the error once, as
 * "PROG COMMAND: message", and returns the exit status. */
int dp_cli_main(const char *prog, const dp_cli_command *cmds, size_t n, int argc, char **argv);

/* "1.5 GiB", "312 B". */
void dp_cli_fmt_bytes(char *out, size_t cap, uint64_t n);
/* "2026-11-25T15:16:00Z". */
void dp_cli_fmt_time(char *out, size_t cap, int64_t unix_seconds);

/* SIGINT, SIGTERM and SIGHUP set a flag instead of ending the process, so
 * that a push or pull can stop cleanly (abort, release its lock, remove its
 * temporary files); a second signal ends the process at once. Blocking
 * reads and writes on the calling thread (the one that installed the
 * handlers) are interrupted (EINTR): signals that land on other threads are
 * passed on to it. dp_cli_interrupted returns the signal caught, 0 if
 * none, and dp_cli_check_interrupt turns it into an error (DP_ERROR). */
void dp_cli_catch_signals(void);
int dp_cli_interrupted(void);
int dp_cli_check_interrupt(void);

/* Machine events for the controller: when DP_STATUS_FD names an open
 * descriptor (>= 3), commands write one JSON object per line to it:
 *   {"event":"progress","verb":"push","done":N,"stored":N,"total":N,"seconds":S}
 *     about once a second while data moves, and once at the end;
 *   {"event":"result","verb":"push",...} when a command succeeded (the
 *     fields of its --json output).
 * dp_cli_status_fd returns the descriptor or -1; dp_cli_event writes one
 * line (json without its newline) in a single write, so lines from several
 * processes sharing the descriptor do not interleave. Human output never
 * goes there. */
int dp_cli_status_fd(void);
void dp_cli_event(const char *json);

/* The progress line: when enabled and stderr is a terminal, a thread
 * redraws "LABEL  bytes  MB/s  dedup  [pct ETA]" from the counters about 5
 * times a second until dp_cli_progress_stop, which clears the line. With
 * DP_STATUS_FD set, the same thread writes progress events (whether or not
 * the line is enabled). *out is NULL (and nothing runs) when neither
 * applies; stop(NULL) is a no-op. The counters are borrowed and must
 * outlive the progress line. */
typedef struct dp_cli_progress dp_cli_progress;
int dp_cli_progress_start(dp_cli_progress **out, const char *label, const struct dp_progress *p,
                          bool enabled);
void dp_cli_progress_stop(dp_cli_progress *pr);

#endif
