/*
 * Downloads for applications through the C API: a chosen destination, cancel with
 * discard, rate and ETA, the list of running downloads, and the log callback.
 *
 * A registry and two peers (identity files in a temporary directory): bob shares a
 * small text file and an 8 MiB file, alice downloads.
 * - p2p_set_log_callback at P2P_LOG_WARN: a malformed origin record planted next to a
 *   partial download makes the library warn, and the callback gets that warning; no
 *   record below P2P_LOG_WARN ever arrives while that is the level; an invalid level is
 *   P2P_INVALID_ARGUMENT;
 * - p2p_peer_chats lists an open chat on both sides (alice's with her chat's id) and
 *   neither once it is closed;
 * - p2p_peer_fetch_to a chosen file path: P2P_OK, the path returned is that path, the
 *   file byte-identical to bob's and verified; the same destination again is
 *   P2P_ALREADY_EXISTS; into an existing directory the file keeps its name; a missing
 *   directory is P2P_NOT_A_DIRECTORY naming the download directory; a hidden or empty
 *   destination name is P2P_INVALID_ARGUMENT;
 * - the big file, held at its first progress callback: p2p_transfer_stats reports
 *   0 < bytes <= total, a rate > 0 and an ETA >= 0, p2p_peer_transfers lists exactly
 *   that download; p2p_transfer_cancel keeps the partial file (and its origin record)
 *   next to the destination; fetching again resumes it, and p2p_transfer_cancel_discard
 *   then leaves neither the partial nor its record; the list is empty again; a
 *   P2P_LOG_DEBUG callback gets the library's debug record of the discard.
 *
 * alarm() bounds the whole program. Prints "ALL OK" and exits 0 on success, exits 1
 * naming the first failure. Built and run (also under valgrind) by
 * tests/transfers_c.rs.
 */
#define _XOPEN_SOURCE 700 /* mkdtemp, nftw */

#include "p2pchat.h"
#include "check.h"

#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BIG_SIZE (8u * 1024 * 1024)

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

/* The log records seen, by level (1..4), and whether texts we look for came. */
static int records[5];
static int saw_malformed_warning;
static int saw_discard_debug;

static void on_log(void *user_data, p2p_log_level level, const char *target,
                   const char *message) {
    CHECK(user_data == (void *)records);
    CHECK(target != NULL && message != NULL);
    pthread_mutex_lock(&mu);
    if (level >= 1 && level <= 4) records[level]++;
    if (level == P2P_LOG_WARN && strstr(message, "malformed origin record") != NULL)
        saw_malformed_warning = 1;
    if (level == P2P_LOG_DEBUG && strstr(message, "discarded partial") != NULL)
        saw_discard_debug = 1;
    pthread_mutex_unlock(&mu);
}

/* The first progress callback of a held download waits here until released. */
static int hold;     /* hold the next download at its first progress */
static int progressed;

static void on_progress(void *user_data, uint64_t id, uint64_t received, uint64_t total) {
    struct timespec dl;
    (void)user_data, (void)id, (void)received, (void)total;
    pthread_mutex_lock(&mu);
    progressed = 1;
    pthread_cond_broadcast(&cv);
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 20;
    while (hold && pthread_cond_timedwait(&cv, &mu, &dl) == 0) {
    }
    pthread_mutex_unlock(&mu);
}

static void wait_progressed(void) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 30;
    pthread_mutex_lock(&mu);
    while (!progressed) CHECK(pthread_cond_timedwait(&cv, &mu, &dl) == 0 || progressed);
    pthread_mutex_unlock(&mu);
}

static void set_hold(int on) {
    pthread_mutex_lock(&mu);
    hold = on;
    progressed = 0;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

/* Bob accepts every chat; the handle is kept here and freed at the end. */
static p2p_chat *accepted;

static void on_chat_request(void *user_data, p2p_chat_request *request) {
    p2p_chat *chat = NULL;
    (void)user_data;
    if (p2p_chat_request_accept(request, &chat) != P2P_OK)
        fprintf(stderr, "accepting failed: %s\n", p2p_last_error_message());
    p2p_chat_request_free(request);
    pthread_mutex_lock(&mu);
    if (accepted == NULL) accepted = chat;
    else p2p_chat_free(chat);
    pthread_mutex_unlock(&mu);
}

static size_t open_chats(p2p_peer *peer, uint64_t *first) {
    uint64_t ids[4] = {0};
    size_t n = 99;
    OK(p2p_peer_chats(peer, ids, 4, &n));
    if (first) *first = ids[0];
    return n;
}

/* Poll (10 s at most) until `peer` has `want` open chats. */
static void wait_chats(p2p_peer *peer, size_t want) {
    const struct timespec tick = {0, 10 * 1000 * 1000};
    for (int i = 0; i < 1000 && open_chats(peer, NULL) != want; i++) nanosleep(&tick, NULL);
    CHECK(open_chats(peer, NULL) == want);
}

static p2p_peer *connect_peer(const char *registry, const char *name, const char *share,
                              const char *download, const char *key_file) {
    p2p_peer_config *config = NULL;
    p2p_peer *peer = NULL;
    OK(p2p_peer_config_new(registry, name, share, &config));
    OK(p2p_peer_config_set_listen_ip(config, "127.0.0.1"));
    OK(p2p_peer_config_set_identity_file(config, key_file));
    if (download) OK(p2p_peer_config_set_download_dir(config, download));
    OK(p2p_peer_config_on_transfer_progress(config, on_progress));
    OK(p2p_peer_config_on_chat_request(config, on_chat_request));
    OK(p2p_peer_connect(config, &peer));
    p2p_peer_config_free(config);
    return peer;
}

/* Whole file into a new buffer; its length in *len. */
static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    long n;
    CHECK(f != NULL);
    CHECK(fseek(f, 0, SEEK_END) == 0);
    n = ftell(f);
    CHECK(n >= 0);
    rewind(f);
    buf = malloc((size_t)n + 1);
    CHECK(buf != NULL);
    CHECK(fread(buf, 1, (size_t)n, f) == (size_t)n);
    CHECK(fclose(f) == 0);
    *len = (size_t)n;
    return buf;
}

static long size_of(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static size_t running(p2p_peer *peer, uint64_t *first) {
    uint64_t ids[4] = {0};
    size_t n = 99;
    OK(p2p_peer_transfers(peer, ids, 4, &n));
    if (first) *first = ids[0];
    return n;
}

int main(void) {
    char root[] = "/tmp/p2p_transfers_XXXXXX";
    char a_share[64], b_share[64], dest[64], a_key[96], b_key[96], path[160], path2[160];
    char part[160], orig[160];
    static unsigned char big[BIG_SIZE];
    const char *notes = "bob's notes\nsecond line\n";
    unsigned char *got;
    size_t len, n;
    uint64_t id, listed;
    char *addr = NULL, *saved = NULL;
    p2p_registry *registry = NULL;
    p2p_peer *alice, *bob;
    p2p_transfer *t = NULL;
    p2p_transfer_statistics stats;
    bool flag = false;

    alarm(240);
    CHECK(mkdtemp(root) != NULL);
    snprintf(a_share, sizeof a_share, "%s/a", root);
    snprintf(b_share, sizeof b_share, "%s/b", root);
    snprintf(dest, sizeof dest, "%s/dest", root);
    snprintf(a_key, sizeof a_key, "%s/keys/alice.key", root);
    snprintf(b_key, sizeof b_key, "%s/keys/bob.key", root);
    CHECK(mkdir(a_share, 0700) == 0 && mkdir(b_share, 0700) == 0 && mkdir(dest, 0700) == 0);
    snprintf(path, sizeof path, "%s/notes.txt", b_share);
    write_bytes(path, (const unsigned char *)notes, strlen(notes));
    for (size_t i = 0; i < BIG_SIZE; i++) big[i] = (unsigned char)((i * 2654435761u) >> 13);
    snprintf(path, sizeof path, "%s/big.bin", b_share);
    write_bytes(path, big, BIG_SIZE);

    /* Logging at WARN, before anything runs. */
    EXPECT(p2p_set_log_callback(on_log, records, 0), P2P_INVALID_ARGUMENT);
    EXPECT(p2p_set_log_callback(on_log, records, 5), P2P_INVALID_ARGUMENT);
    OK(p2p_set_log_callback(on_log, records, P2P_LOG_WARN));

    OK(p2p_registry_start("127.0.0.1:0", NULL, NULL, &registry));
    OK(p2p_registry_address(registry, &addr));
    alice = connect_peer(addr, "alice", a_share, NULL, a_key);
    bob = connect_peer(addr, "bob", b_share, NULL, b_key);

    /* fetch_to a chosen file path: byte-identical, verified, at that path. */
    snprintf(path, sizeof path, "%s/renamed.txt", dest);
    EXPECT(p2p_peer_fetch_to(NULL, "bob", "notes.txt", path, &t), P2P_NULL_ARGUMENT);
    EXPECT(p2p_peer_fetch_to(alice, "bob", "notes.txt", NULL, &t), P2P_NULL_ARGUMENT);
    OK(p2p_peer_fetch_to(alice, "bob", "notes.txt", path, &t));
    OK(p2p_transfer_wait(t, &saved));
    CHECK(strcmp(saved, path) == 0);
    OK(p2p_transfer_is_verified(t, &flag));
    CHECK(flag);
    p2p_string_free(saved);
    p2p_transfer_free(t);
    got = read_all(path, &len);
    CHECK(len == strlen(notes) && memcmp(got, notes, len) == 0);
    free(got);
    snprintf(part, sizeof part, "%s/.renamed.txt.p2pchat-part", dest);
    CHECK(!exists(part));
    CHECK(!exists(a_share) || size_of(a_share) >= 0);
    snprintf(path2, sizeof path2, "%s/notes.txt", a_share);
    CHECK(!exists(path2)); /* not in the peer's own download directory */

    /* Never overwrites: the same destination again is refused before starting. */
    t = NULL;
    EXPECT(p2p_peer_fetch_to(alice, "bob", "notes.txt", path, &t), P2P_ALREADY_EXISTS);
    CHECK(t == NULL);
    got = read_all(path, &len);
    CHECK(len == strlen(notes));
    free(got);

    /* Into an existing directory: the file keeps its name there. */
    OK(p2p_peer_fetch_to(alice, "bob", "notes.txt", dest, &t));
    OK(p2p_transfer_wait(t, &saved));
    snprintf(path2, sizeof path2, "%s/notes.txt", dest);
    CHECK(strcmp(saved, path2) == 0);
    p2p_string_free(saved);
    p2p_transfer_free(t);

    /* A missing directory names the download directory; bad names are refused. */
    snprintf(path2, sizeof path2, "%s/missing/x.txt", root);
    EXPECT(p2p_peer_fetch_to(alice, "bob", "notes.txt", path2, &t), P2P_NOT_A_DIRECTORY);
    CHECK(strstr(p2p_last_error_message(), "download directory") != NULL);
    CHECK(strstr(p2p_last_error_message(), "shared directory") == NULL);
    snprintf(path2, sizeof path2, "%s/missing/", root);
    EXPECT(p2p_peer_fetch_to(alice, "bob", "notes.txt", path2, &t), P2P_NOT_A_DIRECTORY);
    snprintf(path2, sizeof path2, "%s/.hidden", dest);
    EXPECT(p2p_peer_fetch_to(alice, "bob", "notes.txt", path2, &t), P2P_INVALID_ARGUMENT);
    EXPECT(p2p_peer_fetch_to(alice, "bob", "../notes.txt", dest, &t), P2P_INVALID_ARGUMENT);

    /* A malformed origin record next to an (empty) partial: the library warns. */
    snprintf(path2, sizeof path2, "%s/.again.txt.p2pchat-part", dest);
    write_bytes(path2, (const unsigned char *)"", 0);
    snprintf(path2, sizeof path2, "%s/.again.txt.p2pchat-orig", dest);
    write_bytes(path2, (const unsigned char *)"not a record\n", 13);
    snprintf(path2, sizeof path2, "%s/again.txt", dest);
    OK(p2p_peer_fetch_to(alice, "bob", "notes.txt", path2, &t));
    OK(p2p_transfer_wait(t, NULL));
    p2p_transfer_free(t);
    pthread_mutex_lock(&mu);
    CHECK(saw_malformed_warning);
    pthread_mutex_unlock(&mu);

    /* The big file, held at its first progress: stats, the list, cancel (keep). */
    CHECK(running(alice, NULL) == 0);
    snprintf(path, sizeof path, "%s/big-copy.bin", dest);
    snprintf(part, sizeof part, "%s/.big-copy.bin.p2pchat-part", dest);
    snprintf(orig, sizeof orig, "%s/.big-copy.bin.p2pchat-orig", dest);
    set_hold(1);
    OK(p2p_peer_fetch_to(alice, "bob", "big.bin", path, &t));
    OK(p2p_transfer_id(t, &id));
    wait_progressed();
    OK(p2p_transfer_stats(t, &stats));
    printf("held: %llu of %llu bytes, %.0f B/s, eta %lld ms\n",
           (unsigned long long)stats.bytes, (unsigned long long)stats.total,
           stats.bytes_per_sec, (long long)stats.eta_ms);
    CHECK(stats.total == BIG_SIZE);
    CHECK(stats.bytes > 0 && stats.bytes <= stats.total);
    CHECK(stats.bytes_per_sec > 0);
    CHECK(stats.eta_ms >= 0);
    EXPECT(p2p_transfer_stats(t, NULL), P2P_NULL_ARGUMENT);
    EXPECT(p2p_transfer_stats(NULL, &stats), P2P_NULL_ARGUMENT);
    CHECK(running(alice, &listed) == 1 && listed == id);
    OK(p2p_peer_transfers(alice, NULL, 0, &n));
    CHECK(n == 1);
    EXPECT(p2p_peer_transfers(alice, NULL, 1, &n), P2P_NULL_ARGUMENT);
    EXPECT(p2p_peer_transfers(alice, NULL, 0, NULL), P2P_NULL_ARGUMENT);
    OK(p2p_transfer_cancel(t));
    set_hold(0);
    EXPECT(p2p_transfer_wait(t, NULL), P2P_CANCELLED);
    OK(p2p_transfer_stats(t, &stats));
    CHECK(stats.eta_ms == 0 && stats.bytes_per_sec == 0);
    p2p_transfer_free(t);
    CHECK(running(alice, NULL) == 0);
    CHECK(size_of(part) > 0 && exists(orig)); /* kept for a resume */
    CHECK(!exists(path));

    /* No record below WARN arrived while that was the level. */
    pthread_mutex_lock(&mu);
    CHECK(records[P2P_LOG_INFO] == 0 && records[P2P_LOG_DEBUG] == 0);
    CHECK(records[P2P_LOG_WARN] >= 1);
    pthread_mutex_unlock(&mu);

    /* Resume, then cancel with discard: nothing left behind. Logging at DEBUG. */
    OK(p2p_set_log_callback(on_log, records, P2P_LOG_DEBUG));
    set_hold(1);
    OK(p2p_peer_fetch_to(alice, "bob", "big.bin", path, &t));
    wait_progressed();
    OK(p2p_transfer_stats(t, &stats));
    CHECK(stats.bytes > 0 && stats.bytes <= stats.total);
    OK(p2p_transfer_cancel_discard(t));
    EXPECT(p2p_transfer_cancel_discard(NULL), P2P_NULL_ARGUMENT);
    set_hold(0);
    EXPECT(p2p_transfer_wait(t, NULL), P2P_CANCELLED);
    p2p_transfer_free(t);
    CHECK(!exists(part) && !exists(orig) && !exists(path));
    CHECK(running(alice, NULL) == 0);
    pthread_mutex_lock(&mu);
    CHECK(saw_discard_debug);
    pthread_mutex_unlock(&mu);

    /* And a whole download of it to the same path now works from 0, verified. */
    OK(p2p_set_log_callback(NULL, NULL, P2P_LOG_ERROR));
    OK(p2p_peer_fetch_to(alice, "bob", "big.bin", path, &t));
    OK(p2p_transfer_wait(t, NULL));
    p2p_transfer_free(t);
    got = read_all(path, &len);
    CHECK(len == BIG_SIZE && memcmp(got, big, BIG_SIZE) == 0);
    free(got);

    /* The open chats: listed on both sides while open, gone once closed. */
    {
        p2p_chat *chat = NULL;
        uint64_t chat_id = 0, first = 0;
        CHECK(open_chats(alice, NULL) == 0);
        OK(p2p_peer_chat(alice, "bob", &chat));
        OK(p2p_chat_id(chat, &chat_id));
        CHECK(open_chats(alice, &first) == 1 && first == chat_id);
        wait_chats(bob, 1);
        EXPECT(p2p_peer_chats(alice, NULL, 2, &n), P2P_NULL_ARGUMENT);
        EXPECT(p2p_peer_chats(NULL, NULL, 0, &n), P2P_NULL_ARGUMENT);
        OK(p2p_chat_close(chat));
        CHECK(open_chats(alice, NULL) == 0);
        wait_chats(bob, 0);
        p2p_chat_free(chat);
    }

    p2p_peer_free(alice);
    p2p_peer_free(bob);
    p2p_chat_free(accepted);
    p2p_registry_free(registry);
    p2p_string_free(addr);
    CHECK(nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0);
    printf("ALL OK\n");
    return 0;
}
