// The store writer (SPEC 6.9): records the store cannot take stay pending and are retried;
// a newer version replaces a pending one, never the reverse; a lease is released only after
// its connection's record is saved.
#include <doctest/doctest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <thread>

#include "gateway/auth/store_writer.hpp"
#include "gateway/observability/log.hpp"

using namespace gw;
namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

constexpr auto kSilent = static_cast<log::Level>(4);  // above error: the retries print nothing

// A store that is down while `down` is set; it also plays the cluster lock, counting releases.
class SwitchedStore final : public TokenStore, public RefreshLock {
 public:
  std::atomic<bool> down{false};
  std::mutex mutex;
  std::map<std::string, TokenRecord> records;
  std::vector<std::string> events;  // "save acme 3", "release acme owner"
  std::atomic<int> attempts{0};

  RefreshLock* cluster_lock() override { return with_lock ? this : nullptr; }
  bool with_lock = false;
  std::map<std::string, TokenRecord> load() override {
    std::lock_guard lock(mutex);
    return records;
  }
  bool save(const TokenRecord& r) override {
    ++attempts;
    if (down) return false;
    std::lock_guard lock(mutex);
    records[r.id] = r;
    events.push_back("save " + r.id + " " + std::to_string(r.version));
    return true;
  }
  bool remove(const std::string& id) override {
    ++attempts;
    if (down) return false;
    std::lock_guard lock(mutex);
    records.erase(id);
    events.push_back("remove " + id);
    return true;
  }
  std::optional<std::uint64_t> version(const std::string& id) {
    std::lock_guard lock(mutex);
    auto it = records.find(id);
    return it == records.end() ? std::nullopt : std::optional(it->second.version);
  }
  std::vector<std::string> seen() {
    std::lock_guard lock(mutex);
    return events;
  }

  asio::awaitable<Outcome> acquire(std::string, std::string, Millis) override {
    co_return Outcome::acquired;
  }
  asio::awaitable<bool> renew(std::string, std::string, Millis) override { co_return !down; }
  asio::awaitable<bool> release(std::string id, std::string owner) override {
    if (down) co_return false;
    std::lock_guard lock(mutex);
    events.push_back("release " + id + " " + owner);
    co_return true;
  }
  asio::awaitable<std::optional<TokenRecord>> read(std::string, bool*) override {
    co_return std::nullopt;
  }
  std::uint64_t update_generation(const std::string&) override { return 0; }
  asio::awaitable<void> wait_update(std::string, std::uint64_t, Millis) override { co_return; }
};

TokenRecord record(std::string id, std::uint64_t version) {
  TokenRecord r;
  r.id = std::move(id);
  r.version = version;
  r.refresh_token = "rt-" + std::to_string(version);
  return r;
}

// Runs one awaitable to its end on an event loop of the test's own. The loop outlives every
// writer, as the gateway's loops do: the writer's thread may still be inside its post to the
// loop when run() returns, and destroying the loop then is a race (TSan saw it).
template <class Make>
bool run(Make make) {
  static asio::io_context ioc;
  bool out = false;
  asio::co_spawn(
      ioc, [&]() -> asio::awaitable<void> { out = co_await make(); }, asio::detached);
  ioc.restart();
  ioc.run();
  return out;
}

bool save(StoreWriter& w, TokenRecord r, Millis wait = Millis::max()) {
  return run([&] { return w.save(std::move(r), wait); });
}

template <class F>
bool eventually(F f) {
  for (int i = 0; i < 2000; ++i) {
    if (f()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return f();
}

}  // namespace

TEST_CASE("a record the store cannot take stays pending and is saved once the store is back") {
  log::set_level(kSilent);
  auto store = std::make_shared<SwitchedStore>();
  StoreWriter w(store, {1ms, 4ms});
  CHECK(save(w, record("acme", 1)));
  CHECK(w.pending() == 0);
  store->down = true;
  CHECK_FALSE(save(w, record("acme", 2)));
  CHECK(w.pending() == 1);
  CHECK(w.pending("acme"));
  CHECK_FALSE(w.pending("other"));
  // Retried with backoff while the store is down.
  CHECK(eventually([&] { return store->attempts > 6; }));
  CHECK(store->version("acme") == 1u);
  store->down = false;
  CHECK(eventually([&] { return w.pending() == 0; }));
  CHECK(store->version("acme") == 2u);
  CHECK_FALSE(w.pending("acme"));
}

TEST_CASE("a newer version replaces a pending one, never the reverse") {
  log::set_level(kSilent);
  auto store = std::make_shared<SwitchedStore>();
  StoreWriter w(store, {1ms, 4ms});
  store->down = true;
  CHECK_FALSE(save(w, record("acme", 5)));
  CHECK_FALSE(save(w, record("acme", 7)));  // newer: replaces
  CHECK_FALSE(save(w, record("acme", 6)));  // older than the pending one: dropped
  CHECK(w.pending() == 1);
  store->down = false;
  CHECK(eventually([&] { return w.pending() == 0; }));
  CHECK(store->version("acme") == 7u);
  for (const auto& e : store->seen()) CHECK(e == "save acme 7");
}

TEST_CASE("a slow save is given up on after the wait, and still lands") {
  log::set_level(kSilent);
  auto store = std::make_shared<SwitchedStore>();
  StoreWriter w(store, {1ms, 4ms});
  store->down = true;
  auto start = std::chrono::steady_clock::now();
  CHECK_FALSE(save(w, record("acme", 1), 20ms));
  CHECK(std::chrono::steady_clock::now() - start < 1s);
  store->down = false;
  CHECK(eventually([&] { return store->version("acme") == 1u; }));
}

TEST_CASE("a lease whose record is pending is released only after the record is saved") {
  log::set_level(kSilent);
  auto store = std::make_shared<SwitchedStore>();
  store->with_lock = true;
  StoreWriter w(store, {1ms, 4ms});
  store->down = true;
  CHECK_FALSE(save(w, record("acme", 3)));
  std::atomic<bool> released{false};
  w.release_later("acme", "owner-1", [&] { released = true; });
  std::this_thread::sleep_for(20ms);
  CHECK_FALSE(released);
  store->down = false;
  CHECK(eventually([&] { return released.load(); }));
  auto events = store->seen();
  REQUIRE(events.size() == 2);
  CHECK(events[0] == "save acme 3");
  CHECK(events[1] == "release acme owner-1");
}

TEST_CASE("settled waits for the pending record, and says when it did not land in time") {
  log::set_level(kSilent);
  auto store = std::make_shared<SwitchedStore>();
  StoreWriter w(store, {1ms, 4ms});
  store->down = true;
  CHECK_FALSE(save(w, record("acme", 1)));
  auto settled = [&](Millis timeout) { return run([&] { return w.settled("acme", timeout); }); };
  CHECK_FALSE(settled(20ms));
  std::thread back([&] {
    std::this_thread::sleep_for(20ms);
    store->down = false;
  });
  CHECK(settled(5s));
  back.join();
  CHECK(w.pending() == 0);
}

TEST_CASE("removals are pending too, and a removal replaces a pending save") {
  log::set_level(kSilent);
  auto store = std::make_shared<SwitchedStore>();
  StoreWriter w(store, {1ms, 4ms});
  CHECK(save(w, record("acme", 1)));
  store->down = true;
  CHECK_FALSE(save(w, record("acme", 2)));
  CHECK_FALSE(run([&] { return w.remove("acme", 20ms); }));
  CHECK(w.pending() == 1);
  store->down = false;
  CHECK(eventually([&] { return w.pending() == 0; }));
  CHECK_FALSE(store->version("acme"));
  auto events = store->seen();
  CHECK(events.back() == "remove acme");
}
