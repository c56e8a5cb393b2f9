// RUN: solder-opt %s -p dce | filecheck %s

// Unused pure ops disappear; used ones stay.
// CHECK-LABEL: func.func @forward
func.func @forward(%x: tensor<8xf32>) -> tensor<8xf32> {
  // CHECK-NOT: graph.exp
  // CHECK:     graph.tanh
  %0 = graph.exp %x : tensor<8xf32> -> tensor<8xf32>
  %1 = graph.tanh %x : tensor<8xf32> -> tensor<8xf32>
  func.return %1 : tensor<8xf32>
}
