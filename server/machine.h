// What the server's defaults take from the machine: hardware threads and the
// default memory budget.
//
//   options.memory_budget_bytes = DefaultMemoryBudget();  // 40 % of memory
#ifndef ATTNSERVE_SERVER_MACHINE_H_
#define ATTNSERVE_SERVER_MACHINE_H_

#include <cstdint>
#include <optional>
#include <string>

namespace attnserve::server {

// The number of hardware threads (at least 1).
int HardwareThreads();

// The default --memory_budget_bytes is this share of the memory the process
// may use. The requests admitted at once hold at most the budget, and the
// workspace pool keeps at most the budget of released buffers for reuse, so
// request-driven memory stays below about twice the budget: 80 %, which
// leaves room for gRPC's receive buffers and the rest of the process.
inline constexpr double kDefaultMemoryBudgetShare = 0.4;

// A cgroup memory limit file's contents ("max\n" in cgroup v2 when there is
// none; a number of bytes otherwise): the limit, or nullopt for none or
// unreadable text.
std::optional<uint64_t> ParseCgroupMemoryLimit(const std::string& text);

// The memory limit file of one line of /proc/self/cgroup:
// "0::/system.slice/x.service" -> /sys/fs/cgroup/system.slice/x.service/
// memory.max (v2); "4:memory:/docker/ab" -> /sys/fs/cgroup/memory/docker/ab/
// memory.limit_in_bytes (v1); empty for other controllers and the root.
struct CgroupFile {
  std::string path;
};
CgroupFile CgroupLimitFile(const std::string& proc_self_cgroup_line);

// kDefaultMemoryBudgetShare of the smaller of `physical_bytes` and
// `cgroup_limit`; 0 (unlimited) when `physical_bytes` is 0 (unknown).
uint64_t MemoryBudgetFor(uint64_t physical_bytes,
                         std::optional<uint64_t> cgroup_limit);

// MemoryBudgetFor this machine: physical memory from sysconf, the limit of
// the process's cgroup (v2 memory.max or v1 memory.limit_in_bytes, its own
// then the root it sees) if any.
uint64_t DefaultMemoryBudget();

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_MACHINE_H_
