// RUN: solder-opt %s -p "fuse-ops{mode=always}" --target cpu | filecheck %s
// RUN: solder-opt %s -p "fuse-ops{mode=always}" --target cpu --ignore-backend | filecheck %s --check-prefix=ALONE

// Fusion asks the target's backend whether a group is one launch. The CPU backend runs a GEMM as a library
// call, so the GEMM stays outside and only its epilogue (bias-add + GELU) becomes a kernel: the kernel the
// cost model prices is the kernel that runs. By its own rules alone, fuse-ops would take the GEMM in.
// CHECK-LABEL: func.func @forward
// CHECK:         graph.matmul
// CHECK-NEXT:    graph.yield
// CHECK-NEXT:  reason = "single: matmul; not fused with add: cpu backend: graph.matmul runs as a library call
// CHECK:       "graph.kernel"
// CHECK-NEXT:  ^
// CHECK-NEXT:    graph.add
// CHECK-NEXT:    graph.gelu
// CHECK-NEXT:    graph.yield
// ALONE:       "graph.kernel"
// ALONE-NEXT:  ^
// ALONE-NEXT:    graph.matmul
func.func @forward(%x: tensor<8x64xf32>, %w: tensor<64x64xf32>, %b: tensor<64xf32>) -> tensor<8x64xf32> {
  %0 = graph.matmul %x, %w : (tensor<8x64xf32>, tensor<64x64xf32>) -> tensor<8x64xf32>
  %1 = graph.add %0, %b : (tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
  %2 = graph.gelu %1 {approximate = "none"} : tensor<8x64xf32> -> tensor<8x64xf32>
  func.return %2 : tensor<8x64xf32>
}
