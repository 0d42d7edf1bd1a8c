// attnctl's resident tensors: the put, get and rm commands, and the
// --resident mode of forward and backward, which uploads the inputs once
// (PutTensor) and then calls by handle, resending the data if the server
// answers NOT_FOUND.
//
//   attnctl put --dtype bf16 --shape 1,8,4096,128 --ttl 600
//   attnctl get 3f5c...e1 --output out.bin
//   attnctl rm 3f5c...e1
//   attnctl backward --resident -n 8 -s 4096 -d 128
#ifndef ATTNSERVE_CLIENT_ATTNCTL_RESIDENT_H_
#define ATTNSERVE_CLIENT_ATTNCTL_RESIDENT_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "attnserve/client/client.h"
#include "attnserve/client/resident.h"
#include "attnserve/v1/attention.pb.h"
#include "google/protobuf/map.h"
#include "google/protobuf/message.h"

namespace attnserve::attnctl {

// What `put` uploads: a tensor of `dtype` and `shape` read from
// `input_file` (raw row-major little-endian bytes), or random values in
// [-1, 1) from `seed` when no file is given (floating dtypes only).
struct PutCommand {
  v1::DataType dtype = v1::DATA_TYPE_FLOAT32;
  std::vector<int64_t> shape;
  std::string input_file;
  uint64_t seed = 1;
};

// "2,3,4" -> {2, 3, 4}; INVALID_ARGUMENT naming --shape otherwise.
absl::StatusOr<std::vector<int64_t>> ParseShape(const std::string& text);

// put: prints handle, bytes, expires_in_s, put_s and mb_per_s. With
// repeat > 1 the tensor is uploaded that many times, a line per run
// ("run 2/3: put_s=... mb_per_s=..."), each upload but the last deleted
// again; the summary is the last run's.
int RunPut(const Client& client, const PutCommand& command,
           const PutOptions& put, int repeat, absl::Duration timeout,
           std::ostream& out, std::ostream& err);
// get: prints the tensor's line (shape, dtype, sums), get_s and mb_per_s;
// writes its raw bytes to `output_file` when one is given. With repeat > 1
// it downloads that many times, a line per run as put does.
int RunGet(const Client& client, const std::string& handle,
           const std::string& output_file, int repeat, absl::Duration timeout,
           std::ostream& out, std::ostream& err);
// rm: DeleteTensor; prints "deleted: <handle>".
int RunRemove(const Client& client, const std::string& handle,
              absl::Duration timeout, std::ostream& out, std::ostream& err);

// The tensors one command keeps on the server: uploads them, remembers the
// data behind every handle (for resends on NOT_FOUND) and deletes the
// handles it made when it goes away.
class ResidentSession {
 public:
  ResidentSession(const Client& client, const PutOptions& put,
                  absl::Duration timeout)
      : client_(client), put_(put), timeout_(timeout) {}
  // Deletes every handle it made (errors ignored: they expire anyway).
  ~ResidentSession();
  ResidentSession(const ResidentSession&) = delete;
  ResidentSession& operator=(const ResidentSession&) = delete;

  // Uploads every Tensor field of `request` sent as data and replaces it by
  // its handle; prints "put: <field> handle=.. bytes=.. put_s=.." lines.
  absl::Status Upload(google::protobuf::Message* request, std::ostream& out);

  // Replaces every Tensor field of `response` that the server kept (named
  // in `handles`, the response's own map) by its handle, keeping the data
  // for resends; the session deletes those handles too.
  void AdoptOutputs(
      const google::protobuf::Map<std::string, std::string>& handles,
      google::protobuf::Message* response);

  // Handles the session must not delete (outputs the user asked to keep).
  void Release(const std::string& handle);

  const HandleData& data() const { return data_; }

 private:
  // Takes `tensor`'s data as the data of `handle`, leaving a handle tensor.
  void Remember(const std::string& handle, v1::Tensor* tensor);

  const Client& client_;
  const PutOptions put_;
  const absl::Duration timeout_;
  std::vector<std::unique_ptr<v1::Tensor>> originals_;
  HandleData data_;
  std::vector<std::string> made_;
};

}  // namespace attnserve::attnctl

#endif  // ATTNSERVE_CLIENT_ATTNCTL_RESIDENT_H_
