/*
 * Chat handles and user data in callback mode (p2p_chat_event_cb), from C.
 *
 * A registry; alice with an event queue (she only asks, sends and closes); bob with
 * every older chat callback (request, message, closed: ids only) plus
 * p2p_peer_config_on_chat_event; carol with p2p_peer_config_on_chat_event alone. Each
 * has its identity file in a temporary directory.
 * - bob, five rounds: alice asks with the blocking p2p_peer_chat on a thread and sends
 *   three messages the moment it returns; bob accepts inside his
 *   p2p_chat_request_cb, the handle written straight into the shared record by
 *   p2p_chat_request_accept's out-parameter. Every message reaches bob's older
 *   message callback (with the id of that handle) and then his chat-event callback
 *   with that very handle (so none came before the accept returned), in order, on the
 *   same thread. After bob sets the chat's user data, a further message carries it;
 *   alice's close reaches both close callbacks, the event one with bob's handle, his
 *   user data and P2P_CHAT_CLOSED_REMOTE;
 * - carol, the chat-event callback alone: a chat request arrives as
 *   P2P_EV_CHAT_REQUEST (request owned by the callee, from "alice"), accepted inside
 *   the callback; alice's message carries carol's handle; carol freeing her chat gets
 *   the close with a NULL handle (freed already) and P2P_CHAT_CLOSED_LOCAL;
 * - carol's p2p_peer_chat_async (no p2p_chat_opened_cb set) answers through the
 *   chat-event callback as P2P_EV_CHAT_OPENED with a new handle and the request's
 *   user data (also the chat's); alice's reply, sent the moment she accepted while
 *   that callback lingers 200 ms, arrives after it with that handle and data (so not
 *   before the answer's callback returned), and so does her close;
 * - argument checks: NULL config.
 *
 * alarm() bounds the whole program. Prints "ALL OK" and exits 0 on success, exits 1
 * naming the first failure. Built and run (also under valgrind) by
 * tests/chat_callbacks_c.rs.
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

static char root[] = "/tmp/p2pchat-chatcb-XXXXXX";

/* What one callback peer saw; every field under `mu`, except `accepted`, which
 * p2p_chat_request_accept writes through its out-parameter. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    p2p_chat *accepted;      /* the handle accept returned (this round) */
    p2p_chat *opened;        /* the handle of the async answer */
    void *opened_user_data;  /* and the user data it carried */
    p2p_status opened_status;
    int requests, opens;     /* chat-event requests and async answers */
    int old_messages, messages, old_closes, closes;
    uint64_t old_id;         /* the id the older message callback got last */
    p2p_chat *close_chat;    /* the last close event's handle, user data, closer */
    void *close_user_data;
    p2p_chat_closed_by close_by;
    char last_text[64];
    void *last_user_data;
    p2p_chat *last_chat;
} record;

static void record_init(record *r) {
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
}

static void record_destroy(record *r) {
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
}

/* Wait (20 s at most) until `*count` reaches `n`. */
static void wait_count(record *r, const int *count, int n) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 20;
    pthread_mutex_lock(&r->mu);
    while (*count < n) {
        if (pthread_cond_timedwait(&r->cv, &r->mu, &until) != 0 && *count < n) {
            fprintf(stderr, "count %d, wanted %d\n", *count, n);
            fail(__LINE__, "a callback within 20 s", P2P_TIMEOUT);
        }
    }
    pthread_mutex_unlock(&r->mu);
}

/* ---- bob's older callbacks: ids only ---- */

static void on_request(void *user_data, p2p_chat_request *request) {
    record *r = user_data;
    OK(p2p_chat_request_accept(request, &r->accepted));
    p2p_chat_request_free(request);
}

static void on_message(void *user_data, uint64_t chat_id, const char *from, const char *text,
                       size_t text_len) {
    record *r = user_data;
    uint64_t id = 0;
    CHECK(strcmp(from, "alice") == 0 && strlen(text) == text_len);
    /* The accept has returned: its handle is there, and this message is its chat's. */
    CHECK(r->accepted != NULL);
    OK(p2p_chat_id(r->accepted, &id));
    CHECK(id == chat_id);
    pthread_mutex_lock(&r->mu);
    CHECK(r->old_messages == r->messages); /* the older callback comes first */
    r->old_messages++;
    r->old_id = chat_id;
    pthread_mutex_unlock(&r->mu);
}

static void on_closed(void *user_data, uint64_t chat_id, const char *peer, p2p_chat_closed_by by) {
    record *r = user_data;
    (void)by;
    CHECK(strcmp(peer, "alice") == 0);
    pthread_mutex_lock(&r->mu);
    CHECK(r->old_closes == r->closes);
    r->old_closes++;
    r->old_id = chat_id;
    pthread_mutex_unlock(&r->mu);
}

/* ---- the chat-event callback (bob and carol) ---- */

static void on_chat_event(void *user_data, const p2p_event *ev) {
    record *r = user_data;
    uint64_t id = 0;
    switch (ev->kind) {
    case P2P_EV_CHAT_REQUEST: /* carol only: bob has p2p_chat_request_cb */
        CHECK(ev->request != NULL && ev->from != NULL && strcmp(ev->from, "alice") == 0);
        CHECK(ev->chat == NULL);
        OK(p2p_chat_request_accept(ev->request, &r->accepted));
        p2p_chat_request_free(ev->request);
        pthread_mutex_lock(&r->mu);
        r->requests++;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        break;
    case P2P_EV_CHAT_OPENED: {
        /* Linger: the chat's first message (already sent) must still wait for us. */
        struct timespec linger = {0, 200 * 1000 * 1000};
        nanosleep(&linger, NULL);
        pthread_mutex_lock(&r->mu);
        r->opened = ev->chat;
        r->opened_user_data = ev->user_data;
        r->opened_status = ev->status;
        r->opens++;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        break;
    }
    case P2P_EV_CHAT_MESSAGE:
        CHECK(ev->chat != NULL && ev->text != NULL && strcmp(ev->from, "alice") == 0);
        OK(p2p_chat_id(ev->chat, &id));
        CHECK(id == ev->id);
        CHECK(p2p_chat_get_user_data(ev->chat) == ev->user_data);
        pthread_mutex_lock(&r->mu);
        /* Not before the accept returned: the very handle it returned (or the async
         * answer's). */
        CHECK(ev->chat == r->accepted || (r->opened != NULL && ev->chat == r->opened));
        r->messages++;
        snprintf(r->last_text, sizeof r->last_text, "%s", ev->text);
        r->last_user_data = ev->user_data;
        r->last_chat = ev->chat;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        break;
    case P2P_EV_CHAT_CLOSED:
        CHECK(strcmp(ev->from, "alice") == 0);
        pthread_mutex_lock(&r->mu);
        r->close_chat = ev->chat;
        r->close_user_data = ev->user_data;
        r->close_by = ev->closed_by;
        r->closes++;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        break;
    default:
        fprintf(stderr, "unexpected chat event kind %d\n", (int)ev->kind);
        fail(__LINE__, "a chat event kind", P2P_OK);
    }
}

static p2p_peer *connect_peer(const char *registry, const char *name, size_t queue,
                              record *r, int older) {
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
    if (queue > 0) OK(p2p_peer_config_set_event_queue(config, queue));
    if (r != NULL) {
        OK(p2p_peer_config_set_user_data(config, r));
        OK(p2p_peer_config_on_chat_event(config, on_chat_event));
    }
    if (older) {
        OK(p2p_peer_config_on_chat_request(config, on_request));
        OK(p2p_peer_config_on_chat_message(config, on_message));
        OK(p2p_peer_config_on_chat_closed(config, on_closed));
    }
    st = p2p_peer_connect(config, &peer);
    p2p_peer_config_free(config);
    OK(st);
    return peer;
}

/* alice's next event other than background ones, within 20 s. */
static void alice_next(p2p_peer *alice, p2p_event *ev, p2p_event_kind kind) {
    for (;;) {
        OK(p2p_peer_next_event(alice, 20000, ev));
        if (ev->kind == kind) return;
        CHECK(ev->kind == P2P_EV_PEER || ev->kind == P2P_EV_CHAT_CLOSED);
        p2p_event_free(ev);
    }
}

/* alice asks `user` with the blocking call and writes three messages at once. */
typedef struct {
    p2p_peer *alice;
    const char *user;
    p2p_chat *chat;
} asker;

static void *ask_and_write(void *arg) {
    asker *a = arg;
    int i;
    char text[32];
    OK(p2p_peer_chat(a->alice, a->user, &a->chat));
    for (i = 0; i < 3; i++) {
        snprintf(text, sizeof text, "right away %d", i);
        OK(p2p_chat_send_timeout(a->chat, text, 5000));
    }
    return NULL;
}

int main(void) {
    p2p_registry *registry = NULL;
    char *addr = NULL;
    p2p_peer *alice, *bob, *carol;
    record rb, rc;
    p2p_event ev;
    int round, b_data = 7, c_req_data = 8;
    uint64_t req = 0;

    alarm(150);
    CHECK(mkdtemp(root) != NULL);
    record_init(&rb);
    record_init(&rc);
    EXPECT(p2p_peer_config_on_chat_event(NULL, on_chat_event), P2P_NULL_ARGUMENT);

    OK(p2p_registry_start("127.0.0.1:0", NULL, NULL, &registry));
    OK(p2p_registry_address(registry, &addr));
    alice = connect_peer(addr, "alice", 64, NULL, 0);
    bob = connect_peer(addr, "bob", 0, &rb, 1);
    carol = connect_peer(addr, "carol", 0, &rc, 0);

    /* ---- bob: older callbacks and the chat-event callback, five rounds ---- */
    for (round = 0; round < 5; round++) {
        pthread_t t;
        asker a = {alice, "bob", NULL};
        rb.accepted = NULL; /* before the thread starts: no callback reads it now */
        CHECK(pthread_create(&t, NULL, ask_and_write, &a) == 0);
        CHECK(pthread_join(t, NULL) == 0);
        wait_count(&rb, &rb.messages, 4 * round + 3);
        pthread_mutex_lock(&rb.mu);
        CHECK(rb.old_messages == rb.messages);
        CHECK(strcmp(rb.last_text, "right away 2") == 0 && rb.last_chat == rb.accepted);
        pthread_mutex_unlock(&rb.mu);

        /* The user data set now comes with the next message and the close. */
        OK(p2p_chat_set_user_data(rb.accepted, &b_data));
        OK(p2p_chat_send_timeout(a.chat, "with data", 5000));
        wait_count(&rb, &rb.messages, 4 * round + 4);
        pthread_mutex_lock(&rb.mu);
        CHECK(strcmp(rb.last_text, "with data") == 0 && rb.last_user_data == &b_data);
        pthread_mutex_unlock(&rb.mu);

        OK(p2p_chat_close(a.chat));
        wait_count(&rb, &rb.closes, round + 1);
        pthread_mutex_lock(&rb.mu);
        CHECK(rb.old_closes == rb.closes);
        CHECK(rb.close_chat == rb.accepted && rb.close_user_data == &b_data);
        CHECK(rb.close_by == P2P_CHAT_CLOSED_REMOTE);
        pthread_mutex_unlock(&rb.mu);
        p2p_chat_free(a.chat);
        p2p_chat_free(rb.accepted);
    }
    CHECK(rb.requests == 0 && rb.opens == 0); /* requests went to p2p_chat_request_cb */

    /* ---- carol: the chat-event callback alone takes the request ---- */
    {
        pthread_t t;
        asker a = {alice, "carol", NULL};
        p2p_chat *mine;
        CHECK(pthread_create(&t, NULL, ask_and_write, &a) == 0);
        CHECK(pthread_join(t, NULL) == 0);
        wait_count(&rc, &rc.messages, 3);
        pthread_mutex_lock(&rc.mu);
        CHECK(rc.requests == 1 && rc.last_chat == rc.accepted && rc.last_user_data == NULL);
        mine = rc.accepted;
        pthread_mutex_unlock(&rc.mu);
        /* Freed, then closed: the close comes with no handle. */
        p2p_chat_free(mine);
        pthread_mutex_lock(&rc.mu);
        rc.accepted = NULL; /* freed: no later event may match it */
        pthread_mutex_unlock(&rc.mu);
        wait_count(&rc, &rc.closes, 1);
        CHECK(rc.close_chat == NULL && rc.close_by == P2P_CHAT_CLOSED_LOCAL);
        p2p_chat_free(a.chat);
    }

    /* ---- carol's async chat, answered through the chat-event callback ---- */
    {
        p2p_chat *a_chat = NULL;
        /* Drain alice's older events (the closes of the chats above). */
        while (p2p_peer_next_event(alice, 0, &ev) == P2P_OK) p2p_event_free(&ev);
        OK(p2p_peer_chat_async(carol, "alice", &c_req_data, &req));
        alice_next(alice, &ev, P2P_EV_CHAT_REQUEST);
        CHECK(strcmp(ev.from, "carol") == 0);
        OK(p2p_chat_request_accept(ev.request, &a_chat));
        p2p_chat_request_free(ev.request);
        p2p_event_free(&ev);
        /* Sent at once: it must not reach carol before her answer callback returned. */
        OK(p2p_chat_send_timeout(a_chat, "back", 5000));
        wait_count(&rc, &rc.opens, 1);
        pthread_mutex_lock(&rc.mu);
        CHECK(rc.opened_status == P2P_OK && rc.opened != NULL);
        CHECK(rc.opened_user_data == &c_req_data);
        CHECK(p2p_chat_get_user_data(rc.opened) == &c_req_data);
        pthread_mutex_unlock(&rc.mu);
        wait_count(&rc, &rc.messages, 4);
        pthread_mutex_lock(&rc.mu);
        CHECK(strcmp(rc.last_text, "back") == 0 && rc.last_chat == rc.opened);
        CHECK(rc.last_user_data == &c_req_data);
        pthread_mutex_unlock(&rc.mu);
        p2p_chat_free(a_chat);
        wait_count(&rc, &rc.closes, 2);
        CHECK(rc.close_chat == rc.opened && rc.close_user_data == &c_req_data);
        CHECK(rc.close_by == P2P_CHAT_CLOSED_REMOTE);
        p2p_chat_free(rc.opened);
    }

    p2p_peer_free(carol);
    p2p_peer_free(bob);
    p2p_peer_free(alice);
    OK(p2p_registry_stop(registry));
    p2p_registry_free(registry);
    p2p_string_free(addr);
    record_destroy(&rb);
    record_destroy(&rc);
    CHECK(nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0);
    printf("ALL OK\n");
    return 0;
}
