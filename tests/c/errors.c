/*
 * Error reports through the C API: the fixed texts and statuses, and a table of
 * provoked failures whose statuses the driver checks against each function's
 * documented list (every call made through TRY prints "PROVOKED <function> <status>";
 * tests/errors_c.rs reads the header's doc comments and fails on a status a function
 * returned that its "Errors" list does not name).
 *
 * - a missing download directory: P2P_NOT_A_DIRECTORY naming the download directory,
 *   not the shared one;
 * - a registry that accepts connections and never answers: P2P_TIMEOUT with a text
 *   saying so, not the OS's "Resource temporarily unavailable";
 * - p2p_registry_start (and _with_config) with a malformed address:
 *   P2P_INVALID_ARGUMENT, like a peer's malformed registry address;
 * - alice's own exit (from another thread) while p2p_peer_chat waits for bob's answer:
 *   P2P_SHUTDOWN, not P2P_DECLINED;
 * - NULL arguments, a peer that has exited, a registry that has stopped, unknown
 *   users and files: whatever each function returns is printed for the driver.
 *
 * alarm() bounds the whole program. Prints "ALL OK" and exits 0 on success, exits 1
 * naming the first failure. Built and run (also under valgrind) by tests/errors_c.rs.
 */
#define _XOPEN_SOURCE 700 /* mkdtemp, nftw */

#include "p2pchat.h"
#include "check.h"

#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Call `fn(args)` and print its status for the driver; evaluates to the status. */
static p2p_status provoked(const char *fn, p2p_status st) {
    printf("PROVOKED %s %s\n", fn, p2p_status_name(st));
    fflush(stdout);
    return st;
}
#define TRY(fn, ...) provoked(#fn, fn(__VA_ARGS__))

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static p2p_chat_request *held_request; /* bob's unanswered request */

static void on_chat_request(void *user_data, p2p_chat_request *request) {
    (void)user_data;
    pthread_mutex_lock(&mu);
    if (held_request == NULL) {
        held_request = request; /* left unanswered until alice has exited */
        request = NULL;
    }
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    if (request) p2p_chat_request_free(request);
}

static p2p_status connect_peer(const char *registry, const char *name, const char *share,
                               const char *download, const char *key_file, p2p_peer **out) {
    p2p_peer_config *config = NULL;
    p2p_status st;
    OK(p2p_peer_config_new(registry, name, share, &config));
    OK(p2p_peer_config_set_listen_ip(config, "127.0.0.1"));
    OK(p2p_peer_config_set_identity_file(config, key_file));
    if (download) OK(p2p_peer_config_set_download_dir(config, download));
    OK(p2p_peer_config_on_chat_request(config, on_chat_request));
    st = TRY(p2p_peer_connect, config, out);
    p2p_peer_config_free(config);
    return st;
}

/* Exit alice once bob holds her chat request. */
static void *exit_when_asked(void *arg) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 30;
    pthread_mutex_lock(&mu);
    while (held_request == NULL) CHECK(pthread_cond_timedwait(&cv, &mu, &dl) == 0 || held_request);
    pthread_mutex_unlock(&mu);
    OK(p2p_peer_exit(arg));
    return NULL;
}

/* NULL for every pointer: each function's answer goes to the driver. */
static void null_arguments(void) {
    char *s = NULL;
    uint16_t port;
    uint64_t id;
    bool flag;
    size_t n;
    p2p_string_list list;
    p2p_user_files_list files;
    p2p_transfer_statistics stats;
    p2p_peer_config *pc = NULL;
    p2p_registry_config *rc = NULL;
    p2p_transfer *t = NULL;
    p2p_chat *chat = NULL;
    p2p_peer *peer = NULL;
    p2p_registry *reg = NULL;
    (void)TRY(p2p_registry_config_new, NULL, &rc);
    (void)TRY(p2p_registry_config_new, "127.0.0.1:0", NULL);
    (void)TRY(p2p_registry_start, NULL, NULL, NULL, &reg);
    (void)TRY(p2p_registry_start_with_config, NULL, &reg);
    (void)TRY(p2p_registry_port, NULL, &port);
    (void)TRY(p2p_registry_address, NULL, &s);
    (void)TRY(p2p_registry_users, NULL, &list);
    (void)TRY(p2p_registry_fingerprint, NULL, &s);
    (void)TRY(p2p_registry_stop, NULL);
    (void)TRY(p2p_peer_config_new, NULL, "alice", "/tmp", &pc);
    (void)TRY(p2p_peer_config_new, "127.0.0.1:1", NULL, "/tmp", &pc);
    (void)TRY(p2p_peer_config_new, "127.0.0.1:1", "alice", NULL, &pc);
    (void)TRY(p2p_peer_config_set_port, NULL, 0);
    (void)TRY(p2p_peer_config_set_listen_ip, NULL, "127.0.0.1");
    (void)TRY(p2p_peer_config_set_download_dir, NULL, "/tmp");
    (void)TRY(p2p_peer_config_set_user_data, NULL, NULL);
    (void)TRY(p2p_peer_connect, NULL, &peer);
    (void)TRY(p2p_peer_exit, NULL);
    (void)TRY(p2p_peer_username, NULL, &s);
    (void)TRY(p2p_peer_listen_port, NULL, &port);
    (void)TRY(p2p_peer_users, NULL, &list);
    (void)TRY(p2p_peer_all_files, NULL, &files);
    (void)TRY(p2p_peer_files_of, NULL, "bob", &list);
    (void)TRY(p2p_peer_rescan, NULL, &n);
    (void)TRY(p2p_peer_chat, NULL, "bob", &chat);
    (void)TRY(p2p_chat_send, NULL, "hi");
    (void)TRY(p2p_chat_id, NULL, &id);
    (void)TRY(p2p_chat_close, NULL);
    (void)TRY(p2p_chat_request_accept, NULL, &chat);
    (void)TRY(p2p_peer_fetch, NULL, "bob", "f", &t);
    (void)TRY(p2p_peer_fetch_to, NULL, "bob", "f", "/tmp", &t);
    (void)TRY(p2p_transfer_id, NULL, &id);
    (void)TRY(p2p_transfer_progress, NULL, NULL, NULL);
    (void)TRY(p2p_transfer_is_finished, NULL, &flag);
    (void)TRY(p2p_transfer_wait, NULL, &s);
    (void)TRY(p2p_transfer_cancel, NULL);
    (void)TRY(p2p_transfer_cancel_discard, NULL);
    (void)TRY(p2p_transfer_stats, NULL, &stats);
    (void)TRY(p2p_peer_transfers, NULL, NULL, 0, &n);
    (void)TRY(p2p_username_available, NULL, "x", &flag);
    (void)TRY(p2p_set_log_callback, NULL, NULL, 99);
}

/* Everything a peer can be asked after it exited. */
static void after_exit(p2p_peer *peer) {
    char *s = NULL;
    bool flag;
    size_t n;
    uint16_t port;
    p2p_string_list list;
    p2p_user_files_list files;
    p2p_transfer *t = NULL;
    p2p_chat *chat = NULL;
    if (TRY(p2p_peer_username, peer, &s) == P2P_OK) p2p_string_free(s);
    (void)TRY(p2p_peer_listen_port, peer, &port);
    CHECK(TRY(p2p_peer_users, peer, &list) == P2P_SHUTDOWN);
    CHECK(TRY(p2p_peer_all_files, peer, &files) == P2P_SHUTDOWN);
    CHECK(TRY(p2p_peer_files_of, peer, "bob", &list) == P2P_SHUTDOWN);
    CHECK(TRY(p2p_peer_rescan, peer, &n) == P2P_SHUTDOWN);
    if (TRY(p2p_peer_shared_files, peer, &list) == P2P_OK) p2p_string_list_free(&list);
    (void)TRY(p2p_peer_user_is_legacy, peer, "bob", &flag);
    if (TRY(p2p_peer_user_fingerprint, peer, "bob", &s) == P2P_OK) p2p_string_free(s);
    if (TRY(p2p_peer_fingerprint, peer, &s) == P2P_OK) p2p_string_free(s);
    CHECK(TRY(p2p_peer_chat, peer, "bob", &chat) == P2P_SHUTDOWN);
    CHECK(TRY(p2p_peer_fetch, peer, "bob", "f.txt", &t) == P2P_SHUTDOWN);
    CHECK(TRY(p2p_peer_fetch_to, peer, "bob", "f.txt", "/tmp", &t) == P2P_SHUTDOWN);
    (void)TRY(p2p_peer_transfers, peer, NULL, 0, &n);
}

int main(void) {
    char root[] = "/tmp/p2p_errors_XXXXXX";
    char a_share[64], b_share[64], missing[96], a_key[96], b_key[96], c_key[96], silent[64];
    char *addr = NULL;
    p2p_registry *registry = NULL;
    p2p_registry_config *rc = NULL;
    p2p_peer *alice = NULL, *bob = NULL, *carol = NULL;
    p2p_chat *chat = NULL;
    p2p_transfer *t = NULL;
    p2p_string_list list;
    struct sockaddr_in sa;
    socklen_t sa_len = sizeof sa;
    pthread_t exiter;
    bool flag;
    int fd;

    alarm(200);
    CHECK(mkdtemp(root) != NULL);
    snprintf(a_share, sizeof a_share, "%s/a", root);
    snprintf(b_share, sizeof b_share, "%s/b", root);
    snprintf(missing, sizeof missing, "%s/no-such-downloads", root);
    snprintf(a_key, sizeof a_key, "%s/keys/alice.key", root);
    snprintf(b_key, sizeof b_key, "%s/keys/bob.key", root);
    snprintf(c_key, sizeof c_key, "%s/keys/carol.key", root);
    CHECK(mkdir(a_share, 0700) == 0 && mkdir(b_share, 0700) == 0);

    null_arguments();

    /* A malformed listen address is the caller's mistake, as for a peer. */
    CHECK(TRY(p2p_registry_start, "no-port-here", NULL, NULL, &registry) ==
          P2P_INVALID_ARGUMENT);
    CHECK(TRY(p2p_registry_start, "127.0.0.1:99999", NULL, NULL, &registry) ==
          P2P_INVALID_ARGUMENT);
    CHECK(TRY(p2p_registry_start, "", NULL, NULL, &registry) == P2P_INVALID_ARGUMENT);
    CHECK(registry == NULL);
    OK(p2p_registry_config_new("not an address", &rc));
    CHECK(TRY(p2p_registry_start_with_config, rc, &registry) == P2P_INVALID_ARGUMENT);
    p2p_registry_config_free(rc);
    {
        p2p_peer_config *pc = NULL;
        OK(p2p_peer_config_new("no-port-here", "alice", a_share, &pc));
        CHECK(TRY(p2p_peer_connect, pc, &alice) == P2P_INVALID_ARGUMENT);
        p2p_peer_config_free(pc);
    }

    OK(p2p_registry_start("127.0.0.1:0", NULL, NULL, &registry));
    OK(p2p_registry_address(registry, &addr));

    /* A missing download directory is named as the download directory. */
    CHECK(connect_peer(addr, "alice", a_share, missing, a_key, &alice) == P2P_NOT_A_DIRECTORY);
    CHECK(strstr(p2p_last_error_message(), "download directory") != NULL);
    CHECK(strstr(p2p_last_error_message(), "shared directory") == NULL);
    CHECK(strstr(p2p_last_error_message(), "no-such-downloads") != NULL);
    CHECK(alice == NULL);

    /* A registry that accepts and never answers: a timeout that says so. */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(fd, 8) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&sa, &sa_len) == 0);
    snprintf(silent, sizeof silent, "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
    CHECK(connect_peer(silent, "carol", a_share, NULL, c_key, &carol) == P2P_TIMEOUT);
    printf("silent registry: %s\n", p2p_last_error_message());
    CHECK(strstr(p2p_last_error_message(), "Resource temporarily unavailable") == NULL);
    CHECK(strstr(p2p_last_error_message(), "os error 11") == NULL);
    CHECK(strstr(p2p_last_error_message(), "did not answer") != NULL ||
          strstr(p2p_last_error_message(), "timed out") != NULL);
    CHECK(TRY(p2p_username_available, silent, "carol", &flag) == P2P_TIMEOUT);
    CHECK(strstr(p2p_last_error_message(), "os error 11") == NULL);
    CHECK(close(fd) == 0);

    OK(connect_peer(addr, "alice", a_share, NULL, a_key, &alice));
    OK(connect_peer(addr, "bob", b_share, NULL, b_key, &bob));

    /* Unknown users and files. */
    CHECK(TRY(p2p_peer_files_of, alice, "nobody", &list) == P2P_USER_NOT_FOUND);
    CHECK(TRY(p2p_peer_fetch, alice, "nobody", "x.txt", &t) == P2P_USER_NOT_FOUND);
    CHECK(TRY(p2p_peer_fetch_to, alice, "nobody", "x.txt", a_share, &t) == P2P_USER_NOT_FOUND);
    CHECK(TRY(p2p_peer_chat, alice, "nobody", &chat) == P2P_USER_NOT_FOUND);
    CHECK(TRY(p2p_peer_chat, alice, "bad,name", &chat) == P2P_INVALID_USERNAME);
    CHECK(TRY(p2p_peer_fetch, alice, "bob", "../x", &t) == P2P_INVALID_ARGUMENT);
    OK(p2p_peer_fetch(alice, "bob", "absent.txt", &t));
    CHECK(TRY(p2p_transfer_wait, t, NULL) == P2P_FILE_NOT_FOUND);
    p2p_transfer_free(t);
    t = NULL;

    /* Alice's own exit interrupts her chat request: P2P_SHUTDOWN, not declined. */
    CHECK(pthread_create(&exiter, NULL, exit_when_asked, alice) == 0);
    CHECK(TRY(p2p_peer_chat, alice, "bob", &chat) == P2P_SHUTDOWN);
    printf("interrupted chat: %s\n", p2p_last_error_message());
    CHECK(strstr(p2p_last_error_message(), "declined") == NULL);
    CHECK(chat == NULL);
    CHECK(pthread_join(exiter, NULL) == 0);
    after_exit(alice);
    pthread_mutex_lock(&mu);
    p2p_chat_request_free(held_request);
    held_request = NULL;
    pthread_mutex_unlock(&mu);

    /* The registry gone: bob's questions fail with documented statuses. */
    OK(p2p_registry_stop(registry));
    if (TRY(p2p_peer_users, bob, &list) == P2P_OK) p2p_string_list_free(&list);
    if (TRY(p2p_peer_files_of, bob, "alice", &list) == P2P_OK) p2p_string_list_free(&list);
    if (TRY(p2p_peer_fetch, bob, "alice", "x.txt", &t) == P2P_OK) p2p_transfer_free(t);
    if (TRY(p2p_peer_chat, bob, "alice", &chat) == P2P_OK) p2p_chat_free(chat);
    (void)TRY(p2p_peer_rescan, bob, NULL);
    if (TRY(p2p_registry_users, registry, &list) == P2P_OK) p2p_string_list_free(&list);
    (void)TRY(p2p_registry_stop, registry);

    p2p_peer_free(alice);
    p2p_peer_free(bob);
    p2p_registry_free(registry);
    p2p_string_free(addr);
    CHECK(nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0);
    printf("ALL OK\n");
    return 0;
}
