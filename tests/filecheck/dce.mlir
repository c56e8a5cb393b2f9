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

// An in-place extern stays though nothing uses its result: its effect is the write.
// CHECK-LABEL: func.func @in_place
func.func @in_place(%x: tensor<8xf32>) -> tensor<8xf32> {
  // CHECK:     graph.extern "aten.mul_.Tensor"
  // CHECK-NOT: graph.extern
  %0 = graph.extern "aten.mul_.Tensor"(%x) {args = "[[{\"$t\": 0}, 3], {}]", writes = array<i64: 0>} : (tensor<8xf32>) -> tensor<8xf32>
  %1 = graph.extern "aten.mul.Tensor"(%x) {args = "[[{\"$t\": 0}, 3], {}]"} : (tensor<8xf32>) -> tensor<8xf32>
  func.return %x : tensor<8xf32>
}
