// The choice of tile products (plan.h): the only place that decides which
// precision a request's products run in.
#include "attnserve/core/plan.h"
#include "runtime/bf16_gemm.h"

namespace attnserve::core {

const char* TileProductsName(TileProducts products) {
  return products == TileProducts::kBFloat16 ? "bf16" : "fp32";
}

TileProducts ChooseTileProducts(DType dtype, bool allow_bf16) {
  // FLOAT16 keeps the fp32 products: oneDNN 2.6 creates no f16 matmul on
  // CPUs (AVX-512 FP16 hosts included).
  if (dtype == DType::kBFloat16 && allow_bf16 && Bf16Products().available) {
    return TileProducts::kBFloat16;
  }
  return TileProducts::kFloat32;
}

}  // namespace attnserve::core
