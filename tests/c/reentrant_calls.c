/*
 * Calls that would wait for their own thread, made from inside library callbacks:
 * each must return P2P_WOULD_DEADLOCK at once with a message naming the call (or, for
 * the free functions, do nothing and set that message), never hang or crash, and the
 * program must then go on and finish normally.
 *
 * - the registry's event callback stops and frees its own registry, and waits on a
 *   download;
 * - a download's own progress, done and failed callbacks and the event it emits
 *   (P2P_EVENT_TRANSFER_STARTED) wait on that download; the done callback also exits
 *   and frees its own peer;
 * - bob's chat-request and chat-message callbacks exit and free bob; alice's
 *   chat-closed callback, run on the main thread by p2p_chat_close, frees alice.
 *
 * Every such call is guarded by alarm(): if it hangs, SIGALRM names it and the
 * program exits 2 instead of hanging the test suite. Prints "ALL OK" and exits 0 on
 * success; exits 1 naming the first failure. Built and run by tests/reentrant_calls.rs.
 */
#define _XOPEN_SOURCE 700 /* mkdtemp, nftw, sigaction, clock_gettime */

#include "p2pchat.h"

#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FILE_NAME "data.bin"
#define FILE_SIZE (512 * 1024 + 3)
/* Seconds one guarded call may take before it counts as hung; and the whole program
 * between two guarded calls. */
#define CALL_LIMIT 10
#define STEP_LIMIT 120

static const char *volatile guarded_call = "(between calls)";

static void on_alarm(int sig) {
    const char *what = guarded_call;
    (void)sig;
    (void)!write(2, "HUNG in ", 8);
    (void)!write(2, what, strlen(what));
    (void)!write(2, "\n", 1);
    _exit(2);
}

/* Run `call` with the per-call alarm, then go back to the per-step one. */
#define GUARDED(call)                                                                       \
    (guarded_call = #call, alarm(CALL_LIMIT), guard_done(call))
#define GUARDED_VOID(call)                                                                  \
    do {                                                                                    \
        guarded_call = #call;                                                               \
        alarm(CALL_LIMIT);                                                                  \
        call;                                                                               \
        guard_done(P2P_OK);                                                                 \
    } while (0)

static p2p_status guard_done(p2p_status st) {
    alarm(STEP_LIMIT);
    guarded_call = "(between calls)";
    return st;
}

static void fail(int line, const char *what, const char *detail) {
    fprintf(stderr, "FAILED at line %d: %s%s%s\n", line, what, detail ? ": " : "",
            detail ? detail : "");
    exit(1);
}

#define EXPECT_STATUS(call, expected)                                                       \
    do {                                                                                    \
        p2p_status st_ = (call);                                                            \
        if (st_ != (expected)) {                                                            \
            char msg_[512];                                                                 \
            snprintf(msg_, sizeof msg_, "got %s, wanted %s (%s)", p2p_status_name(st_),     \
                     p2p_status_name(expected), p2p_last_error_message());                  \
            fail(__LINE__, #call, msg_);                                                    \
        }                                                                                   \
    } while (0)
#define CHECK(call) EXPECT_STATUS(call, P2P_OK)
#define EXPECT(cond)                                                                        \
    do {                                                                                    \
        if (!(cond)) fail(__LINE__, #cond, NULL);                                           \
    } while (0)

/* What the callbacks checked, read by main under `mu`. Callbacks never exit(): they
 * record the first failure here, and main reports it. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static char first_failure[600];
static int checks_passed;

static void record(int ok, int line, const char *what) {
    pthread_mutex_lock(&mu);
    if (ok) {
        checks_passed++;
    } else if (first_failure[0] == '\0') {
        snprintf(first_failure, sizeof first_failure, "line %d: %s (last error: \"%s\")", line,
                 what, p2p_last_error_message());
    }
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

/* Inside a callback: `call` must return P2P_WOULD_DEADLOCK, with a last-error message
 * that names `name`. */
#define EXPECT_REFUSED(call, name)                                                          \
    do {                                                                                    \
        p2p_status st_ = GUARDED(call);                                                     \
        record(st_ == P2P_WOULD_DEADLOCK, __LINE__, #call " did not give P2P_WOULD_DEADLOCK"); \
        record(strstr(p2p_last_error_message(), name) != NULL, __LINE__,                    \
               #call ": the message does not name " name);                                  \
    } while (0)
/* Inside a callback: the free function `call` must do nothing but set the message. */
#define EXPECT_FREE_REFUSED(call, name)                                                     \
    do {                                                                                    \
        GUARDED_VOID(call);                                                                 \
        record(strstr(p2p_last_error_message(), name) != NULL, __LINE__,                    \
               #call " was not refused with a message naming " name);                       \
    } while (0)

/* Wait (10 s at most) until `cond` holds, reading shared state under `mu`. */
#define WAIT_FOR(cond)                                                                      \
    do {                                                                                    \
        struct timespec dl_;                                                                \
        int ok_ = 1;                                                                        \
        clock_gettime(CLOCK_REALTIME, &dl_);                                                \
        dl_.tv_sec += 10;                                                                   \
        pthread_mutex_lock(&mu);                                                            \
        while (!(cond) && ok_) ok_ = pthread_cond_timedwait(&cv, &mu, &dl_) == 0 || (cond); \
        pthread_mutex_unlock(&mu);                                                          \
        if (!ok_) fail(__LINE__, "timed out waiting for " #cond, first_failure);            \
    } while (0)

/* ---- the registry ---- */

static p2p_registry *registry;
/* What the registry callback does at its next event: 0 nothing, 1 stop and free its
 * own registry, 2 wait on `registry_waits_on`. Set by main, cleared by the callback. */
static int registry_task;
static p2p_transfer *registry_waits_on;
static int registry_tasks_done;

static void on_registry_event(void *user_data, const p2p_registry_event *event) {
    int task;
    (void)user_data;
    (void)event;
    pthread_mutex_lock(&mu);
    task = registry_task;
    registry_task = 0;
    pthread_mutex_unlock(&mu);
    if (task == 1) {
        EXPECT_REFUSED(p2p_registry_stop(registry), "p2p_registry_stop");
        EXPECT_FREE_REFUSED(p2p_registry_free(registry), "p2p_registry_free");
    } else if (task == 2) {
        EXPECT_REFUSED(p2p_transfer_wait(registry_waits_on, NULL), "p2p_transfer_wait");
    }
    if (task != 0) {
        pthread_mutex_lock(&mu);
        registry_tasks_done++;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
    }
}

/* ---- the peers ---- */

static p2p_peer *alice, *bob;
/* Alice's downloads, published by main after p2p_peer_fetch returns (a callback may
 * run before that: it then waits for the handle). */
static p2p_transfer *current;
static uint64_t current_id;
static int progress_checked, started_checked, done_checked, failed_checked;
static int request_checked, message_checked, closed_checked;
static p2p_chat *bob_chat;

static p2p_transfer *current_transfer(uint64_t id) {
    p2p_transfer *t = NULL;
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 10;
    pthread_mutex_lock(&mu);
    while (!(current != NULL && current_id == id))
        if (pthread_cond_timedwait(&cv, &mu, &dl) != 0) break;
    if (current != NULL && current_id == id) t = current;
    pthread_mutex_unlock(&mu);
    return t;
}

static void mark(int *flag) {
    pthread_mutex_lock(&mu);
    *flag = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static int once(int *flag) {
    int first;
    pthread_mutex_lock(&mu);
    first = !*flag;
    pthread_mutex_unlock(&mu);
    return first;
}

static void on_progress(void *user_data, uint64_t id, uint64_t received, uint64_t total) {
    (void)user_data;
    (void)received;
    (void)total;
    if (once(&progress_checked)) {
        p2p_transfer *t = current_transfer(id);
        record(t != NULL, __LINE__, "progress: no transfer handle");
        if (t) EXPECT_REFUSED(p2p_transfer_wait(t, NULL), "p2p_transfer_wait");
        mark(&progress_checked);
    }
}

static void on_done(void *user_data, uint64_t id, const char *path) {
    p2p_transfer *t = current_transfer(id);
    char *where = NULL;
    (void)user_data;
    (void)path;
    record(t != NULL, __LINE__, "done: no transfer handle");
    if (t) EXPECT_REFUSED(p2p_transfer_wait(t, &where), "p2p_transfer_wait");
    record(where == NULL, __LINE__, "a refused wait wrote its out-parameter");
    EXPECT_REFUSED(p2p_peer_exit(alice), "p2p_peer_exit");
    EXPECT_FREE_REFUSED(p2p_peer_free(alice), "p2p_peer_free");
    mark(&done_checked);
}

static void on_failed(void *user_data, uint64_t id, p2p_status status, const char *message) {
    p2p_transfer *t = current_transfer(id);
    (void)user_data;
    (void)message;
    record(status == P2P_FILE_NOT_FOUND, __LINE__, "the download failed for another reason");
    record(t != NULL, __LINE__, "failed: no transfer handle");
    if (t) EXPECT_REFUSED(p2p_transfer_wait(t, NULL), "p2p_transfer_wait");
    mark(&failed_checked);
}

static void on_event(void *user_data, p2p_peer_event_kind kind, const char *detail) {
    (void)user_data;
    if (kind == P2P_EVENT_TRANSFER_STARTED && once(&started_checked)) {
        /* The detail starts "download <id> of ...". */
        unsigned long long id = 0;
        p2p_transfer *t = NULL;
        if (sscanf(detail, "download %llu", &id) == 1) t = current_transfer((uint64_t)id);
        record(t != NULL, __LINE__, "started: no transfer handle");
        if (t) EXPECT_REFUSED(p2p_transfer_wait(t, NULL), "p2p_transfer_wait");
        mark(&started_checked);
    }
}

static void on_chat_request(void *user_data, p2p_chat_request *request) {
    p2p_chat *chat = NULL;
    (void)user_data;
    EXPECT_REFUSED(p2p_peer_exit(bob), "p2p_peer_exit");
    EXPECT_FREE_REFUSED(p2p_peer_free(bob), "p2p_peer_free");
    record(p2p_chat_request_accept(request, &chat) == P2P_OK, __LINE__, "accept failed");
    p2p_chat_request_free(request);
    pthread_mutex_lock(&mu);
    bob_chat = chat;
    request_checked = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void on_bob_message(void *user_data, uint64_t chat_id, const char *from,
                           const char *text, size_t len) {
    (void)user_data;
    (void)chat_id;
    (void)from;
    (void)text;
    (void)len;
    EXPECT_REFUSED(p2p_peer_exit(bob), "p2p_peer_exit");
    EXPECT_FREE_REFUSED(p2p_peer_free(bob), "p2p_peer_free");
    mark(&message_checked);
}

static void on_alice_closed(void *user_data, uint64_t chat_id, const char *peer,
                            p2p_chat_closed_by by) {
    (void)user_data;
    (void)chat_id;
    (void)peer;
    if (by != P2P_CHAT_CLOSED_LOCAL) return;
    /* Run on the main thread, inside p2p_chat_close: still alice's own callback. */
    EXPECT_REFUSED(p2p_peer_exit(alice), "p2p_peer_exit");
    EXPECT_FREE_REFUSED(p2p_peer_free(alice), "p2p_peer_free");
    mark(&closed_checked);
}

static p2p_peer *connect_peer(const char *registry_addr, const char *name, const char *share,
                              int is_alice) {
    p2p_peer_config *config = NULL;
    p2p_peer *peer = NULL;
    CHECK(p2p_peer_config_new(registry_addr, name, share, &config));
    CHECK(p2p_peer_config_set_listen_ip(config, "127.0.0.1"));
    if (is_alice) {
        CHECK(p2p_peer_config_on_transfer_progress(config, on_progress));
        CHECK(p2p_peer_config_on_transfer_done(config, on_done));
        CHECK(p2p_peer_config_on_transfer_failed(config, on_failed));
        CHECK(p2p_peer_config_on_event(config, on_event));
        CHECK(p2p_peer_config_on_chat_closed(config, on_alice_closed));
    } else {
        CHECK(p2p_peer_config_on_chat_request(config, on_chat_request));
        CHECK(p2p_peer_config_on_chat_message(config, on_bob_message));
    }
    CHECK(p2p_peer_connect(config, &peer));
    p2p_peer_config_free(config);
    return peer;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void publish(p2p_transfer *t) {
    uint64_t id = 0;
    CHECK(p2p_transfer_id(t, &id));
    pthread_mutex_lock(&mu);
    current = t;
    current_id = id;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void expect_no_failure(int line) {
    pthread_mutex_lock(&mu);
    if (first_failure[0] != '\0') fail(line, "a check inside a callback failed", first_failure);
    pthread_mutex_unlock(&mu);
}

int main(void) {
    char root[] = "/tmp/p2pchat-reentrant-XXXXXX";
    char a_share[64], b_share[64], original[96];
    char *registry_addr = NULL, *path = NULL;
    p2p_transfer *transfer = NULL, *missing = NULL;
    p2p_chat *chat = NULL;
    p2p_string_list users = {NULL, 0};
    size_t count = 0, i;
    unsigned char *data;
    FILE *f;
    struct sigaction sa;
    struct stat st;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    alarm(STEP_LIMIT);

    EXPECT(mkdtemp(root) != NULL);
    snprintf(a_share, sizeof a_share, "%s/alice", root);
    snprintf(b_share, sizeof b_share, "%s/bob", root);
    snprintf(original, sizeof original, "%s/%s", b_share, FILE_NAME);
    EXPECT(mkdir(a_share, 0700) == 0 && mkdir(b_share, 0700) == 0);
    data = malloc(FILE_SIZE);
    for (i = 0; i < FILE_SIZE; i++) data[i] = (unsigned char)(i * 7);
    EXPECT((f = fopen(original, "wb")) != NULL);
    EXPECT(fwrite(data, 1, FILE_SIZE, f) == FILE_SIZE);
    EXPECT(fclose(f) == 0);
    free(data);

    /* 1. The registry stops and frees itself from its own callback: refused. */
    CHECK(p2p_registry_start("127.0.0.1:0", on_registry_event, NULL, &registry));
    CHECK(p2p_registry_address(registry, &registry_addr));
    pthread_mutex_lock(&mu);
    registry_task = 1;
    pthread_mutex_unlock(&mu);
    alice = connect_peer(registry_addr, "alice", a_share, 1);
    WAIT_FOR(registry_tasks_done == 1);
    expect_no_failure(__LINE__);
    bob = connect_peer(registry_addr, "bob", b_share, 0);
    /* ...and it still runs: both peers registered, queries answered. */
    CHECK(p2p_registry_user_count(registry, &count));
    EXPECT(count == 2);
    CHECK(p2p_peer_users(alice, &users));
    EXPECT(users.len == 2);
    p2p_string_list_free(&users);
    printf("registry: stop and free from its own callback refused, still serving\n");

    /* 2. Waits on a download from its own callbacks: refused; alice's done callback
     * cannot exit or free her either. Then the download completes normally. */
    CHECK(p2p_peer_fetch(alice, "bob", FILE_NAME, &transfer));
    publish(transfer);
    WAIT_FOR(done_checked);
    EXPECT(progress_checked && started_checked);
    expect_no_failure(__LINE__);
    EXPECT_STATUS(GUARDED(p2p_transfer_wait(transfer, &path)), P2P_OK);
    EXPECT(stat(path, &st) == 0 && st.st_size == FILE_SIZE);
    p2p_string_free(path);
    printf("download: waits from its progress, started and done callbacks refused\n");

    /* 3. The failed callback of a download of a file bob does not have. */
    CHECK(p2p_peer_fetch(alice, "bob", "missing.bin", &missing));
    publish(missing);
    WAIT_FOR(failed_checked);
    expect_no_failure(__LINE__);
    EXPECT_STATUS(GUARDED(p2p_transfer_wait(missing, NULL)), P2P_FILE_NOT_FOUND);
    p2p_transfer_free(missing);
    printf("download: wait from its failed callback refused\n");

    /* 4. A registry callback waiting on a download: refused. */
    pthread_mutex_lock(&mu);
    registry_waits_on = transfer;
    registry_task = 2;
    pthread_mutex_unlock(&mu);
    CHECK(p2p_peer_users(alice, &users)); /* any query makes an event */
    p2p_string_list_free(&users);
    WAIT_FOR(registry_tasks_done == 2);
    expect_no_failure(__LINE__);
    p2p_transfer_free(transfer);
    printf("registry: wait on a download from its callback refused\n");

    /* 5. Chats: bob's request and message callbacks cannot exit or free bob; alice's
     * closed callback, run here inside p2p_chat_close, cannot free alice. */
    CHECK(GUARDED(p2p_peer_chat(alice, "bob", &chat)));
    WAIT_FOR(request_checked && bob_chat != NULL);
    CHECK(p2p_chat_send(chat, "hello"));
    WAIT_FOR(message_checked);
    CHECK(GUARDED(p2p_chat_close(chat)));
    EXPECT(closed_checked);
    expect_no_failure(__LINE__);
    p2p_chat_free(chat);
    p2p_chat_free(bob_chat);
    printf("chats: exit and free from the peer's own callbacks refused\n");

    /* 6. Everything still works and ends normally, from this thread. */
    CHECK(p2p_peer_users(bob, &users));
    EXPECT(users.len == 2);
    p2p_string_list_free(&users);
    CHECK(GUARDED(p2p_peer_exit(bob)));
    GUARDED_VOID(p2p_peer_free(bob));
    GUARDED_VOID(p2p_peer_free(alice));
    CHECK(GUARDED(p2p_registry_stop(registry)));
    GUARDED_VOID(p2p_registry_free(registry));
    p2p_string_free(registry_addr);
    expect_no_failure(__LINE__);
    EXPECT(checks_passed > 0);
    printf("%d checks inside callbacks passed\n", checks_passed);
    EXPECT(nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0);
    printf("ALL OK\n");
    return 0;
}
