// Vendor cool-downs shared through the store (proxy.hpp).
#include "gateway/proxy/proxy.hpp"

namespace gw {

bool raise_cooldown(Lifecycle& lifecycle, std::int64_t until_ms) {
  auto& until = lifecycle.rate_limited_until_ms;
  auto seen = until.load();
  while (seen < until_ms)
    if (until.compare_exchange_weak(seen, until_ms)) return true;
  return false;
}

void share_cooldowns(ProxyShared& shared, TokenStore& store) {
  if (!store.cluster_lock()) return;  // a store of one process: nothing to share
  shared.publish_cooldown = [&store](std::string id, std::int64_t until_ms) {
    return store.publish_cooldown(std::move(id), until_ms);
  };
  store.on_cooldown([&shared](const std::string& id, std::int64_t until_ms) {
    auto runtime = shared.runtime.load();
    auto it = runtime->routes->connections.find(id);
    if (it != runtime->routes->connections.end()) raise_cooldown(*it->second->lifecycle, until_ms);
  });
}

void stop_sharing_cooldowns(TokenStore& store) {
  store.on_cooldown(nullptr);
}

}  // namespace gw
