// RUN: solder-opt %s -p canonicalize | filecheck %s

// Identity layout ops and casts fold away; reshape chains and permute chains merge.
// CHECK-LABEL: func.func @forward
// CHECK-SAME:  (%[[X:.*]]: tensor<2x3x4xf32>
func.func @forward(%x: tensor<2x3x4xf32>, %h: tensor<4xf16>) -> (tensor<24xf32>, tensor<4x3x2xf32>, tensor<2x3x4xf32>, tensor<4xf16>, tensor<f32>) {
  // CHECK-NEXT: %[[R:.*]] = graph.reshape %[[X]] : tensor<2x3x4xf32> -> tensor<24xf32>
  %0 = graph.reshape %x : tensor<2x3x4xf32> -> tensor<6x4xf32>
  %1 = graph.reshape %0 : tensor<6x4xf32> -> tensor<24xf32>
  // CHECK-NEXT: %[[P:.*]] = graph.permute %[[X]] {perm = array<i64: 2, 1, 0>} : tensor<2x3x4xf32> -> tensor<4x3x2xf32>
  %2 = graph.permute %x {perm = array<i64: 1, 0, 2>} : tensor<2x3x4xf32> -> tensor<3x2x4xf32>
  %3 = graph.permute %2 {perm = array<i64: 2, 0, 1>} : tensor<3x2x4xf32> -> tensor<4x3x2xf32>
  // CHECK-NOT: graph.cast
  %4 = graph.cast %x : tensor<2x3x4xf32> -> tensor<2x3x4xf32>
  %5 = graph.cast %h : tensor<4xf16> -> tensor<4xf32>
  %6 = graph.cast %5 : tensor<4xf32> -> tensor<4xf16>
  // A cast of a constant becomes a constant of the new type.
  // CHECK: %[[C:.*]] = graph.constant 2.000000e+00 : f64 : tensor<f32>
  %7 = graph.constant 2 : i64 : tensor<i64>
  %8 = graph.cast %7 : tensor<i64> -> tensor<f32>
  // CHECK: func.return %[[R]], %[[P]], %[[X]], %{{.*}}, %[[C]]
  func.return %1, %3, %4, %6, %8 : tensor<24xf32>, tensor<4x3x2xf32>, tensor<2x3x4xf32>, tensor<4xf16>, tensor<f32>
}
