#include "attnserve/wire/grpc_bytes.h"

#include <string>
#include <utility>

namespace attnserve::wire {
namespace {

// A slice's destroy function for bytes a core::Buffer owns.
void DropBufferRef(void* ref) { core::Buffer::DropRef(ref); }

}  // namespace

void SliceLoans::Wait() {
  std::unique_lock<std::mutex> lock(mu_);
  released_.wait(lock, [this] { return outstanding_ == 0; });
}

int SliceLoans::outstanding() const {
  std::lock_guard<std::mutex> lock(mu_);
  return outstanding_;
}

grpc::Slice SliceLoans::Lend(absl::string_view bytes) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++outstanding_;
  }
  return grpc::Slice(const_cast<char*>(bytes.data()), bytes.size(),
                     &SliceLoans::Release, this);
}

void SliceLoans::Release(void* loans) {
  auto* self = static_cast<SliceLoans*>(loans);
  std::lock_guard<std::mutex> lock(self->mu_);
  if (--self->outstanding_ == 0) self->released_.notify_all();
}

grpc::ByteBuffer ToByteBuffer(const EncodedMessage& encoded,
                              SliceLoans* loans) {
  std::vector<grpc::Slice> slices;
  std::string small;
  auto flush = [&] {
    if (small.empty()) return;
    slices.emplace_back(small.data(), small.size());  // Copies.
    small.clear();
  };
  for (const EncodedMessage::Piece& piece : encoded.pieces()) {
    if (piece.owner != nullptr) {
      flush();
      slices.emplace_back(const_cast<char*>(piece.bytes.data()),
                          piece.bytes.size(), &DropBufferRef,
                          piece.owner->NewRef());
    } else if (loans != nullptr && piece.bytes.size() >= kMinLentBytes) {
      flush();
      slices.push_back(loans->Lend(piece.bytes));
    } else {
      small.append(piece.bytes.data(), piece.bytes.size());
    }
  }
  flush();
  return grpc::ByteBuffer(slices.data(), slices.size());
}

namespace {

// `head`, then field `field_number` holding `value`: the field's tag and
// length copied after `head`, `value` in the slice `large` makes of it when
// it is at least kMinLentBytes long, copied otherwise.
template <typename MakeSlice>
grpc::ByteBuffer WithBytesField(absl::string_view head, int field_number,
                                absl::string_view value, MakeSlice large) {
  std::string small(head);
  auto varint = [&small](uint64_t v) {
    while (v >= 0x80) {
      small.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    small.push_back(static_cast<char>(v));
  };
  varint((static_cast<uint64_t>(field_number) << 3) | 2);  // Length-delimited.
  varint(value.size());
  std::vector<grpc::Slice> slices;
  if (value.size() >= kMinLentBytes) {
    slices.emplace_back(small.data(), small.size());
    slices.push_back(large(value));
  } else {
    small.append(value.data(), value.size());
    slices.emplace_back(small.data(), small.size());
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

}  // namespace

grpc::ByteBuffer WithLentBytesField(absl::string_view head, int field_number,
                                    absl::string_view value,
                                    SliceLoans* loans) {
  return WithBytesField(
      head, field_number, value,
      [loans](absl::string_view v) { return loans->Lend(v); });
}

grpc::ByteBuffer WithSharedBytesField(absl::string_view head, int field_number,
                                      absl::string_view value,
                                      const core::Buffer& owner) {
  return WithBytesField(
      head, field_number, value, [&owner](absl::string_view v) {
        return grpc::Slice(const_cast<char*>(v.data()), v.size(),
                           &DropBufferRef, owner.NewRef());
      });
}

absl::Status ReadSlices(const grpc::ByteBuffer& bytes,
                        std::vector<grpc::Slice>* slices, ReceivedBytes* view) {
  slices->clear();
  if (!bytes.Valid()) {
    return absl::InvalidArgumentError("no message bytes");
  }
  if (!bytes.Dump(slices).ok()) {
    return absl::InvalidArgumentError("the message's bytes cannot be read");
  }
  std::vector<absl::string_view> chunks;
  chunks.reserve(slices->size());
  for (const grpc::Slice& slice : *slices) {
    chunks.emplace_back(reinterpret_cast<const char*>(slice.begin()),
                        slice.size());
  }
  *view = ReceivedBytes(std::move(chunks));
  return absl::OkStatus();
}

}  // namespace attnserve::wire
