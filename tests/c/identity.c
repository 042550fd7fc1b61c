/*
 * Identity, pinning and the verified / encrypted marks through the C API, from C.
 *
 * A registry with a data directory and peers alice, bob and carol, each with its
 * identity file (and alice a known-keys file) in a temporary directory:
 * - the identity files are created with mode 0600 (their directory 0700); connecting
 *   again with the same file gives the same fingerprint, another file another one; a
 *   key file others may read is refused (P2P_INVALID_ARGUMENT);
 * - fingerprints are eight groups of four base32 characters; the registry's own
 *   (p2p_registry_fingerprint) is what a peer sees (p2p_peer_registry_fingerprint), its
 *   query events carry the fingerprint of each client's session key, and
 *   a registry address "host:port#FINGERPRINT" connects only with the right one
 *   (P2P_KEY_CHANGED otherwise, P2P_INVALID_ARGUMENT for a malformed one);
 * - p2p_peer_user_fingerprint of bob, asked by alice, is bob's own p2p_peer_fingerprint;
 * - p2p_peer_accept_user_key refuses a malformed fingerprint (P2P_INVALID_ARGUMENT) and
 *   one that is not the listed key's (P2P_DENIED), and takes the right one;
 * - a chat from alice reaches bob's callback verified with alice's fingerprint, both
 *   chat handles say encrypted and verified; a download says encrypted and verified;
 * - carol serving only bob: bob's download works, alice's is P2P_DENIED;
 * - the registry restarted from its data directory keeps its fingerprint and bob's
 *   claim (another key registering "bob" gets P2P_REGISTRY, "claimed by another key"); once the operator
 *   releases the name (p2p_registry_release_name) another key registers it, and alice's
 *   chat to bob then fails with P2P_KEY_CHANGED (her download too) and a
 *   P2P_EVENT_KEY_CHANGED event naming both fingerprints, bob's callback seeing nothing;
 *   the old fingerprint is not accepted (P2P_DENIED), the new one is, and the chat then
 *   works, verified with the new fingerprint;
 * - the serve-only list and the other new config calls check their arguments.
 *
 * alarm() bounds the whole program: if anything hangs it exits 2 (SIGALRM). Prints
 * "ALL OK" and exits 0 on success, exits 1 naming the first failure. Built and run
 * (also under valgrind) by tests/identity_c.rs.
 */
#define _XOPEN_SOURCE 700 /* mkdtemp, nftw */

#include "p2pchat.h"
#include "check.h"

#include <ctype.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SHARED_FILE "notes.txt"
#define CAROL_FILE "for-bob.txt"
#define MAX_CHATS 4

/* What a peer's callbacks saw (they run on library threads). */
typedef struct {
    const char *name;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int key_changed; /* P2P_EVENT_KEY_CHANGED events */
    char key_changed_detail[512];
    int requests;                 /* chat requests seen */
    char request_from[80];        /* the last one's name, */
    bool request_verified;        /* whether it was verified, */
    char request_fingerprint[64]; /* and its fingerprint ("" when not) */
    p2p_chat *chats[MAX_CHATS];   /* the chats accepted, freed at the end */
    int messages;
} seen;

static void seen_init(seen *s, const char *name) {
    memset(s, 0, sizeof *s);
    s->name = name;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
}

static void seen_destroy(seen *s) {
    for (int i = 0; i < MAX_CHATS; i++) p2p_chat_free(s->chats[i]);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
}

/* Wait (20 s at most) until `cond` holds; `cond` reads `s` under its lock. */
#define WAIT_FOR(s, cond)                                                                   \
    do {                                                                                    \
        struct timespec dl_;                                                                \
        int ok_ = 1;                                                                        \
        clock_gettime(CLOCK_REALTIME, &dl_);                                                \
        dl_.tv_sec += 20;                                                                   \
        pthread_mutex_lock(&(s)->mu);                                                       \
        while (!(cond) && ok_)                                                              \
            ok_ = pthread_cond_timedwait(&(s)->cv, &(s)->mu, &dl_) == 0 || (cond);          \
        pthread_mutex_unlock(&(s)->mu);                                                     \
        if (!ok_) fail(__LINE__, "timed out waiting for " #cond, P2P_TIMEOUT);              \
    } while (0)

static void on_event(void *user_data, p2p_peer_event_kind kind, const char *detail) {
    seen *s = user_data;
    if (kind != P2P_EVENT_KEY_CHANGED) return;
    pthread_mutex_lock(&s->mu);
    s->key_changed++;
    snprintf(s->key_changed_detail, sizeof s->key_changed_detail, "%s", detail);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Accept every chat request, noting who asked and whether they proved it. */
static void on_chat_request(void *user_data, p2p_chat_request *request) {
    seen *s = user_data;
    char *from = NULL, *fp = NULL;
    bool verified = false;
    p2p_chat *chat = NULL;
    if (p2p_chat_request_from(request, &from) != P2P_OK ||
        p2p_chat_request_is_verified(request, &verified) != P2P_OK ||
        p2p_chat_request_fingerprint(request, &fp) != P2P_OK ||
        p2p_chat_request_accept(request, &chat) != P2P_OK)
        fprintf(stderr, "[%s] answering a chat request failed: %s\n", s->name,
                p2p_last_error_message());
    p2p_chat_request_free(request);
    pthread_mutex_lock(&s->mu);
    snprintf(s->request_from, sizeof s->request_from, "%s", from ? from : "?");
    snprintf(s->request_fingerprint, sizeof s->request_fingerprint, "%s", fp ? fp : "?");
    s->request_verified = verified;
    if (s->requests < MAX_CHATS) s->chats[s->requests] = chat;
    else p2p_chat_free(chat);
    s->requests++;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    p2p_string_free(from);
    p2p_string_free(fp);
}

static void on_chat_message(void *user_data, uint64_t chat_id, const char *from,
                            const char *text, size_t text_len) {
    seen *s = user_data;
    (void)chat_id, (void)from, (void)text, (void)text_len;
    pthread_mutex_lock(&s->mu);
    s->messages++;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* A fingerprint as the library writes it: XXXX-XXXX-...: 8 groups of 4 of A-Z, 2-7. */
static int is_fingerprint(const char *fp) {
    if (strlen(fp) != 8 * 4 + 7) return 0;
    for (size_t i = 0; fp[i]; i++) {
        if (i % 5 == 4) {
            if (fp[i] != '-') return 0;
        } else if (!((fp[i] >= 'A' && fp[i] <= 'Z') || (fp[i] >= '2' && fp[i] <= '7'))) {
            return 0;
        }
    }
    return 1;
}

static mode_t mode_of(const char *path) {
    struct stat st;
    CHECK(stat(path, &st) == 0);
    return st.st_mode & 0777;
}

/* Connect `name` sharing `share`, its key in `key_file`, pins in `known` (NULL: in
 * memory), serving only `serve_only` (`n` entries; NULL: anyone registered). */
static p2p_status connect_peer(const char *registry, const char *name, const char *share,
                               const char *key_file, const char *known,
                               const char *const *serve_only, size_t n, seen *s,
                               p2p_peer **out) {
    p2p_peer_config *config = NULL;
    p2p_status st;
    OK(p2p_peer_config_new(registry, name, share, &config));
    OK(p2p_peer_config_set_listen_ip(config, "127.0.0.1"));
    OK(p2p_peer_config_set_identity_file(config, key_file));
    OK(p2p_peer_config_set_known_keys_file(config, known));
    OK(p2p_peer_config_set_serve_only(config, serve_only, n));
    OK(p2p_peer_config_set_user_data(config, s));
    OK(p2p_peer_config_on_event(config, on_event));
    OK(p2p_peer_config_on_chat_request(config, on_chat_request));
    OK(p2p_peer_config_on_chat_message(config, on_chat_message));
    st = p2p_peer_connect(config, out);
    p2p_peer_config_free(config);
    return st;
}

/* The peer's own fingerprint, checked for form; free with p2p_string_free. */
static char *fingerprint_of(p2p_peer *peer) {
    char *fp = NULL;
    OK(p2p_peer_fingerprint(peer, &fp));
    CHECK(fp != NULL && is_fingerprint(fp));
    return fp;
}

static void write_file(const char *path, const char *text, mode_t mode) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(fputs(text, f) >= 0);
    CHECK(fclose(f) == 0);
    CHECK(chmod(path, mode) == 0);
}

static void copy_file(const char *from, const char *to, mode_t mode) {
    char buf[4096];
    size_t n;
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    CHECK(in != NULL && out != NULL);
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) CHECK(fwrite(buf, 1, n, out) == n);
    CHECK(fclose(in) == 0 && fclose(out) == 0);
    CHECK(chmod(to, mode) == 0);
}

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static int registry_queries;

/* The distinct client fingerprints the registry's query events carried. */
static char query_fps[8][48];
static int query_fp_count;

static void on_registry_event(void *user_data, const p2p_registry_event *event) {
    CHECK(user_data == &registry_queries);
    if (event->kind != P2P_REGISTRY_QUERY) {
        CHECK(event->fingerprint == NULL);
        return;
    }
    pthread_mutex_lock(&registry_mu);
    registry_queries++;
    if (event->fingerprint != NULL) {
        int known = 0;
        CHECK(is_fingerprint(event->fingerprint));
        for (int i = 0; i < query_fp_count; i++)
            known |= strcmp(query_fps[i], event->fingerprint) == 0;
        if (!known && query_fp_count < 8)
            snprintf(query_fps[query_fp_count++], sizeof query_fps[0], "%s", event->fingerprint);
    }
    pthread_mutex_unlock(&registry_mu);
}

/* Whether a query event carried fingerprint `fp`. */
static int registry_saw(const char *fp) {
    int found = 0;
    pthread_mutex_lock(&registry_mu);
    for (int i = 0; i < query_fp_count; i++) found |= strcmp(query_fps[i], fp) == 0;
    pthread_mutex_unlock(&registry_mu);
    return found;
}

/* A registry on `addr` keeping its key and claims in `data_dir`, from a config. */
static p2p_registry *start_registry(const char *addr, const char *data_dir) {
    p2p_registry_config *config = NULL;
    p2p_registry *registry = NULL;
    EXPECT(p2p_registry_config_new(NULL, &config), P2P_NULL_ARGUMENT);
    EXPECT(p2p_registry_config_new(addr, NULL), P2P_NULL_ARGUMENT);
    EXPECT(p2p_registry_config_on_event(NULL, on_registry_event, NULL), P2P_NULL_ARGUMENT);
    EXPECT(p2p_registry_config_set_data_dir(NULL, data_dir), P2P_NULL_ARGUMENT);
    EXPECT(p2p_registry_start_with_config(NULL, &registry), P2P_NULL_ARGUMENT);
    OK(p2p_registry_config_new(addr, &config));
    OK(p2p_registry_config_on_event(config, on_registry_event, &registry_queries));
    OK(p2p_registry_config_set_data_dir(config, data_dir));
    /* In memory, nothing is published either way: accepted and harmless. */
    EXPECT(p2p_registry_config_set_publish_events(NULL, false), P2P_NULL_ARGUMENT);
    OK(p2p_registry_config_set_publish_events(config, false));
    EXPECT(p2p_registry_start_with_config(config, NULL), P2P_NULL_ARGUMENT);
    OK(p2p_registry_start_with_config(config, &registry));
    p2p_registry_config_free(config); /* the registry keeps a copy */
    p2p_registry_config_free(NULL);
    return registry;
}

static void check_config_arguments(const char *registry, const char *share) {
    p2p_peer_config *config = NULL;
    const char *good[] = {"bob", "key:0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789abcdef"};
    const char *short_key[] = {"bob", "key:0123"};
    const char *bad_name[] = {"a,b"};
    const char *with_null[] = {"bob", NULL};
    const char *bad_utf8[] = {"\xff"};
    OK(p2p_peer_config_new(registry, "carol", share, &config));
    OK(p2p_peer_config_set_serve_only(config, good, 2));
    EXPECT(p2p_peer_config_set_serve_only(config, short_key, 2), P2P_INVALID_ARGUMENT);
    CHECK(strstr(p2p_last_error_message(), "names[1]") != NULL);
    EXPECT(p2p_peer_config_set_serve_only(config, bad_name, 1), P2P_INVALID_ARGUMENT);
    EXPECT(p2p_peer_config_set_serve_only(config, with_null, 2), P2P_NULL_ARGUMENT);
    EXPECT(p2p_peer_config_set_serve_only(config, bad_utf8, 1), P2P_INVALID_UTF8);
    OK(p2p_peer_config_set_serve_only(config, good, 0)); /* serve no one */
    OK(p2p_peer_config_set_serve_only(config, NULL, 0)); /* back to the default */
    OK(p2p_peer_config_set_refuse_unverified(config, true));
    OK(p2p_peer_config_set_identity_file(config, NULL));
    OK(p2p_peer_config_set_known_keys_file(config, NULL));
    EXPECT(p2p_peer_config_set_serve_only(NULL, good, 1), P2P_NULL_ARGUMENT);
    EXPECT(p2p_peer_config_set_identity_file(NULL, "x"), P2P_NULL_ARGUMENT);
    EXPECT(p2p_peer_config_set_known_keys_file(NULL, "x"), P2P_NULL_ARGUMENT);
    EXPECT(p2p_peer_config_set_refuse_unverified(NULL, true), P2P_NULL_ARGUMENT);
    p2p_peer_config_free(config);
}

/* alice asks `who` (served by `peer_seen`) for a chat: it must be encrypted and verified
 * both ways, with the right fingerprints; one message goes through; then closed. */
static void verified_chat(p2p_peer *alice, const char *a_fp, const char *who,
                          const char *who_fp, seen *peer_seen) {
    p2p_chat *chat = NULL;
    bool flag = false;
    char *fp = NULL;
    int before;
    pthread_mutex_lock(&peer_seen->mu);
    before = peer_seen->requests;
    pthread_mutex_unlock(&peer_seen->mu);
    OK(p2p_peer_chat(alice, who, &chat));
    WAIT_FOR(peer_seen, peer_seen->requests == before + 1);
    pthread_mutex_lock(&peer_seen->mu);
    CHECK(strcmp(peer_seen->request_from, "alice") == 0);
    CHECK(peer_seen->request_verified);
    CHECK(strcmp(peer_seen->request_fingerprint, a_fp) == 0);
    pthread_mutex_unlock(&peer_seen->mu);
    OK(p2p_chat_is_encrypted(chat, &flag));
    CHECK(flag);
    flag = false;
    OK(p2p_chat_is_verified(chat, &flag));
    CHECK(flag);
    OK(p2p_chat_fingerprint(chat, &fp));
    CHECK(strcmp(fp, who_fp) == 0);
    p2p_string_free(fp);
    pthread_mutex_lock(&peer_seen->mu);
    p2p_chat *theirs = peer_seen->chats[before];
    pthread_mutex_unlock(&peer_seen->mu);
    CHECK(theirs != NULL);
    flag = false;
    OK(p2p_chat_is_encrypted(theirs, &flag));
    CHECK(flag);
    OK(p2p_chat_send(chat, "only the two of us can read this"));
    WAIT_FOR(peer_seen, peer_seen->messages > 0);
    OK(p2p_chat_close(chat));
    OK(p2p_chat_is_encrypted(chat, &flag)); /* still known once ended */
    CHECK(flag);
    p2p_chat_free(chat);
    printf("alice chatted with %s: encrypted, verified as %s\n", who, who_fp);
}

int main(void) {
    char root[] = "/tmp/p2p_identity_XXXXXX";
    char keys[64], a_key[96], a_key2[96], loose_key[96], b_key[96], b2_key[96], c_key[96];
    char a_known[96], a_share[64], b_share[64], c_share[64], file[128], data1[64];
    char pinned[256];
    seen sa, sb, sc, sb2;
    p2p_registry *registry = NULL;
    char *addr = NULL;
    p2p_peer *alice = NULL, *bob = NULL, *carol = NULL, *other = NULL;
    char *a_fp = NULL, *b_fp = NULL, *b2_fp = NULL, *r_fp = NULL, *fp = NULL;
    p2p_transfer *transfer = NULL;
    p2p_chat *chat = NULL;
    bool flag = false;
    const char *only_bob[] = {"bob"};

    alarm(150);
    seen_init(&sa, "alice");
    seen_init(&sb, "bob");
    seen_init(&sc, "carol");
    seen_init(&sb2, "bob (new key)");
    CHECK(mkdtemp(root) != NULL);
    snprintf(keys, sizeof keys, "%s/keys", root);
    snprintf(a_key, sizeof a_key, "%s/alice.key", keys);
    snprintf(a_key2, sizeof a_key2, "%s/alice-2.key", keys);
    snprintf(loose_key, sizeof loose_key, "%s/loose.key", root);
    snprintf(b_key, sizeof b_key, "%s/bob.key", keys);
    snprintf(b2_key, sizeof b2_key, "%s/bob-new.key", keys);
    snprintf(c_key, sizeof c_key, "%s/carol.key", keys);
    snprintf(a_known, sizeof a_known, "%s/alice.known", root);
    snprintf(a_share, sizeof a_share, "%s/a", root);
    snprintf(b_share, sizeof b_share, "%s/b", root);
    snprintf(c_share, sizeof c_share, "%s/c", root);
    snprintf(data1, sizeof data1, "%s/registry-1", root);
    CHECK(mkdir(a_share, 0700) == 0 && mkdir(b_share, 0700) == 0 && mkdir(c_share, 0700) == 0);
    snprintf(file, sizeof file, "%s/%s", b_share, SHARED_FILE);
    write_file(file, "bob's notes\n", 0644);
    snprintf(file, sizeof file, "%s/%s", c_share, CAROL_FILE);
    write_file(file, "carol's notes, for bob only\n", 0644);

    /* The registry, its key kept in its data directory. */
    registry = start_registry("127.0.0.1:0", data1);
    OK(p2p_registry_address(registry, &addr));
    OK(p2p_registry_fingerprint(registry, &r_fp));
    CHECK(is_fingerprint(r_fp));
    EXPECT(p2p_registry_fingerprint(NULL, &fp), P2P_NULL_ARGUMENT);
    printf("registry %s\n", r_fp);
    check_config_arguments(addr, a_share);

    /* Identity files: created 0600 in a 0700 directory the library makes. */
    OK(connect_peer(addr, "alice", a_share, a_key, a_known, NULL, 0, &sa, &alice));
    OK(connect_peer(addr, "bob", b_share, b_key, NULL, NULL, 0, &sb, &bob));
    CHECK(mode_of(a_key) == 0600 && mode_of(b_key) == 0600);
    CHECK(mode_of(keys) == 0700);
    a_fp = fingerprint_of(alice);
    b_fp = fingerprint_of(bob);
    CHECK(strcmp(a_fp, b_fp) != 0 && strcmp(a_fp, r_fp) != 0);
    printf("alice    %s\nbob      %s\n", a_fp, b_fp);

    /* Reloading the same file gives the same identity; another file another one. */
    OK(p2p_peer_exit(alice));
    EXPECT(p2p_peer_fingerprint(alice, &fp), P2P_SHUTDOWN);
    CHECK(fp == NULL);
    p2p_peer_free(alice);
    OK(connect_peer(addr, "alice", a_share, a_key, a_known, NULL, 0, &sa, &alice));
    fp = fingerprint_of(alice);
    CHECK(strcmp(fp, a_fp) == 0);
    p2p_string_free(fp);
    OK(connect_peer(addr, "alice2", a_share, a_key2, NULL, NULL, 0, &sa, &other));
    fp = fingerprint_of(other);
    CHECK(strcmp(fp, a_fp) != 0);
    p2p_string_free(fp);
    p2p_peer_free(other);
    other = NULL;

    /* A key file others may read is refused, and nothing connects. */
    copy_file(a_key, loose_key, 0644);
    EXPECT(connect_peer(addr, "loose", a_share, loose_key, NULL, NULL, 0, &sa, &other),
           P2P_INVALID_ARGUMENT);
    CHECK(other == NULL);
    CHECK(strstr(p2p_last_error_message(), "chmod 600") != NULL);

    /* The registry's key as a peer sees it; an address can require it. */
    OK(p2p_peer_registry_fingerprint(alice, &fp));
    CHECK(strcmp(fp, r_fp) == 0);
    p2p_string_free(fp);
    snprintf(pinned, sizeof pinned, "%s#not-a-fingerprint", addr);
    EXPECT(connect_peer(pinned, "carol", c_share, c_key, NULL, NULL, 0, &sc, &other),
           P2P_INVALID_ARGUMENT);
    CHECK(other == NULL && strstr(p2p_last_error_message(), "fingerprint") != NULL);
    snprintf(pinned, sizeof pinned, "%s#%s", addr, a_fp);
    EXPECT(connect_peer(pinned, "carol", c_share, c_key, NULL, NULL, 0, &sc, &other),
           P2P_KEY_CHANGED);
    CHECK(other == NULL);
    /* carol requires the registry's real key, and serves only bob. */
    snprintf(pinned, sizeof pinned, "%s#%s", addr, r_fp);
    OK(connect_peer(pinned, "carol", c_share, c_key, NULL, only_bob, 1, &sc, &carol));

    /* What the registry lists for bob is bob's own key. */
    fp = NULL;
    OK(p2p_peer_user_fingerprint(alice, "bob", &fp));
    CHECK(strcmp(fp, b_fp) == 0);
    p2p_string_free(fp);
    fp = NULL;
    EXPECT(p2p_peer_user_fingerprint(alice, "nobody", &fp), P2P_USER_NOT_FOUND);
    EXPECT(p2p_peer_user_fingerprint(alice, "a,b", &fp), P2P_INVALID_USERNAME);
    EXPECT(p2p_peer_user_fingerprint(alice, "bob", NULL), P2P_NULL_ARGUMENT);
    CHECK(fp == NULL);

    /* Accepting a key: only with the listed key's fingerprint. */
    EXPECT(p2p_peer_accept_user_key(alice, "bob", "not a fingerprint"), P2P_INVALID_ARGUMENT);
    EXPECT(p2p_peer_accept_user_key(alice, "bob", a_fp), P2P_DENIED);
    EXPECT(p2p_peer_accept_user_key(alice, "nobody", b_fp), P2P_USER_NOT_FOUND);
    EXPECT(p2p_peer_accept_user_key(alice, "bob", NULL), P2P_NULL_ARGUMENT);
    {
        /* Case, dashes and spaces do not matter. */
        char loose[64];
        size_t j = 0;
        for (size_t i = 0; b_fp[i] && j + 2 < sizeof loose; i++)
            if (b_fp[i] != '-') loose[j++] = (char)tolower((unsigned char)b_fp[i]);
        loose[j] = '\0';
        OK(p2p_peer_accept_user_key(alice, "bob", loose));
    }
    OK(p2p_peer_accept_user_key(alice, "bob", b_fp));
    CHECK(mode_of(a_known) != 0); /* the pin went to alice's known-keys file */

    /* A chat and a download, encrypted and verified. */
    verified_chat(alice, a_fp, "bob", b_fp, &sb);
    OK(p2p_peer_fetch(alice, "bob", SHARED_FILE, &transfer));
    OK(p2p_transfer_is_encrypted(transfer, &flag));
    CHECK(flag);
    EXPECT(p2p_transfer_is_encrypted(transfer, NULL), P2P_NULL_ARGUMENT);
    EXPECT(p2p_transfer_is_encrypted(NULL, &flag), P2P_NULL_ARGUMENT);
    OK(p2p_transfer_wait(transfer, NULL));
    OK(p2p_transfer_is_verified(transfer, &flag));
    CHECK(flag);
    p2p_transfer_free(transfer);
    printf("alice downloaded %s from bob: encrypted, verified\n", SHARED_FILE);

    /* carol serves bob only. */
    OK(p2p_peer_fetch(alice, "carol", CAROL_FILE, &transfer));
    EXPECT(p2p_transfer_wait(transfer, NULL), P2P_DENIED);
    p2p_transfer_free(transfer);
    OK(p2p_peer_fetch(bob, "carol", CAROL_FILE, &transfer));
    OK(p2p_transfer_wait(transfer, NULL));
    p2p_transfer_free(transfer);
    printf("carol served bob, refused alice\n");

    /* The registry restarts from its data directory: same key, and bob's name still
     * claimed by bob's key, so another key cannot take it... */
    p2p_peer_free(bob);
    bob = NULL;
    p2p_peer_free(carol);
    carol = NULL;
    p2p_peer_free(alice);
    alice = NULL;
    OK(p2p_registry_stop(registry));
    pthread_mutex_lock(&registry_mu);
    CHECK(registry_queries > 0); /* the config's event callback was used */
    pthread_mutex_unlock(&registry_mu);
    CHECK(registry_saw(a_fp) && registry_saw(b_fp)); /* queries name their session's key */
    OK(p2p_registry_fingerprint(registry, &fp)); /* still known once stopped */
    CHECK(strcmp(fp, r_fp) == 0);
    p2p_string_free(fp);
    EXPECT(p2p_registry_release_name(registry, "bob", NULL), P2P_SHUTDOWN);
    p2p_registry_free(registry);
    registry = start_registry(addr, data1);
    OK(p2p_registry_fingerprint(registry, &fp));
    CHECK(strcmp(fp, r_fp) == 0);
    p2p_string_free(fp);
    EXPECT(connect_peer(addr, "bob", b_share, b2_key, NULL, NULL, 0, &sb2, &bob), P2P_REGISTRY);
    CHECK(bob == NULL && strstr(p2p_last_error_message(), "claimed by another key") != NULL);

    /* ...until the operator releases the name. Then bob's name has another key, and
     * alice (connecting again with her known-keys file) refuses it until she accepts it
     * by its fingerprint. */
    flag = false;
    OK(p2p_registry_release_name(registry, "bob", &flag));
    CHECK(flag);
    OK(p2p_registry_release_name(registry, "bob", &flag));
    CHECK(!flag);
    EXPECT(p2p_registry_release_name(registry, NULL, &flag), P2P_NULL_ARGUMENT);
    OK(connect_peer(addr, "bob", b_share, b2_key, NULL, NULL, 0, &sb2, &bob));
    b2_fp = fingerprint_of(bob);
    CHECK(strcmp(b2_fp, b_fp) != 0);
    OK(connect_peer(addr, "alice", a_share, a_key, a_known, NULL, 0, &sa, &alice));

    EXPECT(p2p_peer_chat(alice, "bob", &chat), P2P_KEY_CHANGED);
    CHECK(chat == NULL);
    CHECK(strstr(p2p_last_error_message(), b_fp) && strstr(p2p_last_error_message(), b2_fp));
    WAIT_FOR(&sa, sa.key_changed > 0);
    pthread_mutex_lock(&sa.mu);
    printf("alice's event: %s\n", sa.key_changed_detail);
    CHECK(strstr(sa.key_changed_detail, "bob") != NULL);
    CHECK(strstr(sa.key_changed_detail, b_fp) != NULL);
    CHECK(strstr(sa.key_changed_detail, b2_fp) != NULL);
    pthread_mutex_unlock(&sa.mu);
    pthread_mutex_lock(&sb2.mu);
    CHECK(sb2.requests == 0); /* bob's callback never saw the refused request */
    pthread_mutex_unlock(&sb2.mu);
    transfer = NULL;
    EXPECT(p2p_peer_fetch(alice, "bob", SHARED_FILE, &transfer), P2P_KEY_CHANGED);
    CHECK(transfer == NULL);

    OK(p2p_peer_user_fingerprint(alice, "bob", &fp));
    CHECK(strcmp(fp, b2_fp) == 0); /* what alice compares with bob */
    p2p_string_free(fp);
    EXPECT(p2p_peer_accept_user_key(alice, "bob", b_fp), P2P_DENIED);
    EXPECT(p2p_peer_chat(alice, "bob", &chat), P2P_KEY_CHANGED);
    OK(p2p_peer_accept_user_key(alice, "bob", b2_fp));
    verified_chat(alice, a_fp, "bob", b2_fp, &sb2);

    p2p_peer_free(bob);
    p2p_peer_free(alice);
    OK(p2p_registry_stop(registry));
    p2p_registry_free(registry);
    p2p_string_free(addr);
    p2p_string_free(a_fp);
    p2p_string_free(b_fp);
    p2p_string_free(b2_fp);
    p2p_string_free(r_fp);
    seen_destroy(&sa);
    seen_destroy(&sb);
    seen_destroy(&sc);
    seen_destroy(&sb2);
    CHECK(nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0);
    printf("ALL OK\n");
    return 0;
}
