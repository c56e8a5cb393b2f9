// RUN: solder-opt %s --emit linalg | filecheck %s

// A layer norm over the last dim is one kernel function in the notes' ABI (memref arguments,
// destination passing, C interface): two row reductions (sum, then sum of squared deviations)
// and one elementwise root with the affine weight and bias read along the row (d1), no copies.
// Light arithmetic, vectorized by the schedule: compiled at LLVM -O0.
// CHECK:       // opt_level 0
// CHECK:       func.func @k0(%[[X:a0_m]]: memref<8x64xf32>, %a1_m: memref<64xf32>, %a2_m: memref<64xf32>, %a3_m: memref<8x64xf32>) attributes {llvm.emit_c_interface}
// CHECK:         %[[XT:.*]] = bufferization.to_tensor %[[X]] restrict : memref<8x64xf32> to tensor<8x64xf32>
// CHECK:         %[[S:g[0-9]+]] = linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]{{.*}} attrs = {solder.k0.red
// CHECK:           arith.addf
// CHECK:         %[[V:g[0-9]+]] = linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]{{.*}}ins(%a0, %[[S]] :
// CHECK:           arith.subf
// CHECK:           arith.mulf
// CHECK:         bufferization.to_tensor %a3_m restrict writable
// CHECK:         %[[Y:g[0-9]+]] = linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>, affine_map<(d0, d1) -> (d0)>, affine_map<(d0, d1) -> (d0)>, affine_map<(d0, d1) -> (d1)>, affine_map<(d0, d1) -> (d1)>, affine_map<(d0, d1) -> (d0, d1)>], iterator_types = ["parallel", "parallel"]}
// CHECK-SAME:      attrs = {solder.k0.root
// CHECK:           math.rsqrt
// CHECK:           math.fma
// CHECK:         bufferization.materialize_in_destination %[[Y]] in restrict writable %a3_m
// CHECK-NOT:     = linalg.generic
// CHECK:         return
// The row schedule: one row per iteration with producers fused, reductions tiled by 32 lanes.
// CHECK:       transform.named_sequence @__transform_main
// CHECK:         transform.structured.fuse %k0_root tile_sizes [1, 0]
// CHECK:         transform.structured.tile_reduction_using_for %k0_red by tile_sizes = [0, 32]
// CHECK:         transform.structured.vectorize

builtin.module {
  func.func @forward(%w: tensor<64xf32>, %b: tensor<64xf32>, %x: tensor<8x64xf32>) -> tensor<8x64xf32> {
    %0 = graph.layer_norm %x weight %w : tensor<64xf32> bias %b : tensor<64xf32> {normalized_ndim = 1 : i64, eps = 1.000000e-05 : f64} : tensor<8x64xf32> -> tensor<8x64xf32>
    func.return %0 : tensor<8x64xf32>
  }
}
