// What a server's configuration leaves open, said once at start-up:
//
//   for (const std::string& w : StartupWarnings(options)) spdlog::warn(w);
//
// Serving only loopback (127.0.0.0/8, ::1, localhost) or a unix socket is
// quiet. On other addresses: plaintext without tokens (anyone who reaches
// the port may compute, and reflection publishes the schema), tokens over
// plaintext (they travel in clear), TLS without tokens or client certificates
// (any client may compute), and an unlimited memory budget.
#ifndef ATTNSERVE_SERVER_STARTUP_WARNINGS_H_
#define ATTNSERVE_SERVER_STARTUP_WARNINGS_H_

#include <string>
#include <vector>

#include "server/server.h"

namespace attnserve::server {

// True for 127.x.x.x, [::1] / ::1, localhost and unix: addresses.
bool IsLoopbackAddress(const std::string& listen_address);

// One sentence per warning, each naming the flags that remove it.
std::vector<std::string> StartupWarnings(const ServerOptions& options);

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_STARTUP_WARNINGS_H_
