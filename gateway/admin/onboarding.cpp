// OAuth onboarding: the authorize call that makes a ticket, the start URL that sends the
// browser to the vendor, the callback that exchanges the code, and its confirmation page.
#include "gateway/admin/admin_server.hpp"

#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>
#include <nlohmann/json.hpp>

#include "gateway/admin/admin_http.hpp"
#include "gateway/auth/crypto.hpp"
#include "gateway/auth/token_fetch.hpp"
#include "gateway/observability/log.hpp"

namespace gw {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using json = nlohmann::json;
constexpr auto kTicketLifetime = std::chrono::seconds(600);
constexpr const char* kBindingCookie = "gw_onboarding";
using namespace admin_http;

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
  if (policy.oauth->authorize.pkce == PkceMode::s256) t.code_verifier = crypto::pkce_verifier();
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
  if (!t.code_verifier.empty()) {
    params.emplace_back("code_challenge", crypto::pkce_challenge(t.code_verifier));
    params.emplace_back("code_challenge_method", "S256");
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
  std::string code, state, error, description, confirm;
  for (auto p : parsed->params()) {
    if (p.key == "code")
      code = p.value;
    else if (p.key == "state")
      state = p.value;
    else if (p.key == "error")
      error = p.value;
    else if (p.key == "error_description")
      description = p.value.substr(0, 300);  // the vendor's words, shown (escaped) and logged
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
  if (!error.empty() || code.empty()) {
    std::string why = error.empty() ? "no code" : error;
    if (!description.empty()) why += ": " + description;
    log::event(log::Level::warn, "onboarding refused by the vendor",
               {{"connection", t.connection_id}, {"integration", t.integration}, {"error", why}});
    co_return html_page(http::status::bad_request, "Authorization refused",
                        "The vendor did not grant access (" + why + "). Nothing was changed.");
  }
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
                  {"state", t.state},
                  {"code_verifier", t.code_verifier}};
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
  auto now = Clock::now();
  auto lifetime = result.expires_in ? result.expires_in : conn->policy->oauth->default_expires_in;
  std::uint64_t version = 1;
  std::string previous = "none";
  if (auto old = rt->routes->connections.find(t.connection_id);
      old != rt->routes->connections.end()) {
    if (auto oc = old->second->current()) version = oc->version + 1;
    std::lock_guard lock(old->second->lifecycle->mutex);
    previous = state_name(old->second->lifecycle->state);
  }
  auto fresh = make_credential(*conn,
                               {result.access_token, result.refresh_token, now,
                                lifetime ? now + *lifetime : Clock::time_point::max(), version},
                               &err);
  if (!fresh) co_return html_page(http::status::bad_gateway, "Authorization failed", err);
  {
    std::lock_guard lock(conn->lifecycle->mutex);
    conn->lifecycle->state = ConnectionState::ready;
    conn->lifecycle->last_refresh_at = now;
  }
  conn->created_at_runtime = true;
  auto record = make_record(*conn, fresh.get());
  // The code is spent once redeemed: a store that cannot take the record now keeps it
  // pending (retried), and the connection serves from memory meanwhile (SPEC 6.9).
  if (!co_await ctx_.writer->save(std::move(record), rt->config.refresh.timeout))
    log::event(log::Level::warn, "the token store has not taken the connection yet; pending",
               {{"connection", t.connection_id}});
  conn->publish(fresh);
  add_connection(conn);
  log::event(log::Level::info, "connection authorized",
             {{"connection", t.connection_id}, {"integration", t.integration}});
  announce("connected", *conn, previous);
  co_return html_page(
      http::status::ok, "Connected",
      "Connection " + t.connection_id + " (" + t.integration + ") is now connected.");
}

}  // namespace gw
