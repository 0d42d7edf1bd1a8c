// NSA wire requests built from an NsaCase, and copies between wire tensors
// and the core's, for the tests that send NSA calls to a server (in-process
// or over a process boundary).
//
//   NsaCase c(config);
//   v1::NsaSelectedAttentionRequest forward = NsaForwardRequest(c);
//   ... call it ...
//   v1::NsaSelectedAttentionGradRequest grad = NsaGradRequest(c, response);
#ifndef ATTNSERVE_TESTS_TESTING_NSA_REQUESTS_H_
#define ATTNSERVE_TESTS_TESTING_NSA_REQUESTS_H_

#include "attnserve/core/tensor.h"
#include "attnserve/v1/attention.pb.h"
#include "tests/testing/nsa_case.h"

namespace attnserve::test {

// A wire tensor holding a copy of `view`'s bytes.
v1::Tensor ToWire(const core::TensorView& view);

// A core tensor holding a copy of `tensor`'s bytes.
core::HostTensor FromWire(const v1::Tensor& tensor);

// The case's forward request.
v1::NsaSelectedAttentionRequest NsaForwardRequest(const NsaCase& c);

// The case's grad request with the residuals of `forward`.
v1::NsaSelectedAttentionGradRequest NsaGradRequest(
    const NsaCase& c, const v1::NsaSelectedAttentionResponse& forward);

}  // namespace attnserve::test

#endif  // ATTNSERVE_TESTS_TESTING_NSA_REQUESTS_H_
