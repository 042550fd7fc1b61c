/*
 * Events you pull, from C: peers with event queues driven from poll() on their event
 * descriptors, no callbacks.
 *
 * A registry and peers alice, bob (queues of 64) and carol (a queue of 4), each with
 * its identity file in a temporary directory:
 * - a fresh peer's descriptor is not readable; p2p_peer_next_event(0) is P2P_TIMEOUT;
 * - async chat: alice's p2p_peer_chat_async returns at once; bob's descriptor becomes
 *   readable with a P2P_EV_CHAT_REQUEST (from "alice"), bob accepts from his loop and
 *   sets the chat's user data; alice's P2P_EV_CHAT_OPENED carries her request id, her
 *   user data and a chat handle; her messages (p2p_chat_send_timeout) reach bob as
 *   P2P_EV_CHAT_MESSAGE in order, with bob's chat handle and user data; her close
 *   reaches bob as P2P_EV_CHAT_CLOSED (REMOTE), again with handle and user data;
 * - cancel: a second async request cancelled at once answers P2P_EV_CHAT_OPENED with
 *   P2P_CANCELLED; cancelling it again is P2P_INVALID_ARGUMENT; bob accepting it
 *   then sees the chat closed at once, and alice reports nothing of that chat;
 * - accept on one thread, events on another: alice asks with the blocking
 *   p2p_peer_chat on a thread and writes the moment it returns; bob's accepting thread
 *   stores the handle through p2p_chat_request_accept's out-parameter while the main
 *   thread takes events: every message event carries that very handle (so none came
 *   before the accept returned);
 * - carol sends a message the instant she accepts alice's async chat: alice's
 *   P2P_EV_CHAT_OPENED still comes first, then that message with her new handle;
 * - overflow: carol's queue holds 4; with nobody taking her events, she downloads a
 *   4 MiB file from alice (hundreds of progress reports) while alice sends 20 messages
 *   and closes the chat; draining then yields the request, all 20 messages in order,
 *   the close and the download's end, and progress only coalesced (fewer than 10);
 * - after draining to P2P_TIMEOUT the descriptor is not readable;
 * - p2p_peer_next_event waiting without limit (-1) returns P2P_SHUTDOWN when another
 *   thread exits the peer;
 * - callback mode: dave, with callbacks and no queue, gets the answer to
 *   p2p_peer_chat_async through p2p_chat_opened_cb (handle, user data), and a cancel's
 *   P2P_CANCELLED through it before p2p_peer_chat_cancel returns; next_event and
 *   event_fd on him are P2P_INVALID_ARGUMENT;
 * - argument checks: NULLs.
 *
 * alarm() bounds the whole program. Prints "ALL OK" and exits 0 on success, exits 1
 * naming the first failure. Built and run (also under valgrind) by tests/events_c.rs.
 */
#define _XOPEN_SOURCE 700 /* mkdtemp, nftw */

#include "p2pchat.h"
#include "check.h"

#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char root[] = "/tmp/p2pchat-poll-XXXXXX";

static p2p_peer *connect_peer(const char *registry, const char *name, size_t queue) {
    char share[512], key[512];
    p2p_peer_config *config = NULL;
    p2p_peer *peer = NULL;
    p2p_status st;
    snprintf(share, sizeof share, "%s/%s", root, name);
    snprintf(key, sizeof key, "%s/%s.key", root, name);
    CHECK(mkdir(share, 0700) == 0);
    OK(p2p_peer_config_new(registry, name, share, &config));
    OK(p2p_peer_config_set_listen_ip(config, "127.0.0.1"));
    OK(p2p_peer_config_set_identity_file(config, key));
    OK(p2p_peer_config_set_event_queue(config, queue));
    st = p2p_peer_connect(config, &peer);
    p2p_peer_config_free(config);
    OK(st);
    return peer;
}

/* Whether `peer`'s descriptor is readable within `ms`. */
static int readable(p2p_peer *peer, int ms) {
    struct pollfd p;
    OK(p2p_peer_event_fd(peer, &p.fd));
    p.events = POLLIN;
    p.revents = 0;
    return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

/* The next event of `peer` other than background ones (P2P_EV_PEER), taken from a
 * poll() loop on its descriptor within 20 s. */
static void next(p2p_peer *peer, p2p_event *ev) {
    int rounds;
    for (rounds = 0; rounds < 200; rounds++) {
        if (!readable(peer, 100)) continue;
        for (;;) {
            p2p_status st = p2p_peer_next_event(peer, 0, ev);
            if (st == P2P_TIMEOUT) break;
            OK(st);
            if (ev->kind != P2P_EV_PEER) return;
            CHECK(ev->text != NULL);
            p2p_event_free(ev);
        }
    }
    fail(__LINE__, "an event within 20 s", P2P_TIMEOUT);
}

static void next_kind(p2p_peer *peer, p2p_event *ev, p2p_event_kind kind) {
    next(peer, ev);
    if (ev->kind != kind) {
        fprintf(stderr, "expected event kind %d, got %d\n", (int)kind, (int)ev->kind);
        fail(__LINE__, "event kind", P2P_OK);
    }
}

/* ---- accept on one thread while another takes events ---- */

typedef struct {
    p2p_peer *peer;
    p2p_chat *chat;
    int sent;
} asker;

static void *ask_and_write(void *arg) {
    asker *a = arg;
    int i;
    OK(p2p_peer_chat(a->peer, "bob", &a->chat));
    for (i = 0; i < 3; i++) OK(p2p_chat_send_timeout(a->chat, "right away", 5000));
    a->sent = 3;
    return NULL;
}

typedef struct {
    p2p_chat_request *request;
    p2p_chat *chat; /* written by p2p_chat_request_accept itself */
} acceptor;

static void *accept_it(void *arg) {
    acceptor *a = arg;
    OK(p2p_chat_request_accept(a->request, &a->chat));
    return NULL;
}

/* ---- callback mode: the answer to chat_async through p2p_chat_opened_cb ---- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls;
    uint64_t request;
    void *request_user_data;
    p2p_status status;
    p2p_chat *chat;
} opened_seen;

static void on_opened(void *user_data, uint64_t request_id, void *request_user_data,
                      p2p_status status, p2p_chat *chat, const char *message) {
    opened_seen *s = user_data;
    CHECK(message != NULL);
    pthread_mutex_lock(&s->mu);
    s->calls++;
    s->request = request_id;
    s->request_user_data = request_user_data;
    s->status = status;
    s->chat = chat;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void wait_calls(opened_seen *s, int n) {
    pthread_mutex_lock(&s->mu);
    while (s->calls < n) pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

static p2p_peer *connect_callback_peer(const char *registry, const char *name,
                                       opened_seen *s) {
    char share[512], key[512];
    p2p_peer_config *config = NULL;
    p2p_peer *peer = NULL;
    p2p_status st;
    snprintf(share, sizeof share, "%s/%s", root, name);
    snprintf(key, sizeof key, "%s/%s.key", root, name);
    CHECK(mkdir(share, 0700) == 0);
    OK(p2p_peer_config_new(registry, name, share, &config));
    OK(p2p_peer_config_set_listen_ip(config, "127.0.0.1"));
    OK(p2p_peer_config_set_identity_file(config, key));
    OK(p2p_peer_config_set_user_data(config, s));
    OK(p2p_peer_config_on_chat_opened(config, on_opened));
    st = p2p_peer_connect(config, &peer);
    p2p_peer_config_free(config);
    OK(st);
    return peer;
}

/* ---- a wait without limit, ended by p2p_peer_exit on another thread ---- */

typedef struct {
    p2p_peer *peer;
    p2p_status status;
} waiter;

static void *wait_forever(void *arg) {
    waiter *w = arg;
    p2p_event ev;
    for (;;) {
        w->status = p2p_peer_next_event(w->peer, -1, &ev);
        if (w->status != P2P_OK) return NULL;
        p2p_event_free(&ev); /* a late background event */
    }
}

int main(void) {
    p2p_registry *registry = NULL;
    char *addr = NULL;
    p2p_peer *alice, *bob, *carol;
    p2p_event ev;
    uint64_t req = 0, req2 = 0, id = 0;
    int a_data = 1, a_data2 = 2, b_data = 3, i, fd = -1;
    p2p_chat *a_chat = NULL, *b_chat = NULL;
    char path[600], text[32];

    alarm(150);
    CHECK(mkdtemp(root) != NULL);
    OK(p2p_registry_start("127.0.0.1:0", NULL, NULL, &registry));
    OK(p2p_registry_address(registry, &addr));
    alice = connect_peer(addr, "alice", 64);
    bob = connect_peer(addr, "bob", 64);
    carol = connect_peer(addr, "carol", 4);

    /* Nothing waits yet: not readable, and next_event(0) times out. (Registering may
     * have queued background events: drain those first.) */
    while (p2p_peer_next_event(bob, 0, &ev) == P2P_OK) p2p_event_free(&ev);
    CHECK(!readable(bob, 0));
    EXPECT(p2p_peer_next_event(bob, 0, &ev), P2P_TIMEOUT);

    /* Arguments. */
    EXPECT(p2p_peer_next_event(NULL, 0, &ev), P2P_NULL_ARGUMENT);
    EXPECT(p2p_peer_next_event(bob, 0, NULL), P2P_NULL_ARGUMENT);
    EXPECT(p2p_peer_event_fd(bob, NULL), P2P_NULL_ARGUMENT);
    EXPECT(p2p_peer_chat_async(bob, NULL, NULL, &req), P2P_NULL_ARGUMENT);
    EXPECT(p2p_peer_chat_async(bob, "alice", NULL, NULL), P2P_NULL_ARGUMENT);
    EXPECT(p2p_peer_config_set_event_queue(NULL, 4), P2P_NULL_ARGUMENT);
    EXPECT(p2p_peer_chat_cancel(bob, 999), P2P_INVALID_ARGUMENT);
    p2p_event_free(NULL);

    /* ---- async chat, answered as an event ---- */
    OK(p2p_peer_chat_async(alice, "bob", &a_data, &req));
    CHECK(req != 0);
    next_kind(bob, &ev, P2P_EV_CHAT_REQUEST);
    CHECK(ev.request != NULL && strcmp(ev.from, "alice") == 0);
    OK(p2p_chat_request_accept(ev.request, &b_chat));
    p2p_chat_request_free(ev.request);
    p2p_event_free(&ev);
    CHECK(ev.kind == P2P_EV_NONE && ev.from == NULL);
    p2p_event_free(&ev); /* twice: a no-op */
    OK(p2p_chat_set_user_data(b_chat, &b_data));
    CHECK(p2p_chat_get_user_data(b_chat) == &b_data);

    next_kind(alice, &ev, P2P_EV_CHAT_OPENED);
    CHECK(ev.id == req && ev.status == P2P_OK && ev.chat != NULL && ev.user_data == &a_data);
    CHECK(strcmp(ev.from, "bob") == 0);
    a_chat = ev.chat;
    CHECK(p2p_chat_get_user_data(a_chat) == &a_data);
    p2p_event_free(&ev);

    for (i = 0; i < 3; i++) {
        snprintf(text, sizeof text, "hello %d", i);
        OK(p2p_chat_send_timeout(a_chat, text, 5000));
    }
    for (i = 0; i < 3; i++) {
        snprintf(text, sizeof text, "hello %d", i);
        next_kind(bob, &ev, P2P_EV_CHAT_MESSAGE);
        CHECK(ev.chat == b_chat && ev.user_data == &b_data);
        OK(p2p_chat_id(b_chat, &id));
        CHECK(ev.id == id);
        CHECK(strcmp(ev.from, "alice") == 0);
        CHECK(ev.text_len == strlen(text) && memcmp(ev.text, text, ev.text_len) == 0);
        p2p_event_free(&ev);
    }
    OK(p2p_chat_close(a_chat));
    next_kind(bob, &ev, P2P_EV_CHAT_CLOSED);
    CHECK(ev.chat == b_chat && ev.user_data == &b_data);
    CHECK(ev.closed_by == P2P_CHAT_CLOSED_REMOTE);
    p2p_event_free(&ev);
    next_kind(alice, &ev, P2P_EV_CHAT_CLOSED);
    CHECK(ev.chat == a_chat && ev.closed_by == P2P_CHAT_CLOSED_LOCAL);
    CHECK(ev.user_data == &a_data);
    p2p_event_free(&ev);
    p2p_chat_free(a_chat);
    p2p_chat_free(b_chat);
    EXPECT(p2p_chat_send_timeout(a_chat = NULL, "x", 10), P2P_NULL_ARGUMENT);

    /* ---- cancel ---- */
    OK(p2p_peer_chat_async(alice, "bob", &a_data2, &req2));
    OK(p2p_peer_chat_cancel(alice, req2));
    EXPECT(p2p_peer_chat_cancel(alice, req2), P2P_INVALID_ARGUMENT);
    next_kind(alice, &ev, P2P_EV_CHAT_OPENED);
    CHECK(ev.id == req2 && ev.status == P2P_CANCELLED && ev.chat == NULL);
    CHECK(ev.user_data == &a_data2 && strcmp(ev.from, "bob") == 0);
    p2p_event_free(&ev);
    /* Bob still sees the request; accepting it, the chat ends at once from alice. */
    next_kind(bob, &ev, P2P_EV_CHAT_REQUEST);
    OK(p2p_chat_request_accept(ev.request, &b_chat));
    p2p_chat_request_free(ev.request);
    p2p_event_free(&ev);
    next_kind(bob, &ev, P2P_EV_CHAT_CLOSED);
    CHECK(ev.chat == b_chat);
    p2p_event_free(&ev);
    p2p_chat_free(b_chat);
    /* Alice reports nothing of the chat she never got. */
    CHECK(!readable(alice, 200));

    /* ---- accept on one thread, events on another ---- */
    {
        pthread_t asking, accepting;
        asker ask = {alice, NULL, 0};
        acceptor acc = {NULL, NULL};
        CHECK(pthread_create(&asking, NULL, ask_and_write, &ask) == 0);
        next_kind(bob, &ev, P2P_EV_CHAT_REQUEST);
        acc.request = ev.request;
        p2p_event_free(&ev);
        CHECK(pthread_create(&accepting, NULL, accept_it, &acc) == 0);
        for (i = 0; i < 3; i++) {
            next_kind(bob, &ev, P2P_EV_CHAT_MESSAGE);
            CHECK(ev.chat != NULL && ev.chat == acc.chat);
            CHECK(strcmp(ev.text, "right away") == 0);
            p2p_event_free(&ev);
        }
        CHECK(pthread_join(accepting, NULL) == 0 && pthread_join(asking, NULL) == 0);
        CHECK(ask.sent == 3);
        p2p_chat_request_free(acc.request);
        p2p_chat_free(ask.chat);
        next_kind(bob, &ev, P2P_EV_CHAT_CLOSED);
        CHECK(ev.chat == acc.chat && ev.closed_by == P2P_CHAT_CLOSED_REMOTE);
        p2p_event_free(&ev);
        p2p_chat_free(acc.chat);
        next_kind(alice, &ev, P2P_EV_CHAT_CLOSED);
        p2p_event_free(&ev);
    }

    /* ---- callback mode: dave has callbacks, no queue ---- */
    {
        opened_seen seen;
        p2p_peer *dave;
        int d_data = 4;
        memset(&seen, 0, sizeof seen);
        pthread_mutex_init(&seen.mu, NULL);
        pthread_cond_init(&seen.cv, NULL);
        dave = connect_callback_peer(addr, "dave", &seen);
        EXPECT(p2p_peer_next_event(dave, 0, &ev), P2P_INVALID_ARGUMENT);
        EXPECT(p2p_peer_event_fd(dave, &fd), P2P_INVALID_ARGUMENT);
        OK(p2p_peer_chat_async(dave, "bob", &d_data, &req));
        next_kind(bob, &ev, P2P_EV_CHAT_REQUEST);
        OK(p2p_chat_request_accept(ev.request, &b_chat));
        p2p_chat_request_free(ev.request);
        p2p_event_free(&ev);
        wait_calls(&seen, 1);
        CHECK(seen.request == req && seen.status == P2P_OK && seen.chat != NULL);
        CHECK(seen.request_user_data == &d_data && p2p_chat_get_user_data(seen.chat) == &d_data);
        OK(p2p_chat_send_timeout(seen.chat, "from dave", 5000));
        next_kind(bob, &ev, P2P_EV_CHAT_MESSAGE);
        CHECK(ev.chat == b_chat && strcmp(ev.text, "from dave") == 0);
        p2p_event_free(&ev);
        p2p_chat_free(seen.chat);
        next_kind(bob, &ev, P2P_EV_CHAT_CLOSED);
        p2p_event_free(&ev);
        p2p_chat_free(b_chat);
        /* A cancel answers through the callback before it returns. */
        OK(p2p_peer_chat_async(dave, "bob", NULL, &req2));
        OK(p2p_peer_chat_cancel(dave, req2));
        CHECK(seen.calls == 2 && seen.request == req2 && seen.status == P2P_CANCELLED);
        CHECK(seen.chat == NULL);
        next_kind(bob, &ev, P2P_EV_CHAT_REQUEST);
        p2p_chat_request_free(ev.request); /* declines */
        p2p_event_free(&ev);
        p2p_peer_free(dave);
        pthread_mutex_destroy(&seen.mu);
        pthread_cond_destroy(&seen.cv);
    }

    /* ---- overflow: carol's queue of 4, nobody taking her events ---- */
    {
        FILE *f;
        static char block[65536];
        p2p_transfer *transfer = NULL;
        uint64_t tid = 0;
        int requests = 0, messages = 0, closes = 0, done = 0, progress = 0;
        p2p_chat *c_chat = NULL;
        snprintf(path, sizeof path, "%s/alice/big.bin", root);
        f = fopen(path, "wb");
        CHECK(f != NULL);
        memset(block, 'x', sizeof block);
        for (i = 0; i < 64; i++) CHECK(fwrite(block, 1, sizeof block, f) == sizeof block);
        CHECK(fclose(f) == 0);
        {
            size_t files = 0;
            OK(p2p_peer_rescan(alice, &files));
            CHECK(files == 1);
        }

        OK(p2p_peer_chat_async(alice, "carol", NULL, &req));
        next_kind(carol, &ev, P2P_EV_CHAT_REQUEST);
        OK(p2p_chat_request_accept(ev.request, &c_chat));
        p2p_chat_request_free(ev.request);
        p2p_event_free(&ev);
        /* Sent the instant it is accepted: still, alice's answer handing her the chat
           comes first, then the message, with her handle. */
        OK(p2p_chat_send(c_chat, "at once"));
        requests = 1;
        next_kind(alice, &ev, P2P_EV_CHAT_OPENED);
        CHECK(ev.status == P2P_OK);
        a_chat = ev.chat;
        p2p_event_free(&ev);
        next_kind(alice, &ev, P2P_EV_CHAT_MESSAGE);
        CHECK(ev.chat == a_chat && strcmp(ev.text, "at once") == 0);
        p2p_event_free(&ev);

        OK(p2p_peer_fetch(carol, "alice", "big.bin", &transfer));
        OK(p2p_transfer_id(transfer, &tid));
        for (i = 0; i < 20; i++) {
            snprintf(text, sizeof text, "flood %d", i);
            OK(p2p_chat_send_timeout(a_chat, text, 10000));
        }
        OK(p2p_chat_close(a_chat));
        OK(p2p_transfer_wait(transfer, NULL));

        /* Now drain, in order. */
        while (closes == 0 || done == 0) {
            next(carol, &ev);
            switch (ev.kind) {
            case P2P_EV_CHAT_MESSAGE:
                snprintf(text, sizeof text, "flood %d", messages);
                CHECK(ev.chat == c_chat && strcmp(ev.text, text) == 0);
                messages++;
                break;
            case P2P_EV_CHAT_CLOSED:
                CHECK(messages == 20 && ev.chat == c_chat);
                closes++;
                break;
            case P2P_EV_TRANSFER_PROGRESS:
                CHECK(ev.id == tid && ev.received <= ev.total);
                progress++;
                break;
            case P2P_EV_TRANSFER_DONE:
                CHECK(ev.id == tid && ev.text != NULL && strstr(ev.text, "big.bin") != NULL);
                done++;
                break;
            default:
                fprintf(stderr, "unexpected kind %d\n", (int)ev.kind);
                fail(__LINE__, "an expected event", P2P_OK);
            }
            p2p_event_free(&ev);
        }
        CHECK(requests == 1 && messages == 20 && closes == 1 && done == 1);
        CHECK(progress < 10);
        printf("overflow: 20 messages, 1 close, 1 done, %d progress\n", progress);
        while (p2p_peer_next_event(carol, 0, &ev) == P2P_OK) {
            CHECK(ev.kind == P2P_EV_PEER || ev.kind == P2P_EV_TRANSFER_PROGRESS);
            p2p_event_free(&ev);
        }
        CHECK(!readable(carol, 0));
        p2p_transfer_free(transfer);
        p2p_chat_free(c_chat);
        p2p_chat_free(a_chat);
    }

    /* Drained: no descriptor readable. */
    while (p2p_peer_next_event(alice, 0, &ev) == P2P_OK) p2p_event_free(&ev);
    CHECK(!readable(alice, 0));
    OK(p2p_peer_event_fd(alice, &fd));
    CHECK(fd >= 0);

    /* A wait without limit ends when another thread exits the peer. */
    {
        pthread_t waiting;
        waiter w = {carol, P2P_OK};
        CHECK(pthread_create(&waiting, NULL, wait_forever, &w) == 0);
        {
            struct timespec t = {0, 100 * 1000 * 1000};
            nanosleep(&t, NULL);
        }
        OK(p2p_peer_exit(carol));
        CHECK(pthread_join(waiting, NULL) == 0);
        CHECK(w.status == P2P_SHUTDOWN);
    }

    p2p_peer_free(carol);
    p2p_peer_free(bob);
    p2p_peer_free(alice);
    OK(p2p_registry_stop(registry));
    p2p_registry_free(registry);
    p2p_string_free(addr);
    CHECK(nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0);
    printf("ALL OK\n");
    return 0;
}
