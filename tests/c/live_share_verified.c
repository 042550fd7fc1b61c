/*
 * The interop and live-share additions of the C API, from C: bob connects with the live
 * share on and alice with the registry mode stated explicitly (not legacy); a file
 * bob's program writes into his shared directory after connecting reaches the
 * registry by itself (alice sees it in p2p_peer_files_of without any rescan); alice
 * learns bob is not an original client, downloads the file, and the download says it
 * is verified (hash-checked) and its content matches.
 *
 * alarm() bounds the whole program: if anything hangs it exits 2 (SIGALRM). Prints
 * "ALL OK" and exits 0 on success, exits 1 naming the first failure. Built and run by
 * tests/live_share_verified.rs.
 */
#define _XOPEN_SOURCE 700 /* mkdtemp, nftw, nanosleep */

#include "p2pchat.h"
#include "check.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FILE_NAME "late.bin"
#define FILE_SIZE (200 * 1000 + 7)

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int lists(const p2p_string_list *list, const char *name) {
    for (size_t i = 0; i < list->len; i++) {
        if (strcmp(list->items[i], name) == 0) {
            return 1;
        }
    }
    return 0;
}

int main(void) {
    alarm(120);
    char share_a[] = "/tmp/p2p_live_a_XXXXXX", share_b[] = "/tmp/p2p_live_b_XXXXXX";
    CHECK(mkdtemp(share_a) && mkdtemp(share_b));

    p2p_registry *registry = NULL;
    OK(p2p_registry_start("127.0.0.1:0", NULL, NULL, &registry));
    char *addr = NULL;
    OK(p2p_registry_address(registry, &addr));

    p2p_peer_config *cfg = NULL;
    OK(p2p_peer_config_new(addr, "bob", share_b, &cfg));
    OK(p2p_peer_config_set_live_share(cfg, true));
    p2p_peer *bob = NULL;
    OK(p2p_peer_connect(cfg, &bob));
    p2p_peer_config_free(cfg);

    OK(p2p_peer_config_new(addr, "alice", share_a, &cfg));
    OK(p2p_peer_config_set_legacy_registry(cfg, false));
    p2p_peer *alice = NULL;
    OK(p2p_peer_connect(cfg, &alice));
    p2p_peer_config_free(cfg);

    bool flag = true;
    OK(p2p_peer_registry_is_legacy(alice, &flag));
    CHECK(!flag);
    flag = true;
    OK(p2p_peer_user_is_legacy(alice, "bob", &flag));
    CHECK(!flag);

    /* Written after bob connected: only the live share can announce it. */
    char path[256];
    snprintf(path, sizeof path, "%s/%s", share_b, FILE_NAME);
    unsigned char *content = malloc(FILE_SIZE);
    CHECK(content != NULL);
    for (size_t i = 0; i < FILE_SIZE; i++) {
        content[i] = (unsigned char)(i * 31 % 253);
    }
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(fwrite(content, 1, FILE_SIZE, f) == FILE_SIZE);
    CHECK(fclose(f) == 0);

    int seen = 0;
    for (int i = 0; i < 600 && !seen; i++) { /* up to ~60 s */
        p2p_string_list files = {NULL, 0};
        OK(p2p_peer_files_of(alice, "bob", &files));
        seen = lists(&files, FILE_NAME);
        p2p_string_list_free(&files);
        if (!seen) {
            sleep_ms(100);
        }
    }
    CHECK(seen);

    p2p_transfer *t = NULL;
    OK(p2p_peer_fetch(alice, "bob", FILE_NAME, &t));
    flag = false;
    OK(p2p_transfer_is_verified(t, &flag));
    CHECK(flag);
    char *saved = NULL;
    OK(p2p_transfer_wait(t, &saved));
    f = fopen(saved, "rb");
    CHECK(f != NULL);
    unsigned char *got = malloc(FILE_SIZE + 1);
    CHECK(got != NULL);
    CHECK(fread(got, 1, FILE_SIZE + 1, f) == FILE_SIZE);
    fclose(f);
    CHECK(memcmp(got, content, FILE_SIZE) == 0);
    free(got);
    free(content);
    p2p_string_free(saved);
    p2p_transfer_free(t);

    p2p_peer_free(alice);
    p2p_peer_free(bob);
    p2p_registry_free(registry);
    p2p_string_free(addr);
    nftw(share_a, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    nftw(share_b, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    puts("ALL OK");
    return 0;
}
