// A request's intra-op threads follow its cost: small requests run on their
// worker alone. Workspace is per thread, so the workspace a request leased
// shows how many threads it was planned for.
#include "gtest/gtest.h"
#include "tests/server/test_server.h"
#include "tests/server/wire_tensors.h"

namespace attnserve::server::testing {
namespace {

v1::FlashAttentionScoreRequest Request(int64_t seq) {
  const Bnsd dims{1, 4, seq, 32};
  const std::vector<double> values = RandomValues(dims.count(), 11);
  v1::FlashAttentionScoreRequest r;
  *r.mutable_query() = Pack("BNSD", dims, values);
  *r.mutable_key() = Pack("BNSD", dims, values);
  *r.mutable_value() = Pack("BNSD", dims, values);
  r.set_head_num(4);
  r.set_input_layout("BNSD");
  return r;
}

// Workspace bytes of one forward of `seq` on a server with `options`.
uint64_t WorkspaceOf(const ServerOptions& options, int64_t seq) {
  TestServer server(options);
  EXPECT_TRUE(server.started());
  grpc::ClientContext context;
  SetTestDeadline(&context);
  v1::FlashAttentionScoreResponse response;
  const grpc::Status status =
      server.stub().FlashAttentionScore(&context, Request(seq), &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return response.stats().workspace_bytes();
}

TEST(ServerThreadsTest, SmallRequestIsPlannedForOneThread) {
  ServerOptions options = TestServer::DefaultOptions();
  options.threads_per_request = 4;
  options.flops_per_thread = 0;  // Always the maximum.
  const uint64_t four_threads = WorkspaceOf(options, 256);
  options.flops_per_thread = 1e12;  // Everything here is "small".
  const uint64_t one_thread = WorkspaceOf(options, 256);
  EXPECT_GT(one_thread, 0u);
  EXPECT_EQ(four_threads, 4 * one_thread);
}

TEST(ServerThreadsTest, ThreadsGrowWithCostUpToTheMaximum) {
  ServerOptions options = TestServer::DefaultOptions();
  options.threads_per_request = 4;
  options.flops_per_thread = 1e12;
  const uint64_t one_thread = WorkspaceOf(options, 256);
  // 4 * 4 * 256 * 256 * 32 = 3.4e7 FLOPs: two threads at 1.7e7 per thread.
  options.flops_per_thread = 1.7e7;
  EXPECT_EQ(WorkspaceOf(options, 256), 2 * one_thread);
  // Far more work than 4 threads' worth: capped at 4.
  options.flops_per_thread = 1e3;
  EXPECT_EQ(WorkspaceOf(options, 256), 4 * one_thread);
}

TEST(ServerThreadsTest, ThreadsGrowWithTheBytesMovedToo) {
  ServerOptions options = TestServer::DefaultOptions();
  options.threads_per_request = 4;
  options.flops_per_thread = 1e12;
  options.bytes_per_thread = 0;  // FLOPs only.
  const uint64_t one_thread = WorkspaceOf(options, 256);
  // q, k, v and out of 4 * 256 * 32 fp32 each, and the softmax statistics:
  // 0.59 MB, two threads at 0.4 MB per thread.
  options.bytes_per_thread = 4e5;
  EXPECT_EQ(WorkspaceOf(options, 256), 2 * one_thread);
  options.bytes_per_thread = 1e3;
  EXPECT_EQ(WorkspaceOf(options, 256), 4 * one_thread);
}

}  // namespace
}  // namespace attnserve::server::testing
