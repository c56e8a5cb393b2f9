// RUN: solder-opt %s -p "fuse-ops{cost-model=roofline}" | filecheck %s
// RUN: solder-opt %s -p "fuse-ops{cost-model=roofline horizontal=false}" | filecheck %s --check-prefix=OFF

// Multi-output reduction: mean and max of the same rows share one read of %x.
// CHECK-LABEL: func.func @forward
// CHECK:       %{{.*}}, %{{.*}} = "graph.kernel"(%x)
// CHECK:         graph.reduce "mean"
// CHECK-NEXT:    graph.reduce "max"
// CHECK-NEXT:    graph.yield
// CHECK-NEXT:  }) {kernel_id = 0 : i64, reason = "horizontal: reduce"
// CHECK-NOT:   graph.kernel
// OFF-COUNT-2: "graph.kernel"(%x)
func.func @forward(%x: tensor<128x512xf32>) -> (tensor<128xf32>, tensor<128xf32>) {
  %0 = graph.reduce "mean" %x {dims = array<i64: 1>} : tensor<128x512xf32> -> tensor<128xf32>
  %1 = graph.reduce "max" %x {dims = array<i64: 1>} : tensor<128x512xf32> -> tensor<128xf32>
  func.return %0, %1 : tensor<128xf32>, tensor<128xf32>
}
