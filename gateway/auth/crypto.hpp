// AES-256-GCM sealing of token records, digests, MACs and base64, on OpenSSL. Pure functions.
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
// RFC 4648 section 5, without padding (PKCE, JWTs).
std::string base64url(std::string_view data);
std::string sha256(std::string_view data);                             // the 32-byte digest
std::string hmac_sha256(std::string_view key, std::string_view data);  // the 32-byte MAC
std::string hex(std::string_view bytes);                               // lower case
// RFC 7636 4.1-4.2: a fresh code_verifier (43 characters of base64url, 256 random bits), and
// the S256 code_challenge for one.
std::string pkce_verifier();
std::string pkce_challenge(std::string_view verifier);

}  // namespace gw::crypto
