// The connections API under /admin/connections (list, get, put, delete, refresh) and the
// JSON view of a connection.
#include "gateway/admin/admin_server.hpp"

#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <regex>

#include "gateway/admin/admin_http.hpp"
#include "gateway/auth/token_fetch.hpp"
#include "gateway/observability/log.hpp"

namespace gw {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using json = nlohmann::json;
using namespace admin_http;

namespace {

const std::regex kConnectionId("^[A-Za-z0-9._-]{1,128}$");

}  // namespace

nlohmann::json connection_json(const Connection& c) {
  auto cred = c.current();
  json j = {{"id", c.id}, {"integration", c.integration}, {"grant", c.grant}};
  {
    std::lock_guard lock(c.lifecycle->mutex);
    const auto& lc = *c.lifecycle;
    j["state"] = lc.refreshing ? "refreshing" : state_name(lc.state);
    j["last_refresh_at"] = time_or_null(lc.last_refresh_at);
    j["last_error"] = lc.last_error.empty() ? json(nullptr) : json(lc.last_error);
  }
  j["access_expires_at"] =
      cred && !cred->value.empty() ? time_or_null(cred->expires_at) : json(nullptr);
  json refresh_expires = nullptr;
  if (cred && !cred->refresh_token.empty() && c.policy->oauth &&
      c.policy->oauth->refresh_token_lifetime && cred->issued_at != Clock::time_point{})
    refresh_expires = iso_time(cred->issued_at + *c.policy->oauth->refresh_token_lifetime);
  j["refresh_expires_at"] = refresh_expires;
  // The vendor's cool-down (SPEC 5.1), while it lasts.
  auto until_ms = c.lifecycle->rate_limited_until_ms.load();
  auto until = Clock::time_point(std::chrono::milliseconds(until_ms));
  j["rate_limited_until"] = until > Clock::now() ? json(iso_time(until)) : json(nullptr);
  j["vars"] = c.vars;
  return j;
}

asio::awaitable<AdminResponse> AdminServer::connections_api(const AdminRequest& req,
                                                            const std::string& path) {
  static const std::string prefix = "/admin/connections";
  if (path.rfind(prefix, 0) != 0)
    co_return error_response(http::status::not_found, "not_found", "no admin endpoint " + path);
  auto rest = path.substr(prefix.size());
  auto routes = ctx_.shared.runtime.load()->routes;
  if (rest.empty() || rest == "/") {
    if (req.method() != http::verb::get)
      co_return error_response(http::status::method_not_allowed, "method_not_allowed", "use GET");
    json list = json::array();
    for (const auto& [id, c] : routes->connections) list.push_back(connection_json(*c));
    co_return json_response(http::status::ok, list);
  }
  rest = rest.substr(1);
  auto slash = rest.find('/');
  std::string id = rest.substr(0, slash);
  std::string action = slash == std::string::npos ? "" : rest.substr(slash + 1);
  if (!std::regex_match(id, kConnectionId))
    co_return error_response(http::status::bad_request, "bad_request",
                             "connection ids match ^[A-Za-z0-9._-]{1,128}$");
  auto it = routes->connections.find(id);
  if (action.empty() && req.method() == http::verb::put) co_return co_await put_connection(req, id);
  if (action == "authorize" && req.method() == http::verb::post) co_return authorize(req, id);
  if (it == routes->connections.end())
    co_return error_response(http::status::not_found, "unknown_connection", "no connection " + id);
  auto conn = it->second;
  if (action.empty() && req.method() == http::verb::get)
    co_return json_response(http::status::ok, connection_json(*conn));
  if (action.empty() && req.method() == http::verb::delete_)
    co_return co_await delete_connection(id);
  if (action == "refresh" && req.method() == http::verb::post) {
    if (conn->grant == "static")
      co_return error_response(http::status::conflict, "not_refreshable",
                               "connection " + id + " has a static credential");
    auto result = co_await ctx_.cache->refresh_now(conn, RefreshTrigger::forced);
    if (!result.credential) {
      std::string code;
      {
        std::lock_guard lock(conn->lifecycle->mutex);
        code = conn->lifecycle->last_error;
      }
      co_return json_response(
          http::status::bad_gateway,
          {{"error", code.empty() ? "refresh_failed" : code}, {"message", result.error}});
    }
    co_return json_response(
        http::status::ok,
        {{"id", id}, {"access_expires_at", time_or_null(result.credential->expires_at)}});
  }
  co_return error_response(http::status::method_not_allowed, "method_not_allowed",
                           std::string(req.method_string()) + " " + path + " is not supported");
}

asio::awaitable<AdminResponse> AdminServer::put_connection(const AdminRequest& req,
                                                           const std::string& id) {
  auto body = json::parse(req.body(), nullptr, false);
  if (!body.is_object() || !body.contains("integration") || !body["integration"].is_string())
    co_return error_response(http::status::bad_request, "bad_request",
                             "expected JSON {integration, vars, grant, credentials}");
  ConnectionConfig cc;
  cc.id = id;
  cc.integration = body["integration"].get<std::string>();
  cc.grant = body.value("grant", "static");
  for (const char* key : {"vars", "credentials"}) {
    if (!body.contains(key)) continue;
    if (!body[key].is_object())
      co_return error_response(http::status::bad_request, "bad_request",
                               std::string(key) + " must be an object");
    StringMap& out = std::string(key) == "vars" ? cc.vars : cc.credentials;
    for (auto it = body[key].begin(); it != body[key].end(); ++it) {
      if (!it->is_string())
        co_return error_response(http::status::bad_request, "bad_request",
                                 std::string(key) + "." + it.key() + " must be a string");
      out[it.key()] = it->get<std::string>();
    }
  }
  auto routes = ctx_.shared.runtime.load()->routes;
  auto iit = routes->integrations.find(cc.integration);
  if (iit == routes->integrations.end())
    co_return error_response(http::status::bad_request, "bad_request",
                             "no integration named \"" + cc.integration + "\"");
  std::string key, error;
  auto conn = make_connection(cc, *iit->second, &key, &error);
  if (!conn) co_return error_response(http::status::bad_request, "bad_request", key + ": " + error);
  auto before = routes->connections.find(id);
  bool existed = before != routes->connections.end();
  std::string previous = "none";
  if (existed) {
    std::lock_guard lock(before->second->lifecycle->mutex);
    previous = state_name(before->second->lifecycle->state);
  }
  conn->created_at_runtime = true;
  auto record = make_record(*conn, conn->current().get());
  // A store that cannot take the record now keeps it pending (retried, /readyz says so):
  // the connection serves from memory meanwhile (SPEC 6.9).
  bool stored = co_await ctx_.writer->save(std::move(record),
                                           ctx_.shared.runtime.load()->config.refresh.timeout);
  if (!stored)
    log::event(log::Level::warn, "the token store has not taken the connection yet; pending",
               {{"connection", id}});
  add_connection(conn);
  log::event(log::Level::info, existed ? "connection replaced" : "connection created",
             {{"connection", id}, {"integration", cc.integration}, {"grant", cc.grant}});
  if (cc.grant == "refresh_token" || cc.grant == "client_credentials" || cc.grant == "password")
    co_await ctx_.cache->refresh_now(conn, RefreshTrigger::initial);
  announce("connected", *conn, previous);
  co_return json_response(existed ? http::status::ok : http::status::created,
                          connection_json(*conn));
}

asio::awaitable<AdminResponse> AdminServer::delete_connection(const std::string& id) {
  auto rt = ctx_.shared.runtime.load();
  auto conn = rt->routes->connections.at(id);
  const auto& oauth = conn->policy->oauth;
  auto cred = conn->current();
  bool revoked = false;
  auto iit = rt->routes->integrations.find(conn->integration);
  bool can_revoke =
      oauth && (oauth->revoke_url || (iit != rt->routes->integrations.end() &&
                                      !iit->second->config.overrides.revoke_url.empty()));
  if (can_revoke && cred && (!cred->refresh_token.empty() || !cred->access_token.empty())) {
    // Best effort (RFC 7009): the vendor forgets the grant, the refresh token if there is one
    // (which takes its access tokens with it); the gateway forgets it regardless.
    bool refresh = !cred->refresh_token.empty();
    std::string error;
    auto r = build_revoke_request(
        *conn,
        iit != rt->routes->integrations.end() ? iit->second->config.overrides : UrlOverrides{},
        refresh ? cred->refresh_token : cred->access_token,
        refresh ? "refresh_token" : "access_token", &error);
    if (r) {
      auto result = co_await fetch_token(co_await asio::this_coro::executor, rt->client_tls, *r,
                                         rt->config.refresh.timeout);
      // RFC 7009 2.2: 200 with any (or no) body is success.
      revoked = result.status == 200;
    }
  }
  if (!co_await ctx_.writer->remove(id, rt->config.refresh.timeout))
    log::event(log::Level::warn, "the token store has not forgotten the connection yet; pending",
               {{"connection", id}});
  remove_connection(id);
  std::string previous;
  {
    std::lock_guard lock(conn->lifecycle->mutex);
    previous = state_name(conn->lifecycle->state);
  }
  announce("deleted", *conn, previous);
  conn->publish(nullptr);
  log::event(log::Level::info, "connection deleted", {{"connection", id}, {"revoked", revoked}});
  AdminResponse res{http::status::no_content, 11};
  co_return res;
}

void AdminServer::announce(const char* event, const Connection& c, std::string previous) const {
  if (!ctx_.health) return;
  std::string state = "deleted";
  if (std::string_view(event) != "deleted") {
    std::lock_guard lock(c.lifecycle->mutex);
    state = state_name(c.lifecycle->state);
  }
  auto cred = c.current();
  ctx_.health(
      health_event_of(c, event, std::move(state), std::move(previous), cred ? cred->version : 0));
}

}  // namespace gw
