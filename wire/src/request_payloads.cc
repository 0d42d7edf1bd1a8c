#include "attnserve/wire/request_payloads.h"

namespace attnserve::wire {

std::optional<size_t> RequestPayloads::SizeOf(
    const google::protobuf::Message& message, int field) const {
  const ByteRange* range = ranges_.Find(message, field);
  if (range == nullptr) return std::nullopt;
  return range->size;
}

const ByteRange* RequestPayloads::Received(
    const google::protobuf::Message& message, int field) const {
  const ByteRange* range = ranges_.Find(message, field);
  if (range == nullptr || range->offset + range->size > bytes_.size()) {
    return nullptr;
  }
  return range;
}

const core::Buffer* RequestPayloads::Get(
    const google::protobuf::Message& message, int field) {
  auto cached = copies_.find({&message, field});
  if (cached != copies_.end()) return &cached->second;
  const ByteRange* range = Received(message, field);
  if (range == nullptr) return nullptr;
  core::Buffer copy = pool_ == nullptr ? core::Buffer(range->size)
                                       : pool_->Acquire(range->size);
  bytes_.CopyTo(*range, copy.data());
  copied_bytes_ += range->size;
  return &copies_.emplace(std::make_pair(&message, field), std::move(copy))
              .first->second;
}

const core::ChunkedBytes* RequestPayloads::Chunks(
    const google::protobuf::Message& message, int field) {
  auto cached = chunks_.find({&message, field});
  if (cached != chunks_.end()) return &cached->second;
  const ByteRange* range = Received(message, field);
  if (range == nullptr) return nullptr;
  return &chunks_.emplace(std::make_pair(&message, field), bytes_.Sub(*range))
              .first->second;
}

}  // namespace attnserve::wire
