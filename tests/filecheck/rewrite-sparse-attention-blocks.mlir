// RUN: solder-opt %s -p 'rewrite-sparse-attention{policy=blocks mask="local:32,every:4" block=16}' | filecheck %s
// RUN: solder-opt %s -p 'rewrite-sparse-attention{policy=blocks mask-mod="examples/sparse_lm/masks.py:local_strided" block=16 max-density=1.0}' | filecheck %s --check-prefix=MOD

// The blocks policy from the CLI. mask= unions named causal terms: the last 32 keys (the diagonal
// block and up to two before it) and every 4th key block (blocks 0 and 4). One layout for every head
// is stored once ([1, 8, 8], row by row); density = 27 / 36 causal blocks.
// CHECK-LABEL: func.func @causal
// CHECK-NOT:   graph.attention
// CHECK:       graph.block_sparse_attention %{{.*}}, %{{.*}}, %{{.*}} {block = 16 : i64, scale = 2.500000e-01 : f64, policy = "blocks", heads = "[{\22pattern\22: \22blocks\22}]", density = 7.500000e-01 : f64, causal, layout = array<i32: 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 0, 1, 1, 1, 0, 0, 1, 0, 0, 0, 1, 1, 1, 0, 1, 0, 0, 0, 1, 1, 1, 1>}

// mask-mod= loads a FlexAttention-style mask_mod(b, h, q_idx, kv_idx) from a file: local 64 (a key
// block is visited when any of its keys is, so up to 4 blocks back) + every 4th block of 16 keys visits
// 33 of the 36 causal blocks (density 0.917: above the default max-density 0.8, hence max-density=1.0).
// MOD-LABEL:   func.func @causal
// MOD:         graph.block_sparse_attention {{.*}}policy = "blocks"{{.*}}density = 9.167000e-01 : f64, causal, layout = array<i32: 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, 1, 1, 1, 1, 1, 0, 1, 0, 0, 1, 1, 1, 1, 1>}
func.func @causal(%q: tensor<1x2x128x16xf32>, %k: tensor<1x2x128x16xf32>, %v: tensor<1x2x128x16xf32>) -> tensor<1x2x128x16xf32> {
  %o = graph.attention %q, %k, %v {scale = 2.500000e-01 : f64, causal} : tensor<1x2x128x16xf32>, tensor<1x2x128x16xf32>, tensor<1x2x128x16xf32> -> tensor<1x2x128x16xf32>
  func.return %o : tensor<1x2x128x16xf32>
}

// Named masks are causal: a non-causal attention stays dense and says why.
// CHECK-LABEL: func.func @full
// CHECK:       graph.attention {{.*}}graph.sparse = "dense: named masks (mask=) are causal; give layout= or mask-mod= for this attention"
func.func @full(%q: tensor<1x2x128x16xf32>, %k: tensor<1x2x128x16xf32>, %v: tensor<1x2x128x16xf32>) -> tensor<1x2x128x16xf32> {
  %o = graph.attention %q, %k, %v {scale = 2.500000e-01 : f64} : tensor<1x2x128x16xf32>, tensor<1x2x128x16xf32>, tensor<1x2x128x16xf32> -> tensor<1x2x128x16xf32>
  func.return %o : tensor<1x2x128x16xf32>
}
