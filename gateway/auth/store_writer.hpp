// Every write to the token store, off the event loops (SPEC 6.9). A thread of its own runs
// the store's blocking saves (a Redis round trip, the file store's fsync), so a slow or
// absent store never stalls a request. A record the store could not take stays pending here:
// the caller goes on with it in memory, and the save is retried with backoff until the store
// takes it. A newer version replaces a pending one, never the reverse. A lease whose release
// failed is released again, after its connection's pending record is saved, so no replica
// takes the lock while the store still holds a spent refresh token.
#pragma once
#include <boost/asio/awaitable.hpp>

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "gateway/auth/token_store.hpp"

namespace gw {

// How long a pending record waits before its next try: doubling from `first` up to `last`.
struct StoreRetry {
  Millis first{100};
  Millis last{250};
};

class StoreWriter {
 public:
  using Retry = StoreRetry;

  explicit StoreWriter(std::shared_ptr<TokenStore> store, Retry retry = {});
  // Tries every pending record once more, answers every waiter, then stops the thread; logs
  // the ids it could not save. Call it while the waiters' event loops still exist.
  void stop();
  ~StoreWriter();  // stop()
  StoreWriter(const StoreWriter&) = delete;
  StoreWriter& operator=(const StoreWriter&) = delete;

  // True once the store took the record (or a newer one of the same connection); false when
  // it is pending, retried in the background, or not taken within `wait`.
  boost::asio::awaitable<bool> save(TokenRecord record, Millis wait = Millis::max());
  boost::asio::awaitable<bool> remove(std::string id, Millis wait = Millis::max());
  // The same, without waiting for the outcome.
  void save_detached(TokenRecord record);
  // `owner`'s lease on `id`, to release once `id` has no pending record and the store
  // answers; `released` runs (on the writer's thread) when it is.
  void release_later(std::string id, std::string owner, std::function<void()> released);
  // Waits up to `timeout` for `id`'s pending record (if any) to be saved: true when nothing of
  // `id` is pending any more.
  boost::asio::awaitable<bool> settled(std::string id, Millis timeout);

  // Records (saves and removals) the store has refused at least once and not taken yet.
  std::size_t pending() const { return pending_->load(); }
  // Whether a write of `id` is pending or under way.
  bool pending(const std::string& id) const;
  TokenStore& store() const { return *store_; }

 private:
  struct Impl;
  std::shared_ptr<TokenStore> store_;
  std::shared_ptr<std::atomic<std::size_t>> pending_;
  std::shared_ptr<Impl> impl_;
};

}  // namespace gw
