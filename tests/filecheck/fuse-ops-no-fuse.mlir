// RUN: solder-opt %s --ignore-backend -p "fuse-ops{cost-model=roofline}" | filecheck %s

// Fusing exp with add would create a cycle through the gather (which stays outside): no fusion.
// CHECK-LABEL: func.func @cycle
// CHECK:       %[[A:.*]] = "graph.kernel"(%v)
// CHECK:         graph.exp
// CHECK:       reason = "single: exp; not fused with add: would create a cycle"
// CHECK-NEXT:  %[[G:.*]] = graph.gather %[[A]], %i
// CHECK-NEXT:  "graph.kernel"(%[[A]], %[[G]])
// CHECK:         graph.add
// CHECK:       reason = "single: add; not fused with exp: would create a cycle"
func.func @cycle(%v: tensor<8x4xf32>, %i: tensor<8xi64>) -> tensor<8x4xf32> {
  %a = graph.exp %v : tensor<8x4xf32> -> tensor<8x4xf32>
  %g = graph.gather %a, %i {dim = 0 : i64} : (tensor<8x4xf32>, tensor<8xi64>) -> tensor<8x4xf32>
  %c = graph.add %a, %g : (tensor<8x4xf32>, tensor<8x4xf32>) -> tensor<8x4xf32>
  func.return %c : tensor<8x4xf32>
}

// The slice has users in two kernels that cannot merge (rows of different shapes). Recomputing it
// in both would read the 256 KiB input twice: it is computed once, in one kernel that also yields it.
// CHECK-LABEL: func.func @no_recompute
// CHECK:       graph.slice
// CHECK-NOT:   graph.slice
// CHECK:       func.return
func.func @no_recompute(%big: tensor<64x1024xf32>) -> (tensor<64xf32>, tensor<16xf32>) {
  %s = graph.slice %big {dim = 1 : i64, start = 0 : i64, end = 16 : i64, step = 1 : i64} : tensor<64x1024xf32> -> tensor<64x16xf32>
  %r1 = graph.reduce "sum" %s {dims = array<i64: 1>} : tensor<64x16xf32> -> tensor<64xf32>
  %r2 = graph.reduce "max" %s {dims = array<i64: 0>} : tensor<64x16xf32> -> tensor<16xf32>
  func.return %r1, %r2 : tensor<64xf32>, tensor<16xf32>
}

// Two matmuls never share a kernel in fuse-ops (fuse-blocks joins anchors), and a layer norm does not
// fuse into the prologue of the linear that reads it.
// CHECK-LABEL: func.func @anchors
// CHECK:       reason = "single: layer-norm; not fused with linear: computed ops before linear
// CHECK:       reason = "epilogue: linear+relu
// CHECK:       reason = "single: linear
func.func @anchors(%x: tensor<8x64xf32>, %w1: tensor<64x64xf32>, %w2: tensor<64x64xf32>) -> tensor<8x64xf32> {
  %0 = graph.layer_norm %x {normalized_ndim = 1 : i64, eps = 1.0e-05 : f64} : tensor<8x64xf32> -> tensor<8x64xf32>
  %1 = graph.linear %0, %w1 : tensor<8x64xf32>, tensor<64x64xf32> -> tensor<8x64xf32>
  %2 = graph.relu %1 : tensor<8x64xf32> -> tensor<8x64xf32>
  %3 = graph.linear %2, %w2 : tensor<8x64xf32>, tensor<64x64xf32> -> tensor<8x64xf32>
  func.return %3 : tensor<8x64xf32>
}
