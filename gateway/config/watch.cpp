#include "gateway/config/watch.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <system_error>
#include <vector>

namespace gw {

namespace {

void add_file(EVP_MD_CTX* md, const std::filesystem::path& path) {
  auto name = path.string();
  EVP_DigestUpdate(md, name.data(), name.size() + 1);
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    EVP_DigestUpdate(md, "missing", 8);
    return;
  }
  char buf[8192];
  while (in.read(buf, sizeof buf) || in.gcount() > 0)
    EVP_DigestUpdate(md, buf, static_cast<std::size_t>(in.gcount()));
  EVP_DigestUpdate(md, "", 1);
}

}  // namespace

std::string watched_digest(const Config& config) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!md || !EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr)) return {};
  add_file(md.get(), config.file);
  for (const auto& f : config.referenced_files) add_file(md.get(), f);
  for (const auto& dir : config.policy_dirs) {
    std::vector<std::filesystem::path> files;
    std::error_code ec;
    for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
      if (it->path().extension() == ".yaml" || it->path().extension() == ".yml")
        files.push_back(it->path());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) add_file(md.get(), f);
  }
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(md.get(), out, &n);
  return std::string(reinterpret_cast<char*>(out), n);
}

}  // namespace gw
