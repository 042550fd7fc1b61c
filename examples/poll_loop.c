/*
 * p2pchat from one poll() loop, with no callbacks: the shape of a GUI or event-loop
 * application.
 *
 * A registry on a free loopback port and two peers, alice and bob, both configured
 * with an event queue (p2p_peer_config_set_event_queue). Everything then happens in
 * one thread, in one poll() over the two peers' event descriptors
 * (p2p_peer_event_fd): a descriptor is readable exactly while its peer has events
 * waiting, so each wake-up takes events with p2p_peer_next_event(peer, 0, &ev) until
 * P2P_TIMEOUT. Nothing in the loop blocks: alice asks bob with p2p_peer_chat_async
 * (the answer is an event), messages are sent with p2p_chat_send_timeout, and each
 * chat carries its application object as user data (p2p_chat_set_user_data), which
 * every event of that chat hands back.
 *
 *   alice: chat_async("bob") ........................ CHAT_OPENED -> send "hello bob"
 *   bob:   CHAT_REQUEST -> accept ... MESSAGE "hello bob" -> send "hi alice"
 *   alice: MESSAGE "hi alice" -> close
 *   both:  CHAT_CLOSED -> done
 *
 * Build: make -C examples poll_loop (after cargo build --release). Prints "ALL OK".
 * A real application would put the descriptor into its own loop (g_unix_fd_add,
 * QSocketNotifier, epoll) the same way.
 */
#define _XOPEN_SOURCE 700 /* mkdtemp */

#include "p2pchat.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void check(p2p_status st, const char *what) {
    if (st != P2P_OK) {
        fprintf(stderr, "%s: %s: %s\n", what, p2p_status_name(st), p2p_last_error_message());
        exit(1);
    }
}

/* The application's object for one side of a chat (its user data). */
typedef struct {
    const char *me;
    p2p_chat *chat; /* owned: freed when the chat has closed */
    int closed;
} conversation;

static p2p_peer *connect_peer(const char *registry, const char *dir, const char *name) {
    char share[512], key[512];
    p2p_peer_config *config = NULL;
    p2p_peer *peer = NULL;
    p2p_status st;
    snprintf(share, sizeof share, "%s/%s", dir, name);
    snprintf(key, sizeof key, "%s/%s.key", dir, name);
    if (mkdir(share, 0700) != 0) {
        perror("mkdir");
        exit(1);
    }
    check(p2p_peer_config_new(registry, name, share, &config), "config");
    check(p2p_peer_config_set_listen_ip(config, "127.0.0.1"), "listen ip");
    check(p2p_peer_config_set_identity_file(config, key), "identity file");
    check(p2p_peer_config_set_event_queue(config, 64), "event queue");
    st = p2p_peer_connect(config, &peer);
    p2p_peer_config_free(config);
    check(st, name);
    return peer;
}

/* One event of the peer whose own conversation is `self`. */
static void handle(conversation *self, p2p_event *ev) {
    conversation *c = ev->user_data; /* the chat's (or the async request's) user data */
    switch (ev->kind) {
    case P2P_EV_CHAT_REQUEST: /* bob: someone asks; accept, attach our object */
        printf("%s: chat request from %s\n", self->me, ev->from);
        check(p2p_chat_request_accept(ev->request, &self->chat), "accept");
        check(p2p_chat_set_user_data(self->chat, self), "user data");
        p2p_chat_request_free(ev->request);
        break;
    case P2P_EV_CHAT_OPENED: /* alice: the answer to chat_async */
        check(ev->status, "chat with bob");
        c->chat = ev->chat; /* ours now; its user data is the one we gave chat_async */
        check(p2p_chat_send_timeout(c->chat, "hello bob", 2000), "send");
        break;
    case P2P_EV_CHAT_MESSAGE:
        printf("%s: %s says \"%.*s\"\n", c->me, ev->from, (int)ev->text_len, ev->text);
        if (strcmp(c->me, "bob") == 0) {
            check(p2p_chat_send_timeout(c->chat, "hi alice", 2000), "reply");
        } else {
            check(p2p_chat_close(c->chat), "close");
        }
        break;
    case P2P_EV_CHAT_CLOSED:
        printf("%s: the chat with %s ended\n", c->me, ev->from);
        c->closed = 1;
        break;
    default: /* downloads and background events: not used here */
        break;
    }
}

int main(void) {
    char dir[] = "/tmp/p2pchat-example-XXXXXX";
    p2p_registry *registry = NULL;
    char *addr = NULL;
    p2p_peer *peers[2];
    conversation convs[2] = {{"alice", NULL, 0}, {"bob", NULL, 0}};
    struct pollfd fds[2];
    uint64_t request = 0;
    int i;

    alarm(60); /* an example must not hang a test run */
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    check(p2p_registry_start("127.0.0.1:0", NULL, NULL, &registry), "registry");
    check(p2p_registry_address(registry, &addr), "registry address");
    peers[0] = connect_peer(addr, dir, "alice");
    peers[1] = connect_peer(addr, dir, "bob");
    for (i = 0; i < 2; i++) {
        check(p2p_peer_event_fd(peers[i], &fds[i].fd), "event fd");
        fds[i].events = POLLIN;
    }

    /* Returns at once; the answer comes as P2P_EV_CHAT_OPENED carrying &convs[0]. */
    check(p2p_peer_chat_async(peers[0], "bob", &convs[0], &request), "chat_async");

    while (!(convs[0].closed && convs[1].closed)) {
        if (poll(fds, 2, 5000) <= 0) {
            fprintf(stderr, "nothing happened for 5 s\n");
            return 1;
        }
        for (i = 0; i < 2; i++) {
            p2p_event ev;
            if (!(fds[i].revents & POLLIN)) continue;
            /* Drain: the descriptor stays readable while anything waits. */
            while (p2p_peer_next_event(peers[i], 0, &ev) == P2P_OK) {
                handle(&convs[i], &ev);
                p2p_event_free(&ev);
            }
        }
    }

    for (i = 0; i < 2; i++) {
        p2p_chat_free(convs[i].chat);
        p2p_peer_free(peers[i]);
        {
            char path[600];
            snprintf(path, sizeof path, "%s/%s/", dir, convs[i].me);
            rmdir(path);
            snprintf(path, sizeof path, "%s/%s.key", dir, convs[i].me);
            unlink(path);
        }
    }
    rmdir(dir);
    check(p2p_registry_stop(registry), "stop");
    p2p_registry_free(registry);
    p2p_string_free(addr);
    printf("ALL OK\n");
    return 0;
}
