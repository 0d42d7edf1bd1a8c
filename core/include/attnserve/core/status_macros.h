// Status helpers shared by the core and its callers.
//
// Debian's abseil (20220623) has no RETURN_IF_ERROR / ASSIGN_OR_RETURN, so
// attnserve defines its own. Invalid-argument errors carry the offending field
// path as a status payload so that the server can build a
// google.rpc.BadRequest field violation without parsing messages:
//
//   return InvalidField("key.shape[2]", "must divide query heads 12, got 5");
//   ...
//   std::string field = FieldOf(status);  // "key.shape[2]"
#ifndef ATTNSERVE_CORE_STATUS_MACROS_H_
#define ATTNSERVE_CORE_STATUS_MACROS_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace attnserve::core {

// Payload type URL under which the field path of an error is stored.
inline constexpr absl::string_view kFieldPayloadUrl =
    "type.attnserve.dev/attnserve.FieldPath";

// INVALID_ARGUMENT whose message is "<field>: <rule>" and whose payload
// names the field.
absl::Status InvalidField(absl::string_view field, absl::string_view rule);

// UNIMPLEMENTED naming the option that is not supported yet.
absl::Status UnimplementedField(absl::string_view field,
                                absl::string_view what);

// The field path attached by InvalidField / UnimplementedField, if any.
std::optional<std::string> FieldOf(const absl::Status& status);

}  // namespace attnserve::core

#define ATTN_STATUS_CONCAT_INNER_(a, b) a##b
#define ATTN_STATUS_CONCAT_(a, b) ATTN_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function when `expr` yields a non-OK status.
#define ATTN_RETURN_IF_ERROR(expr)               \
  do {                                           \
    ::absl::Status attn_status_ = (expr);        \
    if (!attn_status_.ok()) return attn_status_; \
  } while (0)

// `lhs = value of expr` or return its error. `lhs` may declare a variable.
#define ATTN_ASSIGN_OR_RETURN(lhs, expr)                                     \
  ATTN_ASSIGN_OR_RETURN_IMPL_(ATTN_STATUS_CONCAT_(attn_sor_, __LINE__), lhs, \
                              expr)
#define ATTN_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()

#endif  // ATTNSERVE_CORE_STATUS_MACROS_H_
