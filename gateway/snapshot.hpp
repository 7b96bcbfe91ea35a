#pragma once

#include <memory>
#include <mutex>

namespace gw {

// An immutable value replaced as a whole while other threads read it: load() hands out a
// reference that stays valid however often store() runs after it.
//
// A plain mutex rather than std::atomic<std::shared_ptr>: libstdc++ 12's load() releases its
// internal lock with memory_order_relaxed, so its read of the pointer races the next store()
// (ThreadSanitizer caught it in CI). Readers hold the lock for one reference-count increment.
template <class T>
class Snapshot {
 public:
  Snapshot() = default;
  explicit Snapshot(std::shared_ptr<const T> v) : value_(std::move(v)) {}
  Snapshot(const Snapshot&) = delete;
  Snapshot& operator=(const Snapshot&) = delete;

  std::shared_ptr<const T> load() const {
    std::lock_guard lock(mutex_);
    return value_;
  }

  // The replaced value is released after the lock, with the parameter.
  void store(std::shared_ptr<const T> v) {
    std::lock_guard lock(mutex_);
    value_.swap(v);
  }

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<const T> value_;
};

}  // namespace gw
