// RUN: solder-opt %s --ignore-backend -p "fuse-ops{cost-model=roofline}" | filecheck %s

// Epilogue fusion: linear + bias + GELU become one kernel; the reason names the pattern and the
// kernel records the cost model's estimates.
// CHECK-LABEL: func.func @epilogue
// CHECK:       %[[K:.*]] = "graph.kernel"(%x, %w, %b) ({
// CHECK-NEXT:  ^{{.*}}(%[[X:.*]]: tensor<64x128xf32>, %[[W:.*]]: tensor<256x128xf32>, %[[B:.*]]: tensor<256xf32>):
// CHECK-NEXT:    %[[L:.*]] = graph.linear %[[X]], %[[W]]
// CHECK-NEXT:    %[[A:.*]] = graph.add %[[L]], %[[B]]
// CHECK-NEXT:    %[[G:.*]] = graph.gelu %[[A]]
// CHECK-NEXT:    graph.yield %[[G]] : tensor<64x256xf32>
// CHECK-NEXT:  }) {kernel_id = 0 : i64, reason = "epilogue: linear+bias-gelu", est_seconds = {{.*}} : f64, est_parts_seconds = {{.*}} : f64}
// CHECK-NEXT:  func.return %[[K]]
func.func @epilogue(%x: tensor<64x128xf32>, %w: tensor<256x128xf32>, %b: tensor<256xf32>) -> tensor<64x256xf32> {
  %0 = graph.linear %x, %w : tensor<64x128xf32>, tensor<256x128xf32> -> tensor<64x256xf32>
  %1 = graph.add %0, %b : (tensor<64x256xf32>, tensor<256xf32>) -> tensor<64x256xf32>
  %2 = graph.gelu %1 {approximate = "none"} : tensor<64x256xf32> -> tensor<64x256xf32>
  func.return %2 : tensor<64x256xf32>
}

// Softmax with its scale and mask: one kernel; the scalar constants are cloned into it.
// CHECK-LABEL: func.func @softmax
// CHECK:       "graph.kernel"(%s, %m) ({
// CHECK:         graph.constant
// CHECK:         graph.div
// CHECK-NEXT:    graph.where
// CHECK-NEXT:    graph.softmax
// CHECK-NEXT:    graph.yield
// CHECK-NEXT:  }) {kernel_id = 1 : i64, reason = "vertical: softmax+scale+mask"
// CHECK-NOT:   graph.kernel
func.func @softmax(%s: tensor<2x4x32x32xf32>, %m: tensor<32x32xi1>) -> tensor<2x4x32x32xf32> {
  %c = graph.constant 8.0 : f64 : tensor<f32>
  %ninf = graph.constant "-inf" : tensor<f32>
  %0 = graph.div %s, %c : (tensor<2x4x32x32xf32>, tensor<f32>) -> tensor<2x4x32x32xf32>
  %1 = graph.where %m, %0, %ninf : (tensor<32x32xi1>, tensor<2x4x32x32xf32>, tensor<f32>) -> tensor<2x4x32x32xf32>
  %2 = graph.softmax %1 {dim = 3 : i64} : tensor<2x4x32x32xf32> -> tensor<2x4x32x32xf32>
  func.return %2 : tensor<2x4x32x32xf32>
}

// Residual add + layer norm: one kernel with two outputs (the sum is also returned).
// CHECK-LABEL: func.func @add_layer_norm
// CHECK:       %{{.*}}, %{{.*}} = "graph.kernel"(%x, %r, %w, %b)
// CHECK:         graph.add
// CHECK-NEXT:    graph.layer_norm
// CHECK-NEXT:    graph.yield {{.*}}, {{.*}} : tensor<8x64xf32>, tensor<8x64xf32>
// CHECK-NEXT:  }) {kernel_id = 2 : i64, reason = "vertical: add-layer-norm"
func.func @add_layer_norm(%x: tensor<8x64xf32>, %r: tensor<8x64xf32>, %w: tensor<64xf32>, %b: tensor<64xf32>) -> (tensor<8x64xf32>, tensor<8x64xf32>) {
  %0 = graph.add %x, %r : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  %1 = graph.layer_norm %0 weight %w : tensor<64xf32> bias %b : tensor<64xf32> {normalized_ndim = 1 : i64, eps = 1.0e-05 : f64} : tensor<8x64xf32> -> tensor<8x64xf32>
  func.return %0, %1 : tensor<8x64xf32>, tensor<8x64xf32>
}
