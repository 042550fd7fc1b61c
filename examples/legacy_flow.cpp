// legacy_flow.cpp - the original C++ client's flow, on the p2pchat C API, in C++17,
// driven by event queues: no callbacks at all.
//
// The original client registered with the registry, then offered a menu: View Users,
// View All Files, Select User (then View IP/Port, View Filenames, Chat, Fetch File),
// Exit. This program walks that flow once, scripted, against a registry it starts
// itself and a second peer ("bob") it runs itself.
//
// Neither peer has a callback: both are configured with an event queue
// (p2p_peer_config_set_event_queue), so everything they report is a p2p_event they
// take when they are ready for it, on their own threads:
//   - bob answers from a thread of his own, blocked in p2p_peer_next_event() with a
//     timeout (so it notices when to stop): he accepts each chat request, gives the
//     chat his object as user data, and echoes every message through the chat handle
//     the event carries;
//   - "me" runs the menu on the main thread and waits with poll() on
//     p2p_peer_event_fd(), as a GUI main loop would: the registry's reachability check
//     arrives as a P2P_EV_PEER event, the chat is asked with p2p_peer_chat_async() (the
//     answer is a P2P_EV_CHAT_OPENED event carrying the new chat and its user data),
//     messages go out with p2p_chat_send_timeout(), and the download reports its
//     progress and its end as events (no p2p_transfer_wait()). The path of the chat and
//     of the download (direct, reverse connect or relayed) is shown too.
// Every handle and every event lives in a std::unique_ptr whose deleter is the matching
// p2p_*_free, so nothing leaks on any path, exceptions included. Prints "ALL OK" and
// exits 0 on success.
//
// Build: c++ -std=c++17 legacy_flow.cpp $(pkg-config --cflags --libs p2pchat) -pthread

#include "p2pchat.h"

#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace p2p {

// A failed call, with the library's status and message.
struct Error : std::runtime_error {
    p2p_status status;
    Error(const std::string &what, p2p_status s)
        : std::runtime_error(what + ": " + p2p_status_name(s) + " (" + p2p_last_error_message() +
                             ")"),
          status(s) {}
};

inline void check(p2p_status s, const char *what) {
    if (s != P2P_OK) throw Error(what, s);
}

// One deleter per handle type: unique_ptr calls the matching p2p_*_free.
template <typename T, void (*Free)(T *)>
struct Deleter {
    void operator()(T *p) const { Free(p); }
};
using Registry = std::unique_ptr<p2p_registry, Deleter<p2p_registry, p2p_registry_free>>;
using Config = std::unique_ptr<p2p_peer_config, Deleter<p2p_peer_config, p2p_peer_config_free>>;
using Peer = std::unique_ptr<p2p_peer, Deleter<p2p_peer, p2p_peer_free>>;
using Chat = std::unique_ptr<p2p_chat, Deleter<p2p_chat, p2p_chat_free>>;
using Transfer = std::unique_ptr<p2p_transfer, Deleter<p2p_transfer, p2p_transfer_free>>;
using Request =
    std::unique_ptr<p2p_chat_request, Deleter<p2p_chat_request, p2p_chat_request_free>>;

// An event from p2p_peer_next_event(). The deleter releases what the event owns
// (p2p_event_free) and also the new handles it brings that nobody took out of it: an
// unanswered chat request (freeing it declines it), the chat of a P2P_EV_CHAT_OPENED,
// the transfer of a P2P_EV_OFFER_ANSWERED. Handlers take those with take_request() /
// take_chat() / take_transfer(); the chat and transfer of the other kinds are borrowed
// and never freed here.
struct EventDeleter {
    void operator()(p2p_event *ev) const {
        if (ev->kind == P2P_EV_CHAT_REQUEST) p2p_chat_request_free(ev->request);
        if (ev->kind == P2P_EV_CHAT_OPENED) p2p_chat_free(ev->chat);
        if (ev->kind == P2P_EV_OFFER_ANSWERED) p2p_transfer_free(ev->transfer);
        p2p_event_free(ev);
        delete ev;
    }
};
using Event = std::unique_ptr<p2p_event, EventDeleter>;

inline Request take_request(p2p_event &ev) { return Request(std::exchange(ev.request, nullptr)); }
inline Chat take_chat(p2p_event &ev) { return Chat(std::exchange(ev.chat, nullptr)); }

// The next event of `peer`, waiting at most `timeout_ms` (0: do not wait); an empty
// Event when none came in time.
inline Event next_event(const p2p_peer *peer, int32_t timeout_ms) {
    Event ev(new p2p_event{});
    const p2p_status s = p2p_peer_next_event(peer, timeout_ms, ev.get());
    if (s == P2P_TIMEOUT) return Event();
    check(s, "next event");
    return ev;
}

// A message or description carried by an event (it may contain NUL bytes).
inline std::string text(const p2p_event &ev) {
    return ev.text ? std::string(ev.text, ev.text_len) : std::string();
}

inline const char *path_name(p2p_path path) {
    switch (path) {
    case P2P_PATH_DIRECT: return "direct";
    case P2P_PATH_REVERSE: return "reverse connect";
    case P2P_PATH_RELAYED: return "relayed";
    case P2P_PATH_PUNCHED: return "punched";
    }
    return "unknown";
}

// A string handed out by the library, copied and freed at once.
inline std::string take(char *s) {
    std::unique_ptr<char, Deleter<char, p2p_string_free>> owned(s);
    return owned ? std::string(owned.get()) : std::string();
}

// A p2p_string_list, copied and freed at once.
inline std::vector<std::string> take(p2p_string_list list) {
    std::vector<std::string> out(list.items, list.items + list.len);
    p2p_string_list_free(&list);
    return out;
}

// A p2p_user_files_list, copied and freed at once.
inline std::vector<std::pair<std::string, std::vector<std::string>>> take(p2p_user_files_list list) {
    std::vector<std::pair<std::string, std::vector<std::string>>> out;
    for (size_t i = 0; i < list.len; i++) {
        const p2p_user_files &u = list.items[i];
        out.emplace_back(u.user, std::vector<std::string>(u.files.items, u.files.items + u.files.len));
    }
    p2p_user_files_list_free(&list);
    return out;
}

}  // namespace p2p

// Both threads print; one line at a time.
static std::mutex out_mu;
static void say(const std::string &line) {
    std::lock_guard<std::mutex> lock(out_mu);
    std::cout << line << "\n" << std::flush;
}

static void expect(bool ok, const std::string &what) {
    if (!ok) throw std::runtime_error("check failed: " + what);
}

static p2p::Peer connect(const std::string &registry, const char *name, const fs::path &share) {
    p2p_peer_config *raw = nullptr;
    p2p::check(p2p_peer_config_new(registry.c_str(), name, share.c_str(), &raw), "config");
    p2p::Config config(raw);
    p2p::check(p2p_peer_config_set_listen_ip(config.get(), "127.0.0.1"), "listen ip");
    // A queue instead of callbacks: none of this peer's callbacks is ever called.
    p2p::check(p2p_peer_config_set_event_queue(config.get(), 64), "event queue");
    p2p_peer *peer = nullptr;
    p2p::check(p2p_peer_connect(config.get(), &peer), "register");
    return p2p::Peer(peer);
}

// bob: a thread of his own taking his peer's events, with no callbacks. Accepts every
// chat request and echoes every message. Owns the chats he accepted; stops (and joins)
// when destroyed, so it must be destroyed before bob's peer (declare it after).
class Bob {
  public:
    explicit Bob(const p2p_peer *peer) : peer_(peer), thread_([this] { run(); }) {}
    Bob(const Bob &) = delete;
    Bob &operator=(const Bob &) = delete;
    ~Bob() { stop(); }

    // Stop taking events and join the thread; then the counters below are final.
    void stop() {
        stopping_ = true;
        if (thread_.joinable()) thread_.join();
    }
    const std::string &error() const { return error_; }  // after stop()
    int echoed() const { return echoed_; }
    int closed() const { return closed_; }

  private:
    // bob's object for one chat: its handle's owner, handed back as each event's user data.
    struct Conversation {
        p2p::Chat chat;
        std::string with;
    };

    void run() noexcept {
        try {
            while (!stopping_) {
                // A timeout, not "wait forever": the loop looks at stopping_ each 100 ms.
                if (p2p::Event ev = p2p::next_event(peer_, 100)) handle(*ev);
            }
        } catch (const std::exception &e) {
            error_ = e.what();
        }
    }

    void handle(p2p_event &ev) {
        switch (ev.kind) {
        case P2P_EV_CHAT_REQUEST: {
            const p2p::Request request = p2p::take_request(ev);
            p2p_chat *raw = nullptr;
            p2p::check(p2p_chat_request_accept(request.get(), &raw), "bob accepts");
            auto conv = std::make_unique<Conversation>();
            conv->chat.reset(raw);
            conv->with = ev.from;
            // Every later event of this chat hands this object back.
            p2p::check(p2p_chat_set_user_data(conv->chat.get(), conv.get()), "user data");
            say("  [bob] accepted a chat from " + conv->with + " (" + p2p::path_name(ev.path) + ")");
            chats_.push_back(std::move(conv));
            break;
        }
        case P2P_EV_CHAT_MESSAGE: {
            auto *conv = static_cast<Conversation *>(ev.user_data);
            // ev.chat is borrowed: the handle conv owns (no id-to-handle map needed).
            expect(conv != nullptr, "bob's message event carries his object");
            expect(ev.chat == conv->chat.get(), "bob's message event names his chat");
            const std::string reply = "echo: " + p2p::text(ev);
            p2p::check(p2p_chat_send_timeout(ev.chat, reply.c_str(), 5000), "bob echoes");
            ++echoed_;
            break;
        }
        case P2P_EV_CHAT_CLOSED: {
            auto *conv = static_cast<Conversation *>(ev.user_data);
            expect(conv != nullptr, "bob's close event carries his object");
            expect(ev.chat == conv->chat.get(), "bob's close event names his chat");
            expect(ev.closed_by == P2P_CHAT_CLOSED_REMOTE, conv->with + " ended the chat");
            ++closed_;
            break;
        }
        default:  // background events (reachability, served files): nothing to do
            break;
        }
    }

    const p2p_peer *peer_;
    std::vector<std::unique_ptr<Conversation>> chats_;  // only bob's thread touches it
    std::atomic<bool> stopping_{false};
    std::atomic<int> echoed_{0}, closed_{0};
    std::string error_;
    std::thread thread_;  // last: starts once everything above exists
};

// The main loop of "me": poll() on the peer's event descriptor. Each wake-up takes
// every waiting event (the descriptor is level-triggered), showing the ones that
// matter only as news (download progress, background events) and handing back the
// first one `want` accepts.
class Loop {
  public:
    explicit Loop(const p2p_peer *peer) : peer_(peer) {
        p2p::check(p2p_peer_event_fd(peer, &fd_), "event fd");
    }

    p2p::Event wait_for(const std::function<bool(const p2p_event &)> &want, const char *what,
                        std::chrono::seconds limit = std::chrono::seconds(20)) {
        const auto deadline = Clock::now() + limit;
        for (;;) {
            while (p2p::Event ev = p2p::next_event(peer_, 0)) {
                if (want(*ev)) return ev;
                news(*ev);
            }
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - Clock::now());
            if (left.count() <= 0) throw std::runtime_error(std::string("timed out waiting for ") + what);
            pollfd pfd{fd_, POLLIN, 0};
            if (poll(&pfd, 1, static_cast<int>(left.count())) < 0 && errno != EINTR)
                throw std::runtime_error("poll failed");
        }
    }

  private:
    static void news(const p2p_event &ev) {
        switch (ev.kind) {
        case P2P_EV_TRANSFER_PROGRESS:
            say("    ... " + std::to_string(ev.received) + " of " + std::to_string(ev.total) +
                " bytes");
            break;
        case P2P_EV_PEER:
            say("  (" + p2p::text(ev) + ")");
            break;
        default:
            break;
        }
    }

    const p2p_peer *peer_;
    int32_t fd_ = -1;
};

static int run(const fs::path &root) {
    const fs::path my_share = root / "my-share", bob_share = root / "bob-share";
    fs::create_directories(my_share);
    fs::create_directories(bob_share);
    std::ofstream(my_share / "notes.txt") << "my notes\n";
    const std::string song(123457, 'x');
    std::ofstream(bob_share / "song.mp3", std::ios::binary) << song;

    p2p_registry *raw_registry = nullptr;
    p2p::check(p2p_registry_start("127.0.0.1:0", nullptr, nullptr, &raw_registry), "start registry");
    p2p::Registry registry(raw_registry);
    char *addr = nullptr;
    p2p::check(p2p_registry_address(registry.get(), &addr), "registry address");
    const std::string registry_addr = p2p::take(addr);
    say("Registry running on " + registry_addr);

    p2p::Peer bob_peer = connect(registry_addr, "bob", bob_share);
    Bob bob(bob_peer.get());  // after bob_peer: stopped before bob's peer is freed

    // Register.
    bool free_name = false;
    p2p::check(p2p_username_available(registry_addr.c_str(), "me", &free_name), "username check");
    expect(free_name, "username 'me' is free");
    p2p::Peer me = connect(registry_addr, "me", my_share);
    Loop loop(me.get());
    bool legacy = true;
    p2p::check(p2p_peer_registry_is_legacy(me.get(), &legacy), "registry kind");
    say(std::string("Registered as me with ") + (legacy ? "an original" : "a p2pchat") + " registry");
    expect(!legacy, "the registry is a p2pchat registry");
    // The registry checks that our listener can be reached; the outcome is an event.
    const p2p::Event reach = loop.wait_for(
        [](const p2p_event &ev) {
            return ev.kind == P2P_EV_PEER && ev.peer_event == P2P_EVENT_REACHABILITY;
        },
        "the reachability check");
    say("  Registry says: " + p2p::text(*reach));
    p2p_reach reachable = P2P_REACH_UNKNOWN;
    p2p::check(p2p_peer_reachability(me.get(), &reachable), "reachability");
    expect(reachable == P2P_REACH_REACHABLE && p2p::text(*reach).rfind("reachable at 127.0.0.1:", 0) == 0,
           "a loopback listener is reachable");

    // 1. View Users.
    p2p_string_list list{};
    p2p::check(p2p_peer_users(me.get(), &list), "view users");
    const auto users = p2p::take(list);
    std::string line = "Users online:";
    for (const auto &u : users) line += " " + u;
    say(line);
    expect(users == std::vector<std::string>{"bob", "me"}, "users are bob and me");

    // 3. View All Files.
    p2p_user_files_list all{};
    p2p::check(p2p_peer_all_files(me.get(), &all), "view all files");
    say("All files:");
    bool seen = false;
    for (const auto &[user, files] : p2p::take(all)) {
        line = "  " + user + ":";
        for (const auto &f : files) line += " " + f;
        say(line);
        seen = seen || (user == "bob" && files == std::vector<std::string>{"song.mp3"});
    }
    expect(seen, "bob shares song.mp3");

    // 2. Select User: bob.
    const std::string selected = "bob";
    say("Selected " + selected);
    bool bob_is_legacy = true;
    p2p::check(p2p_peer_user_is_legacy(me.get(), selected.c_str(), &bob_is_legacy), "user kind");
    expect(!bob_is_legacy, "bob is a p2pchat peer, not an original client");

    //   a. View IP/Port.
    char *ip = nullptr;
    uint16_t port = 0, bob_port = 0;
    p2p::check(p2p_peer_address(me.get(), selected.c_str(), &ip, &port), "view ip/port");
    say("  IP " + p2p::take(ip) + " port " + std::to_string(port));
    p2p::check(p2p_peer_listen_port(bob_peer.get(), &bob_port), "bob's port");
    expect(port == bob_port, "the registry knows bob's port");

    //   b. View Filenames.
    p2p::check(p2p_peer_files_of(me.get(), selected.c_str(), &list), "view filenames");
    const auto files = p2p::take(list);
    expect(files == std::vector<std::string>{"song.mp3"}, "bob's filenames");
    say("  Files: " + files.at(0));

    //   c. Chat. Asked without blocking; the answer is an event carrying the new chat
    //      handle and the user data given here (the chat keeps it for its events).
    struct Conversation {
        p2p::Chat chat;
        std::vector<std::string> received;
    } conv;
    uint64_t request_id = 0;
    p2p::check(p2p_peer_chat_async(me.get(), selected.c_str(), &conv, &request_id), "chat");
    {
        p2p::Event opened = loop.wait_for(
            [&](const p2p_event &ev) { return ev.kind == P2P_EV_CHAT_OPENED && ev.id == request_id; },
            "bob's answer");
        p2p::check(opened->status, "chat with bob");
        expect(opened->user_data == &conv, "the answer carries our user data");
        conv.chat = p2p::take_chat(*opened);
        p2p_path path = P2P_PATH_RELAYED;
        p2p::check(p2p_chat_path(conv.chat.get(), &path), "chat path");
        expect(path == opened->path, "the chat's path is the one its answer gave");
        bool encrypted = false;
        p2p::check(p2p_chat_is_encrypted(conv.chat.get(), &encrypted), "chat encryption");
        say(std::string("  Chat with bob open (") + p2p::path_name(path) +
            (encrypted ? ", encrypted)" : ", plaintext)"));
    }
    p2p::check(p2p_chat_send_timeout(conv.chat.get(), "hi bob", 5000), "send");
    {
        p2p::Event msg = loop.wait_for(
            [&](const p2p_event &ev) {
                return ev.kind == P2P_EV_CHAT_MESSAGE && ev.chat == conv.chat.get();
            },
            "bob's echo");
        auto *mine = static_cast<Conversation *>(msg->user_data);
        expect(mine == &conv, "the message carries the chat's user data");
        mine->received.push_back(std::string(msg->from) + ": " + p2p::text(*msg));
        say("  Chat: " + conv.received.at(0));
        expect(conv.received.at(0) == "bob: echo: hi bob", "bob echoes");
    }
    p2p::check(p2p_chat_close(conv.chat.get()), "end chat");
    {
        p2p::Event closed = loop.wait_for(
            [&](const p2p_event &ev) {
                return ev.kind == P2P_EV_CHAT_CLOSED && ev.chat == conv.chat.get();
            },
            "the chat's end");
        expect(closed->closed_by == P2P_CHAT_CLOSED_LOCAL, "we ended the chat");
        say("  Chat ended");
    }

    //   d. Fetch File. Returns at once; progress and the end come as events carrying
    //      the transfer handle and its user data.
    p2p_transfer *raw_transfer = nullptr;
    p2p::check(p2p_peer_fetch(me.get(), selected.c_str(), "song.mp3", &raw_transfer), "fetch");
    p2p::Transfer transfer(raw_transfer);
    std::string label = "song.mp3 from bob";
    p2p::check(p2p_transfer_set_user_data(transfer.get(), &label), "transfer user data");
    p2p::Event end = loop.wait_for(
        [&](const p2p_event &ev) {
            return (ev.kind == P2P_EV_TRANSFER_DONE || ev.kind == P2P_EV_TRANSFER_FAILED) &&
                   ev.transfer == transfer.get();
        },
        "the download");
    expect(end->user_data == &label, "the download's events carry its user data");
    if (end->kind == P2P_EV_TRANSFER_FAILED) throw p2p::Error("download: " + p2p::text(*end), end->status);
    const fs::path saved = p2p::text(*end);
    std::ifstream in(saved, std::ios::binary);
    const std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    expect(got == song, "downloaded bytes equal bob's");
    p2p_path path = P2P_PATH_RELAYED;
    p2p::check(p2p_transfer_path(transfer.get(), &path), "download path");
    bool verified = false;
    p2p::check(p2p_transfer_is_verified(transfer.get(), &verified), "download verified");
    expect(verified, "a download from a p2pchat peer is hash-checked");
    say("  Fetched " + saved.filename().string() + " (" + std::to_string(got.size()) + " bytes, " +
        p2p::path_name(path) + ", verified)");

    // The download landed in my shared directory, so it is shared in turn.
    p2p::check(p2p_peer_files_of(me.get(), "me", &list), "my files");
    expect(p2p::take(list) == std::vector<std::string>{"notes.txt", "song.mp3"}, "re-shared");

    // 4. Exit. (The event descriptor is not used after this: it may be closed.)
    p2p::check(p2p_peer_exit(me.get()), "exit");
    say("Exited");

    bob.stop();
    expect(bob.error().empty(), "bob's thread: " + bob.error());
    expect(bob.echoed() == 1 && bob.closed() == 1, "bob echoed one message and saw the chat end");
    return 0;
}

int main() {
    alarm(120);  // an example must not hang a test run (valgrind included)
    say(std::string("p2pchat ") + p2p_version());
    const fs::path root = fs::temp_directory_path() /
                          ("p2pchat-legacy-flow-" + std::to_string(Clock::now().time_since_epoch().count()));
    int code = 1;
    try {
        code = run(root);
    } catch (const std::exception &e) {
        std::cerr << "FAILED: " << e.what() << "\n";
    }
    std::error_code ignored;
    fs::remove_all(root, ignored);
    if (code == 0) say("ALL OK");
    return code;
}
