/*
 * Private interface between repo.c (open) and keyslot.c (random-key slots):
 * dp_repo_open_unlock reads and checks the config of the repository on b,
 * then calls unlock to fill r->master (r->b and r->id are set); on success it
 * finishes the handle. Ownership of b passes to the call, also on failure.
 * Nothing outside repos/ includes this header.
 */
#ifndef DP_REPOS_KEYSLOT_H
#define DP_REPOS_KEYSLOT_H

#include "dp/repo.h"

typedef int (*dp_repo_unlock_fn)(dp_repo *r, void *arg);
int dp_repo_open_unlock(dp_repo **out, dp_backend *b, dp_repo_unlock_fn unlock, void *arg);

#endif
