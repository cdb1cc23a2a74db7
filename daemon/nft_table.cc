#include "daemon/nft_table.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstring>

#include "migration/socket.h"

namespace encmig {

std::string nft_ruleset(const InterceptRule& r) {
  char mark[16];
  std::snprintf(mark, sizeof mark, "0x%08x", kEncmigMark);
  std::string uids;
  for (uid_t u : r.uids) uids += (uids.empty() ? "" : ", ") + std::to_string(u);
  std::string t = std::string("table inet ") + kNftTable + " {}\n" + "delete table inet " + kNftTable + "\n";
  t += std::string("table inet ") + kNftTable + " {\n";
  t += "  chain output {\n";
  t += "    type nat hook output priority -100; policy accept;\n";
  t += std::string("    meta mark ") + mark + " return\n";
  t += "    fib daddr type local return\n";
  t += "    meta skuid { " + uids + " } tcp dport " + std::to_string(r.port_min) + "-" + std::to_string(r.port_max) +
       " redirect to :" + std::to_string(r.redirect_port) + "\n";
  t += "  }\n}\n";
  return t;
}

namespace {
// Runs nft with `input` on stdin; its stderr is the error.
Status run_nft(const std::string& nft, const std::vector<std::string>& args, const std::string& input) {
  int in[2], err[2];
  if (pipe2(in, O_CLOEXEC) != 0) return make_error(ErrorCode::kIo, "pipe: " + errno_text(errno));
  if (pipe2(err, O_CLOEXEC) != 0) {
    close(in[0]), close(in[1]);
    return make_error(ErrorCode::kIo, "pipe: " + errno_text(errno));
  }
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(nft.c_str()));
  for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(err[1], 2);
    dup2(err[1], 1);
    char* envp[] = {nullptr};
    execve(nft.c_str(), argv.data(), envp);
    _exit(127);
  }
  close(in[0]);
  close(err[1]);
  if (pid < 0) {
    close(in[1]), close(err[0]);
    return make_error(ErrorCode::kIo, "fork: " + errno_text(errno));
  }
  (void)write_all(in[1], reinterpret_cast<const uint8_t*>(input.data()), input.size());
  close(in[1]);
  std::string out;
  char buf[512];
  for (ssize_t n; (n = read(err[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR);)
    if (n > 0 && out.size() < 4096) out.append(buf, size_t(n));
  close(err[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {};
  while (!out.empty() && std::isspace(static_cast<unsigned char>(out.back()))) out.pop_back();
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127) out = "cannot run " + nft + " (install nftables)";
  return make_error(ErrorCode::kIo, "nft: " + (out.empty() ? "exit " + std::to_string(WEXITSTATUS(status)) : out));
}
}  // namespace

Status nft_install(const InterceptRule& r, const std::string& nft) { return run_nft(nft, {"-f", "-"}, nft_ruleset(r)); }

Status nft_remove(const std::string& nft) {
  return run_nft(nft, {"-f", "-"}, std::string("table inet ") + kNftTable + " {}\ndelete table inet " + kNftTable + "\n");
}

namespace {
// Calls fn(key, value text) for each `key = value` line of qemu.conf that is
// not a comment; the value text starts after the '=' and its blanks.
template <typename Fn>
void for_each_setting(const std::string& text, Fn fn) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
    size_t i = line.find_first_not_of(" \t");
    if (i == std::string::npos || line[i] == '#') continue;
    size_t eq = line.find('=', i);
    if (eq == std::string::npos) continue;
    std::string key = line.substr(i, eq - i);
    while (!key.empty() && std::isspace(static_cast<unsigned char>(key.back()))) key.pop_back();
    size_t v = line.find_first_not_of(" \t", eq + 1);
    fn(key, v == std::string::npos ? std::string() : line.substr(v));
  }
}
}  // namespace

void parse_qemu_conf_ports(const std::string& text, uint16_t& port_min, uint16_t& port_max) {
  for_each_setting(text, [&](const std::string& key, const std::string& value) {
    if (key != "migration_port_min" && key != "migration_port_max") return;
    long n = 0;
    size_t digits = 0;
    while (digits < value.size() && std::isdigit(static_cast<unsigned char>(value[digits])) && digits < 6)
      n = n * 10 + (value[digits++] - '0');
    if (digits == 0 || n < 1 || n > 65535) return;
    (key == "migration_port_min" ? port_min : port_max) = uint16_t(n);
  });
  if (port_min > port_max) port_min = 49152, port_max = 49215;
}

std::string qemu_conf_string(const std::string& text, const std::string& key) {
  std::string found;  // the last setting wins, as in libvirt's parser
  for_each_setting(text, [&](const std::string& k, const std::string& value) {
    if (k != key || value.empty() || value[0] != '"') return;
    size_t q2 = value.find('"', 1);
    if (q2 != std::string::npos) found = value.substr(1, q2 - 1);
  });
  return found;
}

}  // namespace encmig
