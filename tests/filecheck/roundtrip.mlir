// RUN: f=$(mktemp --suffix=.mlir) && solder-opt --from-torch examples/models.py:resnet -p canonicalize -o $f && solder-opt $f | diff - $f && solder-opt $f | filecheck %s
// RUN: f=$(mktemp --suffix=.mlir) && solder-opt --from-torch examples/models.py:gpt2 -p "canonicalize,cse" -o $f && solder-opt $f | diff - $f
// Every stage's output parses back to the same text.
// CHECK: graph.conv
// CHECK: graph.batch_norm
// CHECK: graph.relu
