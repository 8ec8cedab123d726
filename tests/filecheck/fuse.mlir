// RUN: codesign opt %s --passes fuse | filecheck %s
// GELU and the residual add run in the GEMM's epilogue; the second GEMM's output has two readers, so its add stays.
// A rotary embedding is no epilogue (each output reads a partner element too): it stays its own op.
builtin.module {
  func.func @main(%x: tensor<1x4x8xf32>) -> (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) {
    %w = dataflow.weight "w" : tensor<8x8xf32>
    %g = dataflow.gemm "fc1" %x, %w {acc_type = f32} : tensor<1x4x8xf32>, tensor<8x8xf32> -> tensor<1x4x8xf32>
    %a = dataflow.gelu "act" %g {approx = "exact"} : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    %h = dataflow.gemm "fc2" %a, %w {acc_type = f32} : tensor<1x4x8xf32>, tensor<8x8xf32> -> tensor<1x4x8xf32>
    %r = dataflow.elementwise "res" %h, %x {kind = "add"} : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    %c = dataflow.weight "rope.cos" : tensor<4x4xf32>
    %s = dataflow.weight "rope.sin" : tensor<4x4xf32>
    %q = dataflow.gemm "q_proj" %x, %w {acc_type = f32} : tensor<1x4x8xf32>, tensor<8x8xf32> -> tensor<1x4x8xf32>
    %rq = dataflow.rope "rope_q" %q, %c, %s {style = "rotate_half", head_dim = 4 : i64, rotary_dim = 4 : i64} : (tensor<1x4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<1x4x8xf32>
    func.return %r, %h, %rq : tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>
  }
}
// CHECK:      dataflow.gemm "fc1"
// CHECK-NEXT: dataflow.gelu "act" %{{.*}} {fused_into = "fc1"
// CHECK-NEXT: dataflow.gemm "fc2"
// CHECK-NEXT: dataflow.elementwise "res"
// CHECK-NOT:  fused_into
// CHECK:      dataflow.gemm "q_proj"
// CHECK-NEXT: dataflow.rope "rope_q" %{{.*}}, %{{.*}}, %{{.*}} {style = "rotate_half", head_dim = 4 : i64, rotary_dim = 4 : i64}
// CHECK-NOT:  fused_into
// CHECK:      func.return
