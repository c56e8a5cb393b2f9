"""The lowering layer shared by every backend: region flattening, typed steps, routes to library or eager,
one liveness buffer plan and one executor. A backend only emits kernels and names library calls."""
