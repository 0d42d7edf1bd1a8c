#include "server/transport_limits.h"

#include <cstdint>
#include <limits>

#include "attnserve/core/status_macros.h"
#include "grpc/grpc.h"

namespace attnserve::server {
namespace {

// Whole milliseconds of `d` for a gRPC argument (at most INT_MAX, ~24 days).
int Milliseconds(absl::Duration d) {
  const int64_t ms = absl::ToInt64Milliseconds(d);
  return ms > std::numeric_limits<int>::max() ? std::numeric_limits<int>::max()
                                              : static_cast<int>(ms);
}

absl::Status CheckPositive(absl::Duration d, const char* field) {
  if (d <= absl::ZeroDuration() || d == absl::InfiniteDuration()) {
    return core::InvalidField(field, "must be a positive, finite duration");
  }
  return absl::OkStatus();
}

absl::Status CheckZeroOrPositive(absl::Duration d, const char* field) {
  if (d < absl::ZeroDuration() || d == absl::InfiniteDuration()) {
    return core::InvalidField(field,
                              "must be 0 (never) or a positive, finite "
                              "duration");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateTransportLimits(const TransportLimits& limits) {
  if (limits.max_concurrent_streams < 1) {
    return core::InvalidField("max_concurrent_streams", "must be at least 1");
  }
  ATTN_RETURN_IF_ERROR(CheckPositive(limits.keepalive_time, "keepalive_time"));
  ATTN_RETURN_IF_ERROR(
      CheckPositive(limits.keepalive_timeout, "keepalive_timeout"));
  ATTN_RETURN_IF_ERROR(CheckZeroOrPositive(limits.min_client_ping_interval,
                                           "min_client_ping_interval"));
  ATTN_RETURN_IF_ERROR(
      CheckZeroOrPositive(limits.max_connection_idle, "max_connection_idle"));
  ATTN_RETURN_IF_ERROR(
      CheckZeroOrPositive(limits.max_connection_age, "max_connection_age"));
  return CheckZeroOrPositive(limits.max_connection_age_grace,
                             "max_connection_age_grace");
}

void ApplyTransportLimits(const TransportLimits& limits,
                          grpc::ServerBuilder* builder) {
  builder->AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                              limits.max_concurrent_streams);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                              Milliseconds(limits.keepalive_time));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                              Milliseconds(limits.keepalive_timeout));
  // Clients may keep an idle connection alive by pinging, at the interval
  // allowed; pings more often than that count as strikes, and the second
  // strike closes the connection.
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder->AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
      Milliseconds(limits.min_client_ping_interval));
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
  // gRPC's own "never" is INT_MAX for these.
  const auto or_never = [](absl::Duration d) {
    return d == absl::ZeroDuration() ? std::numeric_limits<int>::max()
                                     : Milliseconds(d);
  };
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                              or_never(limits.max_connection_idle));
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                              or_never(limits.max_connection_age));
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                              or_never(limits.max_connection_age_grace));
  // Compressed requests are refused: this gRPC inflates a compressed message
  // whole before comparing its size with the message limit, so a few
  // hundred KiB of gzip could make the server allocate gigabytes. Tensors
  // hardly compress anyway.
  builder->SetCompressionAlgorithmSupportStatus(GRPC_COMPRESS_DEFLATE, false);
  builder->SetCompressionAlgorithmSupportStatus(GRPC_COMPRESS_GZIP, false);
}

}  // namespace attnserve::server
