// attnctl: command-line client for an attnserve server.
//
//   attnctl health|info|forward|backward|nsa-forward|nsa-backward [flags]
//   attnctl put [flags] | get HANDLE [--output FILE] | rm HANDLE
//
// Flags only: parsing, building the Workload and dispatching to commands.cc.
#include <cmath>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "attnctl/commands.h"
#include "attnctl/connection_flags.h"
#include "attnctl/report.h"
#include "attnctl/resident.h"
#include "attnctl/workload.h"
#include "attnserve/client/client.h"
#include "attnserve/client/tensor_helpers.h"
#include "attnserve/wire/process_heap.h"

ABSL_FLAG(absl::Duration, timeout, absl::Minutes(5),
          "Deadline of each call, e.g. 30s or 2m.");
ABSL_FLAG(std::string, service, "", "health: service name to check.");
ABSL_FLAG(std::string, layout, "BNSD",
          "Input layout: BSH, SBH, BSND, BNSD or TND (varlen: -b batches "
          "from -s tokens down to about half).");
ABSL_FLAG(std::string, dtype, "fp32",
          "Input dtype: fp32, fp16, bf16 (or float32, float16, bfloat16).");
ABSL_FLAG(int64_t, b, 1, "Batch size.");
ABSL_FLAG(int64_t, n, 8, "Query heads (N1).");
ABSL_FLAG(std::optional<int64_t>, kv_heads, std::nullopt,
          "Key/value heads (N2); default: -n.");
ABSL_FLAG(std::optional<int64_t>, head_num, std::nullopt,
          "head_num sent to the server; default: -n (override to probe "
          "validation).");
ABSL_FLAG(int64_t, s, 1024, "Sequence length of query and key/value.");
ABSL_FLAG(std::optional<int64_t>, sq, std::nullopt,
          "Query sequence length; default: -s.");
ABSL_FLAG(std::optional<int64_t>, skv, std::nullopt,
          "Key/value sequence length; default: -s.");
ABSL_FLAG(int64_t, d, 128, "Head dimension.");
ABSL_FLAG(std::optional<double>, scale, std::nullopt,
          "scale_value; default: 1/sqrt(d).");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the random inputs.");
ABSL_FLAG(bool, causal_mask, false,
          "Send a full [Sq,Skv] BOOL causal mask (sparse_mode 0).");
ABSL_FLAG(int32_t, repeat, 1,
          "Number of timed calls (forward, backward, put, get).");
ABSL_FLAG(std::optional<int64_t>, dv, std::nullopt,
          "nsa-*: value head dimension Dv; default: -d.");
ABSL_FLAG(int64_t, block_size, 64, "nsa-*: selected_block_size.");
ABSL_FLAG(int64_t, block_count, 16, "nsa-*: selected_block_count.");
ABSL_FLAG(bool, resident, false,
          "forward/backward: upload the inputs once (PutTensor) and call by "
          "handle; backward keeps the forward's outputs on the server and "
          "sends only dy (data is resent if the server answers NOT_FOUND).");
ABSL_FLAG(bool, outputs_by_handle, false,
          "forward: leave the outputs on the server and print their handles "
          "(fetch them with `attnctl get`).");
ABSL_FLAG(std::optional<uint32_t>, ttl, std::nullopt,
          "put, --resident, --outputs_by_handle: seconds the server keeps the "
          "tensors after their last use; default: the server's.");
ABSL_FLAG(int64_t, chunk_bytes, int64_t{4} << 20,
          "put, --resident: bytes of tensor data per PutTensor message.");
ABSL_FLAG(std::string, shape, "",
          "put: the tensor's shape, e.g. 1,8,4096,128.");
ABSL_FLAG(std::string, input, "",
          "put: file of the tensor's raw bytes (row-major, little-endian); "
          "default: random values in [-1, 1) from --seed.");
ABSL_FLAG(std::string, output, "", "get: write the tensor's raw bytes here.");
ABSL_FLAG(int64_t, sparse_mode, 0,
          "nsa-*: 0 (every selected key) or 2 (causal; the random selection "
          "then prefers blocks at or before each query). forward/backward: "
          "sent as is (2, 3 and 4 need no mask tensor).");

namespace attnserve::attnctl {
namespace {

constexpr char kUsage[] =
    "attnctl <command> [flags]\n\n"
    "Commands:\n"
    "  health    grpc.health.v1 check; exit 0 only when SERVING\n"
    "  info      print GetServerInfo\n"
    "  forward   FlashAttentionScore on random inputs\n"
    "  backward  forward, then FlashAttentionScoreGrad on random dy\n"
    "  nsa-forward   NsaSelectedAttention (TND, -s tokens per batch) on "
    "random inputs and topk_indices\n"
    "  nsa-backward  nsa-forward, then NsaSelectedAttentionGrad on random "
    "attention_out_grad\n"
    "  put       upload a tensor (PutTensor); prints its handle\n"
    "  get HANDLE    download a resident tensor (GetTensor)\n"
    "  rm HANDLE     delete a resident tensor (DeleteTensor)\n\n"
    "Examples:\n"
    "  attnctl forward --layout BNSD --dtype bf16 -b 1 -n 8 -s 1024 -d 128\n"
    "  attnctl nsa-forward --dtype bf16 -n 16 --kv_heads 1 -s 4096 -d 192 "
    "--dv 128 --block_size 64 --block_count 16\n"
    "  attnctl backward --resident -n 8 -s 4096 -d 128\n"
    "  attnctl put --dtype bf16 --shape 1,8,4096,128 --ttl 600";

// The workload the flags describe, checked for `family`.
absl::StatusOr<Workload> WorkloadFromFlags(Family family) {
  Workload w;
  absl::StatusOr<v1::DataType> dtype =
      ParseDataType(absl::GetFlag(FLAGS_dtype));
  if (!dtype.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", dtype.status().message()));
  }
  w.dtype = *dtype;
  w.batch = absl::GetFlag(FLAGS_b);
  w.heads = absl::GetFlag(FLAGS_n);
  w.kv_heads = absl::GetFlag(FLAGS_kv_heads).value_or(w.heads);
  w.head_num = absl::GetFlag(FLAGS_head_num).value_or(w.heads);
  const int64_t s = absl::GetFlag(FLAGS_s);
  w.sq = absl::GetFlag(FLAGS_sq).value_or(s);
  w.skv = absl::GetFlag(FLAGS_skv).value_or(s);
  w.head_dim = absl::GetFlag(FLAGS_d);
  w.scale = absl::GetFlag(FLAGS_scale)
                .value_or(w.head_dim > 0
                              ? 1.0 / std::sqrt(static_cast<double>(w.head_dim))
                              : 1.0);
  w.seed = absl::GetFlag(FLAGS_seed);
  w.layout = absl::AsciiStrToUpper(absl::GetFlag(FLAGS_layout));
  w.causal_mask = absl::GetFlag(FLAGS_causal_mask);
  w.value_dim = absl::GetFlag(FLAGS_dv).value_or(w.head_dim);
  w.block_size = absl::GetFlag(FLAGS_block_size);
  w.block_count = absl::GetFlag(FLAGS_block_count);
  w.sparse_mode = absl::GetFlag(FLAGS_sparse_mode);
  absl::Status valid = ValidateWorkload(family, w);
  if (!valid.ok()) return valid;
  return w;
}

int UsageError(const absl::Status& status) {
  std::cerr << "attnctl: " << status.message() << "\n"
            << "Run 'attnctl --help' for usage.\n";
  return kExitUsage;
}

// --help lists attnctl's own flags (all defined in this directory).
bool IsAttnctlFlagFile(absl::string_view filename) {
  return absl::StrContains(filename, "attnctl/");
}

int Main(int argc, char** argv) {
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = &IsAttnctlFlagFile;
  usage_config.contains_helpshort_flags = &IsAttnctlFlagFile;
  absl::SetFlagsUsageConfig(usage_config);
  absl::SetProgramUsageMessage(kUsage);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() < 2) {
    return UsageError(absl::InvalidArgumentError(
        "missing command (health, info, forward, backward, nsa-forward, "
        "nsa-backward, put, get or rm)"));
  }
  const std::string command = positional[1];
  if (command != "health" && command != "info" && command != "forward" &&
      command != "backward" && command != "nsa-forward" &&
      command != "nsa-backward" && command != "put" && command != "get" &&
      command != "rm") {
    return UsageError(absl::InvalidArgumentError(
        absl::StrCat("unknown command \"", command, "\"")));
  }
  const bool takes_handle = command == "get" || command == "rm";
  if (takes_handle && positional.size() < 3) {
    return UsageError(absl::InvalidArgumentError(
        absl::StrCat(command, ": missing the tensor's handle")));
  }
  if (positional.size() > (takes_handle ? 3u : 2u)) {
    return UsageError(absl::InvalidArgumentError(absl::StrCat(
        "unexpected argument \"", positional[takes_handle ? 3 : 2], "\"")));
  }

  CommandOptions options;
  options.timeout = absl::GetFlag(FLAGS_timeout);
  options.repeat = absl::GetFlag(FLAGS_repeat);
  options.health_service = absl::GetFlag(FLAGS_service);
  options.resident = absl::GetFlag(FLAGS_resident);
  options.outputs_by_handle = absl::GetFlag(FLAGS_outputs_by_handle);
  options.put.ttl_seconds = absl::GetFlag(FLAGS_ttl);
  if (absl::GetFlag(FLAGS_chunk_bytes) < 1) {
    return UsageError(absl::InvalidArgumentError(
        absl::StrCat("--chunk_bytes: must be at least 1, got ",
                     absl::GetFlag(FLAGS_chunk_bytes))));
  }
  options.put.chunk_bytes =
      static_cast<size_t>(absl::GetFlag(FLAGS_chunk_bytes));
  if (options.repeat < 1) {
    return UsageError(absl::InvalidArgumentError(
        absl::StrCat("--repeat: must be at least 1, got ", options.repeat)));
  }
  absl::StatusOr<ClientOptions> client_options = ClientOptionsFromFlags();
  if (!client_options.ok()) return UsageError(client_options.status());
  client_options->default_timeout = absl::GetFlag(FLAGS_timeout);
  absl::StatusOr<Client> client =
      Client::Connect(TargetFromFlags(), *client_options);
  if (!client.ok()) return UsageError(client.status());

  if (command == "health") {
    return RunHealth(*client, options, std::cout, std::cerr);
  }
  if (command == "info") return RunInfo(*client, options, std::cout, std::cerr);
  if (command == "get") {
    return RunGet(*client, positional[2], absl::GetFlag(FLAGS_output),
                  options.repeat, options.timeout, std::cout, std::cerr);
  }
  if (command == "rm") {
    return RunRemove(*client, positional[2], options.timeout, std::cout,
                     std::cerr);
  }
  if (command == "put") {
    PutCommand put;
    absl::StatusOr<v1::DataType> dtype =
        ParseDataType(absl::GetFlag(FLAGS_dtype));
    if (!dtype.ok()) {
      return UsageError(absl::InvalidArgumentError(
          absl::StrCat("--", dtype.status().message())));
    }
    put.dtype = *dtype;
    absl::StatusOr<std::vector<int64_t>> shape =
        ParseShape(absl::GetFlag(FLAGS_shape));
    if (!shape.ok()) return UsageError(shape.status());
    put.shape = *std::move(shape);
    put.input_file = absl::GetFlag(FLAGS_input);
    put.seed = absl::GetFlag(FLAGS_seed);
    return RunPut(*client, put, options.put, options.repeat, options.timeout,
                  std::cout, std::cerr);
  }
  const Family family = absl::StartsWith(command, "nsa-")
                            ? Family::kNsa
                            : Family::kFlashAttention;
  absl::StatusOr<Workload> workload = WorkloadFromFlags(family);
  if (!workload.ok()) return UsageError(workload.status());
  return absl::EndsWith(command, "forward")
             ? RunForward(*client, family, *workload, options, std::cout,
                          std::cerr)
             : RunBackward(*client, family, *workload, options, std::cout,
                           std::cerr);
}

}  // namespace
}  // namespace attnserve::attnctl

int main(int argc, char** argv) {
  // A heap backed by huge pages (this may start the program again), and
  // each call's received messages land in memory the last one freed.
  attnserve::wire::UseHugePagesForHeap(argv);
  attnserve::wire::KeepFreedHeap();
  return attnserve::attnctl::Main(argc, argv);
}
