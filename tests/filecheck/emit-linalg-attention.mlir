// RUN: SOLDER_CPU_LIB=off solder-opt %s --emit linalg | filecheck %s

// graph.attention (causal, GQA 4:2, T = 100: one full query block of 64 and a tail of 36) lowers to the
// generated per-shape flash-attention kernel (backends/cpu/attention.py; the install's prebuilt size-generic
// kernels, attention_lib.py, are switched off here), in the kernels' ABI: memref arguments,
// destination passing, C interface. The keys are transposed once into a buffer the size of k, one contiguous
// D x 64 panel per key block (padded to whole key blocks, zeros past S); per (batch, head, query block) the scratch is the accumulator rows,
// running max/sum and 4 probability rows: nothing of size T x S. Small enough for one thread: scf.for.
// CHECK:       // opt_level 3
// CHECK:       func.func @k0(%q: memref<1x4x100x64xf32>, %k: memref<1x2x100x64xf32>, %v: memref<1x2x100x64xf32>, %out: memref<1x4x100x64xf32>) attributes {llvm.emit_c_interface}
// CHECK-NOT:   memref<{{[0-9x]*}}100x100
// CHECK:         %[[KT:x[0-9]+]] = memref.alloc() {alignment = 64 : i64} : memref<1x2x2x64x64xf32>
// CHECK:           memref.load %k[%b, %hk, %j, %d]
// CHECK:           memref.store {{.*}}, %[[KT]][%b, %hk, %{{x[0-9]+}}, %d, %{{x[0-9]+}}]
// CHECK:         scf.for %qb =
// GQA: query head h reads key/value head h / 2.
// CHECK:           %[[HK:x[0-9]+]] = arith.divui %h, %{{c[0-9]+}} : index
// CHECK:           memref.alloca() : memref<64x64xf32>
// CHECK:           memref.alloca() : memref<2x64xf32>
// CHECK:           memref.alloca() : memref<4x64xf32>
// Causal: key blocks up to the diagonal only.
// CHECK:           %[[NKB:x[0-9]+]] = arith.ceildivsi
// CHECK:           scf.for %t = %{{c[0-9]+}} to %[[NKB]]
// Four query rows at a time: four score vectors share each load of the transposed keys.
// CHECK:               scf.for %d = {{.*}} iter_args(%it0 = {{.*}}, %it1 = {{.*}}, %it2 = {{.*}}, %it3 = {{.*}}) -> (vector<64xf32>, vector<64xf32>, vector<64xf32>, vector<64xf32>)
// CHECK-NEXT:        vector.load %[[KT]][%b, %[[HK]], %{{x[0-9]+}}, %d, %{{c[0-9]+}}] : memref<1x2x2x64x64xf32>, vector<64xf32>
// CHECK:             vector.fma {{.*}}, %it0 : vector<64xf32>
// Online softmax: running max, rescale factor alpha and the scores' exp as inline polynomials (a libm
// call would spill the live score vectors), running sum.
// CHECK:             vector.reduction <maxnumf>
// CHECK-NOT:         math.exp
// CHECK:             %[[ALPHA:e[0-9]+_[0-9]+]] = arith.bitcast {{.*}} : i32 to f32
// CHECK:             math.ceil {{.*}} : vector<64xf32>
// CHECK:             arith.bitcast {{.*}} : vector<64xi32> to vector<64xf32>
// CHECK:             vector.reduction <add>
// CHECK:             math.fma {{.*}}, %[[ALPHA]], {{.*}} : f32
// P @ V: four accumulator rows share each value row.
// CHECK:             scf.for %j = {{.*}} iter_args(%it0 = {{.*}}, %it1 = {{.*}}, %it2 = {{.*}}, %it3 = {{.*}}) -> (vector<64xf32>, vector<64xf32>, vector<64xf32>, vector<64xf32>)
// CHECK:               vector.load %v[%b, %[[HK]], {{.*}}] : memref<1x2x100x64xf32>, vector<64xf32>
// CHECK:           vector.store {{.*}}, %out[%b, %h, {{.*}}] : memref<1x4x100x64xf32>, vector<64xf32>
// CHECK-NOT:   memref<{{[0-9x]*}}100x100
// CHECK:         return

builtin.module {
  func.func @forward(%q: tensor<1x4x100x64xf32>, %k: tensor<1x2x100x64xf32>, %v: tensor<1x2x100x64xf32>) -> tensor<1x4x100x64xf32> {
    %o = graph.attention %q, %k, %v {scale = 0.125 : f64, causal} : tensor<1x4x100x64xf32>, tensor<1x2x100x64xf32>, tensor<1x2x100x64xf32> -> tensor<1x4x100x64xf32>
    func.return %o : tensor<1x4x100x64xf32>
  }
}
