// RUN: solder-opt %s -p "merge-linears{mode=always}" | filecheck %s
// RUN: solder-opt %s -p "merge-linears{mode=never}" | filecheck %s --check-prefix=NEVER
// RUN: solder-opt %s -p "merge-linears{cost-model=roofline}" | filecheck %s --check-prefix=COST

// Q, K, V projections of one input (GQA widths 64/32/32): one linear over the stacked weights, then
// column slices in place of the three results.
// CHECK-LABEL: func.func @qkv
// CHECK:       %[[W:.*]] = graph.concat %wq, %wk, %wv {dim = 0 : i64} : (tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>) -> tensor<128x64xf32>
// CHECK-NEXT:  %[[Y:.*]] = graph.linear %x, %[[W]] {merged = "3 linears on one input", merged_est_seconds = {{.*}}, merged_parts_seconds = {{.*}}} : tensor<2x16x64xf32>, tensor<128x64xf32> -> tensor<2x16x128xf32>
// CHECK-NEXT:  %[[Q:.*]] = graph.slice %[[Y]] {dim = 2 : i64, start = 0 : i64, end = 64 : i64, step = 1 : i64}
// CHECK-NEXT:  %[[K:.*]] = graph.slice %[[Y]] {dim = 2 : i64, start = 64 : i64, end = 96 : i64, step = 1 : i64}
// CHECK-NEXT:  %[[V:.*]] = graph.slice %[[Y]] {dim = 2 : i64, start = 96 : i64, end = 128 : i64, step = 1 : i64}
// CHECK-NOT:   graph.linear
// CHECK:       func.return %[[Q]], %[[K]], %[[V]]
// NEVER-LABEL: func.func @qkv
// NEVER-COUNT-3: graph.linear %x
// COST-LABEL:  func.func @qkv
// COST:        graph.linear %x, %{{.*}} {merged = "3 linears on one input"
func.func @qkv(%wq: tensor<64x64xf32>, %wk: tensor<32x64xf32>, %wv: tensor<32x64xf32>, %x: tensor<2x16x64xf32>) -> (tensor<2x16x64xf32>, tensor<2x16x32xf32>, tensor<2x16x32xf32>) {
  %q = graph.linear %x, %wq : tensor<2x16x64xf32>, tensor<64x64xf32> -> tensor<2x16x64xf32>
  %k = graph.linear %x, %wk : tensor<2x16x64xf32>, tensor<32x64xf32> -> tensor<2x16x32xf32>
  %v = graph.linear %x, %wv : tensor<2x16x64xf32>, tensor<32x64xf32> -> tensor<2x16x32xf32>
  func.return %q, %k, %v : tensor<2x16x64xf32>, tensor<2x16x32xf32>, tensor<2x16x32xf32>
}

// Biases stack too (all linears of a group have one, or none does).
// CHECK-LABEL: func.func @biased
// CHECK:       %[[WB:.*]] = graph.concat %w1, %w2 {dim = 0 : i64}
// CHECK-NEXT:  %[[BB:.*]] = graph.concat %b1, %b2 {dim = 0 : i64}
// CHECK-NEXT:  graph.linear %x, %[[WB]] bias %[[BB]]
func.func @biased(%w1: tensor<16x8xf32>, %b1: tensor<16xf32>, %w2: tensor<16x8xf32>, %b2: tensor<16xf32>, %x: tensor<4x8xf32>) -> (tensor<4x16xf32>, tensor<4x16xf32>) {
  %a = graph.linear %x, %w1 bias %b1 : tensor<16xf32> : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
  %b = graph.linear %x, %w2 bias %b2 : tensor<16xf32> : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
  func.return %a, %b : tensor<4x16xf32>, tensor<4x16xf32>
}

// Must NOT merge: different inputs; a weight that is computed (not an argument: stacking it would run
// per call); one linear with a bias and one without.
// CHECK-LABEL: func.func @apart
// CHECK-NOT:   graph.concat
// CHECK-COUNT-4: graph.linear
// CHECK-NOT:   graph.slice
func.func @apart(%w1: tensor<16x8xf32>, %w2: tensor<16x8xf32>, %b2: tensor<16xf32>, %x: tensor<4x8xf32>, %z: tensor<4x8xf32>) -> (tensor<4x16xf32>, tensor<4x16xf32>, tensor<4x16xf32>, tensor<4x16xf32>) {
  %a = graph.linear %x, %w1 : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
  %b = graph.linear %z, %w2 : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
  %wn = graph.neg %w2 : tensor<16x8xf32> -> tensor<16x8xf32>
  %c = graph.linear %z, %wn : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
  %d = graph.linear %x, %w2 bias %b2 : tensor<16xf32> : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
  func.return %a, %b, %c, %d : tensor<4x16xf32>, tensor<4x16xf32>, tensor<4x16xf32>, tensor<4x16xf32>
}
