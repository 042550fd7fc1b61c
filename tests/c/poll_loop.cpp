// Events you pull, from C++17: two peers with event queues driven from one poll()
// loop, every handle and event held by RAII owners (std::unique_ptr with the matching
// p2p_*_free; an event wrapper calling p2p_event_free).
//
// alice asks bob with p2p_peer_chat_async, passing a pointer to her Conversation
// object; bob accepts from the loop and attaches his own with p2p_chat_set_user_data.
// Every later event of a chat hands back that object (checked: message and close
// events carry the right Conversation and the chat handle it owns). They exchange 5
// messages each way; alice closes; both see the close. Prints "ALL OK"; exits 1 on the
// first failure; alarm() bounds it. Built and run (also under valgrind) by
// tests/events_c.rs.
#include "p2pchat.h"

#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

[[noreturn]] void fail(int line, const char *what) {
    std::fprintf(stderr, "FAILED at line %d: %s (%s)\n", line, what, p2p_last_error_message());
    std::exit(1);
}
#define CHECK(cond) ((cond) ? (void)0 : fail(__LINE__, #cond))
#define OK(call) CHECK((call) == P2P_OK)

template <typename T, void (*Free)(T *)> struct Deleter {
    void operator()(T *p) const { Free(p); }
};
using Peer = std::unique_ptr<p2p_peer, Deleter<p2p_peer, p2p_peer_free>>;
using Chat = std::unique_ptr<p2p_chat, Deleter<p2p_chat, p2p_chat_free>>;
using Request = std::unique_ptr<p2p_chat_request, Deleter<p2p_chat_request, p2p_chat_request_free>>;

// One event, released when it goes out of scope.
struct Event {
    p2p_event ev{};
    Event() = default;
    Event(const Event &) = delete;
    Event &operator=(const Event &) = delete;
    ~Event() { p2p_event_free(&ev); }
};

struct Conversation {
    std::string me;
    Chat chat;
    std::vector<std::string> received;
    bool closed = false;
};

std::string root;

Peer connect(const char *registry, const char *name) {
    std::string share = root + "/" + name, key = root + "/" + name + ".key";
    CHECK(mkdir(share.c_str(), 0700) == 0);
    p2p_peer_config *config = nullptr;
    OK(p2p_peer_config_new(registry, name, share.c_str(), &config));
    OK(p2p_peer_config_set_listen_ip(config, "127.0.0.1"));
    OK(p2p_peer_config_set_identity_file(config, key.c_str()));
    OK(p2p_peer_config_set_event_queue(config, 8));
    p2p_peer *peer = nullptr;
    p2p_status st = p2p_peer_connect(config, &peer);
    p2p_peer_config_free(config);
    OK(st);
    return Peer(peer);
}

void handle(Conversation &self, const p2p_event &ev) {
    auto *c = static_cast<Conversation *>(ev.user_data);
    switch (ev.kind) {
    case P2P_EV_CHAT_REQUEST: {
        Request request(ev.request);
        p2p_chat *chat = nullptr;
        OK(p2p_chat_request_accept(request.get(), &chat));
        self.chat.reset(chat);
        OK(p2p_chat_set_user_data(chat, &self));
        break;
    }
    case P2P_EV_CHAT_OPENED:
        OK(ev.status);
        CHECK(c == &self);
        c->chat.reset(ev.chat);
        for (int i = 0; i < 5; i++) {
            std::string text = "from alice " + std::to_string(i);
            OK(p2p_chat_send_timeout(c->chat.get(), text.c_str(), 5000));
        }
        break;
    case P2P_EV_CHAT_MESSAGE:
        CHECK(c == &self && ev.chat == c->chat.get());
        c->received.emplace_back(ev.text, ev.text_len);
        if (c->me == "bob" && c->received.size() == 5) {
            for (int i = 0; i < 5; i++) {
                std::string text = "from bob " + std::to_string(i);
                OK(p2p_chat_send_timeout(c->chat.get(), text.c_str(), 5000));
            }
        }
        if (c->me == "alice" && c->received.size() == 5) OK(p2p_chat_close(c->chat.get()));
        break;
    case P2P_EV_CHAT_CLOSED:
        CHECK(c == &self && ev.chat == c->chat.get());
        c->closed = true;
        break;
    default:
        break;
    }
}

} // namespace

int main() {
    alarm(120);
    char dir[] = "/tmp/p2pchat-pollxx-XXXXXX";
    CHECK(mkdtemp(dir) != nullptr);
    root = dir;
    p2p_registry *registry = nullptr;
    char *addr = nullptr;
    OK(p2p_registry_start("127.0.0.1:0", nullptr, nullptr, &registry));
    OK(p2p_registry_address(registry, &addr));
    {
        Peer peers[2] = {connect(addr, "alice"), connect(addr, "bob")};
        Conversation convs[2];
        convs[0].me = "alice";
        convs[1].me = "bob";
        pollfd fds[2];
        for (int i = 0; i < 2; i++) {
            OK(p2p_peer_event_fd(peers[i].get(), &fds[i].fd));
            fds[i].events = POLLIN;
        }
        uint64_t request = 0;
        OK(p2p_peer_chat_async(peers[0].get(), "bob", &convs[0], &request));
        while (!(convs[0].closed && convs[1].closed)) {
            CHECK(poll(fds, 2, 20000) > 0);
            for (int i = 0; i < 2; i++) {
                if (!(fds[i].revents & POLLIN)) continue;
                for (;;) {
                    Event e;
                    if (p2p_peer_next_event(peers[i].get(), 0, &e.ev) != P2P_OK) break;
                    handle(convs[i], e.ev);
                }
            }
        }
        for (int i = 0; i < 5; i++) {
            CHECK(convs[1].received[i] == "from alice " + std::to_string(i));
            CHECK(convs[0].received[i] == "from bob " + std::to_string(i));
        }
        // Chats (in convs) are freed before the peers (declared first, freed last).
    }
    OK(p2p_registry_stop(registry));
    p2p_registry_free(registry);
    p2p_string_free(addr);
    for (const char *name : {"alice", "bob"}) {
        rmdir((root + "/" + name).c_str());
        unlink((root + "/" + name + ".key").c_str());
    }
    rmdir(dir);
    std::printf("ALL OK\n");
    return 0;
}
