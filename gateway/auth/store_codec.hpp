// How the token stores write a record: JSON (sealed by the caller), and the store key's
// decoding. Shared by the file store (token_store.cpp) and the redis store (redis_store.cpp).
#pragma once
#include <nlohmann/json.hpp>

#include <string>

#include "gateway/auth/token_store.hpp"

namespace gw::store_codec {

nlohmann::json to_json(const TokenRecord& r);
TokenRecord from_json(const nlohmann::json& j);
// The 32-byte key from its base64; StoreError naming `what` otherwise.
std::string decode_key(const std::string& b64, const std::string& what);

}  // namespace gw::store_codec
