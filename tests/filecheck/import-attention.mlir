// RUN: solder-opt --from-torch examples/models.py:attn_masked_fill | filecheck %s

// A hand-written causal attention imports as matmul / where(-inf) / softmax / matmul.
// CHECK-LABEL: func.func @forward
// CHECK:       %[[S:.*]] = graph.matmul
// CHECK:       graph.constant "-inf"
// CHECK:       %[[W:.*]] = graph.where
// CHECK:       %[[P:.*]] = graph.softmax %[[W]] {dim = 3 : i64}
// CHECK:       graph.matmul %[[P]]
