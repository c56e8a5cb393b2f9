// RUN: solder-opt %s --ignore-backend -p "fuse-ops{cost-model=roofline},fuse-blocks{cost-model=roofline}" | filecheck %s
// RUN: solder-opt %s --ignore-backend -p "fuse-ops{cost-model=roofline}" | filecheck %s --check-prefix=OPS

// conv -> batch norm -> residual add -> relu: fuse-ops leaves the conv outside, fuse-blocks joins it.
// OPS:         graph.conv
// OPS-NEXT:    "graph.kernel"
// CHECK-LABEL: func.func @forward
// CHECK:       "graph.kernel"(%x, %w, %mean, %var, %r)
// CHECK:         graph.conv
// CHECK-NEXT:    graph.batch_norm
// CHECK-NEXT:    graph.add
// CHECK-NEXT:    graph.relu
// CHECK-NEXT:    graph.yield
// CHECK-NEXT:  }) {kernel_id = 0 : i64, reason = "block: conv-bn-act"
// CHECK-NOT:   graph.conv
func.func @forward(%x: tensor<1x8x16x16xf32>, %w: tensor<8x8x3x3xf32>, %mean: tensor<8xf32>, %var: tensor<8xf32>, %r: tensor<1x8x16x16xf32>) -> tensor<1x8x16x16xf32> {
  %0 = graph.conv %x, %w {stride = array<i64: 1, 1>, padding = array<i64: 1, 1>, dilation = array<i64: 1, 1>, groups = 1 : i64} : tensor<1x8x16x16xf32>, tensor<8x8x3x3xf32> -> tensor<1x8x16x16xf32>
  %1 = graph.batch_norm %0, %mean, %var {eps = 1.0e-05 : f64} : tensor<1x8x16x16xf32>, tensor<8xf32>, tensor<8xf32> -> tensor<1x8x16x16xf32>
  %2 = graph.add %1, %r : (tensor<1x8x16x16xf32>, tensor<1x8x16x16xf32>) -> tensor<1x8x16x16xf32>
  %3 = graph.relu %2 : tensor<1x8x16x16xf32> -> tensor<1x8x16x16xf32>
  func.return %3 : tensor<1x8x16x16xf32>
}
