#include "tests/testing/process_memory.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace attnserve::test {

std::string TransparentHugePageMode() {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string line;
  std::getline(in, line);  // e.g. "always [madvise] never"
  const size_t open = line.find('[');
  const size_t close = line.find(']');
  if (open == std::string::npos || close == std::string::npos || close < open) {
    return "never";
  }
  return line.substr(open + 1, close - open - 1);
}

bool MemoryMapping::HasFlag(const std::string& flag) const {
  return std::find(vm_flags.begin(), vm_flags.end(), flag) != vm_flags.end();
}

std::vector<MemoryMapping> ReadSmaps(pid_t pid) {
  std::ifstream in(pid == 0 ? std::string("/proc/self/smaps")
                            : absl::StrCat("/proc/", pid, "/smaps"));
  std::vector<MemoryMapping> mappings;
  for (std::string line; std::getline(in, line);) {
    // A mapping's header: "begin-end perms offset dev inode [name]"; its
    // fields are "Name:   value" lines.
    uintptr_t begin = 0;
    uintptr_t end = 0;
    char dash = 0;
    std::istringstream header(line);
    if (header >> std::hex >> begin >> dash >> end && dash == '-') {
      MemoryMapping mapping;
      mapping.begin = begin;
      mapping.end = end;
      std::string perms, offset, device, inode;
      header >> perms >> offset >> device >> inode;
      std::getline(header >> std::ws, mapping.name);
      mappings.push_back(std::move(mapping));
      continue;
    }
    if (mappings.empty()) continue;
    absl::string_view rest = line;
    if (absl::ConsumePrefix(&rest, "AnonHugePages:")) {
      rest = absl::StripAsciiWhitespace(rest);
      absl::ConsumeSuffix(&rest, " kB");
      int64_t kb = 0;
      if (absl::SimpleAtoi(rest, &kb)) mappings.back().anon_huge_pages_kb = kb;
    } else if (absl::ConsumePrefix(&rest, "VmFlags:")) {
      for (absl::string_view flag :
           absl::StrSplit(rest, ' ', absl::SkipEmpty())) {
        mappings.back().vm_flags.emplace_back(flag);
      }
    }
  }
  return mappings;
}

}  // namespace attnserve::test
