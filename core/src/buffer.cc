#include "attnserve/core/buffer.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace attnserve::core {
namespace {

constexpr size_t kAlignment = 64;

// A heap block of at least `size` bytes (uninitialized), 64-byte aligned.
std::shared_ptr<char> HeapBlock(size_t size, size_t* capacity) {
  *capacity = (size + kAlignment - 1) / kAlignment * kAlignment;
  if (*capacity == 0) *capacity = kAlignment;
  void* data = std::aligned_alloc(kAlignment, *capacity);
  if (data == nullptr) throw std::bad_alloc();
  return std::shared_ptr<char>(static_cast<char*>(data),
                               [](char* p) { std::free(p); });
}

}  // namespace

char* Buffer::EmptyData() {
  static char empty = 0;
  return &empty;
}

Buffer::Buffer(size_t size) { assign(size, '\0'); }

Buffer::Buffer(const char* data, size_t size) { assign(data, size); }

Buffer::Buffer(const Buffer& other) { assign(other.data(), other.size()); }

Buffer& Buffer::operator=(const Buffer& other) {
  if (this != &other) assign(other.data(), other.size());
  return *this;
}

Buffer::Buffer(Buffer&& other) noexcept
    : block_(std::move(other.block_)),
      data_(std::exchange(other.data_, EmptyData())),
      size_(std::exchange(other.size_, 0)),
      capacity_(std::exchange(other.capacity_, 0)) {}

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    block_ = std::move(other.block_);
    data_ = std::exchange(other.data_, EmptyData());
    size_ = std::exchange(other.size_, 0);
    capacity_ = std::exchange(other.capacity_, 0);
  }
  return *this;
}

Buffer Buffer::Adopt(char* data, size_t size, size_t capacity,
                     std::function<void(char*)> release) {
  Buffer b;
  b.block_ = std::shared_ptr<char>(data, std::move(release));
  b.data_ = data;
  b.size_ = size;
  b.capacity_ = capacity;
  return b;
}

Buffer Buffer::Share() const {
  Buffer b;
  if (block_ == nullptr) return b;
  b.block_ = block_;
  b.data_ = data_;
  b.size_ = size_;
  b.capacity_ = capacity_;
  return b;
}

void Buffer::Reserve(size_t size, size_t keep) {
  if (block_ != nullptr && block_.use_count() == 1 && size <= capacity_) {
    return;
  }
  size_t capacity = 0;
  std::shared_ptr<char> block = HeapBlock(size, &capacity);
  const size_t kept = std::min(keep, size_);
  if (kept > 0) std::memcpy(block.get(), data_, kept);
  block_ = std::move(block);
  data_ = block_.get();
  capacity_ = capacity;
}

void Buffer::resize(size_t size) {
  if (size == 0 && block_ == nullptr) return;
  Reserve(size, size);
  if (size > size_) std::memset(data_ + size_, 0, size - size_);
  size_ = size;
}

void Buffer::assign(size_t size, char value) {
  if (size == 0 && block_ == nullptr) return;
  Reserve(size, 0);
  std::memset(data_, value, size);
  size_ = size;
}

void Buffer::assign(const char* data, size_t size) {
  if (size == 0 && block_ == nullptr) return;
  // `data` may point into this buffer's own block.
  if (block_ != nullptr && block_.use_count() == 1 && size <= capacity_) {
    std::memmove(data_, data, size);
  } else {
    size_t capacity = 0;
    std::shared_ptr<char> block = HeapBlock(size, &capacity);
    if (size > 0) std::memcpy(block.get(), data, size);
    block_ = std::move(block);
    data_ = block_.get();
    capacity_ = capacity;
  }
  size_ = size;
}

void* Buffer::NewRef() const { return new std::shared_ptr<char>(block_); }

void Buffer::DropRef(void* ref) {
  delete static_cast<std::shared_ptr<char>*>(ref);
}

}  // namespace attnserve::core
