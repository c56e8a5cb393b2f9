// RUN: solder-opt --from-torch examples/models.py:mlp | filecheck %s

// Weights are named function arguments (state_dict keys), not inlined constants; high-level ops stay whole.
// CHECK-LABEL: func.func @forward
// CHECK-SAME:  %[[W1:[a-z0-9_]+]]: tensor<128x64xf32> {graph.name = "fc1.weight"}
// CHECK-SAME:  %[[X:[a-z0-9_]+]]: tensor<2x16x64xf32> {graph.name = "x"}
// CHECK:       %[[N:.*]] = graph.layer_norm %[[X]] weight
// CHECK:       %[[L:.*]] = graph.linear %[[N]], %[[W1]] bias
// CHECK:       graph.gelu %[[L]] {approximate = "none"}
// CHECK:       graph.relu
// CHECK:       func.return
// CHECK-NOT:   graph.extern
