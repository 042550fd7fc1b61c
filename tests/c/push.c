/*
 * File push through the C API.
 *
 * A registry and three peers (identity files in a temporary directory): alice sends;
 * bob takes events from his queue (chat-answer timeout 1 s); carol uses callbacks.
 * - bob gets P2P_EV_FILE_OFFERED (id, from "alice", text the name, total the size),
 *   accepts it into a directory of his choice with p2p_peer_accept_offer and sets the
 *   transfer's user data; the P2P_EV_TRANSFER_DONE event carries his borrowed transfer
 *   handle and that user data, and the path; the file is byte-identical; alice's
 *   p2p_peer_offer_file returns an outgoing transfer (p2p_transfer_is_outgoing) whose
 *   wait gives the source path;
 * - a declined offer: p2p_peer_decline_offer, then again P2P_INVALID_ARGUMENT; alice
 *   gets P2P_DECLINED and no transfer;
 * - an offer bob never answers: alice gets P2P_TIMEOUT, bob a P2P_EV_PEER of kind
 *   P2P_EVENT_FILE_OFFER_EXPIRED, and accepting it then is P2P_INVALID_ARGUMENT;
 * - carol accepts inside her p2p_file_offer_cb (into her download directory) and sets
 *   the user data there; her p2p_transfer_event_cb gets the done event with her
 *   handle and that user data, and the old p2p_transfer_done_cb still runs;
 * - p2p_peer_offer_file_async from bob's queue: P2P_EV_OFFER_ANSWERED (owned transfer
 *   handle, the request's user data) comes before the transfer's done event, which
 *   carries that handle; from alice's callbacks: p2p_offer_answered_cb gets the
 *   handle; p2p_peer_offer_cancel answers P2P_CANCELLED on the cancelling thread
 *   before it returns, a second cancel is P2P_INVALID_ARGUMENT, and bob's later
 *   accept gets nothing (his transfer fails); a peer with neither queue nor
 *   answer callback cannot offer asynchronously;
 * - argument errors: NULLs, a missing file (P2P_IO), a directory
 *   (P2P_INVALID_ARGUMENT), user data on NULL.
 *
 * alarm() bounds the whole program. Prints "ALL OK" and exits 0 on success, exits 1
 * naming the first failure. Built and run (also under valgrind) by tests/push_c.rs.
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

#define SIZE (64u * 1024 + 7)

static int same_content(const char *path, const unsigned char *data, size_t len) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf = malloc(len + 1);
    size_t n;
    int same;
    CHECK(f != NULL && buf != NULL);
    n = fread(buf, 1, len + 1, f);
    fclose(f);
    same = n == len && memcmp(buf, data, len) == 0;
    free(buf);
    return same;
}

/* alice's p2p_peer_offer_file, on its own thread (it blocks until answered). */
struct offer {
    p2p_peer *peer;
    const char *user;
    char path[160];
    p2p_status status;
    p2p_transfer *transfer;
    pthread_t thread;
};

static void *offer_main(void *arg) {
    struct offer *o = arg;
    o->status = p2p_peer_offer_file(o->peer, o->user, o->path, &o->transfer);
    return NULL;
}

static void offer_start(struct offer *o, p2p_peer *peer, const char *user, const char *path) {
    o->peer = peer;
    o->user = user;
    snprintf(o->path, sizeof o->path, "%s", path);
    o->status = P2P_PANIC;
    o->transfer = NULL;
    CHECK(pthread_create(&o->thread, NULL, offer_main, o) == 0);
}

static void offer_join(struct offer *o) { CHECK(pthread_join(o->thread, NULL) == 0); }

/* The next event of `peer` other than progress and background ones. */
static void next_event(p2p_peer *peer, p2p_event *e) {
    for (;;) {
        OK(p2p_peer_next_event(peer, 10000, e));
        if (e->kind != P2P_EV_TRANSFER_PROGRESS && e->kind != P2P_EV_PEER) return;
        p2p_event_free(e);
    }
}

/* carol's callbacks. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static p2p_peer *carol;
static p2p_transfer *carol_transfer;
static int carol_marker, alice_marker;
static int carol_done_old, carol_done_event, carol_event_ok, alice_events;

static p2p_transfer *carol_more[4];
static int carol_more_n;

static void carol_on_offer(void *user_data, uint64_t offer_id, const char *from,
                           const char *name, uint64_t size) {
    p2p_transfer *t = NULL;
    CHECK(user_data == &carol_marker);
    CHECK(size == SIZE);
    if (strcmp(name, "to carol.bin") != 0) {
        /* Later offers (async ones): taken, kept to free at the end. */
        OK(p2p_peer_accept_offer(carol, offer_id, NULL, &t));
        OK(p2p_transfer_set_user_data(t, &carol_marker));
        pthread_mutex_lock(&mu);
        if (carol_more_n < 4) carol_more[carol_more_n++] = t;
        else p2p_transfer_free(t);
        pthread_mutex_unlock(&mu);
        return;
    }
    CHECK(strcmp(from, "alice") == 0);
    OK(p2p_peer_accept_offer(carol, offer_id, NULL, &t));
    OK(p2p_transfer_set_user_data(t, &carol_marker));
    CHECK(p2p_transfer_get_user_data(t) == &carol_marker);
    pthread_mutex_lock(&mu);
    carol_transfer = t;
    pthread_mutex_unlock(&mu);
}

/* alice's answers to p2p_peer_offer_file_async. */
static int answered;
static uint64_t answered_id;
static void *answered_ud;
static p2p_status answered_status;
static p2p_transfer *answered_transfer;
static pthread_t main_thread;
static int answered_on_main;

static void alice_on_answered(void *user_data, uint64_t request_id, void *request_user_data,
                              p2p_status status, p2p_transfer *transfer, const char *message) {
    CHECK(user_data == &alice_marker && message != NULL);
    CHECK((status == P2P_OK) == (transfer != NULL));
    pthread_mutex_lock(&mu);
    answered++;
    answered_id = request_id;
    answered_ud = request_user_data;
    answered_status = status;
    answered_transfer = transfer;
    answered_on_main = pthread_equal(pthread_self(), main_thread);
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void wait_answered(int n) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 20;
    pthread_mutex_lock(&mu);
    while (answered < n) CHECK(pthread_cond_timedwait(&cv, &mu, &dl) == 0 || answered >= n);
    pthread_mutex_unlock(&mu);
}

static void carol_on_done(void *user_data, uint64_t id, const char *path) {
    (void)user_data, (void)id, (void)path;
    pthread_mutex_lock(&mu);
    carol_done_old++;
    pthread_mutex_unlock(&mu);
}

static void carol_on_transfer_event(void *user_data, const p2p_event *e) {
    CHECK(user_data == &carol_marker);
    if (e->kind != P2P_EV_TRANSFER_DONE) return;
    pthread_mutex_lock(&mu);
    carol_done_event++;
    /* The old callback ran first; the handle and its user data come with the event. */
    if (carol_done_event == 1)
        carol_event_ok = carol_done_old == 1 && e->transfer == carol_transfer &&
                         e->transfer != NULL && e->user_data == &carol_marker &&
                         strstr(e->text, "to carol.bin") != NULL;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void alice_on_transfer_event(void *user_data, const p2p_event *e) {
    CHECK(user_data == &alice_marker);
    CHECK(e->kind == P2P_EV_TRANSFER_PROGRESS || e->kind == P2P_EV_TRANSFER_DONE ||
          e->kind == P2P_EV_TRANSFER_FAILED);
    pthread_mutex_lock(&mu);
    alice_events++;
    pthread_mutex_unlock(&mu);
}

static p2p_peer *connect_peer(const char *registry, const char *name, const char *share,
                              const char *key_file, int queue) {
    p2p_peer_config *config = NULL;
    p2p_peer *peer = NULL;
    OK(p2p_peer_config_new(registry, name, share, &config));
    OK(p2p_peer_config_set_listen_ip(config, "127.0.0.1"));
    OK(p2p_peer_config_set_identity_file(config, key_file));
    if (queue) {
        OK(p2p_peer_config_set_event_queue(config, 16));
        OK(p2p_peer_config_set_chat_answer_timeout_ms(config, 1000));
    } else if (strcmp(name, "carol") == 0) {
        OK(p2p_peer_config_set_user_data(config, &carol_marker));
        OK(p2p_peer_config_on_file_offer(config, carol_on_offer));
        OK(p2p_peer_config_on_transfer_done(config, carol_on_done));
        OK(p2p_peer_config_on_transfer_event(config, carol_on_transfer_event));
    } else {
        OK(p2p_peer_config_set_user_data(config, &alice_marker));
        OK(p2p_peer_config_on_transfer_event(config, alice_on_transfer_event));
        OK(p2p_peer_config_on_offer_answered(config, alice_on_answered));
    }
    EXPECT(p2p_peer_config_on_file_offer(NULL, NULL), P2P_NULL_ARGUMENT);
    EXPECT(p2p_peer_config_on_transfer_event(NULL, NULL), P2P_NULL_ARGUMENT);
    OK(p2p_peer_connect(config, &peer));
    p2p_peer_config_free(config);
    return peer;
}

int main(void) {
    char root[] = "/tmp/p2p_push_XXXXXX";
    char a_share[64], b_share[64], c_share[64], dest[64], keys[64], key[96], src[160],
        path[160];
    static unsigned char data[SIZE];
    char *addr = NULL, *saved = NULL;
    p2p_registry *registry = NULL;
    p2p_peer *alice, *bob;
    p2p_transfer *t = NULL;
    p2p_event e;
    struct offer o;
    uint64_t offer_id, tid;
    bool flag = false;
    struct timespec dl;

    alarm(240);
    CHECK(mkdtemp(root) != NULL);
    snprintf(a_share, sizeof a_share, "%s/a", root);
    snprintf(b_share, sizeof b_share, "%s/b", root);
    snprintf(c_share, sizeof c_share, "%s/c", root);
    snprintf(dest, sizeof dest, "%s/inbox", root);
    snprintf(keys, sizeof keys, "%s/keys", root);
    CHECK(mkdir(a_share, 0700) == 0 && mkdir(b_share, 0700) == 0);
    CHECK(mkdir(c_share, 0700) == 0 && mkdir(dest, 0700) == 0 && mkdir(keys, 0700) == 0);
    for (size_t i = 0; i < SIZE; i++) data[i] = (unsigned char)((i * 2654435761u) >> 11);

    OK(p2p_registry_start("127.0.0.1:0", NULL, NULL, &registry));
    OK(p2p_registry_address(registry, &addr));
    snprintf(key, sizeof key, "%s/alice.key", keys);
    alice = connect_peer(addr, "alice", a_share, key, 0);
    snprintf(key, sizeof key, "%s/bob.key", keys);
    bob = connect_peer(addr, "bob", b_share, key, 1);
    snprintf(key, sizeof key, "%s/carol.key", keys);
    carol = connect_peer(addr, "carol", c_share, key, 0);

    /* Argument errors. */
    snprintf(src, sizeof src, "%s/missing.bin", root);
    EXPECT(p2p_peer_offer_file(NULL, "bob", src, &t), P2P_NULL_ARGUMENT);
    EXPECT(p2p_peer_offer_file(alice, NULL, src, &t), P2P_NULL_ARGUMENT);
    EXPECT(p2p_peer_offer_file(alice, "bob", NULL, &t), P2P_NULL_ARGUMENT);
    EXPECT(p2p_peer_offer_file(alice, "bob", src, NULL), P2P_NULL_ARGUMENT);
    EXPECT(p2p_peer_offer_file(alice, "bob", src, &t), P2P_IO);
    EXPECT(p2p_peer_offer_file(alice, "bob", dest, &t), P2P_INVALID_ARGUMENT);
    CHECK(t == NULL);
    EXPECT(p2p_peer_accept_offer(NULL, 1, NULL, &t), P2P_NULL_ARGUMENT);
    EXPECT(p2p_peer_accept_offer(bob, 1, NULL, NULL), P2P_NULL_ARGUMENT);
    EXPECT(p2p_peer_accept_offer(bob, 999999, NULL, &t), P2P_INVALID_ARGUMENT);
    EXPECT(p2p_peer_decline_offer(NULL, 1), P2P_NULL_ARGUMENT);
    EXPECT(p2p_peer_decline_offer(bob, 999999), P2P_INVALID_ARGUMENT);
    EXPECT(p2p_transfer_set_user_data(NULL, &flag), P2P_NULL_ARGUMENT);
    CHECK(p2p_transfer_get_user_data(NULL) == NULL);
    EXPECT(p2p_transfer_is_outgoing(NULL, &flag), P2P_NULL_ARGUMENT);

    /* bob accepts from his queue into a directory of his choice. */
    snprintf(src, sizeof src, "%s/photo.bin", root);
    write_bytes(src, data, SIZE);
    offer_start(&o, alice, "bob", src);
    next_event(bob, &e);
    CHECK(e.kind == P2P_EV_FILE_OFFERED);
    CHECK(strcmp(e.from, "alice") == 0 && strcmp(e.text, "photo.bin") == 0);
    CHECK(e.total == SIZE && e.transfer == NULL);
    offer_id = e.id;
    p2p_event_free(&e);
    OK(p2p_peer_accept_offer(bob, offer_id, dest, &t));
    OK(p2p_transfer_set_user_data(t, (void *)&o));
    OK(p2p_transfer_id(t, &tid));
    OK(p2p_transfer_is_outgoing(t, &flag));
    CHECK(!flag);
    EXPECT(p2p_peer_accept_offer(bob, offer_id, dest, &t), P2P_INVALID_ARGUMENT);
    for (;;) {
        next_event(bob, &e);
        CHECK(e.kind == P2P_EV_TRANSFER_DONE || e.kind == P2P_EV_TRANSFER_FAILED);
        CHECK(e.id == tid);
        CHECK(e.status == P2P_OK);
        /* The borrowed handle and its user data. */
        CHECK(e.transfer == t && e.user_data == (void *)&o);
        snprintf(path, sizeof path, "%s/photo.bin", dest);
        CHECK(strcmp(e.text, path) == 0);
        p2p_event_free(&e);
        break;
    }
    OK(p2p_transfer_wait(t, &saved));
    CHECK(strcmp(saved, path) == 0);
    p2p_string_free(saved);
    p2p_transfer_free(t);
    CHECK(same_content(path, data, SIZE));
    offer_join(&o);
    OK(o.status);
    OK(p2p_transfer_is_outgoing(o.transfer, &flag));
    CHECK(flag);
    OK(p2p_transfer_wait(o.transfer, &saved));
    CHECK(strcmp(saved, src) == 0);
    p2p_string_free(saved);
    p2p_transfer_free(o.transfer);
    pthread_mutex_lock(&mu);
    CHECK(alice_events >= 1);
    pthread_mutex_unlock(&mu);

    /* Declined: alice gets P2P_DECLINED and no transfer; nothing is written. */
    snprintf(src, sizeof src, "%s/no.txt", root);
    write_bytes(src, (const unsigned char *)"no thanks", 9);
    offer_start(&o, alice, "bob", src);
    next_event(bob, &e);
    CHECK(e.kind == P2P_EV_FILE_OFFERED && strcmp(e.text, "no.txt") == 0);
    offer_id = e.id;
    p2p_event_free(&e);
    OK(p2p_peer_decline_offer(bob, offer_id));
    EXPECT(p2p_peer_decline_offer(bob, offer_id), P2P_INVALID_ARGUMENT);
    offer_join(&o);
    EXPECT(o.status, P2P_DECLINED);
    CHECK(o.transfer == NULL);
    snprintf(path, sizeof path, "%s/no.txt", b_share);
    CHECK(!exists(path));

    /* Unanswered: expires after bob's 1 s. */
    offer_start(&o, alice, "bob", src);
    next_event(bob, &e);
    CHECK(e.kind == P2P_EV_FILE_OFFERED);
    offer_id = e.id;
    p2p_event_free(&e);
    offer_join(&o);
    EXPECT(o.status, P2P_TIMEOUT);
    CHECK(o.transfer == NULL);
    for (;;) {
        OK(p2p_peer_next_event(bob, 10000, &e));
        if (e.kind == P2P_EV_PEER && e.peer_event == P2P_EVENT_FILE_OFFER_EXPIRED) {
            CHECK(strstr(e.text, "no.txt") != NULL && strstr(e.text, "alice") != NULL);
            p2p_event_free(&e);
            break;
        }
        p2p_event_free(&e);
    }
    EXPECT(p2p_peer_accept_offer(bob, offer_id, NULL, &t), P2P_INVALID_ARGUMENT);

    /* carol accepts in her callback; her transfer event carries handle and user data. */
    snprintf(src, sizeof src, "%s/to carol.bin", root);
    write_bytes(src, data, SIZE);
    OK(p2p_peer_offer_file(alice, "carol", src, &t));
    OK(p2p_transfer_wait(t, NULL));
    p2p_transfer_free(t);
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 20;
    pthread_mutex_lock(&mu);
    while (carol_done_event == 0) CHECK(pthread_cond_timedwait(&cv, &mu, &dl) == 0 || carol_done_event);
    CHECK(carol_event_ok);
    CHECK(carol_done_old == 1 && carol_done_event == 1);
    CHECK(carol_transfer != NULL);
    pthread_mutex_unlock(&mu);
    OK(p2p_transfer_wait(carol_transfer, &saved));
    CHECK(same_content(saved, data, SIZE));
    CHECK(strncmp(saved, c_share, strlen(c_share)) == 0);
    p2p_string_free(saved);
    p2p_transfer_free(carol_transfer);

    /* Async from bob's queue: the answer (an owned handle) before the transfer's end. */
    snprintf(src, sizeof src, "%s/async.bin", root);
    write_bytes(src, data, SIZE);
    EXPECT(p2p_peer_offer_file_async(NULL, "carol", src, NULL, &tid), P2P_NULL_ARGUMENT);
    EXPECT(p2p_peer_offer_file_async(bob, "carol", src, NULL, NULL), P2P_NULL_ARGUMENT);
    EXPECT(p2p_peer_offer_file_async(carol, "bob", src, NULL, &tid), P2P_INVALID_ARGUMENT);
    OK(p2p_peer_offer_file_async(bob, "carol", src, (void *)&e, &offer_id));
    next_event(bob, &e);
    CHECK(e.kind == P2P_EV_OFFER_ANSWERED && e.id == offer_id && e.status == P2P_OK);
    CHECK(e.transfer != NULL && e.user_data == (void *)&e && strcmp(e.from, "carol") == 0);
    t = e.transfer;
    p2p_event_free(&e);
    CHECK(t != NULL && p2p_transfer_get_user_data(t) == (void *)&e);
    next_event(bob, &e);
    CHECK(e.kind == P2P_EV_TRANSFER_DONE && e.status == P2P_OK);
    CHECK(e.transfer == t && e.user_data == (void *)&e);
    CHECK(strcmp(e.text, src) == 0);
    p2p_event_free(&e);
    OK(p2p_transfer_is_outgoing(t, &flag));
    CHECK(flag);
    p2p_transfer_free(t);

    /* Async from alice's callbacks, accepted by bob. */
    main_thread = pthread_self();
    snprintf(src, sizeof src, "%s/async2.bin", root);
    write_bytes(src, data, SIZE);
    OK(p2p_peer_offer_file_async(alice, "bob", src, &answered, &offer_id));
    next_event(bob, &e);
    CHECK(e.kind == P2P_EV_FILE_OFFERED && strcmp(e.text, "async2.bin") == 0);
    tid = e.id;
    p2p_event_free(&e);
    OK(p2p_peer_accept_offer(bob, tid, dest, &t));
    wait_answered(1);
    pthread_mutex_lock(&mu);
    CHECK(answered_id == offer_id && answered_status == P2P_OK && answered_ud == &answered);
    CHECK(!answered_on_main && answered_transfer != NULL);
    CHECK(p2p_transfer_get_user_data(answered_transfer) == &answered);
    pthread_mutex_unlock(&mu);
    OK(p2p_transfer_wait(answered_transfer, NULL));
    OK(p2p_transfer_wait(t, NULL));
    p2p_transfer_free(answered_transfer);
    p2p_transfer_free(t);

    /* Cancelled while bob decides: answered on this thread before the call returns. */
    snprintf(src, sizeof src, "%s/cancel.bin", root);
    write_bytes(src, data, SIZE);
    OK(p2p_peer_offer_file_async(alice, "bob", src, NULL, &offer_id));
    for (;;) { /* bob's receiving of async2.bin may still report its end */
        next_event(bob, &e);
        if (e.kind != P2P_EV_TRANSFER_DONE) break;
        p2p_event_free(&e);
    }
    CHECK(e.kind == P2P_EV_FILE_OFFERED && strcmp(e.text, "cancel.bin") == 0);
    tid = e.id;
    p2p_event_free(&e);
    OK(p2p_peer_offer_cancel(alice, offer_id));
    pthread_mutex_lock(&mu);
    CHECK(answered == 2 && answered_id == offer_id && answered_status == P2P_CANCELLED);
    CHECK(answered_on_main && answered_transfer == NULL);
    pthread_mutex_unlock(&mu);
    EXPECT(p2p_peer_offer_cancel(alice, offer_id), P2P_INVALID_ARGUMENT);
    EXPECT(p2p_peer_offer_cancel(NULL, offer_id), P2P_NULL_ARGUMENT);
    OK(p2p_peer_accept_offer(bob, tid, dest, &t));
    CHECK(p2p_transfer_wait(t, NULL) != P2P_OK);
    p2p_transfer_free(t);
    snprintf(path, sizeof path, "%s/cancel.bin", dest);
    CHECK(!exists(path));
    for (int i = 0; i < carol_more_n; i++) {
        OK(p2p_transfer_wait(carol_more[i], NULL));
        p2p_transfer_free(carol_more[i]);
    }

    p2p_peer_free(carol);
    p2p_peer_free(bob);
    p2p_peer_free(alice);
    p2p_registry_free(registry);
    p2p_string_free(addr);
    nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    printf("ALL OK\n");
    return 0;
}
