// RUN: solder-opt %s --emit linalg | filecheck %s

// A kernel anchored on a linear: the GEMM runs in torch, the epilogue (bias add + tanh GELU) is one
// generated function with one generic: the bias is read along d1 (a broadcast as an indexing map)
// and GELU is x / (1 + exp(-2z)) with an arith-only exp (no math.tanh libm call), so the body vectorizes.
// CHECK:       // opt_level 3
// CHECK:       func.func @k0(%a0_m: memref<16x128xf32>, %a1_m: memref<128xf32>, %a2_m: memref<16x128xf32>) attributes {llvm.emit_c_interface}
// CHECK:         %[[G:g[0-9]+]] = linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>, affine_map<(d0, d1) -> (d1)>, affine_map<(d0, d1) -> (d0, d1)>], iterator_types = ["parallel", "parallel"]}
// CHECK-SAME:      ins(%a0, %a1 : tensor<16x128xf32>, tensor<128xf32>) outs(%a2 : tensor<16x128xf32>)
// CHECK:           arith.addf
// CHECK-NOT:       math.tanh
// CHECK:           math.fma
// CHECK:           arith.divf
// CHECK:           linalg.yield
// CHECK:         bufferization.materialize_in_destination %[[G]] in restrict writable %a2_m
// CHECK-NOT:     = linalg.generic
// CHECK:         return
// CHECK:       transform.structured.tile_using_for %k0_[[T:g[0-9]+]] tile_sizes [1, 64]
// CHECK:       transform.structured.vectorize

builtin.module {
  func.func @forward(%w: tensor<128x64xf32>, %b: tensor<128xf32>, %x: tensor<16x64xf32>) -> tensor<16x128xf32> {
    %0 = "graph.kernel"(%x, %w, %b) ({
    ^bb0(%kx: tensor<16x64xf32>, %kw: tensor<128x64xf32>, %kb: tensor<128xf32>):
      %1 = graph.linear %kx, %kw : tensor<16x64xf32>, tensor<128x64xf32> -> tensor<16x128xf32>
      %2 = graph.add %1, %kb : (tensor<16x128xf32>, tensor<128xf32>) -> tensor<16x128xf32>
      %3 = graph.gelu %2 {approximate = "tanh"} : tensor<16x128xf32> -> tensor<16x128xf32>
      graph.yield %3 : tensor<16x128xf32>
    }) {kernel_id = 0 : i64} : (tensor<16x64xf32>, tensor<128x64xf32>, tensor<128xf32>) -> tensor<16x128xf32>
    func.return %0 : tensor<16x128xf32>
  }
}
