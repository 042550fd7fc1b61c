/*
 * A program built against an installed p2pchat (tests/packaging.rs builds it once with
 * pkg-config and once with CMake's find_package): the run-time version check the
 * header's preamble documents, then a registry started and stopped.
 * Prints "consumer <version> ok" and exits 0; any other exit names what failed.
 */
#include <p2pchat.h>

#include <stdio.h>
#include <string.h>

int main(void) {
    unsigned v = p2p_version_number();
    if (v / 10000 != P2PCHAT_VERSION_MAJOR || v < P2PCHAT_VERSION_NUMBER) {
        fprintf(stderr, "library %s (%u) does not suit header %s\n", p2p_version(), v,
                P2PCHAT_VERSION);
        return 1;
    }
    if (P2PCHAT_VERSION_NUMBER != P2PCHAT_VERSION_MAJOR * 10000 +
                                      P2PCHAT_VERSION_MINOR * 100 + P2PCHAT_VERSION_PATCH ||
        strcmp(p2p_version(), P2PCHAT_VERSION) != 0) {
        fprintf(stderr, "version macros disagree\n");
        return 2;
    }
    p2p_registry *r = NULL;
    uint16_t port = 0;
    if (p2p_registry_start("127.0.0.1:0", NULL, NULL, &r) != P2P_OK ||
        p2p_registry_port(r, &port) != P2P_OK || port == 0) {
        fprintf(stderr, "registry: %s\n", p2p_last_error_message());
        return 3;
    }
    p2p_registry_free(r);
    printf("consumer %s ok\n", p2p_version());
    return 0;
}
