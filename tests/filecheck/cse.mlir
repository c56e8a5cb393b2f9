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
