// RUN: solder-opt %s --target h100 --emit triton | filecheck %s

// softmax(x / 4 masked by a [T, T] keep-mask): one row kernel, BLOCK_M rows x BLOCK_N columns per
// program; max and sum run along the column axis with the padding columns masked to their neutral.
// CHECK-LABEL: def k0(in0, in1, out0,
// CHECK-SAME:      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
// CHECK-NEXT:      rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]
// CHECK-NEXT:      cols = tl.arange(0, BLOCK_N)[None, :]
// CHECK-NEXT:      rmask = rows < 40
// CHECK-NEXT:      cmask = cols < 10
// CHECK:           p0 = in0 + r2 * in0_s0 + c3 * in0_s1
// CHECK:           if C1:
// CHECK-NEXT:          p2 = in1 + rows * 10 + cols
// CHECK:           [[T:t[0-9]+]] = tl.where(cmask, {{t[0-9]+}}, float("-inf"))
// CHECK-NEXT:      [[M:t[0-9]+]] = tl.max([[T]], 1)[:, None]
// CHECK:           tl.exp({{t[0-9]+}} - [[M]])
// CHECK:           tl.sum(
// CHECK:           tl.store(out0 + rows * 10 + cols, {{t[0-9]+}}, mask=rmask & cmask)
// CHECK:       k0[(1,)](
// CHECK-SAME:      BLOCK_M=64, BLOCK_N=16, num_warps=4)

// A sum over a middle dim: kept dims come from rows, the reduced one from cols; reduced rows store at `rows`.
// CHECK-LABEL: def k1(
// CHECK:           r0 = rows // 7
// CHECK-NEXT:      r2 = rows % 7
// CHECK-NEXT:      c1 = cols
// CHECK:           tl.sum(
// CHECK:           tl.store(out0 + rows, {{t[0-9]+}}, mask=rmask)

builtin.module {
  func.func @forward(%a: tensor<2x2x10x10xf32>, %keep: tensor<10x10xi1>, %b: tensor<6x5x7xf32>) -> (tensor<2x2x10x10xf32>, tensor<6x7xf32>) {
    %r = "graph.kernel"(%a, %keep) ({
    ^bb0(%x: tensor<2x2x10x10xf32>, %k: tensor<10x10xi1>):
      %c = graph.constant 4.0 : f64 : tensor<f32>
      %s = graph.div %x, %c : (tensor<2x2x10x10xf32>, tensor<f32>) -> tensor<2x2x10x10xf32>
      %ni = graph.constant "-inf" : tensor<f32>
      %w = graph.where %k, %s, %ni : (tensor<10x10xi1>, tensor<2x2x10x10xf32>, tensor<f32>) -> tensor<2x2x10x10xf32>
      %p = graph.softmax %w {dim = 3 : i64} : tensor<2x2x10x10xf32> -> tensor<2x2x10x10xf32>
      graph.yield %p : tensor<2x2x10x10xf32>
    }) : (tensor<2x2x10x10xf32>, tensor<10x10xi1>) -> tensor<2x2x10x10xf32>
    %sum = graph.reduce "sum" %b {dims = array<i64: 1>} : tensor<6x5x7xf32> -> tensor<6x7xf32>
    func.return %r, %sum : tensor<2x2x10x10xf32>, tensor<6x7xf32>
  }
}
