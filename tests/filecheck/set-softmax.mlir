// RUN: codesign opt %s --passes 'set-softmax{approx=shiftmax}' | filecheck %s
// The attention op's softmax attribute changes; nothing else does.
builtin.module {
  func.func @main(%q: tensor<1x8x16xf32>) -> tensor<1x8x16xf32> {
    %o = dataflow.attention "attn" %q, %q, %q {num_heads = 2 : i64, head_dim = 8 : i64, scale = 0.35355 : f64, causal = false, softmax = "exact", algorithm = "standard"} : tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32> -> tensor<1x8x16xf32>
    func.return %o : tensor<1x8x16xf32>
  }
}
// CHECK: dataflow.attention "attn" {{.*}}softmax = "shiftmax"{{.*}}algorithm = "standard"
