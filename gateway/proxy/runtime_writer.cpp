// RuntimeWriter: the one place the runtime changes (see proxy.hpp).
#include "gateway/proxy/proxy.hpp"

namespace gw {

std::shared_ptr<const Runtime> RuntimeWriter::commit(const Change& change) {
  std::lock_guard lock(mutex_);
  auto next = change(runtime_.load());
  if (next) runtime_.store(next);
  return next;
}

std::shared_ptr<const Runtime> RuntimeWriter::commit_routes(
    const std::function<std::shared_ptr<const Routes>(const Routes& current)>& change) {
  return commit([&](const std::shared_ptr<const Runtime>& current) {
    auto next = std::make_shared<Runtime>(*current);
    next->routes = change(*current->routes);
    return std::shared_ptr<const Runtime>(std::move(next));
  });
}

}  // namespace gw
