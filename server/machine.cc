#include "server/machine.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"

namespace attnserve::server {
namespace {

std::optional<uint64_t> ReadCgroupLimit(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  return ParseCgroupMemoryLimit(text.str());
}

}  // namespace

CgroupFile CgroupLimitFile(const std::string& proc_self_cgroup_line) {
  // "hierarchy-id:controllers:path"; v2 is "0::path".
  const size_t first = proc_self_cgroup_line.find(':');
  if (first == std::string::npos) return {};
  const size_t second = proc_self_cgroup_line.find(':', first + 1);
  if (second == std::string::npos) return {};
  const std::string controllers =
      proc_self_cgroup_line.substr(first + 1, second - first - 1);
  const std::string path = proc_self_cgroup_line.substr(second + 1);
  if (path.empty() || path[0] != '/' || path.find("..") != std::string::npos) {
    return {};
  }
  if (path == "/") return {};  // The root: read by the caller's fallback.
  if (controllers.empty() && proc_self_cgroup_line.substr(0, first) == "0") {
    return {"/sys/fs/cgroup" + path + "/memory.max"};
  }
  for (size_t at = 0; at <= controllers.size();) {
    size_t end = controllers.find(',', at);
    if (end == std::string::npos) end = controllers.size();
    if (controllers.substr(at, end - at) == "memory") {
      return {"/sys/fs/cgroup/memory" + path + "/memory.limit_in_bytes"};
    }
    at = end + 1;
  }
  return {};
}

int HardwareThreads() {
  const unsigned hardware = std::thread::hardware_concurrency();
  return hardware == 0 ? 1 : static_cast<int>(hardware);
}

std::optional<uint64_t> ParseCgroupMemoryLimit(const std::string& text) {
  uint64_t bytes = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &bytes) ||
      bytes == 0) {
    return std::nullopt;
  }
  return bytes;
}

uint64_t MemoryBudgetFor(uint64_t physical_bytes,
                         std::optional<uint64_t> cgroup_limit) {
  if (physical_bytes == 0) return 0;
  const uint64_t usable = cgroup_limit.has_value()
                              ? std::min(physical_bytes, *cgroup_limit)
                              : physical_bytes;
  return static_cast<uint64_t>(static_cast<double>(usable) *
                               kDefaultMemoryBudgetShare);
}

uint64_t DefaultMemoryBudget() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGE_SIZE);
  const uint64_t physical =
      pages > 0 && page_size > 0
          ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size)
          : 0;
  // The process's own cgroup (e.g. a systemd unit's MemoryMax=), then the
  // root of the hierarchy it sees (a container's cgroup namespace).
  std::optional<uint64_t> limit;
  std::ifstream cgroups("/proc/self/cgroup");
  for (std::string line; !limit.has_value() && std::getline(cgroups, line);) {
    const CgroupFile file = CgroupLimitFile(line);
    if (!file.path.empty()) limit = ReadCgroupLimit(file.path);
  }
  for (const char* root : {"/sys/fs/cgroup/memory.max",
                           "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    if (!limit.has_value()) limit = ReadCgroupLimit(root);
  }
  return MemoryBudgetFor(physical, limit);
}

}  // namespace attnserve::server
