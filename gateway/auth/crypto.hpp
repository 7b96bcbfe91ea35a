// AES-256-GCM sealing of token records and base64, on OpenSSL EVP. Pure functions.
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace gw::crypto {

constexpr std::size_t kKeyBytes = 32, kNonceBytes = 12, kTagBytes = 16;

// Nonce (random, 96 bits) || ciphertext || tag; `aad` is authenticated, not stored.
std::string seal(std::string_view key, std::string_view plaintext, std::string_view aad);
// Nullopt when the key is wrong, the data damaged or the aad different.
std::optional<std::string> open(std::string_view key, std::string_view sealed,
                                std::string_view aad);

std::string random_bytes(std::size_t n);
std::string base64(std::string_view data);
std::optional<std::string> unbase64(std::string_view text);

}  // namespace gw::crypto
