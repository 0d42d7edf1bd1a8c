// What the kernel says about a process's memory, for tests of how the heap
// and the buffer pools use pages: the transparent huge page mode and the
// mappings of /proc/<pid>/smaps.
//
//   if (TransparentHugePageMode() == "never") GTEST_SKIP() << "...";
//   for (const MemoryMapping& m : ReadSmaps(server_pid)) {
//     if (m.name == "[heap]" && m.HasFlag("hg")) ...;
//   }
#ifndef ATTNSERVE_TESTS_TESTING_PROCESS_MEMORY_H_
#define ATTNSERVE_TESTS_TESTING_PROCESS_MEMORY_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace attnserve::test {

// The kernel's transparent huge page mode: "always", "madvise" or "never"
// ("never" also when it cannot be read).
std::string TransparentHugePageMode();

// One mapping of /proc/<pid>/smaps.
struct MemoryMapping {
  uintptr_t begin = 0;  // [begin, end)
  uintptr_t end = 0;
  std::string name;                   // e.g. "[heap]"; empty when anonymous
  int64_t anon_huge_pages_kb = 0;     // "AnonHugePages:"
  std::vector<std::string> vm_flags;  // "VmFlags:", e.g. "hg" when advised

  bool HasFlag(const std::string& flag) const;
};

// The mappings of process `pid` (0: this process) in address order; empty
// when the file cannot be read. madvise may split a mapping where advice
// starts, so one allocation can be several entries.
std::vector<MemoryMapping> ReadSmaps(pid_t pid = 0);

}  // namespace attnserve::test

#endif  // ATTNSERVE_TESTS_TESTING_PROCESS_MEMORY_H_
