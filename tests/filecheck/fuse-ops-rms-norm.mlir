// RUN: solder-opt %s -p "fuse-ops{cost-model=roofline}" | filecheck %s

// RMSNorm written out as pow/mean/add/rsqrt/mul/mul becomes one kernel.
// CHECK-LABEL: func.func @forward
// CHECK:       "graph.kernel"(%x, %w) ({
// CHECK:         graph.pow
// CHECK-NEXT:    graph.reduce "mean"
// CHECK-NEXT:    graph.add
// CHECK-NEXT:    graph.rsqrt
// CHECK-NEXT:    graph.mul
// CHECK-NEXT:    graph.mul
// CHECK-NEXT:    graph.yield
// CHECK-NEXT:  }) {kernel_id = 0 : i64, reason = "vertical: rms-norm"
// CHECK-NOT:   graph.kernel
func.func @forward(%x: tensor<4x16x64xf32>, %w: tensor<64xf32>) -> tensor<4x16x64xf32> {
  %two = graph.constant 2.0 : f64 : tensor<f32>
  %eps = graph.constant 1.0e-06 : f64 : tensor<f32>
  %0 = graph.pow %x, %two : (tensor<4x16x64xf32>, tensor<f32>) -> tensor<4x16x64xf32>
  %1 = graph.reduce "mean" %0 {dims = array<i64: 2>, keepdim} : tensor<4x16x64xf32> -> tensor<4x16x1xf32>
  %2 = graph.add %1, %eps : (tensor<4x16x1xf32>, tensor<f32>) -> tensor<4x16x1xf32>
  %3 = graph.rsqrt %2 : tensor<4x16x1xf32> -> tensor<4x16x1xf32>
  %4 = graph.mul %x, %3 : (tensor<4x16x64xf32>, tensor<4x16x1xf32>) -> tensor<4x16x64xf32>
  %5 = graph.mul %4, %w : (tensor<4x16x64xf32>, tensor<64xf32>) -> tensor<4x16x64xf32>
  func.return %5 : tensor<4x16x64xf32>
}
