/*
 * Includes p2pchat.h twice (the include guard must hold) and checks, from C or C++,
 * that the boundary turns NULL arguments and non-UTF-8 strings into statuses. Built
 * as C11 and as C++17 with -Wall -Wextra -Werror -pedantic by tests/header.rs.
 */
#include "p2pchat.h"
#include "p2pchat.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

static int failures = 0;

#define EXPECT_STATUS(call, expected)                                                     \
    do {                                                                                  \
        p2p_status st_ = (call);                                                          \
        if (st_ != (expected)) {                                                          \
            printf("FAIL line %d: %s gave %s\n", __LINE__, #call, p2p_status_name(st_)); \
            failures++;                                                                   \
        }                                                                                 \
    } while (0)

int main(void) {
    p2p_registry *registry = NULL;
    p2p_peer_config *config = NULL;
    p2p_string_list list = {NULL, 0};
    char *text = NULL;
    uint16_t port = 7;

    EXPECT_STATUS(p2p_registry_start(NULL, NULL, NULL, &registry), P2P_NULL_ARGUMENT);
    if (registry != NULL || strstr(p2p_last_error_message(), "addr") == NULL) failures++;
    EXPECT_STATUS(p2p_registry_start("127.0.0.1:0", NULL, NULL, NULL), P2P_NULL_ARGUMENT);
    EXPECT_STATUS(p2p_registry_port(NULL, &port), P2P_NULL_ARGUMENT);
    if (port != 7) failures++;
    EXPECT_STATUS(p2p_peer_config_new("127.0.0.1:1", "\xff\xfe", "/tmp", &config), P2P_INVALID_UTF8);
    if (config != NULL) failures++;
    EXPECT_STATUS(p2p_peer_users(NULL, &list), P2P_NULL_ARGUMENT);
    EXPECT_STATUS(p2p_chat_send(NULL, "hi"), P2P_NULL_ARGUMENT);
    EXPECT_STATUS(p2p_transfer_wait(NULL, &text), P2P_NULL_ARGUMENT);
    EXPECT_STATUS(p2p_chat_request_accept(NULL, NULL), P2P_NULL_ARGUMENT);
    if (text != NULL || list.items != NULL) failures++;

    /* free(NULL) is a no-op for every handle, string and list. */
    p2p_registry_free(NULL);
    p2p_peer_config_free(NULL);
    p2p_peer_free(NULL);
    p2p_chat_free(NULL);
    p2p_chat_request_free(NULL);
    p2p_transfer_free(NULL);
    p2p_string_free(NULL);
    p2p_string_list_free(NULL);
    p2p_string_list_free(&list);
    p2p_user_files_list_free(NULL);

    if (strcmp(p2p_status_name(P2P_OK), "P2P_OK") != 0) failures++;
    if (strcmp(p2p_status_name(12345), "P2P_UNKNOWN_STATUS") != 0) failures++;
    if (strcmp(p2p_version(), P2PCHAT_VERSION) != 0) failures++;
    if (p2p_max_chat_message_length() == 0 || p2p_max_username_length() == 0) failures++;

    if (failures) {
        printf("%d failures\n", failures);
        return 1;
    }
    printf("ALL OK\n");
    return 0;
}
