// RUN: solder-opt %s -p "rewrite-sparse-attention{policy=window window=32 sinks=16 block=16}" | filecheck %s

// A causal attention over T=128 becomes block-sparse: a window of 32 tokens (2 blocks + the diagonal)
// and one sink block; density = visited / causal key blocks = 26 / 36 over the 8 query blocks.
// CHECK-LABEL: func.func @causal
// CHECK-SAME:  (%[[Q:.*]]: tensor<1x2x128x16xf32>, %[[K:.*]]: tensor<1x2x128x16xf32>, %[[V:.*]]: tensor<1x2x128x16xf32>)
// CHECK-NOT:   graph.attention
// CHECK:       %[[O:.*]] = graph.block_sparse_attention %[[Q]], %[[K]], %[[V]] {block = 16 : i64, scale = 2.500000e-01 : f64, policy = "window", heads = "[{\22pattern\22: \22window\22, \22window\22: 32, \22sinks\22: 16}]", density = 7.222000e-01 : f64, causal}
// CHECK-NEXT:  func.return %[[O]]
func.func @causal(%q: tensor<1x2x128x16xf32>, %k: tensor<1x2x128x16xf32>, %v: tensor<1x2x128x16xf32>) -> tensor<1x2x128x16xf32> {
  %o = graph.attention %q, %k, %v {scale = 2.500000e-01 : f64, causal} : tensor<1x2x128x16xf32>, tensor<1x2x128x16xf32>, tensor<1x2x128x16xf32> -> tensor<1x2x128x16xf32>
  func.return %o : tensor<1x2x128x16xf32>
}

// Not causal: the window policy leaves it dense and says why.
// CHECK-LABEL: func.func @full
// CHECK:       graph.attention {{.*}}graph.sparse = "dense: window policy needs causal attention"
func.func @full(%q: tensor<1x2x128x16xf32>, %k: tensor<1x2x128x16xf32>, %v: tensor<1x2x128x16xf32>) -> tensor<1x2x128x16xf32> {
  %o = graph.attention %q, %k, %v {scale = 2.500000e-01 : f64} : tensor<1x2x128x16xf32>, tensor<1x2x128x16xf32>, tensor<1x2x128x16xf32> -> tensor<1x2x128x16xf32>
  func.return %o : tensor<1x2x128x16xf32>
}

// Short sequence: the window covers everything (density 1.0 > max-density 0.8), so it stays dense.
// CHECK-LABEL: func.func @short
// CHECK:       graph.attention {{.*}}graph.sparse = "dense: density 1.00 > max-density 0.8: dense is faster"
func.func @short(%q: tensor<1x2x32x16xf32>, %k: tensor<1x2x32x16xf32>, %v: tensor<1x2x32x16xf32>) -> tensor<1x2x32x16xf32> {
  %o = graph.attention %q, %k, %v {scale = 2.500000e-01 : f64, causal} : tensor<1x2x32x16xf32>, tensor<1x2x32x16xf32>, tensor<1x2x32x16xf32> -> tensor<1x2x32x16xf32>
  func.return %o : tensor<1x2x32x16xf32>
}

// An explicit mask operand: left alone.
// CHECK-LABEL: func.func @masked
// CHECK:       graph.attention {{.*}}mask{{.*}}graph.sparse = "dense: explicit mask operand"
func.func @masked(%q: tensor<1x2x128x16xf32>, %k: tensor<1x2x128x16xf32>, %v: tensor<1x2x128x16xf32>, %m: tensor<128x128xi1>) -> tensor<1x2x128x16xf32> {
  %o = graph.attention %q, %k, %v mask %m : tensor<128x128xi1> {scale = 2.500000e-01 : f64, causal} : tensor<1x2x128x16xf32>, tensor<1x2x128x16xf32>, tensor<1x2x128x16xf32> -> tensor<1x2x128x16xf32>
  func.return %o : tensor<1x2x128x16xf32>
}
