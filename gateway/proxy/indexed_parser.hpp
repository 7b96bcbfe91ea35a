// A request or an answer, parsed without building a Beast message: Beast's parser calls back
// with the start line and each field, which land in one string and an index the caller's
// connection keeps (no allocation per field, none at all once warm), and body bytes go
// straight into the relay buffer, as Beast's buffer_body would put them.
#pragma once
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace gw {

struct IndexedField {
  boost::beast::http::field name;
  std::uint32_t name_at, name_len, value_at, value_len;
};

template <bool isRequest>
class IndexedParser final : public boost::beast::http::basic_parser<isRequest> {
 public:
  using Field = IndexedField;

  // `text` and `fields` are cleared and then hold this message's head.
  IndexedParser(std::string& text, std::vector<Field>& fields) : text_(text), fields_(fields) {
    text_.clear();
    fields_.clear();
  }

  // An answer's status line.
  unsigned status() const { return status_; }
  std::string_view reason() const { return {text_.data(), start_len_}; }
  // A request's start line.
  boost::beast::http::verb method() const { return method_; }
  int version() const { return version_; }  // 11 for HTTP/1.1, 10 for HTTP/1.0
  std::string_view method_string() const { return {text_.data(), method_len_}; }
  std::string_view target() const { return {text_.data() + method_len_, start_len_ - method_len_}; }

  const std::vector<Field>& fields() const { return fields_; }
  std::string_view name(const Field& f) const { return {text_.data() + f.name_at, f.name_len}; }
  std::string_view value(const Field& f) const { return {text_.data() + f.value_at, f.value_len}; }
  // The first field called `name`, empty when there is none.
  std::string_view operator[](boost::beast::http::field name) const {
    for (const auto& f : fields_)
      if (f.name == name) return value(f);
    return {};
  }
  std::string_view operator[](std::string_view name) const {
    for (const auto& f : fields_)
      if (boost::beast::iequals(this->name(f), name)) return value(f);
    return {};
  }
  std::size_t count(boost::beast::http::field name) const {
    std::size_t n = 0;
    for (const auto& f : fields_) n += f.name == name;
    return n;
  }

  // Where the next body bytes go; body_left() says how much of it is still free.
  void body_buffer(char* data, std::size_t size) {
    body_ = data;
    body_left_ = size;
  }
  std::size_t body_left() const { return body_left_; }

 private:
  using error_code = boost::system::error_code;
  using string_view = boost::core::string_view;

  void on_request_impl(boost::beast::http::verb method, string_view method_str, string_view target,
                       int version, error_code&) override {
    method_ = method;
    version_ = version;
    text_.assign(method_str.data(), method_str.size());
    text_.append(target.data(), target.size());
    method_len_ = method_str.size();
    start_len_ = text_.size();
  }

  void on_response_impl(int code, string_view reason, int, error_code&) override {
    status_ = static_cast<unsigned>(code);
    text_.assign(reason.data(), reason.size());
    start_len_ = reason.size();
  }

  void on_field_impl(boost::beast::http::field name, string_view name_string, string_view value,
                     error_code&) override {
    Field f{name, static_cast<std::uint32_t>(text_.size()),
            static_cast<std::uint32_t>(name_string.size()), 0,
            static_cast<std::uint32_t>(value.size())};
    text_.append(name_string.data(), name_string.size());
    f.value_at = static_cast<std::uint32_t>(text_.size());
    text_.append(value.data(), value.size());
    fields_.push_back(f);
  }

  void on_header_impl(error_code&) override {}
  void on_body_init_impl(const boost::optional<std::uint64_t>&, error_code&) override {}

  std::size_t on_body_impl(string_view body, error_code& ec) override {
    return copy_body(body, ec);
  }

  void on_chunk_header_impl(std::uint64_t, string_view, error_code&) override {}

  std::size_t on_chunk_body_impl(std::uint64_t, string_view body, error_code& ec) override {
    return copy_body(body, ec);
  }

  void on_finish_impl(error_code&) override {}

  // As buffer_body's reader: copy what fits; need_buffer when not all of it did.
  std::size_t copy_body(string_view body, error_code& ec) {
    if (!body_) {
      ec = boost::beast::http::error::need_buffer;
      return 0;
    }
    std::size_t n = std::min(body.size(), body_left_);
    if (n) std::memcpy(body_, body.data(), n);
    body_ += n;
    body_left_ -= n;
    if (n != body.size()) ec = boost::beast::http::error::need_buffer;
    return n;
  }

  std::string& text_;
  std::vector<Field>& fields_;
  unsigned status_ = 0;
  int version_ = 11;
  boost::beast::http::verb method_ = boost::beast::http::verb::unknown;
  std::size_t method_len_ = 0, start_len_ = 0;
  char* body_ = nullptr;
  std::size_t body_left_ = 0;
};

using RelayParser = IndexedParser<false>;  // the vendor's answer
using CallerParser = IndexedParser<true>;  // the caller's request

}  // namespace gw
