#include "server/metrics.h"

#include <exception>
#include <initializer_list>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"
#include "prometheus/text_serializer.h"

namespace attnserve::server {
namespace {

using prometheus::MetricFamily;
using prometheus::MetricType;

// Seconds, from half a millisecond to a minute.
const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
      0.25,   0.5,   1,      2.5,   5,    10,    30,   60};
  return *buckets;
}

// Gauges whose values are read when scraped.
class SampledGauges final : public prometheus::Collectable {
 public:
  explicit SampledGauges(MetricsSources sources)
      : sources_(std::move(sources)) {}

  std::vector<MetricFamily> Collect() const override {
    std::vector<MetricFamily> families;
    Add("attnserve_in_flight_requests",
        "AttentionService calls admitted and not yet done.",
        sources_.in_flight_requests, &families);
    Add("attnserve_queue_depth", "Jobs waiting for a compute worker.",
        sources_.queue_depth, &families);
    Add("attnserve_queue_capacity",
        "Jobs allowed to wait (--queue_depth); beyond it RESOURCE_EXHAUSTED.",
        sources_.queue_capacity, &families);
    Add("attnserve_running_jobs", "Jobs running on a compute worker.",
        sources_.running_jobs, &families);
    Add("attnserve_workspace_bytes_in_use",
        "Workspace bytes leased by running jobs.",
        sources_.workspace_bytes_in_use, &families);
    Add("attnserve_workspace_bytes_reserved",
        "Workspace bytes held by the pool, leased or kept for reuse.",
        sources_.workspace_bytes_reserved, &families);
    Add("attnserve_admitted_memory_bytes",
        "Bytes (request, outputs, workspace) held by admitted jobs.",
        sources_.admitted_memory_bytes, &families);
    Add("attnserve_memory_budget_bytes",
        "Cap on admitted memory (--memory_budget_bytes); 0 = unlimited.",
        sources_.memory_budget_bytes, &families);
    Add("attnserve_heap_bytes_in_use",
        "Bytes malloc has handed out and not got back (unlike RSS, without "
        "what the allocator keeps after a free).",
        sources_.heap_bytes_in_use, &families);
    Add("attnserve_tensor_store_bytes",
        "Bytes held for resident tensors: stored, being uploaded, or deleted "
        "but still read by a running call.",
        sources_.tensor_store_bytes, &families);
    Add("attnserve_tensor_store_entries", "Resident tensors stored.",
        sources_.tensor_store_entries, &families);
    Add("attnserve_tensor_store_capacity_bytes",
        "Cap of the tensor store (--tensor_store_bytes); 0 = the memory "
        "budget only.",
        sources_.tensor_store_capacity_bytes, &families);
    const TensorStoreCounters counters = sources_.tensor_store_counters
                                             ? sources_.tensor_store_counters()
                                             : TensorStoreCounters();
    MetricFamily puts = Counter("attnserve_tensor_puts_total",
                                "Resident tensors stored, by how they came: "
                                "PutTensor or a call's retention.");
    AddCounterValue(&puts, {{"via", "PutTensor"}}, counters.puts);
    AddCounterValue(&puts, {{"via", "retention"}}, counters.kept);
    families.push_back(std::move(puts));
    for (const auto& [name, help, value] :
         std::initializer_list<std::tuple<const char*, const char*, uint64_t>>{
             {"attnserve_tensor_gets_total", "GetTensor downloads started.",
              counters.gets},
             {"attnserve_tensor_handle_uses_total",
              "Handles resolved by compute calls.", counters.uses},
             {"attnserve_tensor_deletes_total",
              "Resident tensors removed by DeleteTensor.", counters.deletes},
             {"attnserve_tensor_expiries_total",
              "Resident tensors freed because their time to live passed.",
              counters.expiries},
             {"attnserve_tensor_evictions_total",
              "Resident tensors freed to make room (--tensor_store_evict).",
              counters.evictions},
             {"attnserve_tensor_not_found_total",
              "Handles asked for that the store does not hold for the "
              "caller (NOT_FOUND).",
              counters.not_found}}) {
      MetricFamily family = Counter(name, help);
      AddCounterValue(&family, {}, value);
      families.push_back(std::move(family));
    }
    return families;
  }

 private:
  static void Add(const std::string& name, const std::string& help,
                  const std::function<double()>& read,
                  std::vector<MetricFamily>* families) {
    MetricFamily family;
    family.name = name;
    family.help = help;
    family.type = MetricType::Gauge;
    family.metric.emplace_back();
    family.metric.back().gauge.value = read ? read() : 0.0;
    families->push_back(std::move(family));
  }

  static MetricFamily Counter(const std::string& name,
                              const std::string& help) {
    MetricFamily family;
    family.name = name;
    family.help = help;
    family.type = MetricType::Counter;
    return family;
  }
  static void AddCounterValue(
      MetricFamily* family,
      std::initializer_list<std::pair<const char*, const char*>> labels,
      uint64_t value) {
    family->metric.emplace_back();
    for (const auto& [name, label_value] : labels) {
      prometheus::ClientMetric::Label label;
      label.name = name;
      label.value = label_value;
      family->metric.back().label.push_back(std::move(label));
    }
    family->metric.back().counter.value = static_cast<double>(value);
  }

  const MetricsSources sources_;
};

std::string CodeLabel(absl::StatusCode code) {
  return absl::StatusCodeToString(code);
}

}  // namespace

ServerMetrics::ServerMetrics(MetricsSources sources)
    : registry_(std::make_shared<prometheus::Registry>()),
      gauges_(std::make_shared<SampledGauges>(std::move(sources))),
      requests_(prometheus::BuildCounter()
                    .Name("attnserve_requests_total")
                    .Help("Finished calls by operator (RPC) and status code.")
                    .Register(*registry_)),
      queue_seconds_(prometheus::BuildHistogram()
                         .Name("attnserve_queue_seconds")
                         .Help("Time a job waited for a compute worker.")
                         .Register(*registry_)),
      compute_seconds_(prometheus::BuildHistogram()
                           .Name("attnserve_compute_seconds")
                           .Help("Planning plus running time of a job.")
                           .Register(*registry_)),
      cancel_to_free_(
          prometheus::BuildHistogram()
              .Name("attnserve_cancel_to_free_seconds")
              .Help("From a client's cancellation or deadline to its worker "
                    "being free.")
              .Register(*registry_)),
      flops_(prometheus::BuildCounter()
                 .Name("attnserve_flops_total")
                 .Help("Floating-point operations of successful calls.")
                 .Register(*registry_)) {}

ServerMetrics::~ServerMetrics() = default;

void ServerMetrics::OnRequest(const RequestRecord& record) {
  requests_.Add({{"operator", record.op}, {"code", CodeLabel(record.code)}})
      .Increment();
  if (record.scheduled) {
    queue_seconds_.Add({{"operator", record.op}}, LatencyBuckets())
        .Observe(record.queue_seconds);
    compute_seconds_.Add({{"operator", record.op}}, LatencyBuckets())
        .Observe(record.compute_seconds);
  }
  if (record.cancel_to_free_seconds >= 0) {
    cancel_to_free_.Add({}, LatencyBuckets())
        .Observe(record.cancel_to_free_seconds);
  }
  if (record.code == absl::StatusCode::kOk && record.flops > 0) {
    flops_.Add({{"operator", record.op}}).Increment(record.flops);
  }
}

std::string ServerMetrics::Render() const {
  std::vector<MetricFamily> families = registry_->Collect();
  std::vector<MetricFamily> sampled = gauges_->Collect();
  families.insert(families.end(), sampled.begin(), sampled.end());
  return prometheus::TextSerializer().Serialize(families);
}

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(
    const std::string& address, const ServerMetrics* metrics) {
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(address, /*threads=*/1);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address, ": ", e.what()));
  }
  const std::vector<int> ports = exposer->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address));
  }
  exposer->RegisterCollectable(metrics->registry());
  exposer->RegisterCollectable(metrics->gauges());
  return std::unique_ptr<MetricsEndpoint>(
      new MetricsEndpoint(std::move(exposer), ports.front()));
}

MetricsEndpoint::MetricsEndpoint(std::unique_ptr<prometheus::Exposer> exposer,
                                 int port)
    : exposer_(std::move(exposer)), port_(port) {}

MetricsEndpoint::~MetricsEndpoint() = default;

}  // namespace attnserve::server
