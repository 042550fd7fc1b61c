/*
 * chat_and_fetch.c - the whole p2pchat C API in one run, checked at every step.
 *
 * Starts a registry on 127.0.0.1 (any free port), connects two peers, alice and bob,
 * each sharing a fresh temporary directory and keeping its identity (key pair) there,
 * prints their fingerprints and checks that the one the registry lists for bob is
 * bob's own, chats in both directions (bob accepts from his chat-request callback,
 * which shows who asks, verified or not), downloads a file from bob to alice and
 * compares the bytes, then frees everything. Prints "ALL OK" and exits 0 on success; exits 1
 * at the first failure, naming it.
 *
 * Build (after `cargo build --release` and `make -C examples install PREFIX=...`):
 *   cc -std=c11 chat_and_fetch.c $(pkg-config --cflags --libs p2pchat) -pthread
 */
#define _XOPEN_SOURCE 700 /* mkdtemp, nftw, clock_gettime */

#include "p2pchat.h"

#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <time.h>

#define FILE_NAME "photo.bin"
#define FILE_SIZE (300 * 1024 + 7)

static void fail(const char *file, int line, const char *what, const char *detail) {
    fprintf(stderr, "FAILED at %s:%d: %s%s%s\n", file, line, what, detail ? ": " : "",
            detail ? detail : "");
    exit(1);
}

/* Check that a p2pchat call returned `expected`. */
#define EXPECT_STATUS(call, expected)                                                       \
    do {                                                                                    \
        p2p_status st_ = (call);                                                            \
        if (st_ != (expected)) {                                                            \
            char msg_[512];                                                                 \
            snprintf(msg_, sizeof msg_, "got %s, wanted %s (%s)", p2p_status_name(st_),     \
                     p2p_status_name(expected), p2p_last_error_message());                  \
            fail(__FILE__, __LINE__, #call, msg_);                                          \
        }                                                                                   \
    } while (0)
#define CHECK(call) EXPECT_STATUS(call, P2P_OK)
#define EXPECT(cond)                                                                        \
    do {                                                                                    \
        if (!(cond)) fail(__FILE__, __LINE__, #cond, NULL);                                 \
    } while (0)

/* What one peer's callbacks saw; the callbacks run on library threads. */
typedef struct {
    const char *name;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int messages;
    char last_message[256];
    int requests;
    p2p_chat *accepted; /* bob: the chat accepted in the request callback */
    int closed;
    p2p_chat_closed_by closed_by;
    int progress_calls;
    uint64_t last_total;
    int done;
    int failed;
    p2p_status failed_status;
    int events;
} side;

static void side_init(side *s, const char *name) {
    memset(s, 0, sizeof *s);
    s->name = name;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
}

static void side_destroy(side *s) {
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
}

/* Wait (10 s at most) until `cond` holds; `cond` reads `s` under its lock. */
#define WAIT_FOR(s, cond)                                                                   \
    do {                                                                                    \
        struct timespec dl_;                                                                \
        int ok_ = 1;                                                                        \
        clock_gettime(CLOCK_REALTIME, &dl_);                                                \
        dl_.tv_sec += 10;                                                                   \
        pthread_mutex_lock(&(s)->mu);                                                       \
        while (!(cond) && ok_)                                                              \
            ok_ = pthread_cond_timedwait(&(s)->cv, &(s)->mu, &dl_) == 0 || (cond);          \
        pthread_mutex_unlock(&(s)->mu);                                                     \
        if (!ok_) fail(__FILE__, __LINE__, "timed out waiting for " #cond, (s)->name);      \
    } while (0)

static void on_chat_request(void *user_data, p2p_chat_request *request) {
    side *s = user_data;
    char *from = NULL, *fingerprint = NULL;
    bool verified = false;
    p2p_chat *chat = NULL;
    /* Who asks, and whether they proved it: a verified request came over a secured link
     * with the key the registry lists for that name. Show an unverified one as such. */
    if (p2p_chat_request_is_verified(request, &verified) == P2P_OK &&
        p2p_chat_request_fingerprint(request, &fingerprint) == P2P_OK)
        printf("[%s] chat request, %s%s\n", s->name,
               verified ? "verified, fingerprint " : "UNVERIFIED", fingerprint);
    p2p_string_free(fingerprint);
    /* The request is ours now: answer it and free it (here, in the callback). Only a
     * verified alice is accepted. */
    if (p2p_chat_request_from(request, &from) == P2P_OK && strcmp(from, "alice") == 0 &&
        verified) {
        if (p2p_chat_request_accept(request, &chat) != P2P_OK)
            fprintf(stderr, "accept failed: %s\n", p2p_last_error_message());
    } else {
        p2p_chat_request_decline(request);
    }
    p2p_string_free(from);
    p2p_chat_request_free(request);
    pthread_mutex_lock(&s->mu);
    s->requests++;
    s->accepted = chat;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void on_chat_message(void *user_data, uint64_t chat_id, const char *from,
                            const char *text, size_t text_len) {
    side *s = user_data;
    (void)chat_id;
    pthread_mutex_lock(&s->mu);
    s->messages++;
    snprintf(s->last_message, sizeof s->last_message, "%s: %.*s", from, (int)text_len, text);
    printf("[%s] message from %s\n", s->name, s->last_message);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void on_chat_closed(void *user_data, uint64_t chat_id, const char *peer,
                           p2p_chat_closed_by by) {
    side *s = user_data;
    (void)chat_id;
    printf("[%s] chat with %s ended\n", s->name, peer);
    pthread_mutex_lock(&s->mu);
    s->closed++;
    s->closed_by = by;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void on_progress(void *user_data, uint64_t id, uint64_t received, uint64_t total) {
    side *s = user_data;
    (void)id;
    (void)received;
    pthread_mutex_lock(&s->mu);
    s->progress_calls++;
    s->last_total = total;
    pthread_mutex_unlock(&s->mu);
}

static void on_done(void *user_data, uint64_t id, const char *path) {
    side *s = user_data;
    (void)id;
    printf("[%s] download done: %s\n", s->name, strrchr(path, '/') + 1);
    pthread_mutex_lock(&s->mu);
    s->done++;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void on_failed(void *user_data, uint64_t id, p2p_status status, const char *message) {
    side *s = user_data;
    (void)id;
    printf("[%s] download failed: %s (%s)\n", s->name, p2p_status_name(status), message);
    pthread_mutex_lock(&s->mu);
    s->failed++;
    s->failed_status = status;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void on_event(void *user_data, p2p_peer_event_kind kind, const char *detail) {
    side *s = user_data;
    (void)kind;
    (void)detail;
    pthread_mutex_lock(&s->mu);
    s->events++;
    pthread_mutex_unlock(&s->mu);
}

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static int registry_queries;

static void on_registry_event(void *user_data, const p2p_registry_event *event) {
    (void)user_data;
    if (event->kind == P2P_REGISTRY_QUERY) {
        pthread_mutex_lock(&registry_mu);
        registry_queries++;
        pthread_mutex_unlock(&registry_mu);
    }
}

static p2p_peer *connect_peer(const char *registry, const char *name, const char *share,
                              const char *downloads, const char *key_file, side *s) {
    p2p_peer_config *config = NULL;
    p2p_peer *peer = NULL;
    CHECK(p2p_peer_config_new(registry, name, share, &config));
    CHECK(p2p_peer_config_set_listen_ip(config, "127.0.0.1"));
    /* The key pair that owns the name: created (mode 0600) on first use, loaded after.
     * Without this call it lives in ~/.config/p2pchat/<name>.key. */
    CHECK(p2p_peer_config_set_identity_file(config, key_file));
    CHECK(p2p_peer_config_set_download_dir(config, downloads));
    CHECK(p2p_peer_config_set_chat_answer_timeout_ms(config, 10000));
    CHECK(p2p_peer_config_set_user_data(config, s));
    CHECK(p2p_peer_config_on_chat_request(config, on_chat_request));
    CHECK(p2p_peer_config_on_chat_message(config, on_chat_message));
    CHECK(p2p_peer_config_on_chat_closed(config, on_chat_closed));
    CHECK(p2p_peer_config_on_transfer_progress(config, on_progress));
    CHECK(p2p_peer_config_on_transfer_done(config, on_done));
    CHECK(p2p_peer_config_on_transfer_failed(config, on_failed));
    CHECK(p2p_peer_config_on_event(config, on_event));
    CHECK(p2p_peer_connect(config, &peer));
    p2p_peer_config_free(config); /* the peer keeps a copy */
    return peer;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int list_contains(const p2p_string_list *list, const char *item) {
    for (size_t i = 0; i < list->len; i++)
        if (strcmp(list->items[i], item) == 0) return 1;
    return 0;
}

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    long size;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc(size > 0 ? (size_t)size : 1);
    *len = fread(buf, 1, (size_t)size, f);
    fclose(f);
    return buf;
}

int main(void) {
    char root[] = "/tmp/p2pchat-example-XXXXXX";
    char a_share[64], a_down[64], b_share[64], original[96], a_key[64], b_key[64];
    side alice, bob;
    p2p_registry *registry = NULL;
    char *registry_addr = NULL;
    p2p_peer *a = NULL, *b = NULL;
    p2p_string_list users = {NULL, 0}, files = {NULL, 0};
    p2p_user_files_list all = {NULL, 0};
    char *ip = NULL, *path = NULL, *name = NULL, *a_fp = NULL, *b_fp = NULL, *listed = NULL;
    uint16_t port = 0, b_port = 0;
    size_t count = 0, got_len = 0, i;
    p2p_chat *chat = NULL, *bob_chat = NULL;
    p2p_transfer *transfer = NULL, *missing = NULL;
    uint64_t received = 0, total = 0;
    bool flag = false;
    unsigned char *want, *got;
    FILE *f;

    printf("p2pchat %s (header %s)\n", p2p_version(), P2PCHAT_VERSION);
    EXPECT(strcmp(p2p_version(), P2PCHAT_VERSION) == 0);

    /* Scratch directories and a file for bob to share. */
    EXPECT(mkdtemp(root) != NULL);
    snprintf(a_share, sizeof a_share, "%s/alice-share", root);
    snprintf(a_down, sizeof a_down, "%s/alice-downloads", root);
    snprintf(b_share, sizeof b_share, "%s/bob-share", root);
    snprintf(original, sizeof original, "%s/%s", b_share, FILE_NAME);
    snprintf(a_key, sizeof a_key, "%s/alice.key", root);
    snprintf(b_key, sizeof b_key, "%s/bob.key", root);
    EXPECT(mkdir(a_share, 0700) == 0 && mkdir(a_down, 0700) == 0 && mkdir(b_share, 0700) == 0);
    want = malloc(FILE_SIZE);
    for (i = 0; i < FILE_SIZE; i++) want[i] = (unsigned char)((i * 2654435761u) >> 13);
    EXPECT((f = fopen(original, "wb")) != NULL);
    EXPECT(fwrite(want, 1, FILE_SIZE, f) == FILE_SIZE);
    EXPECT(fclose(f) == 0);

    /* The registry. */
    CHECK(p2p_registry_start("127.0.0.1:0", on_registry_event, NULL, &registry));
    CHECK(p2p_registry_address(registry, &registry_addr));
    CHECK(p2p_registry_port(registry, &port));
    EXPECT(port != 0);
    printf("registry on %s\n", registry_addr);

    /* Two peers. */
    side_init(&alice, "alice");
    side_init(&bob, "bob");
    a = connect_peer(registry_addr, "alice", a_share, a_down, a_key, &alice);
    b = connect_peer(registry_addr, "bob", b_share, b_share, b_key, &bob);
    CHECK(p2p_peer_listen_port(b, &b_port));
    CHECK(p2p_peer_username(a, &name));
    EXPECT(strcmp(name, "alice") == 0);
    p2p_string_free(name);

    /* Browsing the registry. */
    CHECK(p2p_peer_users(a, &users));
    EXPECT(users.len == 2 && strcmp(users.items[0], "alice") == 0 &&
           strcmp(users.items[1], "bob") == 0);
    p2p_string_list_free(&users);
    EXPECT(users.items == NULL && users.len == 0);
    CHECK(p2p_registry_user_count(registry, &count));
    EXPECT(count == 2);
    CHECK(p2p_registry_users(registry, &users));
    EXPECT(users.len == 2);
    p2p_string_list_free(&users);

    CHECK(p2p_peer_files_of(a, "bob", &files));
    EXPECT(files.len == 1 && list_contains(&files, FILE_NAME));
    p2p_string_list_free(&files);
    CHECK(p2p_peer_files_of(a, "alice", &files));
    EXPECT(files.len == 0 && files.items == NULL);
    p2p_string_list_free(&files);
    EXPECT_STATUS(p2p_peer_files_of(a, "carol", &files), P2P_USER_NOT_FOUND);

    CHECK(p2p_peer_all_files(a, &all));
    EXPECT(all.len == 2);
    for (i = 0; i < all.len; i++) {
        if (strcmp(all.items[i].user, "bob") == 0)
            EXPECT(list_contains(&all.items[i].files, FILE_NAME));
        else
            EXPECT(strcmp(all.items[i].user, "alice") == 0 && all.items[i].files.len == 0);
    }
    p2p_user_files_list_free(&all);

    CHECK(p2p_peer_address(a, "bob", &ip, &port));
    EXPECT(strcmp(ip, "127.0.0.1") == 0 && port == b_port);
    printf("bob is at %s:%u\n", ip, (unsigned)port);
    p2p_string_free(ip);

    /* Fingerprints: what people compare (read out, over the phone...). The registry
     * lists bob's key; alice checks it is the one bob reads out. */
    CHECK(p2p_peer_fingerprint(a, &a_fp));
    CHECK(p2p_peer_fingerprint(b, &b_fp));
    CHECK(p2p_peer_user_fingerprint(a, "bob", &listed));
    printf("alice's fingerprint: %s\nbob's fingerprint:   %s\nbob as listed:       %s\n",
           a_fp, b_fp, listed);
    EXPECT(strcmp(listed, b_fp) == 0 && strcmp(a_fp, b_fp) != 0);
    p2p_string_free(listed);

    /* Chat both ways: alice asks, bob's callback accepts. */
    CHECK(p2p_peer_chat(a, "bob", &chat));
    WAIT_FOR(&bob, bob.accepted != NULL);
    bob_chat = bob.accepted;
    CHECK(p2p_chat_peer_name(chat, &name));
    EXPECT(strcmp(name, "bob") == 0);
    p2p_string_free(name);
    /* Both ends say the chat is encrypted, and alice's that bob proved his key. */
    CHECK(p2p_chat_is_encrypted(chat, &flag));
    EXPECT(flag);
    CHECK(p2p_chat_is_verified(chat, &flag));
    EXPECT(flag);
    CHECK(p2p_chat_is_encrypted(bob_chat, &flag));
    EXPECT(flag);
    CHECK(p2p_chat_fingerprint(chat, &listed));
    EXPECT(strcmp(listed, b_fp) == 0);
    p2p_string_free(listed);
    printf("chat with bob: encrypted, verified\n");
    CHECK(p2p_chat_send(chat, "hello bob"));
    WAIT_FOR(&bob, bob.messages == 1);
    EXPECT(strcmp(bob.last_message, "alice: hello bob") == 0);
    CHECK(p2p_chat_send(bob_chat, "hello alice, multi\nline"));
    WAIT_FOR(&alice, alice.messages == 1);
    EXPECT(strcmp(alice.last_message, "bob: hello alice, multi\nline") == 0);
    EXPECT_STATUS(p2p_chat_send(chat, "\xff\xfe"), P2P_INVALID_UTF8);

    CHECK(p2p_chat_close(chat));
    WAIT_FOR(&bob, bob.closed == 1);
    EXPECT(bob.closed_by == P2P_CHAT_CLOSED_REMOTE);
    WAIT_FOR(&alice, alice.closed == 1);
    EXPECT(alice.closed_by == P2P_CHAT_CLOSED_LOCAL);
    CHECK(p2p_chat_is_closed(bob_chat, &flag));
    EXPECT(flag);
    EXPECT_STATUS(p2p_chat_send(chat, "too late"), P2P_CLOSED);
    p2p_chat_free(chat);
    p2p_chat_free(bob_chat);

    /* Download bob's file and compare the bytes. */
    CHECK(p2p_peer_fetch(a, "bob", FILE_NAME, &transfer));
    CHECK(p2p_transfer_is_encrypted(transfer, &flag));
    EXPECT(flag);
    CHECK(p2p_transfer_wait(transfer, &path));
    CHECK(p2p_transfer_is_verified(transfer, &flag));
    EXPECT(flag);
    CHECK(p2p_transfer_progress(transfer, &received, &total));
    EXPECT(received == FILE_SIZE && total == FILE_SIZE);
    CHECK(p2p_transfer_is_finished(transfer, &flag));
    EXPECT(flag);
    EXPECT(alice.done == 1 && alice.progress_calls > 0 && alice.last_total == FILE_SIZE);
    got = read_file(path, &got_len);
    EXPECT(got != NULL && got_len == FILE_SIZE && memcmp(got, want, FILE_SIZE) == 0);
    printf("downloaded %s: %zu bytes, encrypted, verified, identical\n", FILE_NAME, got_len);
    free(got);
    p2p_string_free(path);
    p2p_transfer_free(transfer);
    EXPECT_STATUS(p2p_peer_fetch(a, "bob", FILE_NAME, &transfer), P2P_ALREADY_EXISTS);

    /* A file bob does not share fails through wait() and the failed callback. */
    CHECK(p2p_peer_fetch(a, "bob", "missing.txt", &missing));
    EXPECT_STATUS(p2p_transfer_wait(missing, NULL), P2P_FILE_NOT_FOUND);
    EXPECT(alice.failed == 1 && alice.failed_status == P2P_FILE_NOT_FOUND);
    p2p_transfer_free(missing);

    /* Leave: bob exits first, alice sees him gone. */
    CHECK(p2p_peer_exit(b));
    EXPECT_STATUS(p2p_peer_exit(b), P2P_SHUTDOWN);
    EXPECT_STATUS(p2p_peer_users(b, &users), P2P_SHUTDOWN);
    CHECK(p2p_peer_users(a, &users));
    EXPECT(users.len == 1 && strcmp(users.items[0], "alice") == 0);
    p2p_string_list_free(&users);
    p2p_peer_free(b);
    p2p_peer_free(a);
    CHECK(p2p_registry_stop(registry));
    pthread_mutex_lock(&registry_mu);
    EXPECT(registry_queries > 0);
    pthread_mutex_unlock(&registry_mu);
    p2p_registry_free(registry);
    p2p_string_free(registry_addr);

    p2p_string_free(a_fp);
    p2p_string_free(b_fp);
    side_destroy(&alice);
    side_destroy(&bob);
    free(want);
    EXPECT(nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0);
    printf("ALL OK\n");
    return 0;
}
