// RUN: solder-opt %s --ignore-backend -p "fuse-ops{cost-model=roofline},fuse-blocks{cost-model=roofline}" | filecheck %s
// RUN: solder-opt %s --ignore-backend -p "fuse-ops{cost-model=roofline},fuse-blocks{patterns=attention cost-model=roofline}" | filecheck %s --check-prefix=NOMLP

// MLP block: linear+gelu and the next linear (+ residual add) become one kernel.
// CHECK-LABEL: func.func @mlp
// CHECK:       "graph.kernel"(%x, %w1, %b1, %w2, %b2)
// CHECK:         graph.linear
// CHECK-NEXT:    graph.gelu
// CHECK-NEXT:    graph.linear
// CHECK-NEXT:    graph.add
// CHECK-NEXT:    graph.yield
// CHECK-NEXT:  }) {kernel_id = 0 : i64, reason = "block: mlp"
// CHECK-NOT:   "graph.kernel"
// CHECK:       func.return
// NOMLP-LABEL: func.func @mlp
// NOMLP:       reason = "epilogue: linear+gelu"
// NOMLP:       reason = "epilogue: linear+add"
func.func @mlp(%x: tensor<32x64xf32>, %w1: tensor<256x64xf32>, %b1: tensor<256xf32>, %w2: tensor<64x256xf32>, %b2: tensor<64xf32>) -> tensor<32x64xf32> {
  %0 = graph.linear %x, %w1 bias %b1 : tensor<256xf32> : tensor<32x64xf32>, tensor<256x64xf32> -> tensor<32x256xf32>
  %1 = graph.gelu %0 {approximate = "tanh"} : tensor<32x256xf32> -> tensor<32x256xf32>
  %2 = graph.linear %1, %w2 bias %b2 : tensor<64xf32> : tensor<32x256xf32>, tensor<64x256xf32> -> tensor<32x64xf32>
  %3 = graph.add %2, %x : (tensor<32x64xf32>, tensor<32x64xf32>) -> tensor<32x64xf32>
  func.return %3 : tensor<32x64xf32>
}

// Attention followed by its output projection: one kernel (the permute/reshape between them included).
// CHECK-LABEL: func.func @attention
// CHECK:       "graph.kernel"(%q, %k, %v, %w)
// CHECK:         graph.attention
// CHECK-NEXT:    graph.permute
// CHECK-NEXT:    graph.reshape
// CHECK-NEXT:    graph.linear
// CHECK-NEXT:    graph.yield
// CHECK-NEXT:  }) {kernel_id = 1 : i64, reason = "block: attention"
// NOMLP-LABEL: func.func @attention
// NOMLP:       reason = "block: attention"
func.func @attention(%q: tensor<2x4x32x16xf32>, %k: tensor<2x4x32x16xf32>, %v: tensor<2x4x32x16xf32>, %w: tensor<64x64xf32>) -> tensor<2x32x64xf32> {
  %0 = graph.attention %q, %k, %v {scale = 0.25 : f64, causal} : tensor<2x4x32x16xf32>, tensor<2x4x32x16xf32>, tensor<2x4x32x16xf32> -> tensor<2x4x32x16xf32>
  %1 = graph.permute %0 {perm = array<i64: 0, 2, 1, 3>} : tensor<2x4x32x16xf32> -> tensor<2x32x4x16xf32>
  %2 = graph.reshape %1 : tensor<2x32x4x16xf32> -> tensor<2x32x64xf32>
  %3 = graph.linear %2, %w : tensor<2x32x64xf32>, tensor<64x64xf32> -> tensor<2x32x64xf32>
  func.return %3 : tensor<2x32x64xf32>
}

// Two GEMMs with no activation between them are not an MLP block: they stay two kernels.
// CHECK-LABEL: func.func @no_block
// CHECK:       reason = "single: linear
// CHECK:       reason = "single: linear
func.func @no_block(%x: tensor<32x64xf32>, %w1: tensor<64x64xf32>, %w2: tensor<64x64xf32>) -> tensor<32x64xf32> {
  %0 = graph.linear %x, %w1 : tensor<32x64xf32>, tensor<64x64xf32> -> tensor<32x64xf32>
  %1 = graph.linear %0, %w2 : tensor<32x64xf32>, tensor<64x64xf32> -> tensor<32x64xf32>
  func.return %1 : tensor<32x64xf32>
}
