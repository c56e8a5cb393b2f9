// RUN: solder-opt %s -p "recognize-attention,canonicalize,dce" | filecheck %s

// Near misses that only look like attention are left exactly as they are.

// Softmax over the query axis (dim 2), not the key axis.
// CHECK-LABEL: func.func @softmax_other_axis
// CHECK-NOT:   graph.attention
// CHECK:       graph.softmax %{{.*}} {dim = 2 : i64}
func.func @softmax_other_axis(%q: tensor<2x4x8x16xf32>, %k: tensor<2x4x8x16xf32>, %v: tensor<2x4x8x16xf32>) -> tensor<2x4x8x16xf32> {
  %kt = graph.permute %k {perm = array<i64: 0, 1, 3, 2>} : tensor<2x4x8x16xf32> -> tensor<2x4x16x8xf32>
  %s = graph.matmul %q, %kt : (tensor<2x4x8x16xf32>, tensor<2x4x16x8xf32>) -> tensor<2x4x8x8xf32>
  %p = graph.softmax %s {dim = 2 : i64} : tensor<2x4x8x8xf32> -> tensor<2x4x8x8xf32>
  %o = graph.matmul %p, %v : (tensor<2x4x8x8xf32>, tensor<2x4x8x16xf32>) -> tensor<2x4x8x16xf32>
  func.return %o : tensor<2x4x8x16xf32>
}

// The probabilities are also returned: rewriting would lose them.
// CHECK-LABEL: func.func @probs_used_twice
// CHECK-NOT:   graph.attention
// CHECK:       %[[P:.*]] = graph.softmax
// CHECK:       func.return %{{.*}}, %[[P]]
func.func @probs_used_twice(%q: tensor<2x4x8x16xf32>, %k: tensor<2x4x8x16xf32>, %v: tensor<2x4x8x16xf32>) -> (tensor<2x4x8x16xf32>, tensor<2x4x8x8xf32>) {
  %kt = graph.permute %k {perm = array<i64: 0, 1, 3, 2>} : tensor<2x4x8x16xf32> -> tensor<2x4x16x8xf32>
  %s = graph.matmul %q, %kt : (tensor<2x4x8x16xf32>, tensor<2x4x16x8xf32>) -> tensor<2x4x8x8xf32>
  %p = graph.softmax %s {dim = 3 : i64} : tensor<2x4x8x8xf32> -> tensor<2x4x8x8xf32>
  %o = graph.matmul %p, %v : (tensor<2x4x8x8xf32>, tensor<2x4x8x16xf32>) -> tensor<2x4x8x16xf32>
  func.return %o, %p : tensor<2x4x8x16xf32>, tensor<2x4x8x8xf32>
}

// A mask that hides the whole first row (tril with diagonal -1): eager softmax gives NaN there.
// CHECK-LABEL: func.func @whole_row_masked
// CHECK-NOT:   graph.attention
// CHECK:       graph.where
func.func @whole_row_masked(%q: tensor<2x4x8x16xf32>, %k: tensor<2x4x8x16xf32>, %v: tensor<2x4x8x16xf32>) -> tensor<2x4x8x16xf32> {
  %kt = graph.permute %k {perm = array<i64: 0, 1, 3, 2>} : tensor<2x4x8x16xf32> -> tensor<2x4x16x8xf32>
  %s = graph.matmul %q, %kt : (tensor<2x4x8x16xf32>, tensor<2x4x16x8xf32>) -> tensor<2x4x8x8xf32>
  %one = graph.constant 1.000000e+00 : f64 : tensor<8x8xf32>
  %tril = graph.triangular %one {diagonal = -1 : i64} : tensor<8x8xf32> -> tensor<8x8xf32>
  %zero = graph.constant 0.000000e+00 : f64 : tensor<f32>
  %drop = graph.eq %tril, %zero : (tensor<8x8xf32>, tensor<f32>) -> tensor<8x8xi1>
  %ninf = graph.constant "-inf" : tensor<f32>
  %m = graph.where %drop, %ninf, %s : (tensor<8x8xi1>, tensor<f32>, tensor<2x4x8x8xf32>) -> tensor<2x4x8x8xf32>
  %p = graph.softmax %m {dim = 3 : i64} : tensor<2x4x8x8xf32> -> tensor<2x4x8x8xf32>
  %o = graph.matmul %p, %v : (tensor<2x4x8x8xf32>, tensor<2x4x8x16xf32>) -> tensor<2x4x8x16xf32>
  func.return %o : tensor<2x4x8x16xf32>
}
