#include "tests/testing/nsa_requests.h"

#include "attnserve/wire/dtype.h"

namespace attnserve::test {
namespace {

template <typename Request>
void SetOptions(const core::NsaOptions& o, Request* r) {
  if (o.atten_mask.has_value())
    *r->mutable_atten_mask() = ToWire(*o.atten_mask);
  r->mutable_actual_seq_qlen()->Assign(o.actual_seq_qlen.begin(),
                                       o.actual_seq_qlen.end());
  r->mutable_actual_seq_kvlen()->Assign(o.actual_seq_kvlen.begin(),
                                        o.actual_seq_kvlen.end());
  r->set_scale_value(o.scale_value);
  r->set_selected_block_size(o.selected_block_size);
  r->set_selected_block_count(o.selected_block_count);
  r->set_head_num(o.head_num);
  r->set_input_layout(o.input_layout);
  r->set_sparse_mode(o.sparse_mode);
}

}  // namespace

v1::Tensor ToWire(const core::TensorView& view) {
  v1::Tensor t;
  t.set_dtype(wire::ToWireDType(view.dtype));
  t.mutable_shape()->Assign(view.shape.begin(), view.shape.end());
  t.set_data(static_cast<const char*>(view.data), view.size_bytes);
  return t;
}

core::HostTensor FromWire(const v1::Tensor& t) {
  core::HostTensor h;
  h.dtype = wire::ToCoreDType(t.dtype(), "dtype").value();
  h.shape.assign(t.shape().begin(), t.shape().end());
  h.bytes.assign(t.data().data(), t.data().size());
  return h;
}

v1::NsaSelectedAttentionRequest NsaForwardRequest(const NsaCase& c) {
  const core::NsaForwardArgs args = c.forward_args();
  v1::NsaSelectedAttentionRequest r;
  *r.mutable_query() = ToWire(args.query);
  *r.mutable_key() = ToWire(args.key);
  *r.mutable_value() = ToWire(args.value);
  *r.mutable_topk_indices() = ToWire(args.topk_indices);
  SetOptions(args.options, &r);
  return r;
}

v1::NsaSelectedAttentionGradRequest NsaGradRequest(
    const NsaCase& c, const v1::NsaSelectedAttentionResponse& forward) {
  const core::NsaBackwardArgs args = c.backward_args_with_reference_residuals();
  v1::NsaSelectedAttentionGradRequest r;
  *r.mutable_query() = ToWire(args.query);
  *r.mutable_key() = ToWire(args.key);
  *r.mutable_value() = ToWire(args.value);
  *r.mutable_attention_out() = forward.attention_out();
  *r.mutable_attention_out_grad() = ToWire(args.attention_out_grad);
  *r.mutable_softmax_max() = forward.softmax_max();
  *r.mutable_softmax_sum() = forward.softmax_sum();
  *r.mutable_topk_indices() = ToWire(args.topk_indices);
  SetOptions(args.options, &r);
  return r;
}

}  // namespace attnserve::test
