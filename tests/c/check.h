/*
 * The checks and small file helpers the C test programs under tests/c share, so each
 * program holds only what it tests. Header-only (static functions and macros), C99,
 * clean under -Wall -Wextra -Werror -pedantic (tests/common/mod.rs `compiler`).
 *
 * Include it after "p2pchat.h" and after defining _XOPEN_SOURCE 700 (nftw and struct
 * FTW need it, and it must come before the first system header):
 *
 *     #define _XOPEN_SOURCE 700
 *     #include "p2pchat.h"
 *     #include "check.h"
 *
 * A failed check prints "FAILED at line N: <what> (got <status>: <last error>)" on
 * stderr and exits 1; the Rust drivers under tests/ show that output. Programs with their
 * own notion of failure (tests/c/reentrant_calls.c counts failures and goes on) and the
 * user-facing programs in examples/ keep their own definitions.
 *
 * - CHECK(cond): `cond` must hold (the status shown is P2P_OK);
 * - EXPECT(call, want): the p2p_status `call` returns must be `want`;
 * - OK(call): EXPECT(call, P2P_OK);
 * - remove_entry: the nftw callback that removes one entry, for removing a temporary
 *   tree with nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
 * - write_bytes(path, data, len): create or replace a file with those bytes;
 * - exists(path): whether stat() finds the path.
 */
#ifndef P2PCHAT_TESTS_C_CHECK_H
#define P2PCHAT_TESTS_C_CHECK_H

#include "p2pchat.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* Report the first failure (the check's source text and the status it got, with the
 * library's last error message on this thread) and exit 1. */
static inline void fail(int line, const char *what, p2p_status got) {
    fprintf(stderr, "FAILED at line %d: %s (got %s: %s)\n", line, what, p2p_status_name(got),
            p2p_last_error_message());
    exit(1);
}
#define CHECK(cond) ((cond) ? (void)0 : fail(__LINE__, #cond, P2P_OK))
#define EXPECT(call, want)                                                                  \
    do {                                                                                    \
        p2p_status st_ = (call);                                                            \
        if (st_ != (want)) fail(__LINE__, #call " == " #want, st_);                         \
    } while (0)
#define OK(call) EXPECT(call, P2P_OK)

/* nftw callback: remove this entry (with FTW_DEPTH a directory comes after its
 * contents). */
static inline int remove_entry(const char *path, const struct stat *sb, int flag,
                               struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

/* Create (or replace) `path` holding `len` bytes of `data`. */
static inline void write_bytes(const char *path, const unsigned char *data, size_t len) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(fwrite(data, 1, len, f) == len);
    CHECK(fclose(f) == 0);
}

/* Whether `path` exists (stat succeeds). */
static inline int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

#endif /* P2PCHAT_TESTS_C_CHECK_H */
