// RUN: solder-opt %s -p "fuse-ops{mode=never}" | filecheck %s --check-prefix=NEVER
// RUN: solder-opt %s -p "fuse-ops{mode=always cost-model=roofline}" | filecheck %s --check-prefix=ALWAYS
// RUN: solder-opt %s -p "fuse-ops{max-ops=2 cost-model=roofline}" | filecheck %s --check-prefix=MAX2

// never: one kernel per op (the layout op too), so backends still see one launch per kernel.
// NEVER:         reason = "single: add (mode=never)"
// NEVER:         reason = "single: tanh (mode=never)"
// NEVER:         reason = "single: exp (mode=never)"
// NEVER:         reason = "single: permute (mode=never)"
// NEVER-NOT:     "graph.kernel"
// always: one kernel.
// ALWAYS-COUNT-1: "graph.kernel"
// ALWAYS-NOT:     "graph.kernel"
// max-ops=2 bounds the group size.
// MAX2-COUNT-2:   "graph.kernel"
// MAX2-NOT:       "graph.kernel"
func.func @forward(%x: tensor<8x64xf32>, %b: tensor<64xf32>) -> tensor<64x8xf32> {
  %0 = graph.add %x, %b : (tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
  %1 = graph.tanh %0 : tensor<8x64xf32> -> tensor<8x64xf32>
  %2 = graph.exp %1 : tensor<8x64xf32> -> tensor<8x64xf32>
  %3 = graph.permute %2 {perm = array<i64: 1, 0>} : tensor<8x64xf32> -> tensor<64x8xf32>
  func.return %3 : tensor<64x8xf32>
}
