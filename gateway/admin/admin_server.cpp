#include "gateway/admin/admin_server.hpp"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>
#include <nlohmann/json.hpp>

#include <ctime>
#include <regex>

#include "gateway/auth/crypto.hpp"
#include "gateway/auth/token_fetch.hpp"
#include "gateway/observability/log.hpp"
#include "gateway/observability/metrics.hpp"

namespace gw {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using json = nlohmann::json;
constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);
constexpr auto kTicketLifetime = std::chrono::seconds(600);
constexpr const char* kBindingCookie = "gw_onboarding";

namespace {

AdminResponse json_response(http::status status, const json& body) {
  AdminResponse res{status, 11};
  res.set(http::field::content_type, "application/json");
  res.set(http::field::cache_control, "no-store");
  res.body() = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return res;
}

AdminResponse error_response(http::status status, std::string_view code, std::string_view msg) {
  return json_response(status, {{"error", code}, {"message", msg}});
}

std::string html_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

AdminResponse html_page(http::status status, const std::string& title, const std::string& text) {
  AdminResponse res{status, 11};
  res.set(http::field::content_type, "text/html; charset=utf-8");
  res.set(http::field::cache_control, "no-store");
  res.set("Content-Security-Policy", "default-src 'none'");
  res.body() = "<!doctype html><html><head><meta charset=\"utf-8\"><title>" + html_escape(title) +
               "</title></head><body><h1 id=\"title\">" + html_escape(title) +
               "</h1><p id=\"message\">" + html_escape(text) + "</p></body></html>";
  return res;
}

}  // namespace

AdminResponse AdminServer::confirm_page(const Ticket& t) const {
  AdminResponse res = html_page(http::status::ok, "Confirm the connection", "");
  res.body() =
      "<!doctype html><html><head><meta charset=\"utf-8\"><title>Confirm the connection</title>"
      "</head><body><h1 id=\"title\">Confirm the connection</h1><p id=\"message\">Connect " +
      html_escape(t.connection_id) + " (" + html_escape(t.integration) +
      ") to the account you just approved? Only continue if you started this onboarding and "
      "approved access at the vendor a moment ago.</p><form method=\"post\" "
      "action=\"/oauth/callback\"><input type=\"hidden\" name=\"confirm\" value=\"" +
      t.confirm + "\"><button id=\"confirm\" type=\"submit\">Connect</button></form></body></html>";
  return res;
}

namespace {

std::string iso_time(Clock::time_point t) {
  auto secs = Clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

json time_or_null(Clock::time_point t) {
  if (t == Clock::time_point::max() || t == Clock::time_point::min() || t == Clock::time_point{})
    return nullptr;
  return iso_time(t);
}

std::string random_token() {
  std::string out;
  static constexpr char hex[] = "0123456789abcdef";
  for (unsigned char c : crypto::random_bytes(24)) {
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  return out;
}

std::string cookie_value(const AdminRequest& req, std::string_view name) {
  std::string_view header(req[http::field::cookie].data(), req[http::field::cookie].size());
  std::size_t pos = 0;
  while (pos < header.size()) {
    auto end = header.find(';', pos);
    auto part =
        header.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
    while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
    if (part.substr(0, name.size()) == name && part.size() > name.size() &&
        part[name.size()] == '=')
      return std::string(part.substr(name.size() + 1));
    if (end == std::string_view::npos) break;
    pos = end + 1;
  }
  return "";
}

bool equal_constant_time(std::string_view a, std::string_view b) {
  // Hashing first makes the comparison's time independent of both lengths.
  unsigned char da[SHA256_DIGEST_LENGTH], db[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(a.data()), a.size(), da);
  SHA256(reinterpret_cast<const unsigned char*>(b.data()), b.size(), db);
  return CRYPTO_memcmp(da, db, sizeof da) == 0;
}

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
  j["vars"] = c.vars;
  return j;
}

AdminServer::AdminServer(asio::io_context& ioc, AdminContext context,
                         std::unique_ptr<tcp::acceptor>& acceptor)
    : ioc_(ioc), ctx_(std::move(context)), acceptor_(acceptor) {}

void AdminServer::start() {
  asio::co_spawn(ioc_, accept_loop(), asio::detached);
}

void AdminServer::stop() {
  boost::system::error_code ignored;
  acceptor_->close(ignored);
}

asio::awaitable<void> AdminServer::accept_loop() {
  for (;;) {
    auto [ec, socket] = co_await acceptor_->async_accept(nothrow);
    if (ec) {
      if (!acceptor_->is_open()) co_return;
      // Out of descriptors or similar: pause instead of spinning on the failing accept.
      asio::steady_timer pause(ioc_, std::chrono::milliseconds(50));
      co_await pause.async_wait(nothrow);
      continue;
    }
    // Probes, scrapes and operators need few connections; past the cap a new one is closed at
    // once, so the admin listener can never take the proxy's descriptors.
    if (open_ >= kMaxAdminConnections) {
      boost::system::error_code ignored;
      socket.close(ignored);
      continue;
    }
    ++open_;
    asio::co_spawn(ioc_, serve(std::move(socket)), [this](std::exception_ptr) { --open_; });
  }
}

asio::awaitable<void> AdminServer::serve(tcp::socket socket) {
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(1024 * 1024);
    stream.expires_after(std::chrono::seconds(30));
    auto [ec, n] = co_await http::async_read(stream, buffer, parser, nothrow);
    if (ec) break;
    auto& req = parser.get();
    AdminResponse res;
    try {
      res = co_await dispatch(req);
    } catch (const nlohmann::json::exception&) {
      // A field of the wrong type ({"integration": 5}): a clear 400, never a dropped answer.
      res = error_response(http::status::bad_request, "bad_request",
                           "a JSON field has the wrong type");
    }
    res.keep_alive(req.keep_alive());
    res.prepare_payload();
    stream.expires_after(std::chrono::seconds(30));
    auto [wec, wn] = co_await http::async_write(stream, res, nothrow);
    if (wec || !req.keep_alive()) break;
  }
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

bool AdminServer::authorized(const AdminRequest& req) const {
  const auto& token = ctx_.shared.runtime.load()->config.admin.token;
  auto header = req[http::field::authorization];
  std::string_view given(header.data(), header.size());
  if (given.substr(0, 7) != "Bearer ")
    given = {};
  else
    given.remove_prefix(7);
  // Compared even when absent, so a missing header takes as long as a wrong one.
  bool ok = equal_constant_time(given, token);
  return ok && !given.empty();
}

asio::awaitable<AdminResponse> AdminServer::dispatch(const AdminRequest& req) {
  std::string target(req.target());
  auto q = target.find('?');
  std::string path = target.substr(0, q);
  if (req.method() == http::verb::get && path == "/healthz") {
    if (co_await loops_answer()) co_return json_response(http::status::ok, {{"status", "ok"}});
    co_return json_response(
        http::status::service_unavailable,
        {{"status", "stuck"}, {"reasons", {"an event loop did not answer within 2s"}}});
  }
  if (req.method() == http::verb::get && path == "/readyz") {
    std::vector<std::string> reasons;
    if (ctx_.shared.draining.load()) reasons.push_back("shutting down");
    if (auto* lock = dynamic_cast<RefreshLock*>(ctx_.store.get())) {
      bool reachable = true;  // a shared store is asked, not assumed
      co_await lock->read("readyz-probe", &reachable);
      if (!reachable) reasons.push_back("token store (redis) unreachable");
    } else if (!ctx_.store->reachable()) {
      reasons.push_back("token store unreachable");
    }
    if (reasons.empty()) co_return json_response(http::status::ok, {{"status", "ready"}});
    co_return json_response(http::status::service_unavailable,
                            {{"status", "not ready"}, {"reasons", reasons}});
  }
  if (req.method() == http::verb::get && path == "/metrics") {
    metrics::Snapshot snap;
    snap.inflight = static_cast<double>(ctx_.shared.inflight.load());
    snap.downstream_connections = static_cast<double>(ctx_.shared.downstream_connections.load());
    snap.upstream_idle = static_cast<double>(ctx_.shared.upstream.idle.load());
    snap.upstream_busy = static_cast<double>(ctx_.shared.upstream.busy.load());
    std::map<std::pair<std::string, std::string>, double> states;
    for (const auto& [id, c] : ctx_.shared.runtime.load()->routes->connections) {
      std::lock_guard lock(c->lifecycle->mutex);
      auto state = c->lifecycle->refreshing ? "refreshing" : state_name(c->lifecycle->state);
      states[{c->integration, state}] += 1;
    }
    for (const auto& [key, n] : states) snap.connections.emplace_back(key.first, key.second, n);
    AdminResponse res{http::status::ok, 11};
    res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
    res.body() = metrics::render(snap);
    co_return res;
  }
  if (path.rfind("/admin/", 0) == 0) {
    if (ctx_.shared.runtime.load()->config.admin.token.empty())
      co_return error_response(http::status::forbidden, "forbidden",
                               "the admin API is disabled: admin.token is not set");
    if (!authorized(req)) {
      auto res = error_response(http::status::unauthorized, "unauthorized",
                                "a valid admin Bearer token is required");
      res.set(http::field::www_authenticate, "Bearer");
      co_return res;
    }
    co_return co_await connections_api(req, path);
  }
  if (req.method() == http::verb::get && path.rfind("/oauth/start/", 0) == 0)
    co_return oauth_start(req, path.substr(13));
  if ((req.method() == http::verb::get || req.method() == http::verb::post) &&
      path == "/oauth/callback")
    co_return co_await oauth_callback(req);
  co_return error_response(http::status::not_found, "not_found", "no admin endpoint " + path);
}

asio::awaitable<bool> AdminServer::loops_answer() {
  // Each event loop must run a posted no-op; a loop stuck in a long computation or a
  // deadlock fails the liveness probe.
  struct Round {
    std::atomic<std::size_t> left;
  };
  auto round = std::make_shared<Round>();
  round->left = ctx_.loops.size();
  auto timer = std::make_shared<asio::steady_timer>(ioc_, std::chrono::seconds(2));
  for (auto* loop : ctx_.loops)
    asio::post(*loop, [round, timer, this] {
      if (--round->left == 0) asio::post(ioc_, [timer] { timer->cancel(); });
    });
  co_await timer->async_wait(nothrow);
  co_return round->left.load() == 0;
}

void AdminServer::publish_routes(std::shared_ptr<const Routes> routes) {
  auto rt = std::make_shared<Runtime>(*ctx_.shared.runtime.load());
  rt->routes = std::move(routes);
  ctx_.shared.runtime.store(rt);
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
  bool existed = routes->connections.count(id) > 0;
  conn->created_at_runtime = true;
  auto record = make_record(*conn, conn->current().get());
  if (!ctx_.store->save(record))
    co_return error_response(http::status::internal_server_error, "store_error",
                             "the token store could not be written");
  publish_routes(with_connection(*routes, conn));
  log::event(log::Level::info, existed ? "connection replaced" : "connection created",
             {{"connection", id}, {"integration", cc.integration}, {"grant", cc.grant}});
  if (cc.grant == "refresh_token" || cc.grant == "client_credentials" || cc.grant == "password")
    co_await ctx_.cache->refresh_now(conn, RefreshTrigger::initial);
  co_return json_response(existed ? http::status::ok : http::status::created,
                          connection_json(*conn));
}

asio::awaitable<AdminResponse> AdminServer::delete_connection(const std::string& id) {
  auto rt = ctx_.shared.runtime.load();
  auto conn = rt->routes->connections.at(id);
  const auto& oauth = conn->policy->oauth;
  auto cred = conn->current();
  bool revoked = false;
  if (oauth && oauth->revoke_url && cred && !cred->access_token.empty()) {
    // Best effort: the vendor forgets the token; the gateway forgets it regardless.
    std::string missing;
    StringMap extra{{"access_token", cred->access_token}};
    auto url = oauth->revoke_url->render(
        [&](std::string_view n) { return lookup_placeholder(*conn, extra, n); }, &missing);
    if (url) {
      TokenRequest r{
          oauth->revoke_method, *url, {{"Authorization", "Bearer " + cred->access_token}}, ""};
      auto result = co_await fetch_token(co_await asio::this_coro::executor, rt->client_tls, r,
                                         rt->config.refresh.timeout);
      revoked = result.status / 100 == 2 || result.error == "malformed_token_response";
    }
  }
  ctx_.store->remove(id);
  publish_routes(without_connection(*rt->routes, id));
  conn->publish(nullptr);
  log::event(log::Level::info, "connection deleted", {{"connection", id}, {"revoked", revoked}});
  AdminResponse res{http::status::no_content, 11};
  co_return res;
}

AdminResponse AdminServer::authorize(const AdminRequest& req, const std::string& id) {
  auto rt = ctx_.shared.runtime.load();
  auto body = json::parse(req.body().empty() ? "{}" : req.body(), nullptr, false);
  if (!body.is_object())
    return error_response(http::status::bad_request, "bad_request",
                          "expected JSON {integration, vars}");
  std::string integration = body.value("integration", "");
  if (integration.empty())
    if (auto it = rt->routes->connections.find(id); it != rt->routes->connections.end())
      integration = it->second->integration;
  auto iit = rt->routes->integrations.find(integration);
  if (iit == rt->routes->integrations.end())
    return error_response(http::status::bad_request, "bad_request",
                          "no integration named \"" + integration + "\"");
  const auto& policy = *iit->second->policy;
  if (!policy.oauth || !policy.oauth->grants.count("authorization_code") ||
      (policy.oauth->authorize.url.empty() && iit->second->config.overrides.authorize_url.empty()))
    return error_response(http::status::bad_request, "bad_request",
                          "policy " + policy.name + " has no authorization code grant");
  if (rt->config.admin.public_url.empty())
    return error_response(http::status::conflict, "bad_request",
                          "admin.public_url must be set for onboarding");
  Ticket t;
  t.connection_id = id;
  t.integration = integration;
  if (body.contains("vars") && body["vars"].is_object())
    for (auto it = body["vars"].begin(); it != body["vars"].end(); ++it)
      if (it->is_string()) t.vars[it.key()] = it->get<std::string>();
  // Check the vars now, not after the user consented.
  Connection probe;
  probe.id = id;
  if (auto err = prepare_connection(probe, *iit->second, t.vars); !err.empty())
    return error_response(http::status::bad_request, "bad_request", err);
  t.state = random_token();
  t.binding = random_token();
  t.expires = std::chrono::steady_clock::now() + kTicketLifetime;
  auto ticket = random_token();
  for (auto it = tickets_.begin(); it != tickets_.end();)  // forget expired tickets
    it = it->second.expires < std::chrono::steady_clock::now() ? tickets_.erase(it) : std::next(it);
  tickets_[ticket] = t;
  return json_response(http::status::ok,
                       {{"start_url", rt->config.admin.public_url + "/oauth/start/" + ticket},
                        {"expires_in", kTicketLifetime.count()}});
}

AdminResponse AdminServer::oauth_start(const AdminRequest&, const std::string& ticket_id) {
  auto it = tickets_.find(ticket_id);
  if (it == tickets_.end() || it->second.used ||
      it->second.expires < std::chrono::steady_clock::now())
    return html_page(http::status::bad_request, "Link expired",
                     "This onboarding link is unknown, used or expired. Ask for a new one.");
  auto& t = it->second;
  auto rt = ctx_.shared.runtime.load();
  auto iit = rt->routes->integrations.find(t.integration);
  if (iit == rt->routes->integrations.end())
    return html_page(http::status::bad_request, "Unknown integration", t.integration);
  Connection probe;
  probe.id = t.connection_id;
  prepare_connection(probe, *iit->second, t.vars);
  const auto& oauth = *iit->second->policy->oauth;
  StringMap extra{{"redirect_uri", rt->config.admin.public_url + "/oauth/callback"},
                  {"state", t.state}};
  auto lookup = [&](std::string_view n) { return lookup_placeholder(probe, extra, n); };
  std::string missing;
  const auto& override_url = iit->second->config.overrides.authorize_url;
  auto base = override_url.empty() ? oauth.authorize.url.render(lookup, &missing) : override_url;
  if (!base)
    return html_page(http::status::bad_request, "Cannot start", "no value for {" + missing + "}");
  std::vector<std::pair<std::string, std::string>> params;
  for (const auto& [k, tpl] : oauth.authorize.params) {
    auto v = tpl.render(lookup, &missing);
    if (!v)
      return html_page(http::status::bad_request, "Cannot start", "no value for {" + missing + "}");
    params.emplace_back(k, *v);
  }
  std::string location =
      *base + (base->find('?') == std::string::npos ? "?" : "&") + form_encode(params);
  t.started = true;
  AdminResponse res{http::status::found, 11};
  res.set(http::field::location, location);
  res.set(http::field::cache_control, "no-store");
  res.set(http::field::set_cookie,
          std::string(kBindingCookie) + "=" + t.binding +
              "; Path=/oauth; Max-Age=600; HttpOnly; Secure; SameSite=Lax");
  return res;
}

asio::awaitable<AdminResponse> AdminServer::oauth_callback(const AdminRequest& req) {
  auto parsed = boost::urls::parse_origin_form(req.target());
  if (!parsed) co_return html_page(http::status::bad_request, "Bad callback", "malformed request");
  std::string code, state, error, confirm;
  for (auto p : parsed->params()) {
    if (p.key == "code")
      code = p.value;
    else if (p.key == "state")
      state = p.value;
    else if (p.key == "error")
      error = p.value;
  }
  bool confirming = req.method() == http::verb::post;
  if (confirming) {
    // The confirmation form: confirm=TOKEN, form-encoded.
    std::string form = "/?" + req.body();
    if (auto body = boost::urls::parse_origin_form(form))
      for (auto p : body->params())
        if (p.key == "confirm") confirm = p.value;
  }
  auto rt = ctx_.shared.runtime.load();
  // The ticket: by state where the vendor echoes it, else by the browser's binding cookie.
  auto binding = cookie_value(req, kBindingCookie);
  auto it = tickets_.end();
  for (auto t = tickets_.begin(); t != tickets_.end(); ++t) {
    auto iit = rt->routes->integrations.find(t->second.integration);
    bool by_cookie = iit != rt->routes->integrations.end() &&
                     iit->second->policy->oauth->authorize.state == StateMode::cookie;
    if (by_cookie ? (!binding.empty() && equal_constant_time(binding, t->second.binding))
                  : (!state.empty() && equal_constant_time(state, t->second.state))) {
      it = t;
      break;
    }
  }
  if (it == tickets_.end())
    co_return html_page(http::status::bad_request, "Authorization failed",
                        "This callback matches no onboarding in progress (wrong state or an "
                        "expired link). Nothing was changed.");
  Ticket& t = it->second;
  if (t.used || !t.started || t.expires < std::chrono::steady_clock::now())
    co_return html_page(
        http::status::bad_request, "Authorization failed",
        "This onboarding link was already used or has expired. Nothing was changed.");
  if (confirming || !code.empty()) {
    bool by_cookie = false;
    if (auto iit = rt->routes->integrations.find(t.integration);
        iit != rt->routes->integrations.end())
      by_cookie = iit->second->policy->oauth->authorize.state == StateMode::cookie;
    if (by_cookie && !confirming) {
      // Nothing ties this code to the person who consented: ask them on our own page, with a
      // token only that page knows (a cross-site form carries no Lax cookie).
      t.pending_code = code;
      t.confirm = random_token();
      co_return confirm_page(t);
    }
    if (by_cookie) {
      if (t.confirm.empty() || !equal_constant_time(confirm, t.confirm))
        co_return html_page(http::status::bad_request, "Authorization failed",
                            "This confirmation does not match the onboarding in progress. "
                            "Nothing was changed.");
      code = t.pending_code;
      error.clear();
    }
  }
  if (confirming && code.empty())
    co_return html_page(http::status::bad_request, "Authorization failed",
                        "Nothing to confirm. Nothing was changed.");
  t.used = true;
  if (!error.empty() || code.empty())
    co_return html_page(http::status::bad_request, "Authorization refused",
                        "The vendor did not grant access (" + (error.empty() ? "no code" : error) +
                            "). Nothing was changed.");
  auto iit = rt->routes->integrations.find(t.integration);
  if (iit == rt->routes->integrations.end())  // a reload removed it since the link was made
    co_return html_page(
        http::status::bad_request, "Authorization failed",
        "Integration " + t.integration + " is no longer configured. Nothing was changed.");
  ConnectionConfig cc{t.connection_id, t.integration, t.vars, {}, "authorization_code", ""};
  std::string key, err;
  auto conn = make_connection(cc, *iit->second, &key, &err);
  if (!conn) co_return html_page(http::status::bad_request, "Authorization failed", err);
  StringMap extra{{"code", code},
                  {"redirect_uri", rt->config.admin.public_url + "/oauth/callback"},
                  {"state", t.state}};
  auto request =
      build_token_request(*conn, iit->second->config.overrides, "authorization_code", extra, &err);
  if (!request) co_return html_page(http::status::bad_request, "Authorization failed", err);
  auto result = co_await fetch_token(co_await asio::this_coro::executor, rt->client_tls, *request,
                                     rt->config.refresh.timeout);
  if (result.failure != TokenFailure::none) {
    log::event(
        log::Level::warn, "authorization code exchange failed",
        {{"connection", t.connection_id}, {"error", result.error}, {"status", result.status}});
    co_return html_page(
        http::status::bad_gateway, "Authorization failed",
        "The vendor refused the code exchange (" + result.error + "). Nothing was changed.");
  }
  auto cred = render_credential(*conn, result.access_token, &err);
  if (!cred) co_return html_page(http::status::bad_gateway, "Authorization failed", err);
  auto now = Clock::now();
  cred->refresh_token = result.refresh_token;
  if (!cred->refresh_token.empty()) cred->secrets.push_back(cred->refresh_token);
  cred->issued_at = now;
  auto lifetime = result.expires_in ? result.expires_in : conn->policy->oauth->default_expires_in;
  cred->expires_at = lifetime ? now + *lifetime : Clock::time_point::max();
  cred->version = 1;
  if (auto old = rt->routes->connections.find(t.connection_id);
      old != rt->routes->connections.end())
    if (auto oc = old->second->current()) cred->version = oc->version + 1;
  auto fresh = std::make_shared<const Credential>(std::move(*cred));
  {
    std::lock_guard lock(conn->lifecycle->mutex);
    conn->lifecycle->state = ConnectionState::ready;
    conn->lifecycle->last_refresh_at = now;
  }
  conn->created_at_runtime = true;
  auto record = make_record(*conn, fresh.get());
  if (!ctx_.store->save(record))
    co_return html_page(http::status::internal_server_error, "Authorization failed",
                        "The token store could not be written. Nothing was changed.");
  conn->publish(fresh);
  publish_routes(with_connection(*ctx_.shared.runtime.load()->routes, conn));
  log::event(log::Level::info, "connection authorized",
             {{"connection", t.connection_id}, {"integration", t.integration}});
  co_return html_page(
      http::status::ok, "Connected",
      "Connection " + t.connection_id + " (" + t.integration + ") is now connected.");
}

}  // namespace gw
