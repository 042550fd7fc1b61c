/*
 * How peers reach each other, through the C API: the path of a download, of a chat on
 * both sides (the request, the accepted chat, the event), this peer's reachability and
 * its event, and the path policy setter.
 *
 * A registry and two peers on loopback (identity files in a temporary directory), where
 * every listener is reachable, so alice forces reverse connect with
 * p2p_peer_config_set_path_policy(P2P_PATH_POLICY_REVERSE):
 * - p2p_peer_config_set_path_policy: NULL is P2P_NULL_ARGUMENT, 7 P2P_INVALID_ARGUMENT;
 * - p2p_peer_reachability becomes P2P_REACH_REACHABLE for both, and bob's event queue
 *   holds a P2P_EV_PEER event of kind P2P_EVENT_REACHABILITY saying "reachable at";
 * - alice downloads bob's file: byte-identical, p2p_transfer_path P2P_PATH_REVERSE;
 * - alice asks bob for a chat: bob's P2P_EV_CHAT_REQUEST event has path
 *   P2P_PATH_REVERSE, as has p2p_chat_request_path and bob's accepted chat
 *   (p2p_chat_path), and alice's chat; a message arrives.
 *
 * alarm() bounds the whole program. Prints "ALL OK" and exits 0 on success, exits 1
 * naming the first failure. Built and run (also under valgrind) by tests/path_c.rs.
 */
#define _XOPEN_SOURCE 700 /* mkdtemp */

#include "p2pchat.h"
#include "check.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *NOTES = "bob's notes, reached the other way round\n";

static p2p_peer *connect_peer(const char *registry, const char *name, const char *share,
                              const char *key_file, int policy, size_t queue) {
    p2p_peer_config *config = NULL;
    p2p_peer *peer = NULL;
    OK(p2p_peer_config_new(registry, name, share, &config));
    OK(p2p_peer_config_set_listen_ip(config, "127.0.0.1"));
    OK(p2p_peer_config_set_identity_file(config, key_file));
    EXPECT(p2p_peer_config_set_path_policy(NULL, P2P_PATH_POLICY_AUTO), P2P_NULL_ARGUMENT);
    EXPECT(p2p_peer_config_set_path_policy(config, 7), P2P_INVALID_ARGUMENT);
    EXPECT(p2p_peer_config_set_path_policy(config, P2P_PATH_POLICY_PUNCH + 1),
           P2P_INVALID_ARGUMENT);
    OK(p2p_peer_config_set_path_policy(config, P2P_PATH_POLICY_PUNCH));
    OK(p2p_peer_config_set_path_policy(config, policy));
    if (queue) OK(p2p_peer_config_set_event_queue(config, queue));
    OK(p2p_peer_connect(config, &peer));
    p2p_peer_config_free(config);
    return peer;
}

/* Poll (15 s at most) until `peer` is found reachable. */
static void wait_reachable(p2p_peer *peer) {
    const struct timespec tick = {0, 10 * 1000 * 1000};
    p2p_reach reach = P2P_REACH_UNKNOWN;
    for (int i = 0; i < 1500; i++) {
        OK(p2p_peer_reachability(peer, &reach));
        if (reach == P2P_REACH_REACHABLE) return;
        nanosleep(&tick, NULL);
    }
    CHECK(reach == P2P_REACH_REACHABLE);
}

/* bob's side: take events until the chat request, check its path, accept it. */
static p2p_chat *bob_chat;
static int saw_reachability;
static void *bob_events(void *arg) {
    p2p_peer *bob = arg;
    p2p_event e;
    for (;;) {
        OK(p2p_peer_next_event(bob, 15000, &e));
        if (e.kind == P2P_EV_PEER && e.peer_event == P2P_EVENT_REACHABILITY) {
            CHECK(strstr(e.text, "reachable at 127.0.0.1:") == e.text);
            saw_reachability = 1;
        }
        if (e.kind == P2P_EV_CHAT_REQUEST) {
            p2p_path path = P2P_PATH_DIRECT;
            CHECK(e.path == P2P_PATH_REVERSE);
            OK(p2p_chat_request_path(e.request, &path));
            CHECK(path == P2P_PATH_REVERSE);
            EXPECT(p2p_chat_request_path(NULL, &path), P2P_NULL_ARGUMENT);
            OK(p2p_chat_request_accept(e.request, &bob_chat));
            p2p_chat_request_free(e.request);
            p2p_event_free(&e);
            return NULL;
        }
        p2p_event_free(&e);
    }
}

int main(void) {
    char root[] = "/tmp/p2p_path_XXXXXX";
    char a_share[64], b_share[64], a_key[96], b_key[96], path[160];
    char *addr = NULL, *saved = NULL;
    p2p_registry *registry = NULL;
    p2p_peer *alice, *bob;
    p2p_transfer *t = NULL;
    p2p_chat *chat = NULL;
    p2p_path how = P2P_PATH_DIRECT;
    pthread_t bob_thread;
    FILE *f;
    char got[256];
    size_t n;

    alarm(120);
    CHECK(mkdtemp(root) != NULL);
    snprintf(a_share, sizeof a_share, "%s/a", root);
    snprintf(b_share, sizeof b_share, "%s/b", root);
    snprintf(a_key, sizeof a_key, "%s/alice.key", root);
    snprintf(b_key, sizeof b_key, "%s/bob.key", root);
    CHECK(mkdir(a_share, 0700) == 0 && mkdir(b_share, 0700) == 0);
    snprintf(path, sizeof path, "%s/notes.txt", b_share);
    f = fopen(path, "wb");
    CHECK(f != NULL && fwrite(NOTES, 1, strlen(NOTES), f) == strlen(NOTES) && fclose(f) == 0);

    OK(p2p_registry_start("127.0.0.1:0", NULL, NULL, &registry));
    OK(p2p_registry_address(registry, &addr));
    bob = connect_peer(addr, "bob", b_share, b_key, P2P_PATH_POLICY_AUTO, 64);
    alice = connect_peer(addr, "alice", a_share, a_key, P2P_PATH_POLICY_REVERSE, 0);
    EXPECT(p2p_peer_reachability(NULL, NULL), P2P_NULL_ARGUMENT);
    wait_reachable(alice);
    wait_reachable(bob);

    OK(p2p_peer_fetch(alice, "bob", "notes.txt", &t));
    OK(p2p_transfer_wait(t, &saved));
    OK(p2p_transfer_path(t, &how));
    CHECK(how == P2P_PATH_REVERSE);
    EXPECT(p2p_transfer_path(NULL, &how), P2P_NULL_ARGUMENT);
    f = fopen(saved, "rb");
    CHECK(f != NULL);
    n = fread(got, 1, sizeof got, f);
    fclose(f);
    CHECK(n == strlen(NOTES) && memcmp(got, NOTES, n) == 0);
    p2p_string_free(saved);
    p2p_transfer_free(t);

    CHECK(pthread_create(&bob_thread, NULL, bob_events, bob) == 0);
    OK(p2p_peer_chat(alice, "bob", &chat));
    CHECK(pthread_join(bob_thread, NULL) == 0);
    CHECK(saw_reachability);
    how = P2P_PATH_DIRECT;
    OK(p2p_chat_path(chat, &how));
    CHECK(how == P2P_PATH_REVERSE);
    how = P2P_PATH_DIRECT;
    OK(p2p_chat_path(bob_chat, &how));
    CHECK(how == P2P_PATH_REVERSE);
    EXPECT(p2p_chat_path(NULL, &how), P2P_NULL_ARGUMENT);
    OK(p2p_chat_send(chat, "over a reverse connection"));
    p2p_chat_free(chat);
    p2p_chat_free(bob_chat);

    p2p_peer_free(alice);
    p2p_peer_free(bob);
    p2p_registry_free(registry);
    p2p_string_free(addr);
    puts("ALL OK");
    return 0;
}
