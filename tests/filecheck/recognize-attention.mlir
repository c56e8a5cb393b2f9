// RUN: solder-opt %s -p "recognize-attention,canonicalize,dce" | filecheck %s

// masked_fill causal: softmax(where(tril(ones) == 0, -inf, q @ kᵀ / 4)) @ v. The mask is built from
// constants only, so its values prove it causal: one graph.attention, no mask operand, scale 1/4.
// CHECK-LABEL: func.func @forward
// CHECK-SAME:  (%[[Q:.*]]: tensor<2x4x8x16xf32>, %[[K:.*]]: tensor<2x4x8x16xf32>, %[[V:.*]]: tensor<2x4x8x16xf32>)
func.func @forward(%q: tensor<2x4x8x16xf32>, %k: tensor<2x4x8x16xf32>, %v: tensor<2x4x8x16xf32>) -> tensor<2x4x8x16xf32> {
  // CHECK-NOT:  graph.softmax
  // CHECK:      %[[A:.*]] = graph.attention %[[Q]], %[[K]], %[[V]] {graph.origin = "masked_fill causal", scale = 2.500000e-01 : f64, causal}
  // CHECK-NEXT: func.return %[[A]]
  %kt = graph.permute %k {perm = array<i64: 0, 1, 3, 2>} : tensor<2x4x8x16xf32> -> tensor<2x4x16x8xf32>
  %s = graph.matmul %q, %kt : (tensor<2x4x8x16xf32>, tensor<2x4x16x8xf32>) -> tensor<2x4x8x8xf32>
  %c4 = graph.constant 4.000000e+00 : f64 : tensor<f32>
  %ss = graph.div %s, %c4 : (tensor<2x4x8x8xf32>, tensor<f32>) -> tensor<2x4x8x8xf32>
  %one = graph.constant 1.000000e+00 : f64 : tensor<8x8xf32>
  %tril = graph.triangular %one {diagonal = 0 : i64} : tensor<8x8xf32> -> tensor<8x8xf32>
  %zero = graph.constant 0.000000e+00 : f64 : tensor<f32>
  %drop = graph.eq %tril, %zero : (tensor<8x8xf32>, tensor<f32>) -> tensor<8x8xi1>
  %ninf = graph.constant "-inf" : tensor<f32>
  %m = graph.where %drop, %ninf, %ss : (tensor<8x8xi1>, tensor<f32>, tensor<2x4x8x8xf32>) -> tensor<2x4x8x8xf32>
  %p = graph.softmax %m {dim = 3 : i64} : tensor<2x4x8x8xf32> -> tensor<2x4x8x8xf32>
  %o = graph.matmul %p, %v : (tensor<2x4x8x8xf32>, tensor<2x4x8x16xf32>) -> tensor<2x4x8x16xf32>
  func.return %o : tensor<2x4x8x16xf32>
}

// SDPA after repeat_interleave(2, dim=1) of k and v: the repeats go, graph.attention does GQA itself.
// CHECK-LABEL: func.func @gqa
// CHECK-SAME:  (%[[Q:.*]]: tensor<2x4x8x16xf32>, %[[K:.*]]: tensor<2x2x8x16xf32>, %[[V:.*]]: tensor<2x2x8x16xf32>)
// CHECK-NOT:   graph.expand
// CHECK:       graph.attention %[[Q]], %[[K]], %[[V]] {graph.origin = "sdpa causal gqa", scale = 2.500000e-01 : f64, causal} : tensor<2x4x8x16xf32>, tensor<2x2x8x16xf32>, tensor<2x2x8x16xf32>
func.func @gqa(%q: tensor<2x4x8x16xf32>, %k: tensor<2x2x8x16xf32>, %v: tensor<2x2x8x16xf32>) -> tensor<2x4x8x16xf32> {
  %k1 = graph.reshape %k : tensor<2x2x8x16xf32> -> tensor<2x2x1x8x16xf32>
  %k2 = graph.expand %k1 : tensor<2x2x1x8x16xf32> -> tensor<2x2x2x8x16xf32>
  %k3 = graph.reshape %k2 : tensor<2x2x2x8x16xf32> -> tensor<2x4x8x16xf32>
  %v1 = graph.reshape %v : tensor<2x2x8x16xf32> -> tensor<2x2x1x8x16xf32>
  %v2 = graph.expand %v1 : tensor<2x2x1x8x16xf32> -> tensor<2x2x2x8x16xf32>
  %v3 = graph.reshape %v2 : tensor<2x2x2x8x16xf32> -> tensor<2x4x8x16xf32>
  %o = graph.attention %q, %k3, %v3 {scale = 2.500000e-01 : f64, causal} : tensor<2x4x8x16xf32>, tensor<2x4x8x16xf32>, tensor<2x4x8x16xf32> -> tensor<2x4x8x16xf32>
  func.return %o : tensor<2x4x8x16xf32>
}

// An explicit boolean mask computed from aranges (the HF spelling of causal) becomes `causal`.
// CHECK-LABEL: func.func @arange_mask
// CHECK-NOT:   graph.arange
// CHECK:       graph.attention %{{.*}}, %{{.*}}, %{{.*}} {graph.origin = "sdpa causal mask", scale = 2.500000e-01 : f64, causal}
func.func @arange_mask(%q: tensor<2x4x8x16xf32>, %k: tensor<2x4x8x16xf32>, %v: tensor<2x4x8x16xf32>) -> tensor<2x4x8x16xf32> {
  %i = graph.arange {start = 0 : i64, step = 1 : i64} : tensor<8xi64>
  %row = graph.reshape %i : tensor<8xi64> -> tensor<8x1xi64>
  %col = graph.reshape %i : tensor<8xi64> -> tensor<1x8xi64>
  %keep = graph.le %col, %row : (tensor<1x8xi64>, tensor<8x1xi64>) -> tensor<8x8xi1>
  %mask = graph.expand %keep : tensor<8x8xi1> -> tensor<2x1x8x8xi1>
  %o = graph.attention %q, %k, %v mask %mask : tensor<2x1x8x8xi1> {scale = 2.500000e-01 : f64} : tensor<2x4x8x16xf32>, tensor<2x4x8x16xf32>, tensor<2x4x8x16xf32> -> tensor<2x4x8x16xf32>
  func.return %o : tensor<2x4x8x16xf32>
}

// A mask that is a function argument (an input or a registered buffer) stays a mask operand.
// CHECK-LABEL: func.func @argument_mask
// CHECK:       graph.attention %{{.*}}, %{{.*}}, %{{.*}} mask %{{.*}} : tensor<8x8xi1> {graph.origin = "sdpa mask", scale = 2.500000e-01 : f64}
func.func @argument_mask(%q: tensor<2x4x8x16xf32>, %k: tensor<2x4x8x16xf32>, %v: tensor<2x4x8x16xf32>, %mask: tensor<8x8xi1>) -> tensor<2x4x8x16xf32> {
  %o = graph.attention %q, %k, %v mask %mask : tensor<8x8xi1> {scale = 2.500000e-01 : f64} : tensor<2x4x8x16xf32>, tensor<2x4x8x16xf32>, tensor<2x4x8x16xf32> -> tensor<2x4x8x16xf32>
  func.return %o : tensor<2x4x8x16xf32>
}
