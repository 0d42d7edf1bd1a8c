// Prometheus metrics of the server, and the HTTP endpoint that serves them.
//
//   ServerMetrics metrics(sources);          // Observes every request record.
//   AddRequestObserver(&metrics);
//   ATTN_ASSIGN_OR_RETURN(auto endpoint,
//                         MetricsEndpoint::Start("0.0.0.0:9464", &metrics));
//   // curl http://host:9464/metrics
//
// Metrics (all prefixed attnserve_):
//   requests_total{operator,code}    counter, every finished call
//   queue_seconds{operator}          histogram, time waiting for a worker
//   compute_seconds{operator}        histogram, planning + running
//   cancel_to_free_seconds           histogram, cancel/deadline -> worker free
//   flops_total{operator}            counter, FLOPs of successful calls
//   in_flight_requests               gauge, calls admitted and not done
//   queue_depth / queue_capacity     gauge, jobs waiting / --queue_depth
//   running_jobs                     gauge, jobs on a worker
//   workspace_bytes_in_use / _reserved
//                                    gauge, the engine's workspace pool
//   admitted_memory_bytes / memory_budget_bytes
//                                    gauge, memory held by admitted jobs
//   heap_bytes_in_use                gauge, what malloc has handed out and
//                                    not got back (wire/process_heap.h)
//   tensor_store_bytes / _entries / _capacity_bytes
//                                    gauge, resident tensors held
//   tensor_puts_total{via}           counter, tensors stored by PutTensor
//                                    (via="PutTensor") or kept by a call
//                                    (via="retention")
//   tensor_gets_total, tensor_handle_uses_total, tensor_deletes_total,
//   tensor_expiries_total, tensor_evictions_total, tensor_not_found_total
//                                    counter, see tensor_store.h
// Gauges are read from `sources` at scrape time. Thread-safe.
#ifndef ATTNSERVE_SERVER_METRICS_H_
#define ATTNSERVE_SERVER_METRICS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/request_log.h"
#include "server/tensor_store.h"

namespace prometheus {
class Exposer;
}  // namespace prometheus

namespace attnserve::server {

// Where the sampled gauges come from; unset functions read as 0.
struct MetricsSources {
  std::function<double()> in_flight_requests;
  std::function<double()> queue_depth;
  std::function<double()> queue_capacity;
  std::function<double()> running_jobs;
  std::function<double()> workspace_bytes_in_use;
  std::function<double()> workspace_bytes_reserved;
  std::function<double()> admitted_memory_bytes;
  std::function<double()> memory_budget_bytes;
  std::function<double()> heap_bytes_in_use;
  std::function<double()> tensor_store_bytes;
  std::function<double()> tensor_store_entries;
  std::function<double()> tensor_store_capacity_bytes;
  std::function<TensorStoreCounters()> tensor_store_counters;
};

class ServerMetrics final : public RequestObserver {
 public:
  explicit ServerMetrics(MetricsSources sources);
  ~ServerMetrics() override;
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  void OnRequest(const RequestRecord& record) override;

  // Everything in the Prometheus text format, as /metrics serves it.
  std::string Render() const;

  // The registry and the sampled gauges, for an endpoint to expose.
  std::shared_ptr<prometheus::Collectable> registry() const {
    return registry_;
  }
  std::shared_ptr<prometheus::Collectable> gauges() const { return gauges_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<prometheus::Collectable> gauges_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& queue_seconds_;
  prometheus::Family<prometheus::Histogram>& compute_seconds_;
  prometheus::Family<prometheus::Histogram>& cancel_to_free_;
  prometheus::Family<prometheus::Counter>& flops_;
};

// An HTTP server answering GET /metrics with ServerMetrics::Render().
class MetricsEndpoint {
 public:
  // Listens on `address` ("host:port"; port 0 picks a free one).
  // UNAVAILABLE when the address cannot be bound. `metrics` must outlive the
  // endpoint.
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(
      const std::string& address, const ServerMetrics* metrics);
  ~MetricsEndpoint();

  // The bound port.
  int port() const { return port_; }

 private:
  MetricsEndpoint(std::unique_ptr<prometheus::Exposer> exposer, int port);

  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_;
};

}  // namespace attnserve::server

#endif  // ATTNSERVE_SERVER_METRICS_H_
