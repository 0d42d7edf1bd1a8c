// HTTP/2 connection limits of the gRPC port: how many calls one connection
// may carry at once, how dead or idle connections are found and closed, how
// often clients may ping, and no compressed requests.
//
//   grpc::ServerBuilder builder;
//   ApplyTransportLimits(options.transport, &builder);
//
// Defaults are the flags' defaults (docs/operations.md, "Connections").
#ifndef ATTNSERVE_SERVER_TRANSPORT_LIMITS_H_
#define ATTNSERVE_SERVER_TRANSPORT_LIMITS_H_

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "grpcpp/server_builder.h"

namespace attnserve::server {

struct TransportLimits {
  // Calls one connection may have open at once; a client's further calls
  // wait in the client until one ends (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
  int max_concurrent_streams = 100;
  // A connection that has been quiet this long is pinged, and closed when
  // the ping is not answered within keepalive_timeout: the calls of a peer
  // that vanished end, and their memory comes back.
  absl::Duration keepalive_time = absl::Minutes(1);
  absl::Duration keepalive_timeout = absl::Seconds(20);
  // Clients may ping at most this often, with or without calls; a client
  // that pings more often is disconnected ("too_many_pings").
  absl::Duration min_client_ping_interval = absl::Seconds(10);
  // A connection without calls for this long is closed; the client
  // reconnects on its next call. Zero: never.
  absl::Duration max_connection_idle = absl::Minutes(30);
  // A connection older than this is closed gracefully: calls in progress
  // get max_connection_age_grace to finish, new calls go to a new
  // connection (which a load balancer may send elsewhere). Zero: never.
  absl::Duration max_connection_age = absl::ZeroDuration();
  absl::Duration max_connection_age_grace = absl::Minutes(5);
};

// INVALID_ARGUMENT naming the option ("max_concurrent_streams", ...), or OK.
absl::Status ValidateTransportLimits(const TransportLimits& limits);

// Sets the limits as channel arguments of the server being built.
void ApplyTransportLimits(const TransportLimits& limits,
                          grpc::ServerBuilder* builder);

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_TRANSPORT_LIMITS_H_
