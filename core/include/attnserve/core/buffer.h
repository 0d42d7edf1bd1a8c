// Byte buffers that own their bytes and can be shared without copying.
//
// A Buffer owns a contiguous, 64-byte aligned block. Copying a Buffer copies
// the bytes, like std::string; Share() makes a second owner of the same
// bytes, so that an output being sent and the same output kept on the server
// hold one block. The block goes back where it came from (its BufferPool,
// buffer_pool.h, or the heap) when its last owner lets go, on whichever
// thread that happens.
//
//   Buffer out = pool.AcquireZeroed(n);   // or Buffer(n): heap, zeroed
//   Fill(out.data(), out.size());
//   Buffer kept = out.Share();            // same bytes, no copy
//   void* ref = out.NewRef();             // an owner for a C callback ...
//   Buffer::DropRef(ref);                 // ... released by it
//
// Owners that share a block see each other's writes: write first, then
// share. A Buffer is not thread-safe itself (like std::string); distinct
// owners of one block may be used and dropped on different threads.
#ifndef ATTNSERVE_CORE_BUFFER_H_
#define ATTNSERVE_CORE_BUFFER_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"

namespace attnserve::core {

class Buffer {
 public:
  // Empty: size 0, data() points at a zero byte (never null).
  Buffer() = default;
  // `size` zero bytes on the heap.
  explicit Buffer(size_t size);
  // A heap copy of `size` bytes at `data`.
  Buffer(const char* data, size_t size);

  // Copies the bytes into a new heap block.
  Buffer(const Buffer& other);
  Buffer& operator=(const Buffer& other);
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  ~Buffer() = default;

  // The block `data` (`capacity` bytes, 64-byte aligned) of which the first
  // `size` bytes are this buffer's; `release(data)` runs when the last owner
  // lets go. For pools (buffer_pool.h).
  static Buffer Adopt(char* data, size_t size, size_t capacity,
                      std::function<void(char*)> release);

  // Another owner of the same bytes (no copy).
  Buffer Share() const;

  char* data() { return data_; }
  const char* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // Bytes of the block (>= size()).
  size_t capacity() const { return capacity_; }
  char& operator[](size_t i) { return data_[i]; }
  const char& operator[](size_t i) const { return data_[i]; }
  absl::string_view view() const { return absl::string_view(data_, size_); }
  // Owners of this block, this one included (0 when empty).
  long use_count() const { return block_.use_count(); }

  // std::string-like editing. Reuses the block when it is large enough and
  // not shared; otherwise moves to a new heap block. New bytes are zero.
  void resize(size_t size);
  void assign(size_t size, char value);
  void assign(const char* data, size_t size);

  // An owner of the block as an opaque pointer, for C callbacks (e.g. a
  // gRPC slice's destroy function); exactly one DropRef(ref) releases it.
  void* NewRef() const;
  static void DropRef(void* ref);

 private:
  // Makes this buffer the sole owner of a block of at least `size` bytes
  // whose first min(size(), keep) bytes are kept.
  void Reserve(size_t size, size_t keep);

  std::shared_ptr<char> block_;
  char* data_ = EmptyData();
  size_t size_ = 0;
  size_t capacity_ = 0;

  static char* EmptyData();
};

inline bool operator==(const Buffer& a, const Buffer& b) {
  return a.view() == b.view();
}
inline bool operator!=(const Buffer& a, const Buffer& b) { return !(a == b); }
inline bool operator==(const std::string& a, const Buffer& b) {
  return absl::string_view(a) == b.view();
}
inline bool operator==(const Buffer& a, const std::string& b) {
  return a.view() == absl::string_view(b);
}

}  // namespace attnserve::core

#endif  // ATTNSERVE_CORE_BUFFER_H_
