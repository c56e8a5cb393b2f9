// RUN: solder-opt %s -p "canonicalize,cse,fuse-ops{target=cpu},dce" | filecheck %s

// `?` dims (a sequence length s0) go through the passes unchanged: the function keeps its symbols,
// the reshape keeps its size expression, cse merges on `?` types and the chain fuses into one kernel.
// CHECK-LABEL: func.func @forward
// CHECK-SAME:  tensor<2x?x16xf32, ["s0"]>
// CHECK-SAME:  graph.symbols = {s0 = array<i64: 2, 512, 8>}
// CHECK:       "graph.kernel"
// CHECK:       graph.layer_norm
// CHECK:       graph.reshape %{{.*}} : tensor<2x?x16xf32, ["s0"]> -> tensor<?x16xf32, ["2*s0"]>
// CHECK:       %[[E:.*]] = graph.exp
// CHECK-NEXT:  graph.add %[[E]], %[[E]] : (tensor<?x16xf32, ["2*s0"]>, tensor<?x16xf32, ["2*s0"]>)
// CHECK:       graph.yield
// CHECK-NOT:   "graph.kernel"
func.func @forward(%w: tensor<16xf32>, %x: tensor<2x?x16xf32, ["s0"]>) -> tensor<?x16xf32, ["2*s0"]>
    attributes {graph.symbols = {s0 = array<i64: 2, 512, 8>}} {
  %n = graph.layer_norm %x weight %w : tensor<16xf32> {normalized_ndim = 1 : i64, eps = 1.000000e-05 : f64} : tensor<2x?x16xf32, ["s0"]> -> tensor<2x?x16xf32, ["s0"]>
  %r = graph.reshape %n : tensor<2x?x16xf32, ["s0"]> -> tensor<?x16xf32, ["2*s0"]>
  %e = graph.exp %r : tensor<?x16xf32, ["2*s0"]> -> tensor<?x16xf32, ["2*s0"]>
  %e2 = graph.exp %r : tensor<?x16xf32, ["2*s0"]> -> tensor<?x16xf32, ["2*s0"]>
  %s = graph.add %e, %e2 : (tensor<?x16xf32, ["2*s0"]>, tensor<?x16xf32, ["2*s0"]>) -> tensor<?x16xf32, ["2*s0"]>
  func.return %s : tensor<?x16xf32, ["2*s0"]>
}
