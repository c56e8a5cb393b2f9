// RUN: solder-opt %s -p cse | filecheck %s

// Identical pure ops on identical operands merge into one.
// CHECK-LABEL: func.func @forward
func.func @forward(%x: tensor<8x16xf32>) -> tensor<8x16xf32> {
  // CHECK:     %[[E:.*]] = graph.exp %{{.*}}
  // CHECK-NOT: graph.exp
  // CHECK:     graph.add %[[E]], %[[E]]
  %0 = graph.exp %x : tensor<8x16xf32> -> tensor<8x16xf32>
  %1 = graph.exp %x : tensor<8x16xf32> -> tensor<8x16xf32>
  %2 = graph.add %0, %1 : (tensor<8x16xf32>, tensor<8x16xf32>) -> tensor<8x16xf32>
  func.return %2 : tensor<8x16xf32>
}

// An in-place extern is never merged, nor is the buffer it writes, a view of it, or a read of it: the two
// zero buffers that two scatter_add_ calls fill stay two. The functional ops beside them still merge.
// CHECK-LABEL: func.func @in_place
func.func @in_place(%i: tensor<3x2xi64>, %s: tensor<3x2xf32>, %x: tensor<4x2xf32>) -> (tensor<4x2xf32>, tensor<4x2xf32>, tensor<4x2xf32>) {
  // CHECK:     %[[Z1:.*]] = graph.constant
  // CHECK:     %[[Z2:.*]] = graph.constant
  // CHECK:     %[[V1:.*]] = graph.reshape %[[Z1]]
  // CHECK:     %[[V2:.*]] = graph.reshape %[[Z2]]
  // CHECK:     graph.extern "aten.scatter_add_.default"(%[[V1]],
  // CHECK:     graph.extern "aten.scatter_add_.default"(%[[V2]],
  // CHECK:     %[[E:.*]] = graph.exp %x
  // CHECK-NOT: graph.exp
  // CHECK:     graph.add %[[E]], %[[E]]
  %z1 = graph.constant 0.0 : f64 : tensor<4x2xf32>
  %z2 = graph.constant 0.0 : f64 : tensor<4x2xf32>
  %v1 = graph.reshape %z1 : tensor<4x2xf32> -> tensor<4x2xf32>
  %v2 = graph.reshape %z2 : tensor<4x2xf32> -> tensor<4x2xf32>
  %a = graph.extern "aten.scatter_add_.default"(%v1, %i, %s) {args = "[[{\"$t\": 0}, 0, {\"$t\": 1}, {\"$t\": 2}], {}]", writes = array<i64: 0>} : (tensor<4x2xf32>, tensor<3x2xi64>, tensor<3x2xf32>) -> tensor<4x2xf32>
  %b = graph.extern "aten.scatter_add_.default"(%v2, %i, %s) {args = "[[{\"$t\": 0}, 0, {\"$t\": 1}, {\"$t\": 2}], {}]", writes = array<i64: 0>} : (tensor<4x2xf32>, tensor<3x2xi64>, tensor<3x2xf32>) -> tensor<4x2xf32>
  %e1 = graph.exp %x : tensor<4x2xf32> -> tensor<4x2xf32>
  %e2 = graph.exp %x : tensor<4x2xf32> -> tensor<4x2xf32>
  %sum = graph.add %e1, %e2 : (tensor<4x2xf32>, tensor<4x2xf32>) -> tensor<4x2xf32>
  func.return %z1, %z2, %sum : tensor<4x2xf32>, tensor<4x2xf32>, tensor<4x2xf32>
}
