// RUN: solder-opt %s -p plan-memory | filecheck %s

// A chain's intermediates ping-pong between two buffers (each freed after its last reader); the returned
// value is never pooled, and a view (reshape) gets no buffer of its own.
// CHECK:       func.func @forward(%x: tensor<64xf32>) -> tensor<64xf32> attributes {graph.buffer_bytes = [256 : i64, 256 : i64]}
// CHECK-NEXT:    graph.exp %x {graph.buffers = [0 : i64]}
// CHECK-NEXT:    graph.neg %a {graph.buffers = [1 : i64]}
// CHECK-NEXT:    graph.reshape %b :
// CHECK-NEXT:    graph.sin %r {graph.buffers = [0 : i64]}
// CHECK-NEXT:    graph.cos %c :
// CHECK-NOT:     graph.buffers
func.func @forward(%x: tensor<64xf32>) -> tensor<64xf32> {
  %a = graph.exp %x : tensor<64xf32> -> tensor<64xf32>
  %b = graph.neg %a : tensor<64xf32> -> tensor<64xf32>
  %r = graph.reshape %b : tensor<64xf32> -> tensor<64xf32>
  %c = graph.sin %r : tensor<64xf32> -> tensor<64xf32>
  %d = graph.cos %c : tensor<64xf32> -> tensor<64xf32>
  func.return %d : tensor<64xf32>
}
