// RUN: solder-opt %s --target h100 --emit triton | filecheck %s

// A graph.kernel of broadcasting elementwise ops over a permuted input: one pointwise kernel; the
// permute and the reshape become index arithmetic (no copy), the bool mask is loaded along one dim.
// CHECK-LABEL: @triton.jit
// CHECK-NEXT:  def k0(in0, in1, in2, out0, in0_s0, in0_s1, in0_s2, in1_s0, in1_s1, in1_s2, in2_s0, C0: tl.constexpr, C1: tl.constexpr, C2: tl.constexpr):
// CHECK-NEXT:      offs = tl.program_id(0) * 32 + tl.arange(0, 32)
// CHECK-NEXT:      xmask = offs < 24
// CHECK-NEXT:      x0 = offs // 12
// CHECK-NEXT:      x1 = (offs // 4) % 3
// CHECK-NEXT:      x2 = offs % 4
// CHECK-NEXT:      p0 = in0 + x0 * in0_s0 + x2 * in0_s2
// CHECK-NEXT:      [[MASK:t[0-9]+]] = tl.load(p0, mask=xmask)
// CHECK-NEXT:      p2 = in1 + x2 * in1_s0 + x1 * in1_s1 + x0 * in1_s2
// CHECK-NEXT:      [[X:t[0-9]+]] = tl.load(p2, mask=xmask, other=0)
// CHECK-NEXT:      p4 = in2 + x1 * in2_s0
// CHECK-NEXT:      [[B:t[0-9]+]] = tl.load(p4, mask=xmask, other=0)
// CHECK-NEXT:      [[S:t[0-9]+]] = [[X]] + [[B]]
// CHECK-NEXT:      [[W:t[0-9]+]] = tl.where([[MASK]], float("-inf"), [[S]])
// CHECK-NEXT:      tl.store(out0 + offs, [[W]], mask=xmask)
// CHECK:       def launch_k0(in0, in1, in2, out0):
// CHECK-NEXT:      k0[(1,)](in0, in1, in2, out0, *in0.stride(), *in1.stride(), *in2.stride(), C0=in0.is_contiguous(), C1=in1.is_contiguous(), C2=in2.is_contiguous(), num_warps=1)

// A contiguous bf16 input is read at the flat offset; math runs in fp32, the store rounds to bf16.
// CHECK-LABEL: def k1(
// CHECK:           if C0:
// CHECK-NEXT:          p0 = in0 + offs
// CHECK-NEXT:      else:
// CHECK-NEXT:          p0 = in0 + x0 * in0_s0 + x1 * in0_s1
// CHECK-NEXT:      [[L:t[0-9]+]] = tl.load(p0, mask=xmask, other=0).to(tl.float32)
// CHECK-NEXT:      [[E:t[0-9]+]] = [[L]] * tl.sigmoid([[L]])
// CHECK-NEXT:      tl.store(out0 + offs, [[E]].to(tl.bfloat16), mask=xmask)

builtin.module {
  func.func @forward(%a: tensor<4x3x2xf32>, %b: tensor<3xf32>, %m: tensor<2x1x4xi1>, %h: tensor<64x128xbf16>) -> (tensor<2x3x4xf32>, tensor<64x128xbf16>) {
    %p = graph.permute %a {perm = array<i64: 2, 1, 0>} : tensor<4x3x2xf32> -> tensor<2x3x4xf32>
    %r = "graph.kernel"(%p, %b, %m) ({
    ^bb0(%x: tensor<2x3x4xf32>, %y: tensor<3xf32>, %mm: tensor<2x1x4xi1>):
      %e = graph.reshape %y : tensor<3xf32> -> tensor<3x1xf32>
      %s = graph.add %x, %e : (tensor<2x3x4xf32>, tensor<3x1xf32>) -> tensor<2x3x4xf32>
      %c = graph.constant "-inf" : tensor<f32>
      %w = graph.where %mm, %c, %s : (tensor<2x1x4xi1>, tensor<f32>, tensor<2x3x4xf32>) -> tensor<2x3x4xf32>
      graph.yield %w : tensor<2x3x4xf32>
    }) : (tensor<2x3x4xf32>, tensor<3xf32>, tensor<2x1x4xi1>) -> tensor<2x3x4xf32>
    %z = graph.silu %h : tensor<64x128xbf16> -> tensor<64x128xbf16>
    func.return %r, %z : tensor<2x3x4xf32>, tensor<64x128xbf16>
  }
}
