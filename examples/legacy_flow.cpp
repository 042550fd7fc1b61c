// legacy_flow.cpp - the original C++ client's flow, on the p2pchat C API, in C++17.
//
// The original client registered with the registry, then offered a menu: View Users,
// View All Files, Select User (then View IP/Port, View Filenames, Chat, Fetch File),
// Exit. This program walks that flow once, scripted, against a registry it starts
// itself and a second peer ("bob") it runs itself; every handle lives in an RAII
// wrapper, so nothing leaks on any path. Prints "ALL OK" and exits 0 on success.
//
// Build: c++ -std=c++17 legacy_flow.cpp $(pkg-config --cflags --libs p2pchat) -pthread

#include "p2pchat.h"

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace fs = std::filesystem;

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

// What a peer's callbacks saw (they run on library threads).
struct Inbox {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<std::string> messages;
    std::vector<p2p::Chat> accepted;  // bob: chats accepted from the request callback
    bool echo = false;                // bob: answer every message

    template <typename Pred>
    void wait(Pred pred, const char *what) {
        std::unique_lock<std::mutex> lock(mu);
        if (!cv.wait_for(lock, std::chrono::seconds(10), pred))
            throw std::runtime_error(std::string("timed out waiting for ") + what);
    }
};

extern "C" void on_request(void *user_data, p2p_chat_request *raw) {
    auto *inbox = static_cast<Inbox *>(user_data);
    p2p::Request request(raw);  // ours now; freed when this scope ends
    // Lock before accepting: the first message can arrive (on_message, on another
    // thread) before p2p_chat_request_accept returns, and must find the chat.
    std::lock_guard<std::mutex> lock(inbox->mu);
    p2p_chat *chat = nullptr;
    if (p2p_chat_request_accept(request.get(), &chat) != P2P_OK) return;
    inbox->accepted.emplace_back(chat);
    inbox->cv.notify_all();
}

extern "C" void on_message(void *user_data, uint64_t chat_id, const char *from, const char *text,
                           size_t len) {
    auto *inbox = static_cast<Inbox *>(user_data);
    std::lock_guard<std::mutex> lock(inbox->mu);
    inbox->messages.emplace_back(std::string(from) + ": " + std::string(text, len));
    if (inbox->echo) {
        for (auto &chat : inbox->accepted) {
            uint64_t id = 0;
            if (p2p_chat_id(chat.get(), &id) == P2P_OK && id == chat_id)
                p2p_chat_send(chat.get(), ("echo: " + std::string(text, len)).c_str());
        }
    }
    inbox->cv.notify_all();
}

static p2p::Peer connect(const std::string &registry, const char *name, const fs::path &share,
                         Inbox &inbox) {
    p2p_peer_config *raw = nullptr;
    p2p::check(p2p_peer_config_new(registry.c_str(), name, share.c_str(), &raw), "config");
    p2p::Config config(raw);
    p2p::check(p2p_peer_config_set_listen_ip(config.get(), "127.0.0.1"), "listen ip");
    p2p::check(p2p_peer_config_set_user_data(config.get(), &inbox), "user data");
    p2p::check(p2p_peer_config_on_chat_request(config.get(), on_request), "request callback");
    p2p::check(p2p_peer_config_on_chat_message(config.get(), on_message), "message callback");
    p2p_peer *peer = nullptr;
    p2p::check(p2p_peer_connect(config.get(), &peer), "register");
    return p2p::Peer(peer);
}

static void expect(bool ok, const std::string &what) {
    if (!ok) throw std::runtime_error("check failed: " + what);
}

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
    std::cout << "Registry running on " << registry_addr << "\n";

    Inbox bob_inbox, my_inbox;
    bob_inbox.echo = true;
    p2p::Peer bob = connect(registry_addr, "bob", bob_share, bob_inbox);

    // Register.
    bool free_name = false;
    p2p::check(p2p_username_available(registry_addr.c_str(), "me", &free_name), "username check");
    expect(free_name, "username 'me' is free");
    p2p::Peer me = connect(registry_addr, "me", my_share, my_inbox);
    std::cout << "Registered as me\n";

    // 1. View Users.
    p2p_string_list list{};
    p2p::check(p2p_peer_users(me.get(), &list), "view users");
    const auto users = p2p::take(list);
    std::cout << "Users online:";
    for (const auto &u : users) std::cout << " " << u;
    std::cout << "\n";
    expect(users == std::vector<std::string>{"bob", "me"}, "users are bob and me");

    // 3. View All Files.
    p2p_user_files_list all{};
    p2p::check(p2p_peer_all_files(me.get(), &all), "view all files");
    std::cout << "All files:\n";
    bool seen = false;
    for (const auto &[user, files] : p2p::take(all)) {
        std::cout << "  " << user << ":";
        for (const auto &f : files) std::cout << " " << f;
        std::cout << "\n";
        seen = seen || (user == "bob" && files == std::vector<std::string>{"song.mp3"});
    }
    expect(seen, "bob shares song.mp3");

    // 2. Select User: bob.
    const std::string selected = "bob";
    std::cout << "Selected " << selected << "\n";

    //   a. View IP/Port.
    char *ip = nullptr;
    uint16_t port = 0, bob_port = 0;
    p2p::check(p2p_peer_address(me.get(), selected.c_str(), &ip, &port), "view ip/port");
    std::cout << "  IP " << p2p::take(ip) << " port " << port << "\n";
    p2p::check(p2p_peer_listen_port(bob.get(), &bob_port), "bob's port");
    expect(port == bob_port, "the registry knows bob's port");

    //   b. View Filenames.
    p2p::check(p2p_peer_files_of(me.get(), selected.c_str(), &list), "view filenames");
    const auto files = p2p::take(list);
    expect(files == std::vector<std::string>{"song.mp3"}, "bob's filenames");
    std::cout << "  Files: " << files.at(0) << "\n";

    //   c. Chat.
    p2p_chat *raw_chat = nullptr;
    p2p::check(p2p_peer_chat(me.get(), selected.c_str(), &raw_chat), "chat");
    p2p::Chat chat(raw_chat);
    p2p::check(p2p_chat_send(chat.get(), "hi bob"), "send");
    my_inbox.wait([&] { return !my_inbox.messages.empty(); }, "bob's echo");
    {
        std::lock_guard<std::mutex> lock(my_inbox.mu);
        std::cout << "  Chat: " << my_inbox.messages.at(0) << "\n";
        expect(my_inbox.messages.at(0) == "bob: echo: hi bob", "bob echoes");
    }
    p2p::check(p2p_chat_close(chat.get()), "end chat");

    //   d. Fetch File.
    p2p_transfer *raw_transfer = nullptr;
    p2p::check(p2p_peer_fetch(me.get(), selected.c_str(), "song.mp3", &raw_transfer), "fetch");
    p2p::Transfer transfer(raw_transfer);
    char *path = nullptr;
    p2p::check(p2p_transfer_wait(transfer.get(), &path), "download");
    const fs::path saved = p2p::take(path);
    std::ifstream in(saved, std::ios::binary);
    const std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    expect(got == song, "downloaded bytes equal bob's");
    std::cout << "  Fetched " << saved.filename().string() << " (" << got.size() << " bytes)\n";

    // The download landed in my shared directory, so it is shared in turn.
    p2p::check(p2p_peer_files_of(me.get(), "me", &list), "my files");
    expect(p2p::take(list) == std::vector<std::string>{"notes.txt", "song.mp3"}, "re-shared");

    // 4. Exit.
    p2p::check(p2p_peer_exit(me.get()), "exit");
    std::cout << "Exited\n";
    return 0;
}

int main() {
    std::cout << "p2pchat " << p2p_version() << "\n";
    const fs::path root = fs::temp_directory_path() /
                          ("p2pchat-legacy-flow-" + std::to_string(std::chrono::steady_clock::now()
                                                                       .time_since_epoch()
                                                                       .count()));
    int code = 1;
    try {
        code = run(root);
    } catch (const std::exception &e) {
        std::cerr << "FAILED: " << e.what() << "\n";
    }
    std::error_code ignored;
    fs::remove_all(root, ignored);
    if (code == 0) std::cout << "ALL OK\n";
    return code;
}
